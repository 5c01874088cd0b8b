import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from scipy import sparse
from scvi import REGISTRY_KEYS, settings
from sklearn.metrics import adjusted_rand_score

import scmvp_scvi
from scmvp_scvi import SCMVP
from scmvp_scvi.metrics import kmeans_scores

FAST_TRAIN = {"accelerator": "cpu", "enable_progress_bar": False}


def _train_small(mdata, pretrain=3, joint=4, **model_kwargs):
    SCMVP.setup_mudata(mdata)
    model = SCMVP(mdata, **model_kwargs)
    model.train(max_epochs=joint, pretrain_epochs=pretrain, **FAST_TRAIN)
    return model


def test_demo_data_cell_types_recovered(demo_data_and_model):
    mdata, model = demo_data_and_model
    latent = model.get_latent_representation()
    labels = mdata.obs["cell_type"].to_numpy()
    assert kmeans_scores(latent, labels)["kmeans_ari"] >= 0.9
    clusters = model.get_cluster_assignments()
    assert model.n_centroids >= 6  # Leiden found at least the six types
    assert adjusted_rand_score(labels, clusters) >= 0.8


def test_outputs_shapes_and_keys(demo_data_and_model):
    mdata, model = demo_data_and_model
    n, g, p = mdata.n_obs, mdata["rna"].n_vars, mdata["atac"].n_vars
    for modality, key in (("joint", "X_scmvp"), ("rna", "X_scmvp_rna"), ("atac", "X_scmvp_atac")):
        latent = model.get_latent_representation(modality=modality)
        assert latent.shape == (n, 20)
        np.testing.assert_array_equal(mdata.obsm[key], latent)

    rna, atac = model.get_imputed_values()
    assert rna.shape == (n, g) and atac.shape == (n, p)
    assert np.all(rna >= 0) and np.all(atac >= 0) and np.isfinite(rna).all() and np.isfinite(atac).all()
    np.testing.assert_array_equal(mdata["rna"].layers["scmvp_imputed"], rna)
    np.testing.assert_array_equal(mdata["atac"].layers["scmvp_imputed"], atac)
    # the RNA means sum to each cell's observed library size
    library = np.asarray(mdata["rna"].X.sum(1)).ravel()
    np.testing.assert_allclose(rna.sum(1), library, rtol=1e-3)

    labels = model.get_cluster_assignments()
    assert labels.shape == (n,)
    probs = mdata.obsm["scmvp_cluster_probs"]
    assert probs.shape == (n, model.n_centroids)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(mdata.obs["scmvp_cluster"].astype(int).to_numpy(), labels)

    expression = model.get_normalized_expression(gene_list=["gene_0", "gene_5"], library_size=1e4)
    assert isinstance(expression, pd.DataFrame) and expression.shape == (n, 2)
    assert list(expression.columns) == ["gene_0", "gene_5"]
    full = model.get_normalized_expression(return_numpy=True)
    np.testing.assert_allclose(full.sum(1), 1, rtol=1e-4)

    accessibility = model.get_normalized_accessibility(return_numpy=True)
    assert accessibility.shape == (n, p) and accessibility.min() >= 0 and accessibility.max() <= 1
    thresholded = model.get_normalized_accessibility(threshold=0.3, return_numpy=True)
    assert sparse.issparse(thresholded)
    np.testing.assert_allclose(thresholded.toarray(), np.where(accessibility >= 0.3, accessibility, 0), atol=1e-6)


def test_imputation_is_deterministic_by_default_and_sampling_optional(demo_data_and_model):
    _, model = demo_data_and_model
    cells = np.arange(50)
    first = model.get_imputed_values(indices=cells)
    second = model.get_imputed_values(indices=cells)
    np.testing.assert_array_equal(first[0], second[0])
    sampled = model.get_imputed_values(indices=cells, give_mean=False, n_samples=3)
    assert sampled[0].shape == first[0].shape and not np.allclose(sampled[0], first[0])


def test_imputed_markers_follow_cell_types(demo_data_and_model):
    """Denoised expression separates types better than the raw counts do."""
    mdata, model = demo_data_and_model
    rna, _ = model.get_imputed_values(layer_key=None)
    raw = mdata["rna"].X.toarray()
    labels = mdata.obs["cell_type"].to_numpy()

    def between_over_within(values):
        values = np.log1p(values / values.sum(1, keepdims=True) * 1e4)
        means = np.stack([values[labels == t].mean(0) for t in np.unique(labels)])
        within = np.mean([values[labels == t].var(0).mean() for t in np.unique(labels)])
        return means.var(0).mean() / within

    assert between_over_within(rna) > 2 * between_over_within(raw)


def test_save_load_round_trip(demo_data_and_model, tmp_path):
    mdata, model = demo_data_and_model
    model.save(tmp_path / "model", overwrite=True)
    loaded = SCMVP.load(tmp_path / "model", mdata)
    assert loaded.n_centroids == model.n_centroids
    np.testing.assert_array_equal(
        loaded.get_latent_representation(key_added=None), model.get_latent_representation(key_added=None)
    )
    np.testing.assert_array_equal(
        loaded.get_cluster_assignments(key_added=None), model.get_cluster_assignments(key_added=None)
    )
    assert "SCMVP model" in loaded.summary_string and f"K={model.n_centroids}" in loaded.summary_string
    assert "Training status: Trained" in loaded.summary_string
    assert repr(loaded) == loaded.summary_string  # scvi-tools' repr prints the summary and returns ""


def test_outputs_on_new_data_and_subsets(demo_data_and_model):
    mdata, model = demo_data_and_model
    other = mdata[:100].copy()
    latent = model.get_latent_representation(other)
    np.testing.assert_allclose(latent, model.get_latent_representation(key_added=None)[:100], atol=1e-5)
    assert other.obsm["X_scmvp"].shape == (100, 20)
    subset = model.get_latent_representation(indices=np.arange(10), key_added="X_subset")
    assert subset.shape == (10, 20) and "X_subset" not in mdata.obsm


@pytest.mark.parametrize(
    ("rna_likelihood", "atac_likelihood"),
    [("nb", "zip"), ("zinb", "poisson"), ("poisson", "nb"), ("nb", "bernoulli")],
)
def test_each_likelihood_trains_with_falling_loss(small_mdata, rna_likelihood, atac_likelihood):
    model = _train_small(
        small_mdata, pretrain=4, joint=6, rna_likelihood=rna_likelihood, atac_likelihood=atac_likelihood
    )
    history = model.history
    phases = history["training_phase"]["training_phase"].to_numpy()
    nll = (history["nll_rna_train"].to_numpy() + history["nll_atac_train"].to_numpy()).ravel()
    assert np.isfinite(nll).all()
    for phase in ("pretraining", "joint"):
        values = nll[phases == phase]
        assert values[-1] < values[0], f"{phase}: reconstruction did not improve"
    assert set(phases) == {"pretraining", "joint"}
    assert "kl_cycle_train" in history and "cluster_consistency_train" in history
    # metrics of one phase are indexed by the global epoch, aligned with train_loss
    joint_epochs = history["training_phase"].index[phases == "joint"]
    assert history["kl_cycle_train"].index.equals(joint_epochs)
    assert history["nll_rna_single_train"].index.equals(history["training_phase"].index[phases == "pretraining"])
    rna, atac = model.get_imputed_values()
    assert np.isfinite(rna).all() and np.isfinite(atac).all()
    if atac_likelihood == "bernoulli":
        assert atac.max() <= 1


def test_fixed_number_of_centroids_and_continued_training(small_mdata):
    model = _train_small(small_mdata, pretrain=2, joint=2, n_centroids=5)
    assert model.n_centroids == 5
    assert model.get_cluster_assignments().max() < 5
    n_epochs = len(model.history["train_loss"])
    means_before = model.module.prior.means.detach().clone()
    model.train(max_epochs=2, **FAST_TRAIN)  # continues joint training, no re-initialisation
    assert len(model.history["train_loss"]) == n_epochs + 2
    assert model.n_centroids == 5
    assert not torch.equal(means_before, model.module.prior.means.detach())


def test_without_pretraining(small_mdata):
    model = _train_small(small_mdata, pretrain=0, joint=3, n_centroids=3)
    assert set(model.history["training_phase"]["training_phase"]) == {"joint"}
    assert np.isfinite(model.get_latent_representation()).all()


def test_batch_and_categorical_covariates():
    mdata = scmvp_scvi.data.synthetic_paired(n_cells=300, n_genes=80, n_peaks=300, n_cell_types=3, n_batches=3)
    mdata.obs["donor"] = np.where(np.arange(mdata.n_obs) % 2 == 0, "d1", "d2")
    SCMVP.setup_mudata(mdata, batch_key="batch", categorical_covariate_keys=["donor"])
    model = SCMVP(mdata)
    assert model.summary_stats.n_batch == 3 and model.module.n_batch == 3
    assert "3 batches" in model.summary_string
    model.train(max_epochs=2, pretrain_epochs=2, **FAST_TRAIN)
    latent = model.get_latent_representation()
    assert latent.shape == (300, 20) and np.isfinite(latent).all()
    as_batch_0 = model.get_normalized_expression(transform_batch="batch_0", return_numpy=True)
    as_batch_1 = model.get_normalized_expression(transform_batch="batch_1", return_numpy=True)
    assert not np.allclose(as_batch_0, as_batch_1)
    with pytest.raises(ValueError, match="not a registered batch"):
        model.get_normalized_expression(transform_batch="nope")


def test_batch_key_in_modality_obs():
    mdata = scmvp_scvi.data.synthetic_paired(n_cells=200, n_genes=50, n_peaks=100, n_batches=2)
    del mdata.obs["batch"]
    with pytest.raises(ValueError, match=r"exists in \[\"mdata\['rna'\].obs\""):
        SCMVP.setup_mudata(mdata, batch_key="batch")
    SCMVP.setup_mudata(mdata, batch_key="batch", modalities={"batch_key": "rna"})
    assert SCMVP(mdata).summary_stats.n_batch == 2


def test_custom_modality_names_and_layers(small_mdata):
    import mudata as md

    rna, atac = small_mdata["rna"].copy(), small_mdata["atac"].copy()
    rna.layers["counts"] = rna.X.copy()
    rna.X = rna.X.multiply(0.5).tocsr()  # .X normalised, raw counts in a layer
    mdata = md.MuData({"gex": rna, "peaks": atac})
    SCMVP.setup_mudata(mdata, rna_layer="counts", modalities={"rna_layer": "gex", "atac_layer": "peaks"})
    model = SCMVP(mdata)
    model.train(max_epochs=1, pretrain_epochs=1, **FAST_TRAIN)
    model.get_imputed_values()
    assert mdata["gex"].layers["scmvp_imputed"].shape == (300, 80)
    assert mdata["peaks"].layers["scmvp_imputed"].shape == (300, 300)


def test_setup_rejects_bad_input(small_mdata):
    import mudata as md

    with pytest.raises(TypeError, match="expects a MuData"):
        SCMVP.setup_mudata(small_mdata["rna"])
    renamed = md.MuData({"gex": small_mdata["rna"].copy(), "atac": small_mdata["atac"].copy()})
    with pytest.raises(ValueError, match=r"No modality named \['rna'\].*modalities="):
        SCMVP.setup_mudata(renamed)
    with pytest.raises(ValueError, match="Layer 'counts' not found"):
        SCMVP.setup_mudata(small_mdata, rna_layer="counts")
    with pytest.raises(ValueError, match=r"batch_key 'donor' not found in mdata\.obs"):
        SCMVP.setup_mudata(small_mdata, batch_key="donor")

    negative = small_mdata.copy()
    negative["atac"].X.data[0] = -1
    with pytest.raises(ValueError, match="negative values"):
        SCMVP.setup_mudata(negative)

    with_nan = small_mdata.copy()
    with_nan["rna"].X.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        SCMVP.setup_mudata(with_nan)


def test_setup_rejects_misaligned_cells(small_mdata):
    import mudata as md

    rna = small_mdata["rna"].copy()
    reordered = md.MuData({"rna": rna, "atac": small_mdata["atac"][::-1].copy()})
    assert not reordered["atac"].obs_names.equals(reordered.obs_names)
    with pytest.raises(ValueError, match="ordered differently"):
        SCMVP.setup_mudata(reordered)
    unpaired = md.MuData({"rna": rna, "atac": small_mdata["atac"][:200].copy()})
    with pytest.raises(ValueError, match="paired cells"):
        SCMVP.setup_mudata(unpaired)


def test_train_rejects_unknown_mixture_variance(small_mdata):
    SCMVP.setup_mudata(small_mdata)
    model = SCMVP(small_mdata)
    with pytest.raises(ValueError, match="gmm_variance must be one of"):
        model.train(max_epochs=1, pretrain_epochs=1, gmm_variance="spread", **FAST_TRAIN)


@pytest.mark.parametrize("resolution", [0, -1.0, float("nan"), "0.5", None])
def test_train_rejects_a_bad_leiden_resolution_before_training(small_mdata, resolution):
    SCMVP.setup_mudata(small_mdata)
    model = SCMVP(small_mdata)
    with pytest.raises(ValueError, match="leiden_resolution must be a positive number"):
        model.train(max_epochs=1, pretrain_epochs=1, leiden_resolution=resolution, **FAST_TRAIN)
    assert not model.is_trained_ and model.history_ is None


def test_leiden_resolution_sets_the_number_of_components(small_mdata):
    SCMVP.setup_mudata(small_mdata)
    components = {}
    for resolution in (0.1, 3.0):
        settings.seed = 0
        model = SCMVP(small_mdata)
        model.train(max_epochs=0, pretrain_epochs=2, leiden_resolution=resolution, **FAST_TRAIN)
        components[resolution] = model.module.prior.n_components
        assert model.n_centroids == components[resolution]
    assert components[0.1] < components[3.0]


def test_initialize_gmm_chooses_k_as_asked(small_mdata, tmp_path):
    """A fixed K, K from Leiden, or the model's current K; bad requests are refused and change nothing."""
    SCMVP.setup_mudata(small_mdata)
    settings.seed = 0
    model = SCMVP(small_mdata)
    model.train(max_epochs=0, pretrain_epochs=3, **FAST_TRAIN)
    labels = model.initialize_gmm(n_centroids=4)
    assert model.n_centroids == 4 and len(np.unique(labels)) == 4
    # no argument keeps the current K; the three synthetic cell types are still found
    labels = model.initialize_gmm()
    assert model.n_centroids == 4
    assert adjusted_rand_score(small_mdata.obs["cell_type"], labels) > 0.5
    # a resolution asks for Leiden, as does "leiden"; a low resolution merges the four components
    leiden = model.initialize_gmm(resolution=0.1)
    assert model.n_centroids == len(np.unique(leiden)) < 4
    assert np.array_equal(model.initialize_gmm(n_centroids="leiden", resolution=0.1), leiden)
    means = model.module.prior.means.detach().clone()
    for kwargs, message in (
        ({"n_centroids": 0}, "n_centroids must be an integer between 1"),
        ({"n_centroids": True}, "n_centroids must be an integer between 1"),
        ({"n_centroids": "kmeans"}, 'n_centroids must be an integer, "leiden" or None'),
        ({"n_centroids": 3, "resolution": 1.0}, "pass only one of them"),
        ({"resolution": -1.0}, "resolution must be a positive number"),
    ):
        with pytest.raises(ValueError, match=message):
            model.initialize_gmm(**kwargs)
        torch.testing.assert_close(model.module.prior.means, means)
    # joint training continues from the chosen mixture, and K survives a round trip
    model.initialize_gmm(n_centroids=5)
    model.train(max_epochs=1, **FAST_TRAIN)
    model.save(tmp_path / "model")
    assert SCMVP.load(tmp_path / "model", adata=small_mdata).n_centroids == 5


def test_model_rejects_bad_arguments(small_mdata):
    SCMVP.setup_mudata(small_mdata)
    with pytest.raises(ValueError, match="divisible"):
        SCMVP(small_mdata, n_hidden=100, n_heads=8)
    with pytest.raises(ValueError, match="n_centroids"):
        SCMVP(small_mdata, n_centroids=10_000)
    with pytest.raises(ValueError, match="rna_likelihood"):
        SCMVP(small_mdata, rna_likelihood="gaussian")
    with pytest.raises(ValueError, match="atac_likelihood"):
        SCMVP(small_mdata, atac_likelihood="zinb")
    with pytest.raises(NotImplementedError, match="setup_mudata"):
        SCMVP.setup_anndata(small_mdata["rna"])


def test_atac_likelihood_default_depends_on_the_design_and_is_saved(small_mdata, tmp_path):
    SCMVP.setup_mudata(small_mdata)
    paired = SCMVP(small_mdata)
    assert paired.module.atac_likelihood == "poisson"
    assert paired.init_params_["non_kwargs"]["atac_likelihood"] == "poisson"
    assert paired.init_params_["non_kwargs"]["single_modality_weight"] == 0.0
    # an explicit choice wins, and a saved model (e.g. one trained with the earlier default) keeps its likelihood
    zip_model = SCMVP(small_mdata, atac_likelihood="zip")
    assert zip_model.module.atac_likelihood == "zip" and zip_model.module.decoder.atac_dropout is not None
    assert paired.module.decoder.atac_dropout is None
    zip_model.save(tmp_path / "zip", overwrite=True)
    loaded = SCMVP.load(tmp_path / "zip", small_mdata)
    assert loaded.module.atac_likelihood == "zip"
    loaded_state = loaded.module.state_dict()
    for name, value in zip_model.module.state_dict().items():
        np.testing.assert_array_equal(loaded_state[name].numpy(), value.numpy())


class _RecordWarmups(Callback):
    """Records the KL and cluster factors at the start of each epoch."""

    def __init__(self):
        self.kl, self.cluster = [], []

    def on_train_epoch_start(self, trainer, pl_module):
        self.kl.append(float(pl_module.kl_weight))
        self.cluster.append(float(pl_module.cluster_warmup))


@pytest.mark.parametrize("atac_likelihood", ["poisson", "zip"])
def test_pretraining_decodes_single_latents_beside_the_joint_one_as_if_apart(small_mdata, atac_likelihood):
    """Pretraining decodes the single-modality latents in the joint latent's pass; each gets what decoding it
    apart gives, and the loss's single-modality terms are those of the separate decodes."""
    SCMVP.setup_mudata(small_mdata)
    model = SCMVP(small_mdata, n_centroids=3, atac_likelihood=atac_likelihood)
    module = model.module.train()
    tensors = next(iter(model._make_data_loader(small_mdata, batch_size=32)))
    torch.manual_seed(0)
    inference_outputs = module.inference(**module._get_inference_input(tensors))
    generative_inputs = module._get_generative_input(tensors, inference_outputs)
    assert generative_inputs["z_rna"] is not None  # pretraining passes the single-modality latents
    torch.manual_seed(1)
    together = module.generative(**generative_inputs)
    losses = module.loss(tensors, inference_outputs, together)
    # apart, in the same order (joint latent first), so that the decoder's dropout draws the same masks
    torch.manual_seed(1)
    apart = module.generative(**{**generative_inputs, "z_rna": None, "z_atac": None})
    assert "px_rna_single" not in apart
    gate = module.decoder.gate(None, 32)
    covariates = module._covariates(tensors[REGISTRY_KEYS.BATCH_KEY], None)
    for modality, x_key in (("rna", REGISTRY_KEYS.X_KEY), ("atac", REGISTRY_KEYS.ATAC_X_KEY)):
        assert torch.allclose(together[f"px_{modality}"].scale, apart[f"px_{modality}"].scale, atol=1e-6)
        z, library = inference_outputs[f"z_{modality}"], inference_outputs[f"library_{modality}"]
        px = module._decode(modality, z, gate, library, covariates)[0]
        assert torch.allclose(together[f"px_{modality}_single"].scale, px.scale, atol=1e-6)
        nll = -px.log_prob(tensors[x_key]).sum(-1).mean()  # the per-entry route, not the per-cell one
        assert torch.allclose(losses.extra_metrics[f"nll_{modality}_single"], nll, rtol=1e-5)
    model.initialize_gmm()  # joint training decodes the joint latent only
    inference_outputs = module.inference(**module._get_inference_input(tensors))
    generative_inputs = module._get_generative_input(tensors, inference_outputs)
    assert generative_inputs["z_rna"] is None and generative_inputs["z_atac"] is None
    assert "px_atac_single" not in module.generative(**generative_inputs)


def test_warmups_of_each_phase(small_mdata):
    SCMVP.setup_mudata(small_mdata)
    model = SCMVP(small_mdata)
    recorder = _RecordWarmups()
    model.train(max_epochs=4, pretrain_epochs=2, callbacks=[recorder], **FAST_TRAIN)
    # pretraining warms the KL up over its 2 epochs and joint training keeps it there; the cluster terms rise
    # over half of the 4 joint epochs
    np.testing.assert_allclose(recorder.kl, [0.0, 0.5, 1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(recorder.cluster[2:], [0.0, 0.5, 1.0, 1.0])
    # continuing joint training warms nothing up again
    recorder.kl.clear()
    recorder.cluster.clear()
    model.train(max_epochs=2, callbacks=[recorder], **FAST_TRAIN)
    np.testing.assert_allclose(recorder.kl, [1.0, 1.0])
    np.testing.assert_allclose(recorder.cluster, [1.0, 1.0])


def test_original_switch_warmups(small_mdata):
    SCMVP.setup_mudata(small_mdata)
    model = SCMVP(small_mdata)
    recorder = _RecordWarmups()
    model.train(
        max_epochs=4,
        pretrain_epochs=2,
        n_epochs_kl_warmup=2,
        n_epochs_cluster_warmup=0,
        callbacks=[recorder],
        **FAST_TRAIN,
    )
    # the original recipe: joint training restarts the KL warm-up over half of its 4 epochs and applies the
    # cluster terms at full weight at once
    np.testing.assert_allclose(recorder.kl, [0.0, 0.5, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(recorder.cluster[2:], [1.0] * 4)


def test_kl_warmup_without_pretraining(small_mdata):
    SCMVP.setup_mudata(small_mdata)
    model = SCMVP(small_mdata, n_centroids=3)
    recorder = _RecordWarmups()
    model.train(max_epochs=4, pretrain_epochs=0, callbacks=[recorder], **FAST_TRAIN)
    # no pretraining raised the KL, so joint training warms it up over half of its epochs
    np.testing.assert_allclose(recorder.kl, [0.0, 0.5, 1.0, 1.0])


@pytest.mark.parametrize("variance", ["posterior", "means"])
def test_gmm_initialised_in_the_joint_latent(small_mdata, variance):
    from scmvp_scvi._gmm_init import cluster_statistics

    SCMVP.setup_mudata(small_mdata)
    model = SCMVP(small_mdata, n_centroids=3)
    model.train(max_epochs=0, pretrain_epochs=3, gmm_variance=variance, **FAST_TRAIN)
    assert bool(model.module.gmm_initialized)
    latent = model.get_latent_representation(key_added=None)
    labels = model.initialize_gmm(variance=variance)
    with torch.no_grad():
        posterior_var = np.concatenate(
            [inf["qz"].variance.numpy() for inf, _ in model._batches(None, None, None, decode=False)]
        )
    means, variances, weights = cluster_statistics(
        latent, labels, posterior_variances=posterior_var if variance == "posterior" else None
    )
    prior = model.module.prior
    np.testing.assert_allclose(prior.means.detach().numpy(), means, atol=1e-5)
    np.testing.assert_allclose(prior.variances.detach().numpy(), variances, rtol=1e-4)
    np.testing.assert_allclose(prior.weights.detach().numpy(), weights, atol=1e-6)
    # the three synthetic cell types are the three clusters
    assert adjusted_rand_score(small_mdata.obs["cell_type"], labels) > 0.9


def test_posterior_matched_mixture_softens_the_switch(small_mdata):
    """Components matched to the posteriors give a much smaller prior KL at the switch than spread-only ones."""
    SCMVP.setup_mudata(small_mdata)
    model = SCMVP(small_mdata, n_centroids=3)
    model.train(max_epochs=0, pretrain_epochs=3, **FAST_TRAIN)
    kl = {}
    for variance in ("means", "posterior"):
        model.initialize_gmm(variance=variance)
        with torch.no_grad():
            kl[variance] = np.mean(
                [
                    model.module.prior.kl_divergence(inf["qz"], inf["log_gamma"]).mean().item()
                    for inf, _ in model._batches(None, None, None, decode=False)
                ]
            )
    assert kl["posterior"] < 0.5 * kl["means"]


def test_early_stopping_and_validation_history(small_mdata):
    SCMVP.setup_mudata(small_mdata)
    model = SCMVP(small_mdata, n_centroids=3)
    model.train(
        max_epochs=50, pretrain_epochs=2, early_stopping=True, early_stopping_patience=1,
        early_stopping_min_delta=1e6, **FAST_TRAIN,
    )  # fmt: skip
    joint_epochs = (model.history["training_phase"]["training_phase"] == "joint").sum()
    assert joint_epochs < 50  # stopped early: no improvement can exceed min_delta
    assert "elbo_validation" in model.history
    assert len(model.validation_indices) > 0


def test_query_mapping_with_new_batch(tmp_path):
    """scArches: a query with an unseen batch trains only the new covariate weights of the first layers."""
    mdata = scmvp_scvi.data.synthetic_paired(n_cells=400, n_genes=80, n_peaks=300, n_cell_types=3, n_batches=3)
    reference = mdata[mdata.obs["batch"] != "batch_2"].copy()
    query = mdata[mdata.obs["batch"] == "batch_2"].copy()
    SCMVP.setup_mudata(reference, batch_key="batch")
    model = SCMVP(reference)
    model.train(max_epochs=2, pretrain_epochs=2, **FAST_TRAIN)
    model.save(tmp_path / "reference")

    mapped = SCMVP.load_query_data(query, str(tmp_path / "reference"))
    assert mapped.summary_stats.n_batch == 3 and mapped.n_centroids == model.n_centroids
    before = {k: v.clone() for k, v in mapped.module.state_dict().items()}
    mapped.train(max_epochs=2, **FAST_TRAIN)
    after = mapped.module.state_dict()
    first_layer = "rna_encoder.branch.dense.linear.fc_layers.Layer 0.0.weight"
    # gene columns frozen, the column of the new batch trained
    torch.testing.assert_close(after[first_layer][:, :80], before[first_layer][:, :80])
    assert not torch.equal(after[first_layer][:, -1], before[first_layer][:, -1])
    torch.testing.assert_close(after["decoder.rna_scale.weight"], before["decoder.rna_scale.weight"])
    torch.testing.assert_close(after["prior.means"], before["prior.means"])
    latent = mapped.get_latent_representation()
    assert latent.shape == (query.n_obs, 20) and np.isfinite(latent).all()


def test_inherited_elbo_and_reconstruction_error(demo_data_and_model):
    _, model = demo_data_and_model
    cells = np.arange(200)
    elbo = model.get_elbo(indices=cells)
    errors = model.get_reconstruction_error(indices=cells)
    assert set(errors) == {"rna", "atac"}
    assert np.isfinite(float(elbo)) and float(elbo) < 0  # log-evidence lower bound of discrete counts
    assert -float(elbo) > errors["rna"] + errors["atac"]  # ELBO = -(reconstruction + KL), KL >= 0


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_single_modality_terms_train_the_encoders_not_the_mixture(small_mdata, weight):
    """In joint training, the single-modality terms reach the encoders but leave the mixture to the joint ones."""
    from scvi import REGISTRY_KEYS

    SCMVP.setup_mudata(small_mdata)
    model = SCMVP(small_mdata, n_centroids=3, single_modality_weight=weight)
    model.train(max_epochs=0, pretrain_epochs=2, **FAST_TRAIN)
    module = model.module.train()
    tensors = next(iter(model._make_data_loader(adata=small_mdata, batch_size=64)))
    inference = module.inference(**module._get_inference_input(tensors))
    generative = module.generative(**module._get_generative_input(tensors, inference))
    metrics = module.loss(tensors, inference, generative).extra_metrics
    assert ("nll_atac_single" in metrics) == (weight > 0)

    covariates = module._covariates(tensors[REGISTRY_KEYS.BATCH_KEY], None)
    total, kl, extra = module._single_modality_terms(tensors, inference, covariates)
    assert set(extra) == {"nll_rna_single", "nll_atac_single"}
    (total + kl).sum().backward()
    for parameter in module.prior.parameters():
        assert parameter.grad is None or not parameter.grad.any()
    for encoder in (module.rna_encoder, module.atac_encoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


@pytest.mark.parametrize("as_sparse", [True, False])
def test_normalized_input_idf_counts_cells_with_each_peak_open(small_mdata, as_sparse):
    atac = small_mdata["atac"]
    atac.X = sparse.csr_matrix(atac.X) if as_sparse else np.asarray(sparse.csr_matrix(atac.X).todense())
    SCMVP.setup_mudata(small_mdata)
    model = SCMVP(small_mdata, encoder_input="normalized")
    dense = np.asarray(sparse.csr_matrix(atac.X).todense())
    expected = dense.shape[0] / (1.0 + (dense > 0).sum(0))
    np.testing.assert_allclose(model.module.atac_idf.numpy(), expected, rtol=1e-6)
