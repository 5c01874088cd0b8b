"""Initialisation of the Gaussian-mixture prior from clusters of a latent space."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import scanpy as sc
from anndata import AnnData
from sklearn.cluster import KMeans

logger = logging.getLogger(__name__)

# Leiden resolution whose clusters set K; the original's 1.0 splits the large populations into several components
LEIDEN_RESOLUTION = 0.5


def leiden_labels(
    latent: np.ndarray, resolution: float = LEIDEN_RESOLUTION, n_neighbors: int = 15, seed: int = 0
) -> np.ndarray:
    """Leiden clusters of the kNN graph of ``latent`` (scanpy), as integer labels."""
    adata = AnnData(np.asarray(latent, dtype=np.float32))
    # the sklearn transformer avoids a scipy>=1.18 failure of the default above 8,192 cells
    sc.pp.neighbors(adata, use_rep="X", n_neighbors=min(n_neighbors, adata.n_obs - 1), transformer="sklearn")
    sc.tl.leiden(adata, resolution=resolution, flavor="igraph", n_iterations=2, directed=False, random_state=seed)
    return adata.obs["leiden"].astype(int).to_numpy()


def kmeans_labels(latent: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """KMeans clusters of ``latent`` (10 restarts)."""
    return KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(latent)


def cluster_statistics(
    latent: np.ndarray,
    labels: np.ndarray,
    prior_count: float = 1.0,
    posterior_variances: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means, variances and weights of each cluster, for the mixture prior.

    Variances are shrunk towards the overall variance with ``prior_count`` pseudo-cells, so singleton and tiny
    clusters get a finite, positive variance instead of zero. With ``posterior_variances`` (the posterior
    variance of each cell, same shape as ``latent``), each component also takes its cells' mean posterior
    variance: it then matches the mixture of their posteriors, not only the spread of their means.

    Returns
    -------
    means, variances
        Arrays of shape ``(K, n_latent)``.
    weights
        Cluster fractions, shape ``(K,)``.
    """
    clusters = np.unique(labels)
    overall_var = latent.var(0)
    means, variances, counts = [], [], []
    for cluster in clusters:
        members = latent[labels == cluster]
        mean = members.mean(0)
        scatter = ((members - mean) ** 2).sum(0)
        means.append(mean)
        variance = (scatter + prior_count * overall_var) / (len(members) + prior_count)
        if posterior_variances is not None:
            variance = variance + posterior_variances[labels == cluster].mean(0)
        variances.append(variance)
        counts.append(len(members))
    counts = np.asarray(counts, dtype=np.float64)
    return np.stack(means), np.stack(variances), counts / counts.sum()


def subsampled_labels(
    latent: np.ndarray,
    cluster: Callable[[np.ndarray], np.ndarray],
    max_cells: int | None,
    seed: int = 0,
) -> np.ndarray:
    """Cluster labels of all cells, found on at most ``max_cells`` of them.

    Graph clustering grows faster than linearly with the number of cells, so above ``max_cells`` the clusters
    are found on a random subsample and every other cell joins the cluster under which it is most likely:
    the same rule (Gaussian log-density with diagonal variances plus the log cluster fraction) that the
    mixture prior applies to a cell's latent. With ``max_cells=None`` or fewer cells, all cells are clustered.
    """
    n_cells = len(latent)
    if max_cells is None or n_cells <= max_cells:
        return np.asarray(cluster(latent))
    chosen = np.sort(np.random.default_rng(seed).choice(n_cells, size=max_cells, replace=False))
    _, sub_labels = np.unique(np.asarray(cluster(latent[chosen])), return_inverse=True)
    means, variances, weights = cluster_statistics(latent[chosen], sub_labels)
    labels = np.empty(n_cells, dtype=np.int64)
    labels[chosen] = sub_labels
    rest = np.setdiff1d(np.arange(n_cells), chosen)
    precision = 1 / variances
    # log w_k + log N(z; m_k, v_k), expanded so that only a cells x components block is ever held
    constant = np.log(weights) - 0.5 * (np.log(2 * np.pi * variances).sum(1) + (means**2 * precision).sum(1))
    for start in range(0, len(rest), 65_536):
        block = latent[rest[start : start + 65_536]].astype(np.float64)
        log_density = constant - 0.5 * (block**2 @ precision.T) + block @ (means * precision).T
        labels[rest[start : start + 65_536]] = log_density.argmax(1)
    logger.info(
        "Mixture clusters found on %d of %d cells; the others joined their most likely cluster.", max_cells, n_cells
    )
    return labels
