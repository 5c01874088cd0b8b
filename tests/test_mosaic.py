"""Mosaics: paired, RNA-only and ATAC-only cells in one model."""

import numpy as np
import pytest
from mudata import MuData

import scmvp_scvi
from scmvp_scvi import SCMVP
from scmvp_scvi._modalities import OBS_COLUMN

from .conftest import SMALL


def _hide(mdata: MuData, fraction: float = 0.3, seed: int = 0) -> dict[str, np.ndarray]:
    """Zero the ATAC rows of one random ``fraction`` of cells and the RNA rows of another; return their indices."""
    order = np.random.default_rng(seed).permutation(mdata.n_obs)
    n = int(fraction * mdata.n_obs)
    hidden = {"atac": order[:n], "rna": order[n : 2 * n]}
    for modality, rows in hidden.items():
        x = mdata.mod[modality].X.tolil()
        x[rows] = 0
        mdata.mod[modality].X = x.tocsr()
    return hidden


def _union(mdata: MuData, hidden: dict[str, np.ndarray]) -> MuData:
    """The same mosaic as a MuData whose modalities hold only their measured cells."""
    mods = {}
    for modality, rows in hidden.items():
        keep = np.setdiff1d(np.arange(mdata.n_obs), rows)
        mods[modality] = mdata.mod[modality][keep].copy()
    union = MuData(mods)
    union.obs["cell_type"] = mdata.obs["cell_type"].reindex(union.obs_names)
    return union


def test_zero_rows_need_to_be_declared():
    mdata = scmvp_scvi.data.synthetic_paired(**SMALL, seed=1)
    _hide(mdata)
    with pytest.raises(ValueError, match="missing_modality='zero_rows'"):
        SCMVP.setup_mudata(mdata)
    with pytest.raises(ValueError, match="missing_modality must be one of"):
        SCMVP.setup_mudata(mdata, missing_modality="zeros")


def test_setup_records_the_modalities_of_each_cell(capsys):
    mdata = scmvp_scvi.data.synthetic_paired(**SMALL, seed=1)
    hidden = _hide(mdata)
    SCMVP.setup_mudata(mdata, missing_modality="zero_rows")
    kinds = mdata.obs[OBS_COLUMN].astype(str).to_numpy()
    assert (kinds[hidden["atac"]] == "rna_only").all() and (kinds[hidden["rna"]] == "atac_only").all()
    model = SCMVP(mdata)
    n = len(hidden["atac"])
    assert model.is_mosaic
    assert model.observed_modality_counts == {"paired": mdata.n_obs - 2 * n, "rna_only": n, "atac_only": n}
    assert model.module.weights["single"] == 1.0
    assert model.module.atac_likelihood == "zip"  # the mosaic default; paired data default to "poisson"
    model.view_anndata_setup()
    assert f"{n:,} rna-only" in capsys.readouterr().out
    assert f"{n:,} atac-only" in model._model_summary_string


def test_union_mudata_is_padded_without_changing_it():
    mdata = scmvp_scvi.data.synthetic_paired(**SMALL, seed=1)
    original = {m: mdata.mod[m].X.toarray() for m in mdata.mod}
    hidden = _hide(mdata)
    union = _union(mdata, hidden)
    shapes = {m: union.mod[m].shape for m in union.mod}
    with pytest.raises(ValueError, match="pad_unpaired"):
        SCMVP.setup_mudata(union, missing_modality="zero_rows")
    padded = scmvp_scvi.pp.pad_unpaired(union)
    assert {m: union.mod[m].shape for m in union.mod} == shapes  # the input is unchanged
    for modality in ("rna", "atac"):
        mod = padded.mod[modality]
        assert mod.obs_names.equals(padded.obs_names)
        rows = padded.obs_names.get_indexer(mdata.obs_names)
        expected = original[modality].copy()
        expected[hidden[modality]] = 0
        np.testing.assert_array_equal(mod.X.toarray()[rows], expected)
    SCMVP.setup_mudata(padded, missing_modality="zero_rows")
    counts = SCMVP(padded).observed_modality_counts
    assert counts["rna_only"] == counts["atac_only"] == len(hidden["rna"])


def test_a_mosaic_needs_paired_cells_and_no_empty_cell():
    mdata = scmvp_scvi.data.synthetic_paired(**SMALL, seed=1)
    half = mdata.n_obs // 2
    rna, atac = mdata.mod["rna"].X.tolil(), mdata.mod["atac"].X.tolil()
    rna[:half], atac[half:] = 0, 0
    mdata.mod["rna"].X, mdata.mod["atac"].X = rna.tocsr(), atac.tocsr()
    with pytest.raises(ValueError, match="No cell has counts in both"):
        SCMVP.setup_mudata(mdata, missing_modality="zero_rows")
    atac = mdata.mod["atac"].X.tolil()
    atac[:half] = 0
    mdata.mod["atac"].X = atac.tocsr()
    with pytest.raises(ValueError, match=r"no counts in .* nor in"):
        SCMVP.setup_mudata(mdata, missing_modality="zero_rows")


def _per_cell_pearson(predicted: np.ndarray, truth: np.ndarray) -> float:
    p = np.log1p(predicted / predicted.sum(1, keepdims=True) * 1e4)
    t = np.log1p(truth / np.maximum(truth.sum(1, keepdims=True), 1) * 1e4)
    p, t = p - p.mean(1, keepdims=True), t - t.mean(1, keepdims=True)
    return float(np.mean((p * t).sum(1) / np.sqrt((p**2).sum(1) * (t**2).sum(1))))


def test_mosaic_model_predicts_the_hidden_modality(tmp_path, fast_train):
    mdata = scmvp_scvi.data.synthetic_paired(n_cells=900, seed=2)
    truth = {m: mdata.mod[m].X.toarray() for m in ("rna", "atac")}
    hidden = _hide(mdata)
    SCMVP.setup_mudata(mdata, missing_modality="zero_rows")
    model = SCMVP(mdata)
    # enough steps (about 200 per phase) for the encoders' batch-norm statistics (momentum 0.01) to settle
    model.train(max_epochs=15, pretrain_epochs=15, **fast_train)
    rna, atac = model.get_imputed_values()
    assert "scmvp_imputed" in mdata.mod["rna"].layers

    # RNA of the ATAC-only cells: closer to the truth, cell by cell, than the mean profile of the RNA cells
    rows = hidden["rna"]
    measured = np.setdiff1d(np.arange(mdata.n_obs), rows)
    population = np.tile(truth["rna"][measured].mean(0), (len(rows), 1))
    assert _per_cell_pearson(rna[rows], truth["rna"][rows]) > _per_cell_pearson(population, truth["rna"][rows]) + 0.02
    # ATAC of the RNA-only cells: marker peaks of each cell's type rank above the others
    rows = hidden["atac"]
    cell_types = mdata.obs["cell_type"].astype(str).to_numpy()[rows]
    marker_of = mdata.mod["atac"].var["marker_of"].astype(str).to_numpy()
    own = np.array([atac[i, marker_of == t].mean() for i, t in zip(rows, cell_types, strict=True)])
    other = np.array(
        [atac[i, (marker_of != t) & (marker_of != "")].mean() for i, t in zip(rows, cell_types, strict=True)]
    )
    assert (own > other).mean() > 0.9

    # the latent groups cells by type whatever they were measured in
    latent = model.get_latent_representation()
    from sklearn.neighbors import KNeighborsClassifier

    labels = mdata.obs["cell_type"].astype(str).to_numpy()
    paired = mdata.obs[OBS_COLUMN].astype(str).to_numpy() == "paired"
    classifier = KNeighborsClassifier(15).fit(latent[paired], labels[paired])
    assert (classifier.predict(latent[~paired]) == labels[~paired]).mean() > 0.9
    # a single-modality latent exists only for the cells measured in that modality
    for modality, other in (("rna", "atac"), ("atac", "rna")):
        single = model.get_latent_representation(modality=modality, key_added=None)
        missing = np.isnan(single).any(1)
        np.testing.assert_array_equal(np.flatnonzero(missing), np.sort(hidden[modality]))
        assert np.isfinite(single[hidden[other]]).all()

    model.save(tmp_path / "mosaic")
    loaded = SCMVP.load(tmp_path / "mosaic", adata=mdata)
    assert loaded.is_mosaic and loaded.observed_modality_counts == model.observed_modality_counts
    np.testing.assert_allclose(loaded.get_latent_representation(key_added=None), latent, atol=1e-5)
