"""Minified MuData: outputs from the stored joint posteriors, without the counts."""

import numpy as np
import pytest
from scvi.data._constants import _ADATA_MINIFY_TYPE_UNS_KEY, ADATA_MINIFY_TYPE

import scmvp_scvi
from scmvp_scvi._minify import LATENT_POSTERIOR, MINIFY_TYPE_UNS_KEY

FAST = {"accelerator": "cpu", "enable_progress_bar": False}


@pytest.fixture(scope="module")
def full_and_minified(demo_data_and_model, tmp_path_factory):
    """The shared trained model's outputs on its full data, and a loaded copy of it minified."""
    _, model = demo_data_and_model
    folder = tmp_path_factory.mktemp("minify") / "model"
    model.save(folder, save_anndata=True)
    full = scmvp_scvi.SCMVP.load(folder)
    mini = scmvp_scvi.SCMVP.load(folder)
    mini.minify_mudata()
    return full, mini


def test_constants_match_scvi_tools():
    assert MINIFY_TYPE_UNS_KEY == _ADATA_MINIFY_TYPE_UNS_KEY
    assert LATENT_POSTERIOR == ADATA_MINIFY_TYPE.LATENT_POSTERIOR


def test_minified_data_keeps_posteriors_and_libraries_not_counts(full_and_minified):
    full, mini = full_and_minified
    assert mini.minified_data_type == LATENT_POSTERIOR and full.minified_data_type is None
    assert mini.module.minified_data_type == LATENT_POSTERIOR
    for name in ("rna", "atac"):
        assert mini.adata[name].X.nnz == 0
        assert full.adata[name].X.nnz > 0  # the MuData the model had before is not changed
    means, variances = full.get_latent_representation(return_dist=True, key_added=None)
    np.testing.assert_allclose(mini.adata.obsm["scmvp_latent_qzm"], means, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mini.adata.obsm["scmvp_latent_qzv"], variances, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        mini.adata.obs["scmvp_observed_lib_size_atac"], np.asarray(full.adata["atac"].X.sum(axis=1)).ravel()
    )
    assert mini.summary_string.count("minified?: True") == 1 and full.summary_string.count("minified?: False") == 1


def test_outputs_from_the_posterior_equal_those_from_the_counts(full_and_minified):
    full, mini = full_and_minified
    np.testing.assert_allclose(
        mini.get_latent_representation(key_added=None), full.get_latent_representation(key_added=None), atol=1e-5
    )
    full_rna, full_atac = full.get_imputed_values(layer_key=None)
    mini_rna, mini_atac = mini.get_imputed_values(layer_key=None)
    np.testing.assert_allclose(mini_rna, full_rna, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mini_atac, full_atac, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(
        mini.get_cluster_assignments(key_added=None), full.get_cluster_assignments(key_added=None)
    )
    np.testing.assert_allclose(
        mini.get_normalized_accessibility(indices=[0, 1, 2]),
        full.get_normalized_accessibility(indices=[0, 1, 2]),
        rtol=1e-4,
        atol=1e-5,
    )


def test_differential_expression_without_counts_finds_the_same_markers(full_and_minified):
    full, mini = full_and_minified
    options = {"groupby": "cell_type", "group1": "type_0", "n_samples_overall": 1000}
    on_full, on_mini = full.differential_expression(**options), mini.differential_expression(**options)
    assert "raw_mean1" in on_full and "raw_mean1" not in on_mini  # observed statistics need the counts
    var = full.adata["rna"].var
    truth = set(var.index[var["marker_of"] == "type_0"])

    def top(result):
        up = result[result["lfc_mean"] > 0].sort_values("proba_de", ascending=False)
        return set(up.index[: len(truth)])

    assert len(top(on_mini) & truth) >= 0.8 * len(truth)
    assert len(top(on_mini) & top(on_full)) >= 0.8 * len(truth)


def test_what_needs_the_counts_says_so(full_and_minified):
    _, mini = full_and_minified
    with pytest.raises(ValueError, match="Training needs the counts, which minify_mudata removed"):
        mini.train(max_epochs=1, **FAST)
    with pytest.raises(ValueError, match="need the counts, which minify_mudata removed"):
        mini.get_latent_representation(modality="atac", key_added=None)
    with pytest.raises(ValueError, match="does not support minified data"):
        mini.get_marginal_ll(n_mc_samples=2)
    with pytest.raises(ValueError, match="already minified"):
        mini.minify_mudata()


def test_minified_model_saves_and_loads(full_and_minified, tmp_path):
    _, mini = full_and_minified
    mini.save(tmp_path / "mini", save_anndata=True)
    loaded = scmvp_scvi.SCMVP.load(tmp_path / "mini")
    assert loaded.minified_data_type == LATENT_POSTERIOR and loaded.adata["atac"].X.nnz == 0
    np.testing.assert_allclose(
        loaded.get_latent_representation(key_added=None), mini.get_latent_representation(key_added=None)
    )
    # onto the minified MuData passed explicitly, as a user who stored it separately would
    again = scmvp_scvi.SCMVP.load(tmp_path / "mini", adata=loaded.adata.copy())
    assert again.minified_data_type == LATENT_POSTERIOR


def test_minify_options_are_checked(demo_data_and_model, tmp_path):
    _, model = demo_data_and_model
    model.save(tmp_path / "model", save_anndata=True)
    copy = scmvp_scvi.SCMVP.load(tmp_path / "model")
    with pytest.raises(NotImplementedError, match="keep the full MuData"):
        copy.minify_mudata("latent_posterior_parameters_with_counts")
    with pytest.raises(ValueError, match="both"):
        copy.minify_mudata(use_latent_qzm_key="qzm")
    copy.adata.obsm["qzm"] = np.zeros((copy.adata.n_obs, 3))
    copy.adata.obsm["qzv"] = np.ones((copy.adata.n_obs, copy.module.n_latent))
    with pytest.raises(ValueError, match=r"adata.obsm\['qzm'\] is of shape"):
        copy.minify_mudata(use_latent_qzm_key="qzm", use_latent_qzv_key="qzv")
    # posteriors the user stored: used as given
    means, variances = copy.get_latent_representation(return_dist=True, key_added=None)
    copy.adata.obsm["qzm"], copy.adata.obsm["qzv"] = means, variances
    copy.minify_mudata(use_latent_qzm_key="qzm", use_latent_qzv_key="qzv")
    np.testing.assert_array_equal(copy.adata.obsm["scmvp_latent_qzm"], means)
    with pytest.raises(NotImplementedError, match="minify_mudata"):
        copy.minify_adata()
