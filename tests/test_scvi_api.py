"""SCMVP as an scvi-tools model: every public method answers, signatures match scvi-tools', model-based DE and DA."""

import warnings

import mudata
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scvi
import torch

import scmvp_scvi
from scmvp_scvi._differential import fdr_flags

TYPES = [f"type_{t}" for t in range(6)]


@pytest.fixture(scope="module")
def model_copy(demo_data_and_model, tmp_path_factory):
    """A loaded copy of the shared trained model (with its own MuData), free to train, save and mutate."""
    _, model = demo_data_and_model
    folder = tmp_path_factory.mktemp("saved") / "model"
    model.save(folder, save_anndata=True)
    return scmvp_scvi.SCMVP.load(folder), folder


def _calls(model, folder, tmp_path) -> dict:
    """One call per public method of SCMVP, each with a check of what it returns or raises."""
    mdata = model.adata
    n_obs, n_latent = mdata.n_obs, model.module.n_latent
    n_genes, n_peaks = model.module.n_input_rna, model.module.n_input_atac
    cls = scmvp_scvi.SCMVP

    def latent():
        assert model.get_latent_representation().shape == (n_obs, n_latent)

    def elbo():
        assert np.isfinite(float(model.get_elbo()))

    def marginal_ll():
        assert np.isfinite(float(model.get_marginal_ll(n_mc_samples=3)))

    def reconstruction_error():
        assert set(model.get_reconstruction_error()) == {"rna", "atac"}

    def aggregated_posterior():
        posterior = model.get_aggregated_posterior(indices=np.arange(50))
        assert posterior.log_prob(torch.zeros(3, n_latent)).shape == (3,)

    def differential_abundance():
        model.differential_abundance(sample_key="cell_type", num_cells_posterior=100)
        assert list(mdata.obsm["da_log_probs"].columns) == list(mdata.obs["cell_type"].unique())

    def clusters():
        assert model.get_cluster_assignments().shape == (n_obs,)

    def imputed():
        rna, atac = model.get_imputed_values()
        assert rna.shape == (n_obs, n_genes) and atac.shape == (n_obs, n_peaks)

    def written():
        path = tmp_path / "imputed.h5mu"
        mdata.write(path)
        model.write_imputed_values(path, layer_key="on_disk")
        stored = mudata.read_h5mu(path)
        rna, atac = model.get_imputed_values(layer_key=None)
        np.testing.assert_allclose(stored["rna"].layers["on_disk"], rna, rtol=1e-5)
        np.testing.assert_allclose(stored["atac"].layers["on_disk"], atac, rtol=1e-5)

    def expression():
        assert model.get_normalized_expression(indices=[0, 1]).shape == (2, n_genes)

    def accessibility():
        assert model.get_normalized_accessibility(indices=[0, 1]).shape == (2, n_peaks)

    def de():
        result = model.differential_expression(groupby="cell_type", group1="type_0", n_samples_overall=200)
        assert len(result) == n_genes

    def da():
        result = model.differential_accessibility(groupby="cell_type", group1="type_0", n_samples_overall=200)
        assert len(result) == n_peaks

    def train():
        model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
        assert model.history["training_phase"].iloc[-1, 0] == "joint"

    def save_and_load():
        model.save(tmp_path / "again", save_anndata=True)
        assert cls.load(tmp_path / "again").n_centroids == model.n_centroids

    def query():
        query_data = mdata.copy()
        cls.prepare_query_mudata(query_data, model)
        assert cls.load_query_data(query_data, model).module.n_latent == n_latent

    def legacy():
        with pytest.raises(FileNotFoundError):  # only saves from scvi-tools < 0.15 need converting
            cls.convert_legacy_save(str(folder), str(tmp_path / "converted"))

    def registry():
        assert model.get_from_registry(mdata, "X").shape == (n_obs, n_genes)
        assert model.data_registry("X").shape == (n_obs, n_genes)
        assert model.get_anndata_manager(mdata) is model.adata_manager
        assert set(model.get_setup_arg("modalities")) == {"rna_layer", "atac_layer"}
        assert len(model.get_state_registry("batch").categorical_mapping) == 1
        assert {k: len(v) for k, v in model.get_var_names().items()} == {"rna": n_genes, "atac": n_peaks}
        assert cls.load_registry(folder)["model_name"] == "SCMVP"

    def registration():
        # a MuData of its own: a copy of the model's would share its registration id
        other = scmvp_scvi.data.synthetic_paired(n_cells=60, n_genes=n_genes, n_peaks=n_peaks)
        manager = model.transfer_fields(other)
        assert manager.adata is other
        cls.register_manager(manager)
        model.deregister_manager(other)
        assert model.get_anndata_manager(other) is None
        model.update_setup_method_args({})

    def views():
        model.view_anndata_setup()
        model.view_registry()
        model.view_setup_method_args()
        cls.view_setup_args(folder)

    def device():
        model.to_device("cpu")
        assert str(model.device) == "cpu"

    def gmm():
        assert len(model.initialize_gmm()) == n_obs

    def setup():
        data = scmvp_scvi.data.synthetic_paired(n_cells=50, n_genes=20, n_peaks=40)
        cls.setup_mudata(data)
        assert cls(data).summary_stats.n_cells == 50

    def unsupported(name):
        def check():
            with pytest.raises(NotImplementedError, match="MuData"):
                getattr(cls, name)(mdata.mod["rna"])

        return check

    def module():
        assert isinstance(model.module, scmvp_scvi.SCMVPModule)

    def minify():
        copy = cls.load(folder)
        copy.minify_mudata()
        assert copy.minified_data_type == "latent_posterior_parameters" and copy.adata["rna"].X.nnz == 0
        with pytest.raises(NotImplementedError, match="minify_mudata"):
            copy.minify_adata()

    return {
        "get_latent_representation": latent,
        "get_elbo": elbo,
        "get_marginal_ll": marginal_ll,
        "get_reconstruction_error": reconstruction_error,
        "get_aggregated_posterior": aggregated_posterior,
        "differential_abundance": differential_abundance,
        "get_cluster_assignments": clusters,
        "get_imputed_values": imputed,
        "write_imputed_values": written,
        "get_normalized_expression": expression,
        "get_normalized_accessibility": accessibility,
        "differential_expression": de,
        "differential_accessibility": da,
        "train": train,
        "save": save_and_load,
        "load": save_and_load,
        "prepare_query_mudata": query,
        "load_query_data": query,
        "convert_legacy_save": legacy,
        "get_from_registry": registry,
        "data_registry": registry,
        "get_anndata_manager": registry,
        "get_setup_arg": registry,
        "get_state_registry": registry,
        "get_var_names": registry,
        "load_registry": registry,
        "transfer_fields": registration,
        "register_manager": registration,
        "deregister_manager": registration,
        "update_setup_method_args": registration,
        "view_anndata_setup": views,
        "view_registry": views,
        "view_setup_method_args": views,
        "view_setup_args": views,
        "to_device": device,
        "initialize_gmm": gmm,
        "setup_mudata": setup,
        "setup_anndata": unsupported("setup_anndata"),
        "setup_annbatch": unsupported("setup_annbatch"),
        "prepare_query_anndata": unsupported("prepare_query_anndata"),
        "module": module,
        "minify_mudata": minify,
        "minify_adata": minify,
    }


def test_every_public_method_answers(model_copy, tmp_path):
    model, folder = model_copy
    public = {
        name
        for name in dir(model)
        if not name.startswith("_")
        and callable(getattr(model, name))
        and not isinstance(getattr(type(model), name, None), property)
    }
    calls = _calls(model, folder, tmp_path)
    # a method added to SCMVP or to scvi-tools' base classes must get a check here
    assert public == set(calls), f"unchecked: {sorted(public - set(calls))}, stale: {sorted(set(calls) - public)}"
    for check in dict.fromkeys(calls.values()):  # each check once, in order
        check()


def test_latent_signature_matches_scvi_tools(model_copy):
    model, _ = model_copy
    mdata = model.adata
    means = model.get_latent_representation(key_added=None)
    means2, variances = model.get_latent_representation(return_dist=True)
    np.testing.assert_allclose(means, means2, rtol=1e-5, atol=1e-6)
    assert (variances > 0).all() and variances.shape == means.shape
    loader = model._make_data_loader(adata=mdata, indices=np.arange(100), batch_size=32)
    np.testing.assert_allclose(model.get_latent_representation(dataloader=loader), means[:100], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        model.get_latent_representation(adata=mdata, modality="rna", key_added=None, mc_samples=10),
        model.get_latent_representation(mdata, modality="rna", key_added=None),
    )
    with pytest.raises(ValueError, match="either a dataloader"):
        model.get_latent_representation(adata=mdata, dataloader=loader)


def test_mdata_keyword_still_accepted_with_a_warning(model_copy):
    model, _ = model_copy
    mdata = model.adata
    with pytest.warns(FutureWarning, match="adata="):
        latent = model.get_latent_representation(mdata=mdata, key_added=None)
    np.testing.assert_array_equal(latent, model.get_latent_representation(adata=mdata, key_added=None))
    with pytest.raises(TypeError, match="both adata and mdata"):
        model.get_imputed_values(adata=mdata, mdata=mdata)


def test_marginal_likelihood_bounds_the_elbo_and_rises_with_training(demo_data_and_model):
    mdata, model = demo_data_and_model
    indices = np.arange(300)
    per_cell = model.get_marginal_ll(indices=indices, n_mc_samples=20, return_mean=False)
    assert per_cell.shape == (300,) and torch.isfinite(per_cell).all()
    # importance sampling with 20 draws is a tighter bound than the ELBO (same sign convention: log-likelihoods)
    assert per_cell.mean() > model.get_elbo(indices=indices)
    fresh = mdata.copy()
    del fresh.uns["_scvi_uuid"]  # a registration of its own, not the copied one
    scmvp_scvi.SCMVP.setup_mudata(fresh)
    untrained = scmvp_scvi.SCMVP(fresh)
    untrained.is_trained = True
    assert per_cell.mean() > untrained.get_marginal_ll(fresh, indices=indices, n_mc_samples=20) + 10


def _top_k_precision(result: pd.DataFrame, var: pd.DataFrame, group: str, score: str, effect: str) -> float:
    truth = set(var.index[var["marker_of"] == group])
    ranked = result[(result["group1"] == group) & (result[effect] > 0)].sort_values(score, ascending=False)
    return len(set(ranked.index[: len(truth)]) & truth) / len(truth)


def _wilcoxon_precision(mdata, modality: str, group: str) -> float:
    data = mdata.mod[modality].copy()
    data.obs["cell_type"] = mdata.obs["cell_type"].to_numpy()
    sc.pp.normalize_total(data, target_sum=1e4)
    sc.pp.log1p(data)
    sc.tl.rank_genes_groups(data, "cell_type", groups=[group], method="wilcoxon")
    truth = set(data.var_names[data.var["marker_of"] == group])
    top = sc.get.rank_genes_groups_df(data, group)["names"][: len(truth)]
    return len(set(top) & truth) / len(truth)


def test_differential_expression_recovers_planted_markers(demo_data_and_model):
    mdata, model = demo_data_and_model
    result = model.differential_expression(groupby="cell_type", n_samples_overall=1000)
    assert len(result) == len(TYPES) * mdata.mod["rna"].n_vars
    assert set(result["comparison"]) == {f"{t} vs rest" for t in TYPES}
    assert result["proba_de"].between(0, 1).all() and "is_de_fdr_0.05" in result
    var = mdata.mod["rna"].var
    precision = [_top_k_precision(result, var, t, "proba_de", "lfc_mean") for t in TYPES]
    wilcoxon = [_wilcoxon_precision(mdata, "rna", t) for t in TYPES[:2]]
    # the top genes of each type are its planted markers, about as often as with Wilcoxon on the counts
    assert np.mean(precision) >= 0.8, precision
    assert np.mean(precision[:2]) >= np.mean(wilcoxon) - 0.1, (precision, wilcoxon)
    # planted markers go up in their type: observed statistics agree with the model's fold changes
    markers = result[(result["group1"] == "type_0") & (var.loc[result.index, "marker_of"] == "type_0")]
    assert (markers["raw_normalized_mean1"] > markers["raw_normalized_mean2"]).mean() > 0.9
    assert (markers["lfc_mean"] > 0).mean() > 0.9


def test_differential_accessibility_recovers_planted_peaks(demo_data_and_model):
    mdata, model = demo_data_and_model
    result = model.differential_accessibility(groupby="cell_type", group1=TYPES[:2], n_samples_overall=1000)
    assert len(result) == 2 * mdata.mod["atac"].n_vars
    np.testing.assert_allclose(result["effect_size"], result["est_prob1"] - result["est_prob2"], atol=1e-6)
    assert result["est_prob1"].between(0, 1).all() and "is_da_fdr_0.05" in result
    var = mdata.mod["atac"].var
    precision = [_top_k_precision(result, var, t, "proba_da", "effect_size") for t in TYPES[:2]]
    wilcoxon = [_wilcoxon_precision(mdata, "atac", t) for t in TYPES[:2]]
    assert np.mean(precision) >= 0.8, precision
    assert np.mean(precision) >= np.mean(wilcoxon) - 0.1, (precision, wilcoxon)
    flagged = result[(result["group1"] == "type_0") & result["is_da_fdr_0.05"]]
    assert (var.loc[flagged.index, "marker_of"] == "type_0").mean() > 0.8


def test_differential_between_explicit_cell_sets_and_vanilla_mode(demo_data_and_model):
    mdata, model = demo_data_and_model
    in_type_1 = (mdata.obs["cell_type"] == "type_1").to_numpy()
    scvi.settings.seed = 0
    by_mask = model.differential_expression(idx1=in_type_1, mode="vanilla", n_samples_overall=500)
    scvi.settings.seed = 0
    by_query = model.differential_expression(idx1="cell_type == 'type_1'", mode="vanilla", n_samples_overall=500)
    assert "comparison" not in by_mask and {"proba_m1", "bayes_factor"} <= set(by_mask.columns)
    # the same cells and the same seed: the same posterior draws
    pd.testing.assert_frame_equal(by_mask, by_query)
    truth = mdata.mod["rna"].var["marker_of"] == "type_1"
    top = by_mask.index[: truth.sum()]
    assert truth[top].mean() >= 0.8


def test_differential_filters_outlier_cells_only_when_asked(demo_data_and_model, monkeypatch):
    mdata, model = demo_data_and_model
    encoded = []
    encode = model.get_latent_representation
    monkeypatch.setattr(model, "get_latent_representation", lambda *a, **k: encoded.append(1) or encode(*a, **k))
    in_type_1 = (mdata.obs["cell_type"] == "type_1").to_numpy()
    model.differential_expression(idx1=in_type_1, n_samples_overall=200)
    assert not encoded  # scvi-tools' default: no outlier filter, no extra encoding
    filtered = model.differential_expression(idx1=in_type_1, n_samples_overall=500, filter_outlier_cells=True)
    assert len(encoded) == 2  # each group encoded once to find its outliers
    truth = mdata.mod["rna"].var["marker_of"] == "type_1"
    assert truth[filtered.index[: truth.sum()]].mean() >= 0.8


def test_observed_statistics_come_from_the_registered_counts_layer(demo_data_and_model):
    mdata, _ = demo_data_and_model
    data = mdata.copy()
    del data.uns["_scvi_uuid"]  # a registration of its own
    for name in ("rna", "atac"):  # counts in a layer, depth-normalised values in X (as after scanpy's steps)
        modality = data.mod[name]
        modality.layers["counts"] = modality.X.copy()
        sc.pp.normalize_total(modality, target_sum=1e4)
        sc.pp.log1p(modality)
    scmvp_scvi.SCMVP.setup_mudata(data, rna_layer="counts", atac_layer="counts")
    model = scmvp_scvi.SCMVP(data, n_hidden=32, n_heads=4)
    model.is_trained = True  # the observed statistics do not depend on the weights
    group = (data.obs["cell_type"] == "type_2").to_numpy()
    de = model.differential_expression(idx1=group, n_samples_overall=50)
    da = model.differential_accessibility(idx1=group, n_samples_overall=50)
    rna, atac = data.mod["rna"].layers["counts"], data.mod["atac"].layers["counts"]
    expected = np.asarray(rna[group].mean(axis=0)).ravel()
    np.testing.assert_allclose(de.loc[data.mod["rna"].var_names, "raw_mean1"], expected, rtol=1e-5)
    open_fraction = np.asarray((atac[~group] > 0).mean(axis=0)).ravel()
    np.testing.assert_allclose(da.loc[data.mod["atac"].var_names, "emp_prob2"], open_fraction, rtol=1e-5)
    # not the log-normalised values in X
    assert not np.allclose(np.asarray(data.mod["rna"].X[group].mean(axis=0)).ravel(), expected)


def test_differential_rejects_bad_groups_before_decoding(demo_data_and_model):
    _, model = demo_data_and_model
    with pytest.raises(ValueError, match="groupby"):
        model.differential_expression()
    with pytest.raises(ValueError, match="not an obs column"):
        model.differential_expression(groupby="tissue")
    with pytest.raises(ValueError, match=r"\['type_9'\] are not in"):
        model.differential_accessibility(groupby="cell_type", group1="type_9")
    with pytest.raises(ValueError, match="at least one cell"):
        model.differential_expression(idx1=np.zeros(model.adata.n_obs, dtype=bool))
    with pytest.raises(ValueError, match="not a valid query"):
        model.differential_expression(idx1="no_such_column ==")
    with pytest.raises(ValueError, match="not registered batches"):
        model.differential_expression(groupby="cell_type", batchid1=["b9"])
    with pytest.raises(ValueError, match="mode must be"):
        model.differential_expression(groupby="cell_type", group1="type_0", mode="bayes")


def test_fdr_flags_take_the_largest_set_under_the_target():
    probability = pd.Series([0.99, 0.5, 0.97, 0.9, 0.1], index=list("abcde"))
    flags = fdr_flags(probability, 0.05)
    # expected FDR by decreasing probability: 0.01, 0.02, 0.047, 0.16, ...
    assert flags.to_dict() == {"a": True, "b": False, "c": True, "d": True, "e": False}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not fdr_flags(pd.Series([0.2, 0.3]), 0.05).any()
    with pytest.raises(ValueError, match="fdr_target"):
        fdr_flags(probability, 1.5)
