"""How well an embedding recovers known cell types (the project's evaluation protocol)."""

from __future__ import annotations

import numpy as np
import scanpy as sc
from anndata import AnnData
from scipy import sparse
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score


def _codes(labels) -> np.ndarray:
    return np.unique(np.asarray(labels).astype(str), return_inverse=True)[1]


def agreement(labels, predicted, prefix: str = "") -> dict[str, float]:
    """ARI and NMI of a clustering ``predicted`` against known ``labels`` (keys ``{prefix}ari``, ``{prefix}nmi``)."""
    truth, predicted = _codes(labels), _codes(predicted)
    return {
        f"{prefix}ari": float(adjusted_rand_score(truth, predicted)),
        f"{prefix}nmi": float(normalized_mutual_info_score(truth, predicted)),
    }


def kmeans_scores(latent: np.ndarray, labels, seed: int = 0) -> dict[str, float]:
    """ARI and NMI of KMeans (k = number of labels, 10 restarts) on ``latent`` against ``labels``."""
    n_clusters = len(np.unique(_codes(labels)))
    predicted = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(latent)
    return agreement(labels, predicted, "kmeans_")


def leiden_scores(
    latent: np.ndarray,
    labels,
    resolutions: np.ndarray | None = None,
    n_neighbors: int = 15,
    seed: int = 0,
) -> dict[str, float]:
    """ARI and NMI of the Leiden clustering (over ``resolutions``, default 0.1..2.0) with the best NMI."""
    adata = AnnData(np.asarray(latent, dtype=np.float32))
    sc.pp.neighbors(adata, use_rep="X", n_neighbors=n_neighbors, transformer="sklearn")
    return _best_leiden(adata, labels, resolutions, seed)


def graph_leiden_scores(
    connectivities: sparse.spmatrix, labels, resolutions: np.ndarray | None = None, seed: int = 0
) -> dict[str, float]:
    """:func:`leiden_scores` on a given cell-cell graph, e.g. muon's weighted nearest neighbours (WNN)."""
    adata = AnnData(np.zeros((connectivities.shape[0], 0), dtype=np.float32))
    return _best_leiden(adata, labels, resolutions, seed, adjacency=sparse.csr_matrix(connectivities))


def _best_leiden(
    adata: AnnData, labels, resolutions: np.ndarray | None, seed: int, adjacency: sparse.csr_matrix | None = None
) -> dict[str, float]:
    """Leiden over ``resolutions`` on ``adjacency`` (default: the neighbour graph of ``adata``), best NMI kept."""
    truth = _codes(labels)
    resolutions = np.round(np.arange(0.1, 2.01, 0.1), 2) if resolutions is None else resolutions
    best = {"leiden_nmi": -1.0}
    for resolution in resolutions:
        sc.tl.leiden(
            adata,
            resolution=float(resolution),
            adjacency=adjacency,
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=seed,
        )
        predicted = adata.obs["leiden"].to_numpy()
        scores = agreement(truth, predicted, "leiden_")
        if scores["leiden_nmi"] > best["leiden_nmi"]:
            best = {
                **scores,
                "leiden_resolution": float(resolution),
                "leiden_n_clusters": len(np.unique(predicted)),
            }
    return best


def silhouette(latent: np.ndarray, labels, sample_size: int | None = 5_000, seed: int = 0) -> float:
    """Cell-type silhouette width rescaled from [-1, 1] to [0, 1] (higher: types better separated)."""
    truth = _codes(labels)
    size = None if sample_size is None or sample_size >= len(truth) else sample_size
    return float((silhouette_score(latent, truth, sample_size=size, random_state=seed) + 1) / 2)


def clustering_report(latent: np.ndarray, labels, seed: int = 0, leiden: bool = True) -> dict[str, float]:
    """All embedding scores of the protocol: KMeans and best-NMI Leiden ARI/NMI, rescaled silhouette."""
    report = kmeans_scores(latent, labels, seed)
    if leiden:
        report.update(leiden_scores(latent, labels, seed=seed))
    report["silhouette"] = silhouette(latent, labels, seed=seed)
    return report
