"""How well imputed values match observed counts, per cell and per feature, on all or on held-out entries.

RNA is compared on the log1p(CP10k) scale: observed counts and imputed values are both divided by their cell's
total, so any imputation that is proportional to expected counts (normalised expression, posterior means) scores
the same. ATAC is compared as a ranking: imputed accessibility against the binarised observed peaks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import sparse

from ._masking import EntryMask


def _blocks(n: int, size: int) -> Iterator[np.ndarray]:
    for start in range(0, n, size):
        yield np.arange(start, min(start + size, n))


def _dense(matrix, rows: np.ndarray | None = None, cols: np.ndarray | None = None) -> np.ndarray:
    """Return a dense float64 block of an array, sparse matrix or DataFrame."""
    values = matrix.to_numpy() if hasattr(matrix, "to_numpy") else matrix
    block = values[rows] if rows is not None else values
    block = block[:, cols] if cols is not None else block
    block = block.toarray() if sparse.issparse(block) else np.asarray(block)
    return block.astype(np.float64, copy=False)


def rowwise_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation of each row of ``x`` with the same row of ``y``, over the entries where ``weights``.

    Rows with fewer than three selected entries or no variance get NaN.
    """
    w = np.ones_like(x, dtype=bool) if weights is None else np.asarray(weights, dtype=bool)
    n = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xc = np.where(w, x - (x * w).sum(axis=1, keepdims=True) / n[:, None], 0.0)
        yc = np.where(w, y - (y * w).sum(axis=1, keepdims=True) / n[:, None], 0.0)
        x_norm, y_norm = np.sqrt((xc**2).sum(axis=1)), np.sqrt((yc**2).sum(axis=1))
        r = (xc * yc).sum(axis=1) / (x_norm * y_norm)
    # rounding leaves a constant row (a population-mean imputation) with a tiny spread: treat it as constant
    constant = (x_norm <= 1e-9 * np.sqrt((x**2 * w).sum(axis=1))) | (y_norm <= 1e-9 * np.sqrt((y**2 * w).sum(axis=1)))
    r[(n < 3) | constant | ~np.isfinite(r)] = np.nan
    return r


def _auroc_auprc(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """AUROC and average precision of one vector of scores, by counting entries above each positive's score."""
    positives = np.sort(scores[labels])
    n_pos, n_all = len(positives), len(scores)
    n_neg = n_all - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.nan, np.nan
    # For the k-th positive: how many entries (and positives) score >= it and > it; ties count half for AUROC
    # and share one threshold for average precision, as in scikit-learn.
    first = np.searchsorted(positives, positives, side="left")
    after = np.searchsorted(positives, positives, side="right")
    n_below_or_equal = np.bincount(np.searchsorted(positives, scores, side="right"), minlength=n_pos + 1)
    n_below = np.bincount(np.searchsorted(positives, scores, side="left"), minlength=n_pos + 1)
    at_least = n_all - np.concatenate([[0], np.cumsum(n_below_or_equal)])[first + 1]
    greater = n_all - np.concatenate([[0], np.cumsum(n_below)])[after]
    negatives_at_least = at_least - (n_pos - first)
    negatives_greater = greater - (n_pos - after)
    correct_pairs = n_neg - negatives_at_least + 0.5 * (negatives_at_least - negatives_greater)
    auroc = correct_pairs.sum() / (n_pos * n_neg)
    auprc = ((n_pos - first) / at_least).sum() / n_pos
    return float(auroc), float(auprc)


def rowwise_auroc_auprc(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Area under the ROC and the precision-recall curve of each row's ``scores`` for its binary ``labels``.

    Only entries where ``weights`` is true count. Ties are handled as in scikit-learn (AUROC counts a tie as half
    a correct pair; average precision steps once per distinct score). Rows without a positive or without a
    negative get NaN.
    """
    labels = np.asarray(labels, dtype=bool)
    results = np.full((2, scores.shape[0]), np.nan)
    for i in range(scores.shape[0]):
        row_scores, row_labels = scores[i], labels[i]
        if weights is not None:
            keep = np.asarray(weights[i], dtype=bool)
            row_scores, row_labels = row_scores[keep], row_labels[keep]
        results[:, i] = _auroc_auprc(row_scores, row_labels)
    return results[0], results[1]


def _log_cp10k(block: np.ndarray, totals: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log1p(np.nan_to_num(block / totals[:, None] * 1e4))


def _totals(matrix, n_rows: int, chunk_size: int) -> np.ndarray:
    if sparse.issparse(matrix):
        return np.asarray(matrix.sum(axis=1)).ravel().astype(np.float64)
    return np.concatenate([_dense(matrix, rows).sum(axis=1) for rows in _blocks(n_rows, chunk_size)])


def _check_shapes(observed, imputed, held_out: EntryMask | None) -> None:
    if tuple(observed.shape) != tuple(imputed.shape):
        raise ValueError(f"Observed {tuple(observed.shape)} and imputed {tuple(imputed.shape)} shapes differ.")
    if held_out is not None and held_out.n_features != observed.shape[1]:
        raise ValueError(f"The held-out mask covers {held_out.n_features} features, the data {observed.shape[1]}.")


def _summary(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def rna_imputation_scores(
    observed,
    imputed,
    held_out: EntryMask | None = None,
    prefix: str = "",
    chunk_size: int = 512,
) -> dict[str, float]:
    """Pearson correlation between imputed and observed expression on the log1p(CP10k) scale.

    Parameters
    ----------
    observed
        Raw counts, cells x genes (sparse or dense), as observed before any entry was held out.
    imputed
        Imputed expression of the same shape, on any per-cell scale (expected counts or normalised expression).
    held_out
        Score only these entries (the ones hidden from the model during training); all entries by default.
    prefix
        Prepended to every key of the result.
    chunk_size
        Rows (or columns) scored at once; bounds the memory used.

    Returns
    -------
    Mean over cells of the per-cell Pearson correlation (``rna_cell_pearson``) and mean over genes of the per-gene
    Pearson correlation across cells (``rna_gene_pearson``); cells or genes without variance are skipped.
    """
    _check_shapes(observed, imputed, held_out)
    n_cells, n_genes = observed.shape
    observed = sparse.csr_matrix(observed) if sparse.issparse(observed) else np.asarray(observed)
    obs_totals, imp_totals = _totals(observed, n_cells, chunk_size), _totals(imputed, n_cells, chunk_size)
    per_cell = []
    for rows in _blocks(n_cells, chunk_size):
        mask = None if held_out is None else held_out.block(rows)
        x = _log_cp10k(_dense(observed, rows), obs_totals[rows])
        y = _log_cp10k(_dense(imputed, rows), imp_totals[rows])
        per_cell.append(rowwise_pearson(x, y, mask))
    by_gene = sparse.csc_matrix(observed) if sparse.issparse(observed) else observed
    per_gene = []
    all_cells = np.arange(n_cells)
    for cols in _blocks(n_genes, chunk_size):
        mask = None if held_out is None else held_out.block(all_cells, cols).T
        x = _log_cp10k(_dense(by_gene, cols=cols), obs_totals).T
        y = _log_cp10k(_dense(imputed, cols=cols), imp_totals).T
        per_gene.append(rowwise_pearson(x, y, mask))
    return {
        f"{prefix}rna_cell_pearson": _summary(np.concatenate(per_cell)),
        f"{prefix}rna_gene_pearson": _summary(np.concatenate(per_gene)),
    }


def atac_imputation_scores(
    observed,
    imputed,
    held_out: EntryMask | None = None,
    prefix: str = "",
    chunk_size: int = 512,
) -> dict[str, float]:
    """AUROC and AUPRC of imputed accessibility against the binarised observed peaks.

    Parameters
    ----------
    observed
        Raw ATAC counts or a binary matrix, cells x peaks, as observed before any entry was held out.
    imputed
        Imputed accessibility of the same shape (probabilities, expected counts or any score).
    held_out
        Score only these entries; all entries by default.
    prefix
        Prepended to every key of the result.
    chunk_size
        Rows (or columns) scored at once; bounds the memory used.

    Returns
    -------
    Means over cells (``atac_cell_auroc``, ``atac_cell_auprc``) and over peaks across cells (``atac_peak_auroc``,
    ``atac_peak_auprc``); cells or peaks without both an open and a closed entry are skipped.
    """
    _check_shapes(observed, imputed, held_out)
    n_cells, n_peaks = observed.shape
    observed = sparse.csr_matrix(observed) if sparse.issparse(observed) else np.asarray(observed)
    results: dict[str, list[np.ndarray]] = {"cell_auroc": [], "cell_auprc": [], "peak_auroc": [], "peak_auprc": []}
    for rows in _blocks(n_cells, chunk_size):
        mask = None if held_out is None else held_out.block(rows)
        auroc, auprc = rowwise_auroc_auprc(_dense(imputed, rows), _dense(observed, rows) > 0, mask)
        results["cell_auroc"].append(auroc)
        results["cell_auprc"].append(auprc)
    by_peak = sparse.csc_matrix(observed) if sparse.issparse(observed) else observed
    all_cells = np.arange(n_cells)
    for cols in _blocks(n_peaks, chunk_size):
        mask = None if held_out is None else held_out.block(all_cells, cols).T
        auroc, auprc = rowwise_auroc_auprc(_dense(imputed, cols=cols).T, _dense(by_peak, cols=cols).T > 0, mask)
        results["peak_auroc"].append(auroc)
        results["peak_auprc"].append(auprc)
    return {f"{prefix}atac_{key}": _summary(np.concatenate(values)) for key, values in results.items()}
