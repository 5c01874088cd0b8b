"""Reference imputations that any model should beat: the population mean and kNN smoothing."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import sparse
from sklearn.neighbors import NearestNeighbors


def _profiles(counts, modality: Literal["rna", "atac"]) -> sparse.csr_matrix:
    """Per-cell profiles that are averaged: expression frequencies for RNA, open/closed peaks for ATAC."""
    counts = sparse.csr_matrix(counts, dtype=np.float32)
    if modality == "atac":
        counts.data = (counts.data > 0).astype(np.float32)
        return counts
    if modality != "rna":
        raise ValueError(f"`modality` must be 'rna' or 'atac', got {modality!r}.")
    totals = np.asarray(counts.sum(axis=1)).ravel()
    return sparse.diags(np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)) @ counts


def mean_imputation(counts, modality: Literal["rna", "atac"]) -> np.ndarray:
    """Every cell gets the population-mean profile (expression frequencies or fraction of cells open)."""
    profiles = _profiles(counts, modality)
    mean = np.asarray(profiles.mean(axis=0), dtype=np.float32)
    return np.broadcast_to(mean, profiles.shape)


def knn_imputation(
    counts,
    representation: np.ndarray,
    modality: Literal["rna", "atac"],
    n_neighbors: int = 15,
) -> np.ndarray:
    """Each cell gets the mean profile of its ``n_neighbors`` nearest other cells in ``representation``.

    The cell itself is left out, so its held-out entries cannot leak into its own imputation.
    """
    profiles = _profiles(counts, modality)
    if representation.shape[0] != profiles.shape[0]:
        raise ValueError("`representation` and `counts` must have the same cells.")
    neighbors = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(representation)
    index = neighbors.kneighbors(representation, return_distance=False)[:, 1:]
    n_cells = profiles.shape[0]
    weights = sparse.csr_matrix(
        (
            np.full(index.size, 1.0 / n_neighbors, dtype=np.float32),
            index.ravel(),
            np.arange(0, index.size + 1, n_neighbors),
        ),
        shape=(n_cells, n_cells),
    )
    return (weights @ profiles).toarray()
