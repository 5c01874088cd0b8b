"""How well an embedding mixes cells of different batches."""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors


def batch_mixing(latent: np.ndarray, batches, n_neighbors: int = 30) -> float:
    """Mean batch entropy of each cell's neighbourhood, relative to the entropy of all cells' batches.

    For every cell, the batches of its ``n_neighbors`` nearest other cells give an entropy; the mean over cells
    is divided by the entropy of the batch proportions of the whole data set. 1 means neighbourhoods are as
    mixed as the data allow, 0 means every cell only has neighbours from its own batch. Read it beside a
    cell-type score: an embedding that mixes cell types as well mixes batches trivially.

    Parameters
    ----------
    latent
        Embedding, cells x dimensions.
    batches
        Batch of each cell.
    n_neighbors
        Neighbourhood size (Euclidean distance in ``latent``).

    Returns
    -------
    The relative neighbourhood entropy in [0, 1] (``nan`` with a single batch).
    """
    latent = np.asarray(latent, dtype=np.float64)
    codes = np.unique(np.asarray(batches).astype(str), return_inverse=True)[1]
    if len(codes) != len(latent):
        raise ValueError(f"latent has {len(latent)} cells but batches has {len(codes)}.")
    if not 1 <= n_neighbors < len(latent):
        raise ValueError(f"n_neighbors must be between 1 and the number of cells - 1, got {n_neighbors}.")
    n_batches = codes.max() + 1
    overall = _entropy(np.bincount(codes, minlength=n_batches)[None, :])[0]
    if n_batches == 1 or overall == 0:
        return float("nan")
    neighbours = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(latent).kneighbors(latent, return_distance=False)
    neighbour_batches = codes[neighbours[:, 1:]]  # the first neighbour of a cell is itself
    counts = np.zeros((len(latent), n_batches))
    np.add.at(counts, (np.repeat(np.arange(len(latent)), n_neighbors), neighbour_batches.ravel()), 1)
    return float(np.mean(_entropy(counts)) / overall)


def _entropy(counts: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of counts."""
    p = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
