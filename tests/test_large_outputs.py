"""Outputs that fit in memory at any size: feature subsets, sparse ATAC, on-disk layers, a memory check, and a
mixture initialisation that clusters a subsample."""

import h5py
import mudata
import numpy as np
import pytest
from scipy import sparse
from sklearn.metrics import adjusted_rand_score

import scmvp_scvi
import scmvp_scvi._memory
from scmvp_scvi._gmm_init import kmeans_labels, subsampled_labels


def test_feature_subsets_equal_the_columns_of_the_full_imputation(demo_data_and_model):
    mdata, model = demo_data_and_model
    rna, atac = model.get_imputed_values(layer_key=None)
    genes = list(mdata["rna"].var_names[[7, 2, 40]])
    peaks = list(mdata["atac"].var_names[[0, 99, 5]])
    sub_rna, sub_atac = model.get_imputed_values(gene_list=genes, region_list=peaks, layer_key=None)
    np.testing.assert_allclose(sub_rna, rna[:, [7, 2, 40]], rtol=1e-5)
    np.testing.assert_allclose(sub_atac, atac[:, [0, 99, 5]], rtol=1e-5)
    with pytest.raises(ValueError, match="gene_list has names that are not features"):
        model.get_imputed_values(gene_list=["not_a_gene"], layer_key=None)


def test_a_layer_is_written_only_for_a_modality_imputed_in_full(demo_data_and_model):
    mdata, model = demo_data_and_model
    model.get_imputed_values(region_list=list(mdata["atac"].var_names[:3]), layer_key="partial_test")
    assert "partial_test" in mdata["rna"].layers and "partial_test" not in mdata["atac"].layers
    del mdata["rna"].layers["partial_test"]


def test_thresholded_atac_is_sparse_and_equals_the_dense_values_above_the_threshold(demo_data_and_model):
    mdata, model = demo_data_and_model
    rna, atac = model.get_imputed_values(layer_key=None)
    threshold = float(np.quantile(atac, 0.9))
    sparse_rna, sparse_atac = model.get_imputed_values(atac_threshold=threshold, layer_key="sparse_test")
    assert sparse.issparse(sparse_atac) and sparse_atac.format == "csr"
    np.testing.assert_allclose(sparse_rna, rna, rtol=1e-5)
    np.testing.assert_allclose(sparse_atac.toarray(), np.where(atac >= threshold, atac, 0), rtol=1e-5)
    assert 0.05 < sparse_atac.nnz / atac.size < 0.15
    assert sparse.issparse(mdata["atac"].layers["sparse_test"])
    for modality in ("rna", "atac"):
        del mdata[modality].layers["sparse_test"]
    with pytest.raises(ValueError, match="atac_threshold"):
        model.get_imputed_values(atac_threshold=-1, layer_key=None)


def test_an_output_too_large_for_memory_fails_before_any_work_and_names_the_routes(demo_data_and_model, monkeypatch):
    mdata, model = demo_data_and_model
    n, n_genes, n_peaks = mdata.n_obs, mdata["rna"].n_vars, mdata["atac"].n_vars
    # room for the RNA result, not for the dense ATAC one
    monkeypatch.setattr(scmvp_scvi._memory, "available_memory", lambda: 4 * n * (n_genes + 10))
    calls = []
    monkeypatch.setattr(model, "_batches", lambda *args, **kwargs: calls.append(1) or iter(()))
    with pytest.raises(MemoryError, match=r"atac_threshold=.*write_imputed_values"):
        model.get_imputed_values(layer_key="too_large")
    with pytest.raises(MemoryError, match="region_list="):
        model.get_normalized_accessibility()
    assert not calls and "too_large" not in mdata["rna"].layers
    monkeypatch.undo()
    # the routes the message names fit
    monkeypatch.setattr(scmvp_scvi._memory, "available_memory", lambda: 4 * n * (n_genes + 10))
    _, atac = model.get_imputed_values(atac_threshold=0.05, layer_key=None)
    assert atac.shape == (n, n_peaks)
    assert model.get_imputed_values(region_list=list(mdata["atac"].var_names[:5]), layer_key=None)[1].shape == (n, 5)


def test_imputed_layers_written_to_disk_chunk_by_chunk_equal_the_in_memory_ones(demo_data_and_model, tmp_path):
    mdata, model = demo_data_and_model
    path = tmp_path / "cells.h5mu"
    mdata.write(path)
    model.write_imputed_values(path, batch_size=37, layer_key="on_disk")
    rna, atac = model.get_imputed_values(layer_key=None)
    backed = mudata.read_h5mu(path, backed=True)
    np.testing.assert_allclose(backed["rna"].layers["on_disk"][:], rna, rtol=1e-5)
    np.testing.assert_allclose(backed["atac"].layers["on_disk"][10:20], atac[10:20], rtol=1e-5)
    backed.file.close()
    assert "on_disk" not in mdata["rna"].layers  # the in-memory MuData is untouched

    with pytest.raises(ValueError, match="already has the layer"):
        model.write_imputed_values(path, layer_key="on_disk")
    model.write_imputed_values(path, layer_key="on_disk", overwrite=True)
    np.testing.assert_allclose(mudata.read_h5mu(path)["rna"].layers["on_disk"], rna, rtol=1e-5)


def test_writing_to_a_file_of_other_cells_fails_before_writing(demo_data_and_model, tmp_path):
    mdata, model = demo_data_and_model
    with pytest.raises(FileNotFoundError, match=r"mdata\.write"):
        model.write_imputed_values(tmp_path / "missing.h5mu")
    other = tmp_path / "other.h5mu"
    mdata[:50].copy().write(other)
    with pytest.raises(ValueError, match=r"obs_names of modality .rna.*differ"):
        model.write_imputed_values(other)
    with h5py.File(other, "r") as file:
        assert "scmvp_imputed" not in file["mod/rna/layers"] and "scmvp_imputed" not in file["mod/atac/layers"]


def _blobs(n_per_cluster: int, n_clusters: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6, size=(n_clusters, 5))
    truth = np.repeat(np.arange(n_clusters), n_per_cluster)
    return centres[truth] + rng.normal(size=(len(truth), 5)), truth


@pytest.mark.parametrize("max_cells", [None, 2_000, 40])
def test_clusters_found_on_a_subsample_extend_to_all_cells(max_cells):
    latent, truth = _blobs(1_500)
    labels = subsampled_labels(latent, lambda x: kmeans_labels(x, 4), max_cells)
    assert labels.shape == truth.shape
    assert adjusted_rand_score(truth, labels) == 1.0


def test_the_mixture_initialisation_on_a_subsample_keeps_every_component(small_mdata, fast_train):
    scmvp_scvi.SCMVP.setup_mudata(small_mdata)
    model = scmvp_scvi.SCMVP(small_mdata, n_centroids=3)
    with pytest.raises(ValueError, match=r"gmm_max_cells .* at least the number of mixture components"):
        model.train(max_epochs=1, pretrain_epochs=1, gmm_max_cells=2, **fast_train)
    assert not model.is_trained_  # checked before pretraining
    model.train(max_epochs=0, pretrain_epochs=3, gmm_max_cells=100, **fast_train)
    labels = model.initialize_gmm(max_cells=100)
    assert labels.shape == (small_mdata.n_obs,) and set(labels) == {0, 1, 2}
    # the components come from all cells, not only the clustered ones
    weights = model.module.prior.weights.detach().numpy()
    np.testing.assert_allclose(weights, np.bincount(labels) / len(labels), rtol=1e-4)
    truth = small_mdata.obs["cell_type"].to_numpy()
    full = model.initialize_gmm(max_cells=None)
    assert adjusted_rand_score(full, labels) > 0.8 and adjusted_rand_score(truth, labels) > 0.8
    with pytest.raises(ValueError, match="max_cells must be an integer"):
        model.initialize_gmm(max_cells=1)
