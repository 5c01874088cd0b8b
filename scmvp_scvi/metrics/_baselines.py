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


def mean_imputation(counts, modality: Literal["rna", "atac"], by_depth: bool = False) -> np.ndarray:
    """Every cell gets the population-mean profile (expression frequencies or fraction of cells open).

    With ``by_depth``, each cell's copy is scaled by its depth relative to the mean cell (its total counts for
    RNA, its number of open peaks for ATAC): the best a model can do from depth alone, which already ranks a
    peak's open cells above its closed ones more often than chance.
    """
    profiles = _profiles(counts, modality)
    mean = np.asarray(profiles.mean(axis=0), dtype=np.float32)
    if not by_depth:
        return np.broadcast_to(mean, profiles.shape)
    source = profiles if modality == "atac" else sparse.csr_matrix(counts)
    depth = np.asarray(source.sum(axis=1), dtype=np.float32).ravel()
    return np.outer(depth / depth.mean(), mean).astype(np.float32)


def knn_imputation(
    counts,
    representation: np.ndarray,
    modality: Literal["rna", "atac"],
    n_neighbors: int = 15,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """Each cell gets the mean profile of its ``n_neighbors`` nearest other cells in ``representation``.

    The cell itself is left out, so its held-out entries cannot leak into its own imputation. With
    ``reference`` (a boolean mask of cells), the neighbours are drawn from those cells only: on a mosaic, the
    paired cells, whose profile in the missing modality is known.
    """
    profiles = _profiles(counts, modality)
    n_cells = profiles.shape[0]
    if representation.shape[0] != n_cells:
        raise ValueError("`representation` and `counts` must have the same cells.")
    candidates = np.arange(n_cells) if reference is None else np.flatnonzero(np.asarray(reference, dtype=bool))
    if len(candidates) <= n_neighbors:
        raise ValueError(f"Need more than n_neighbors={n_neighbors} reference cells, got {len(candidates)}.")
    neighbors = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(representation[candidates])
    found = candidates[neighbors.kneighbors(representation, return_distance=False)]
    # drop the cell itself where it is among its neighbours, otherwise the farthest of the n_neighbors + 1
    is_self = found == np.arange(n_cells)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), n_neighbors)
    keep = np.ones_like(found, dtype=bool)
    keep[np.arange(n_cells), drop] = False
    index = found[keep].reshape(n_cells, n_neighbors)
    weights = sparse.csr_matrix(
        (
            np.full(index.size, 1.0 / n_neighbors, dtype=np.float32),
            index.ravel(),
            np.arange(0, index.size + 1, n_neighbors),
        ),
        shape=(n_cells, n_cells),
    )
    return (weights @ profiles).toarray()
