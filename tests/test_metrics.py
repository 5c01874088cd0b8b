import numpy as np
import pytest
from scipy import sparse
from sklearn.metrics import average_precision_score, roc_auc_score

from scmvp_scvi import metrics


def test_auroc_auprc_match_scikit_learn_with_ties_and_weights():
    rng = np.random.default_rng(0)
    scores = rng.random((6, 300))
    scores[:, :100] = np.round(scores[:, :100], 1)  # many ties
    labels = rng.random((6, 300)) < 0.2
    weights = rng.random((6, 300)) < 0.4
    auroc, auprc = metrics.rowwise_auroc_auprc(scores, labels, weights)
    for i in range(6):
        keep = weights[i]
        assert auroc[i] == pytest.approx(roc_auc_score(labels[i, keep], scores[i, keep]), abs=1e-12)
        assert auprc[i] == pytest.approx(average_precision_score(labels[i, keep], scores[i, keep]), abs=1e-12)


def test_auroc_auprc_known_answers():
    labels = np.array([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=bool)
    scores = np.array([[0.9, 0.8, 0.1, 0.2, 0.3], [0.1, 0.2, 0.5, 0.6, 0.7], [0.1, 0.2, 0.3, 0.4, 0.5]])
    auroc, auprc = metrics.rowwise_auroc_auprc(scores, labels)
    np.testing.assert_allclose(auroc[:2], [1.0, 0.0])
    assert auprc[0] == 1.0
    assert auprc[1] == pytest.approx((1 / 4 + 2 / 5) / 2)
    assert np.isnan(auroc[2]) and np.isnan(auprc[2])  # no positive


def test_rowwise_pearson_known_answers():
    x = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    y = np.array([[2.0, 4.0, 6.0, 8.0], [4.0, 3.0, 2.0, 9.0], [1.0, 2.0, 3.0, 4.0]])
    r = metrics.rowwise_pearson(x, y)
    assert r[0] == pytest.approx(1.0)
    assert r[1] == pytest.approx(np.corrcoef(x[1], y[1])[0, 1])
    assert np.isnan(r[2])  # constant row
    weights = np.array([[True, True, True, False]] * 3)
    assert metrics.rowwise_pearson(x, y, weights)[1] == pytest.approx(-1.0)


def test_entry_mask_is_uniform_stateless_and_hides_only_its_entries():
    mask = metrics.EntryMask(n_features=400, fraction=0.1, seed=3)
    full = mask.block(np.arange(500))
    assert full.mean() == pytest.approx(0.1, abs=0.005)
    np.testing.assert_array_equal(mask.block(np.arange(20, 30), np.arange(100, 140)), full[20:30, 100:140])
    assert (metrics.EntryMask(400, 0.1, seed=4).block(np.arange(500)) != full).any()

    rng = np.random.default_rng(0)
    counts = sparse.random(
        500, 400, density=0.3, format="csr", random_state=1, data_rvs=lambda n: rng.integers(1, 9, n)
    )
    before = counts.copy()
    hidden = mask.hide(counts)
    assert (counts != before).nnz == 0  # input untouched
    dense, hidden_dense = counts.toarray(), hidden.toarray()
    np.testing.assert_array_equal(hidden_dense[~full], dense[~full])
    assert (hidden_dense[full] == 0).all()
    assert (dense[full] > 0).sum() > 0
    with pytest.raises(ValueError, match="features"):
        metrics.EntryMask(n_features=3).hide(counts)
    with pytest.raises(ValueError, match="fraction"):
        metrics.EntryMask(n_features=3, fraction=1.5)


@pytest.fixture
def counts():
    rng = np.random.default_rng(0)
    return sparse.csr_matrix(rng.poisson(rng.gamma(1.0, 1.0, size=(200, 60))).astype(np.float32))


def test_rna_scores_perfect_for_any_per_cell_scale(counts):
    rescaled = counts.toarray() * np.linspace(0.5, 3, counts.shape[0])[:, None]
    for held_out in (None, metrics.EntryMask(counts.shape[1], 0.2)):
        scores = metrics.rna_imputation_scores(counts, rescaled, held_out=held_out, chunk_size=64)
        assert scores["rna_cell_pearson"] == pytest.approx(1.0)
        assert scores["rna_gene_pearson"] == pytest.approx(1.0)
    noisy = metrics.rna_imputation_scores(counts, np.random.default_rng(1).random(counts.shape), prefix="x_")
    assert set(noisy) == {"x_rna_cell_pearson", "x_rna_gene_pearson"}
    assert abs(noisy["x_rna_cell_pearson"]) < 0.2
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.rna_imputation_scores(counts, np.ones((3, 3)))


def test_atac_scores_perfect_reversed_and_on_held_out_entries(counts):
    is_open = (counts.toarray() > 1).astype(np.float32)
    perfect = metrics.atac_imputation_scores(counts > 1, is_open, chunk_size=64)
    assert all(value == pytest.approx(1.0) for value in perfect.values())
    reversed_scores = metrics.atac_imputation_scores(counts > 1, 1 - is_open)
    assert reversed_scores["atac_cell_auroc"] == pytest.approx(0.0)
    assert reversed_scores["atac_peak_auroc"] == pytest.approx(0.0)
    held_out = metrics.EntryMask(counts.shape[1], 0.3, seed=2)
    # wrong only outside the held-out entries: the held-out score is still perfect
    outside = np.where(held_out.block(np.arange(counts.shape[0])), is_open, 1 - is_open)
    assert metrics.atac_imputation_scores(counts > 1, outside, held_out=held_out)["atac_cell_auroc"] == 1.0
    assert metrics.atac_imputation_scores(counts > 1, outside)["atac_cell_auroc"] < 0.5


def test_baselines():
    profile_a, profile_b = np.array([4.0, 0.0, 4.0, 0.0]), np.array([0.0, 2.0, 0.0, 6.0])
    counts = sparse.csr_matrix(np.vstack([profile_a] * 5 + [profile_b] * 5))
    representation = np.repeat([[0.0, 0.0], [10.0, 10.0]], 5, axis=0) + np.arange(10)[:, None] * 0.01
    knn = metrics.knn_imputation(counts, representation, "rna", n_neighbors=3)
    np.testing.assert_allclose(knn[:5], np.tile(profile_a / 8, (5, 1)))
    np.testing.assert_allclose(knn[5:], np.tile(profile_b / 8, (5, 1)))
    knn_atac = metrics.knn_imputation(counts, representation, "atac", n_neighbors=3)
    np.testing.assert_array_equal(knn_atac[0], [1, 0, 1, 0])
    # neighbours from reference cells only: cells 0-4 can only reach the b cells 5-7
    reference = np.r_[np.zeros(5, bool), np.ones(3, bool), np.zeros(2, bool)]
    from_reference = metrics.knn_imputation(counts, representation, "rna", n_neighbors=2, reference=reference)
    np.testing.assert_allclose(from_reference, np.tile(profile_b / 8, (10, 1)))
    with pytest.raises(ValueError, match="reference cells"):
        metrics.knn_imputation(counts, representation, "rna", n_neighbors=3, reference=reference)
    mean = metrics.mean_imputation(counts, "atac")
    np.testing.assert_allclose(mean, np.full((10, 4), 0.5))
    np.testing.assert_allclose(metrics.mean_imputation(counts, "rna")[3], (profile_a / 8 + profile_b / 8) / 2)
    with pytest.raises(ValueError, match="modality"):
        metrics.mean_imputation(counts, "protein")
    # scaled by depth: the cells with 3 open peaks get 1.5 times the mean, those with 1 half of it
    peaks = sparse.csr_matrix(np.array([[1, 1, 1, 0]] * 2 + [[0, 0, 0, 5]] * 2, dtype=np.float32))
    scaled = metrics.mean_imputation(peaks, "atac", by_depth=True)
    np.testing.assert_allclose(scaled[0], 1.5 * np.array([0.5, 0.5, 0.5, 0.5]))
    np.testing.assert_allclose(scaled[3], 0.5 * np.array([0.5, 0.5, 0.5, 0.5]))


def test_clustering_scores_on_separated_groups():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 60)
    latent = rng.normal(size=(180, 5)) * 0.1 + np.repeat(np.eye(3, 5) * 10, 60, axis=0)
    report = metrics.clustering_report(latent, labels)
    assert report["kmeans_ari"] == pytest.approx(1.0)
    assert report["leiden_nmi"] == pytest.approx(1.0)
    assert report["silhouette"] > 0.9
    assert metrics.agreement(labels, np.repeat([2, 0, 1], 60)) == {"ari": 1.0, "nmi": 1.0}
    shuffled = metrics.clustering_report(rng.normal(size=(180, 5)), labels, leiden=False)
    assert shuffled["kmeans_ari"] < 0.1


def test_batch_mixing_separated_vs_mixed():
    rng = np.random.default_rng(0)
    batches = np.repeat(["a", "b", "c"], 100)
    separated = rng.normal(size=(300, 5)) + 20 * np.repeat(np.eye(3, 5), 100, axis=0)
    mixed = rng.normal(size=(300, 5))
    assert metrics.batch_mixing(separated, batches, n_neighbors=10) == 0.0
    assert metrics.batch_mixing(mixed, batches, n_neighbors=10) > 0.85
    # known answer: on a line a-b-a-b the end cells see one cell of each batch (entropy log 2), the middle
    # cells two of the other batch (0); the data set's own entropy is log 2
    line = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert metrics.batch_mixing(line, ["a", "b", "a", "b"], n_neighbors=2) == pytest.approx(0.5)
    assert np.isnan(metrics.batch_mixing(mixed, ["a"] * 300))
    with pytest.raises(ValueError, match="batches has 3"):
        metrics.batch_mixing(mixed, ["a", "b", "c"])


def test_graph_leiden_scores_on_a_given_graph_match_those_on_its_embedding():
    import scanpy as sc
    from anndata import AnnData
    from sklearn.datasets import make_blobs

    from scmvp_scvi.metrics import graph_leiden_scores, leiden_scores

    latent, labels = make_blobs(n_samples=300, centers=3, n_features=5, cluster_std=0.5, random_state=0)
    adata = AnnData(latent.astype(np.float32))
    sc.pp.neighbors(adata, use_rep="X", n_neighbors=15, transformer="sklearn")
    from_graph = graph_leiden_scores(adata.obsp["connectivities"], labels)
    assert from_graph == leiden_scores(latent, labels)
    assert from_graph["leiden_ari"] > 0.99
