"""Held-out entries for scoring imputation on values a model did not see."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _uniform(flat_index: np.ndarray, seed: int) -> np.ndarray:
    """Stateless uniform numbers in [0, 1) from entry indices (splitmix64), identical for any block order."""
    with np.errstate(over="ignore"):
        z = np.asarray(flat_index, dtype=np.uint64) + np.uint64(seed + 1) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class EntryMask:
    """A random fraction of the entries of a cells x features matrix, held out from training.

    Whether entry ``(i, j)`` is held out is a pure function of ``(i, j, n_features, seed)``, so any block of
    the mask can be rebuilt without storing it: zeros and non-zeros are selected with the same probability.

    Parameters
    ----------
    n_features
        Number of columns of the matrix the mask applies to.
    fraction
        Expected fraction of entries held out.
    seed
        Seed of the selection.
    """

    n_features: int
    fraction: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.fraction < 1:
            raise ValueError(f"`fraction` must lie strictly between 0 and 1, got {self.fraction}.")

    def block(self, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask of the held-out entries in ``rows`` x ``cols`` (all columns by default)."""
        rows = np.asarray(rows, dtype=np.uint64)
        cols = np.arange(self.n_features, dtype=np.uint64) if cols is None else np.asarray(cols, dtype=np.uint64)
        flat = rows[:, None] * np.uint64(self.n_features) + cols[None, :]
        return _uniform(flat, self.seed) < self.fraction

    def hide(self, counts) -> sparse.csr_matrix:
        """Copy of ``counts`` (CSR) with the held-out non-zero entries set to zero; ``counts`` is not modified."""
        counts = sparse.csr_matrix(counts, copy=True)
        if counts.shape[1] != self.n_features:
            raise ValueError(f"The mask covers {self.n_features} features but the matrix has {counts.shape[1]}.")
        rows = np.repeat(np.arange(counts.shape[0], dtype=np.uint64), np.diff(counts.indptr))
        flat = rows * np.uint64(self.n_features) + counts.indices.astype(np.uint64)
        counts.data[_uniform(flat, self.seed) < self.fraction] = 0
        counts.eliminate_zeros()
        return counts
