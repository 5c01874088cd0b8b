"""Save/load round trips, models saved by earlier releases, outputs in .h5mu files, and determinism."""

import json
from pathlib import Path

import mudata as md
import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from packaging.version import Version

import scmvp_scvi
from scmvp_scvi import SCMVP

FROZEN = sorted((Path(__file__).parent / "data").glob("frozen_model_*"))
FAST = {"accelerator": "cpu", "enable_progress_bar": False}
# the 0.1.0 model was saved under pandas 3 before histories were made portable: pandas 2 cannot unpickle it
needs_pandas_3 = pytest.mark.skipif(
    Version(pd.__version__).major < 3, reason="the 0.1.0 frozen model was saved with pandas 3 string labels"
)


def test_a_frozen_fixture_exists():
    assert FROZEN, "tests/data must hold at least one frozen model (tests/data/make_frozen_model.py)"


def _fixture_data(fixture: Path) -> tuple[md.MuData, dict]:
    """The fixture's frozen expectations, and its training data rebuilt by the seeded generator it names."""
    expected = json.loads((fixture / "expected.json").read_text())
    recipe = dict(expected["data"])
    assert recipe.pop("generator") == "scmvp_scvi.data.synthetic_paired"
    return scmvp_scvi.data.synthetic_paired(**recipe), expected


@needs_pandas_3
@pytest.mark.parametrize("fixture", FROZEN, ids=[p.name for p in FROZEN])
def test_models_saved_by_earlier_releases_still_load(fixture):
    mdata, expected = _fixture_data(fixture)
    model = SCMVP.load(str(fixture / "model"), mdata)
    cells, columns = expected["first_cells"], len(expected["rna_imputed"][0])
    np.testing.assert_allclose(model.get_latent_representation(key_added=None)[:cells], expected["latent"], atol=1e-5)
    rna, atac = model.get_imputed_values(layer_key=None)
    np.testing.assert_allclose(rna[:cells, :columns], expected["rna_imputed"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(atac[:cells, :columns], expected["atac_imputed"], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(model.get_cluster_assignments(key_added=None).astype(str), expected["clusters"])


@needs_pandas_3
def test_models_saved_before_the_balanced_defaults_keep_their_recipe(frozen, tmp_path):
    """0.1.0 saved no encoder_input or balance_target: the model gets the ones it was trained with."""
    fixture, mdata = frozen
    model = SCMVP.load(str(fixture / "model"), mdata)
    assert type(model) is SCMVP
    assert model.module.encoder_input == "counts" and model.module.balance_target == "uniform"
    assert not hasattr(model.module, "atac_idf")
    latent = model.get_latent_representation(key_added=None)
    # a new save records them, so the model keeps them on the next load
    model.save(str(tmp_path / "model"))
    assert model.init_params_["non_kwargs"]["encoder_input"] == "counts"
    again = SCMVP.load(str(tmp_path / "model"), mdata)
    assert again.module.encoder_input == "counts"
    np.testing.assert_allclose(again.get_latent_representation(key_added=None), latent, atol=1e-6)


@pytest.fixture(scope="module")
def frozen():
    fixture = FROZEN[0]
    return fixture, _fixture_data(fixture)[0]


@needs_pandas_3
def test_loading_onto_other_features_fails_clearly(frozen):
    fixture, mdata = frozen
    fewer = md.MuData({"rna": mdata["rna"][:, :-1].copy(), "atac": mdata["atac"].copy()})
    with pytest.raises(ValueError, match=r"mdata\['rna'\] lacks 1 of the 30 features the model was trained on"):
        SCMVP.load(str(fixture / "model"), fewer)
    reordered = md.MuData({"rna": mdata["rna"].copy(), "atac": mdata["atac"][:, ::-1].copy()})
    with pytest.raises(ValueError, match=r"mdata\['atac'\] has its features in another order"):
        SCMVP.load(str(fixture / "model"), reordered)
    renamed = md.MuData({"gex": mdata["rna"].copy(), "atac": mdata["atac"].copy()})
    with pytest.raises(ValueError, match="trained on modality 'rna', which the MuData lacks"):
        SCMVP.load(str(fixture / "model"), renamed)


def test_loading_onto_other_batches_fails_clearly(tmp_path):
    mdata = scmvp_scvi.data.synthetic_paired(n_cells=120, n_genes=20, n_peaks=40, n_batches=2, seed=2)
    SCMVP.setup_mudata(mdata, batch_key="batch")
    model = SCMVP(mdata, n_hidden=32, n_heads=4)
    model.train(max_epochs=1, pretrain_epochs=1, **FAST)
    model.save(str(tmp_path / "model"))
    other = mdata.copy()
    other.obs["batch"] = other.obs["batch"].astype(str).replace({"batch_1": "batch_9"})
    with pytest.raises(ValueError, match="batch_9"):
        SCMVP.load(str(tmp_path / "model"), other)
    missing = mdata.copy()
    del missing.obs["batch"]
    with pytest.raises(ValueError, match="batch"):
        SCMVP.load(str(tmp_path / "model"), missing)


def test_outputs_survive_h5mu_round_trip(tmp_path):
    mdata = scmvp_scvi.data.synthetic_paired(n_cells=150, n_genes=30, n_peaks=60, n_cell_types=3, seed=4)
    SCMVP.setup_mudata(mdata)
    model = SCMVP(mdata, n_hidden=32, n_heads=4)
    model.train(max_epochs=2, pretrain_epochs=2, **FAST)
    latent = model.get_latent_representation()
    clusters = model.get_cluster_assignments()
    rna, atac = model.get_imputed_values()
    mdata.write_h5mu(tmp_path / "out.h5mu")
    back = md.read_h5mu(tmp_path / "out.h5mu")
    np.testing.assert_array_equal(back.obsm["X_scmvp"], latent)
    np.testing.assert_array_equal(back.obs["scmvp_cluster"].astype(str), np.asarray(clusters).astype(str))
    np.testing.assert_array_equal(back["rna"].layers["scmvp_imputed"], rna)
    np.testing.assert_array_equal(back["atac"].layers["scmvp_imputed"], atac)
    # the file is enough to reload the model onto it
    model.save(str(tmp_path / "model"))
    again = SCMVP.load(str(tmp_path / "model"), back)
    np.testing.assert_allclose(again.get_latent_representation(key_added=None), latent, atol=1e-6)


def _pandas_objects(obj, path: str = "") -> list[tuple[str, object]]:
    """Every pandas index, series and frame in a nested dict/list, with its path."""
    if isinstance(obj, pd.Index | pd.Series | pd.DataFrame):
        return [(path, obj)]
    if isinstance(obj, dict):
        return [found for key, value in obj.items() for found in _pandas_objects(value, f"{path}/{key}")]
    if isinstance(obj, list | tuple):
        return [found for i, value in enumerate(obj) for found in _pandas_objects(value, f"{path}[{i}]")]
    return []


def test_saved_models_hold_only_numpy_dtypes_so_pandas_2_can_load_them(tmp_path):
    # pandas 3 labels columns with its own string dtype, which pandas 2 cannot unpickle
    mdata = scmvp_scvi.data.synthetic_paired(n_cells=120, n_genes=20, n_peaks=40, n_cell_types=3, seed=3)
    SCMVP.setup_mudata(mdata)
    model = SCMVP(mdata, n_hidden=32, n_heads=4)
    model.train(max_epochs=1, pretrain_epochs=1, **FAST)
    model.save(str(tmp_path / "model"))
    saved = torch.load(tmp_path / "model" / "model.pt", weights_only=False)
    frames = _pandas_objects(saved["attr_dict"])
    assert {path.split("/")[1] for path, _ in frames} == {"history_"}
    assert "/history_/training_phase" in dict(frames) and "/history_/kl_cycle_train" in dict(frames)
    for path, frame in frames:
        assert frame.columns.dtype == object, path
        assert all(isinstance(dtype, np.dtype) for dtype in frame.dtypes), path
    assert list(saved["attr_dict"]["history_"]["training_phase"]["training_phase"]) == ["pretraining", "joint"]
    # a history loaded from an older file (string-dtype labels) is made portable for the next save
    old = {key: frame.set_axis(frame.columns.astype("string"), axis=1) for key, frame in model.history_.items()}
    saved["attr_dict"]["history_"] = old
    torch.save(saved, tmp_path / "model" / "model.pt")
    again = SCMVP.load(str(tmp_path / "model"), mdata)
    assert all(frame.columns.dtype == object for frame in again.history_.values())
    pd.testing.assert_frame_equal(again.history["train_loss"], model.history["train_loss"])


def _latent_of_run(seed: int) -> np.ndarray:
    scvi.settings.seed = seed
    mdata = scmvp_scvi.data.synthetic_paired(n_cells=150, n_genes=30, n_peaks=60, n_cell_types=3, seed=5)
    SCMVP.setup_mudata(mdata)
    model = SCMVP(mdata, n_hidden=32, n_heads=4)
    model.train(max_epochs=2, pretrain_epochs=2, **FAST)
    return model.get_latent_representation(key_added=None)


def test_same_seed_same_latent_on_cpu():
    first, second = _latent_of_run(3), _latent_of_run(3)
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, _latent_of_run(4))
