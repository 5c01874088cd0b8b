"""Every bad input gets a clear error (or warning) before training, and the user's data is never changed."""

import re

import mudata as md
import numpy as np
import pytest
from scipy import sparse

from scmvp_scvi import SCMVP


def _corrupt_rna_value(value):
    def corrupt(mdata):
        mdata["rna"].X.data[0] = value
        return mdata, {}

    return corrupt


def _reordered(mdata):
    return md.MuData({"rna": mdata["rna"].copy(), "atac": mdata["atac"][::-1].copy()}), {}


def _unpaired(mdata):
    return md.MuData({"rna": mdata["rna"].copy(), "atac": mdata["atac"][:-10].copy()}), {}


def _renamed(mdata):
    return md.MuData({"gex": mdata["rna"].copy(), "atac": mdata["atac"].copy()}), {}


def _empty_cell(mdata):
    x = mdata["atac"].X.tolil()
    x[5, :] = 0
    mdata["atac"].X = x.tocsr()
    return mdata, {}


def _dtype(dtype):
    def corrupt(mdata):
        mdata["atac"].X = mdata["atac"].X.astype(dtype)
        return mdata, {}

    return corrupt


def _batch_nan(mdata):
    mdata.obs["batch"] = mdata.obs["batch"].astype(object)
    mdata.obs.iloc[3, mdata.obs.columns.get_loc("batch")] = None
    return mdata, {"batch_key": "batch"}


def _batch_in_modality(mdata):
    mdata["rna"].obs["donor"] = "d1"
    return mdata, {"batch_key": "donor"}


def _duplicated_names(mdata):
    names = list(mdata.obs_names)
    names[7] = names[3]
    rna, atac = mdata["rna"].copy(), mdata["atac"].copy()
    rna.obs_names, atac.obs_names = names, names
    return md.MuData({"rna": rna, "atac": atac}), {}


# (name, corruption, exception, message shown to the user)
SETUP_ERRORS = [
    ("AnnData instead of MuData", lambda m: (m["rna"], {}), TypeError, "expects a MuData object, got AnnData"),
    ("no modality named rna", _renamed, ValueError, "No modality named ['rna'] in the MuData"),
    ("unknown modality", lambda m: (m, {"modalities": {"rna_layer": "gex"}}), ValueError, "is not a modality"),
    ("same modality twice", lambda m: (m, {"modalities": {"atac_layer": "rna"}}), ValueError, "two different"),
    ("missing layer", lambda m: (m, {"rna_layer": "counts"}), ValueError, "Layer 'counts' not found"),
    ("cells differ", _unpaired, ValueError, "pad_unpaired"),
    ("cells reordered", _reordered, ValueError, "ordered differently from mdata.obs_names"),
    ("negative count", _corrupt_rna_value(-1.0), ValueError, "contains negative values"),
    ("NaN count", _corrupt_rna_value(np.nan), ValueError, "contains NaN or infinite values"),
    ("infinite count", _corrupt_rna_value(np.inf), ValueError, "contains NaN or infinite values"),
    ("empty cell", _empty_cell, ValueError, "1 cells have no counts in mdata['atac'].X"),
    ("boolean matrix", _dtype(bool), TypeError, "has dtype bool; counts must be integers or floats"),
    ("complex matrix", _dtype(np.complex64), TypeError, "has dtype complex64"),
    ("missing batch key", lambda m: (m, {"batch_key": "donor"}), ValueError, "batch_key 'donor' not found"),
    ("batch key in a modality", _batch_in_modality, ValueError, "It exists in [\"mdata['rna'].obs\"]"),
    ("batch key with gaps", _batch_nan, ValueError, "has missing values"),
    ("covariates as a string", lambda m: (m, {"categorical_covariate_keys": "batch"}), TypeError, "list of column"),
    ("a view", lambda m: (m[:50], {}), ValueError, "The MuData is a view"),
    ("duplicated cell names", _duplicated_names, ValueError, "1 cell names appear more than once in the MuData"),
]


@pytest.mark.parametrize(("case", "corrupt", "error", "message"), SETUP_ERRORS, ids=[c[0] for c in SETUP_ERRORS])
def test_setup_rejects_bad_input_and_leaves_data_unchanged(small_mdata, case, corrupt, error, message):
    mdata, kwargs = corrupt(small_mdata.copy())
    before = mdata.copy()
    with pytest.raises(error, match=re.escape(message)):
        SCMVP.setup_mudata(mdata, **kwargs)
    if isinstance(before, md.MuData):  # nothing added, nothing changed
        for name in before.mod:
            np.testing.assert_array_equal(_dense(mdata[name].X), _dense(before[name].X))
            assert list(mdata[name].obs.columns) == list(before[name].obs.columns)
        assert list(mdata.obs.columns) == list(before.obs.columns)
        assert "_scvi_uuid" not in mdata.uns


def _dense(x):
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


def test_setup_warns_on_non_integer_counts_and_empty_features(small_mdata):
    mdata = small_mdata.copy()
    mdata["atac"].X = mdata["atac"].X * 0.37
    with pytest.warns(UserWarning, match=r"non-integer values \(e\.g\. 0\.37\).*atac_likelihood='bernoulli'"):
        SCMVP.setup_mudata(mdata)
    mdata = small_mdata.copy()
    x = mdata["rna"].X.tolil()
    x[:, 3] = 0
    mdata["rna"].X = x.tocsr()
    with pytest.warns(UserWarning, match=r"1 features of mdata\['rna'\]\.X have no counts in any cell"):
        SCMVP.setup_mudata(mdata)


def test_backed_mudata_gets_a_message_how_to_load_it(small_mdata, tmp_path):
    path = tmp_path / "paired.h5mu"
    small_mdata.write(path)
    backed = md.read_h5mu(path, backed=True)
    with pytest.raises(ValueError, match=r"opened in backed mode .* mdata = mudata.read_h5mu\(path\)"):
        SCMVP.setup_mudata(backed)
    assert backed.isbacked and "_scvi_uuid" not in backed.uns
    in_memory = md.read_h5mu(path)  # what the message says to do works, and the file is unchanged
    SCMVP.setup_mudata(in_memory)
    np.testing.assert_array_equal(in_memory["atac"].X.toarray(), small_mdata["atac"].X.toarray())


@pytest.mark.filterwarnings("ignore:.*have no counts in any cell")
@pytest.mark.parametrize(("n_cells", "train_size"), [(1, None), (2, None), (3, 0.3)])
def test_too_few_cells_to_train_get_a_clear_error_before_training(small_mdata, n_cells, train_size):
    mdata = small_mdata[:n_cells].copy()
    before = mdata.copy()
    SCMVP.setup_mudata(mdata)
    model = SCMVP(mdata, n_centroids=1)
    with pytest.raises(ValueError, match=rf"cannot train on {n_cells} cells \(\d in the training split\)"):
        model.train(max_epochs=1, pretrain_epochs=1, accelerator="cpu", train_size=train_size)
    assert not model.is_trained and not bool(model.module.gmm_initialized)
    for name in before.mod:
        np.testing.assert_array_equal(mdata[name].X.toarray(), before[name].X.toarray())


def test_model_arguments_are_checked_before_training(small_mdata):
    SCMVP.setup_mudata(small_mdata)
    with pytest.raises(ValueError, match=r"n_hidden \(100\) must be divisible by n_heads \(8\)"):
        SCMVP(small_mdata, n_hidden=100, n_heads=8)
    with pytest.raises(ValueError, match=r"n_centroids must be an integer between 1 and the number of cells \(300\)"):
        SCMVP(small_mdata, n_centroids=301)


def test_non_finite_loss_stops_training_and_names_the_term(small_mdata, monkeypatch):
    SCMVP.setup_mudata(small_mdata)
    model = SCMVP(small_mdata)
    nll = model.module._nll

    def broken_atac(x, px):
        value = nll(x, px)
        return value * np.nan if x.shape[-1] == model.module.n_input_atac else value

    monkeypatch.setattr(model.module, "_nll", broken_atac)
    with pytest.raises(FloatingPointError, match=r"during pretraining: the terms \['nll_atac'.*Lower the learning"):
        model.train(max_epochs=1, pretrain_epochs=1, accelerator="cpu", enable_progress_bar=False)


def test_untouched_user_data_after_training(small_mdata):
    x_rna, x_atac = small_mdata["rna"].X.copy(), small_mdata["atac"].X.copy()
    obs = small_mdata.obs.copy()
    SCMVP.setup_mudata(small_mdata)
    model = SCMVP(small_mdata)
    model.train(max_epochs=2, pretrain_epochs=2, accelerator="cpu", enable_progress_bar=False)
    model.get_latent_representation()
    model.get_imputed_values()
    assert (small_mdata["rna"].X != x_rna).nnz == 0 and (small_mdata["atac"].X != x_atac).nnz == 0
    for column in obs.columns:
        assert small_mdata.obs[column].equals(obs[column])
