"""Model-based differential expression and accessibility on scvi-tools' differential-computation framework.

Groups of cells come from an ``obs`` column (one group against the rest, or against another group) or from two
explicit sets of cells; :class:`scvi.model.base.DifferentialComputation` turns posterior samples of each group's
normalised expression (or probability of an open peak) into Bayes factors, posterior probabilities of
differential activity and effect sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import sparse
from scvi.model.base import DifferentialComputation

# a cell selection: boolean mask, integer positions, or a pandas query on obs
Selection = Sequence[bool] | Sequence[int] | np.ndarray | str

MODES = ("vanilla", "change")


def _mask(selection: Selection, obs: pd.DataFrame, argument: str) -> np.ndarray:
    """Boolean mask over the cells of ``obs`` for a mask, a list of positions or a query string."""
    if isinstance(selection, str):
        try:
            chosen = obs.index.isin(obs.query(selection).index)
        except Exception as error:  # pandas raises many kinds for a bad query
            raise ValueError(f"{argument}={selection!r} is not a valid query of the obs columns: {error}") from error
        return np.asarray(chosen)
    values = np.asarray(selection).ravel()
    if values.dtype == bool:
        if len(values) != len(obs):
            raise ValueError(f"{argument} is a boolean mask of length {len(values)}; the data have {len(obs)} cells.")
        return values
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{argument} must be a boolean mask, integer cell positions or a query string.")
    if len(values) and (values.min() < -len(obs) or values.max() >= len(obs)):
        raise ValueError(f"{argument} has cell positions outside 0..{len(obs) - 1}.")
    mask = np.zeros(len(obs), dtype=bool)
    mask[values] = True
    return mask


def comparisons(
    obs: pd.DataFrame,
    groupby: str | None,
    group1: str | Sequence[str] | None,
    group2: str | None,
    idx1: Selection | None,
    idx2: Selection | None,
) -> list[tuple[str | None, str | None, np.ndarray, np.ndarray]]:
    """List the pairs of cell sets to compare: ``(name1, name2, mask1, mask2)``, names ``None`` for cell sets.

    Raises a ``ValueError`` that says what to pass when the groups are missing, unknown or empty.
    """
    if idx1 is not None:
        mask1 = _mask(idx1, obs, "idx1")
        mask2 = ~mask1 if idx2 is None else _mask(idx2, obs, "idx2")
        if not mask1.any() or not mask2.any():
            raise ValueError("idx1 and idx2 must each select at least one cell.")
        return [(None, None, mask1, mask2)]
    if groupby is None:
        raise ValueError("Say which cells to compare: groupby (an obs column), or idx1 (and idx2) as cell sets.")
    if groupby not in obs.columns:
        raise ValueError(f"groupby={groupby!r} is not an obs column; available: {list(obs.columns)}.")
    labels = obs[groupby].astype(str).to_numpy()
    present = list(pd.unique(labels))
    if group1 is None:
        group1 = sorted(present)
        if len(group1) < 2:
            raise ValueError(f"obs[{groupby!r}] has a single group; differential testing needs two.")
    elif isinstance(group1, str):
        group1 = [group1]
    unknown = [g for g in [*group1, *([] if group2 is None else [group2])] if str(g) not in present]
    if unknown:
        raise ValueError(f"Groups {unknown} are not in obs[{groupby!r}]; it has {sorted(present)}.")
    pairs = []
    for name in group1:
        mask1 = labels == str(name)
        mask2 = ~mask1 if group2 is None else labels == str(group2)
        pairs.append((str(name), "rest" if group2 is None else str(group2), mask1, mask2))
    return pairs


def fdr_flags(probability: pd.Series, fdr: float) -> pd.Series:
    """Flag the largest set of features, taken by decreasing probability, whose posterior expected FDR is <= fdr."""
    if not 0 < fdr < 1:
        raise ValueError(f"fdr_target must be between 0 and 1, got {fdr}.")
    ordered = probability.sort_values(ascending=False)
    expected_fdr = np.cumsum(1.0 - ordered.to_numpy()) / np.arange(1, len(ordered) + 1)
    flags = pd.Series(False, index=ordered.index)
    flags.iloc[: int((expected_fdr <= fdr).sum())] = True
    return flags.loc[probability.index]


def _group_means(counts, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean count and fraction of cells with a non-zero count, per feature, over the cells of ``mask``."""
    block = counts[mask]
    if sparse.issparse(block):
        mean = np.asarray(block.mean(axis=0)).ravel()
        nonzero = np.asarray((block > 0).mean(axis=0)).ravel()
    else:
        block = np.asarray(block)
        mean, nonzero = block.mean(axis=0), (block > 0).mean(axis=0)
    return mean, nonzero


def group_statistics(counts, modality: str) -> Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]:
    """Observed per-feature statistics of two groups of cells, as a function of their masks.

    RNA: mean counts, fraction of cells expressing and mean counts per 10,000 (``raw_mean1``,
    ``non_zeros_proportion1``, ``raw_normalized_mean1``, ... ). ATAC: fraction of cells with the peak open
    (``emp_prob1``, ``emp_prob2``) and its difference (``emp_effect``). Depth normalisation is done once, not per
    comparison.
    """
    if modality == "atac":

        def atac(mask1: np.ndarray, mask2: np.ndarray) -> dict[str, np.ndarray]:
            stats = {f"emp_prob{k}": _group_means(counts, mask)[1] for k, mask in ((1, mask1), (2, mask2))}
            stats["emp_effect"] = stats["emp_prob1"] - stats["emp_prob2"]
            return stats

        return atac
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scale = 1e4 / np.maximum(totals, 1.0)
    normalized = sparse.diags(scale) @ counts if sparse.issparse(counts) else counts * scale[:, None]

    def rna(mask1: np.ndarray, mask2: np.ndarray) -> dict[str, np.ndarray]:
        stats = {}
        for k, mask in ((1, mask1), (2, mask2)):
            stats[f"raw_mean{k}"], stats[f"non_zeros_proportion{k}"] = _group_means(counts, mask)
            stats[f"raw_normalized_mean{k}"] = _group_means(normalized, mask)[0]
        return stats

    return rna


def differential_test(
    adata_manager,
    model_fn: Callable,
    representation_fn: Callable,
    pairs: list[tuple[str | None, str | None, np.ndarray, np.ndarray]],
    feature_names: pd.Index,
    statistics: Callable | None,
    mode: str,
    fdr_target: float,
    probability_key: str,
    rename: dict[str, str],
    **bayes_kwargs,
) -> pd.DataFrame:
    """Run :meth:`~scvi.model.base.DifferentialComputation.get_bayes_factors` for every pair of cell sets.

    Returns one row per feature and comparison, sorted within a comparison by ``probability_key`` (change mode)
    or the Bayes factor (vanilla mode), with the FDR flag and the comparison's names.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    computation = DifferentialComputation(model_fn, representation_fn, adata_manager)
    frames = []
    for name1, name2, mask1, mask2 in pairs:
        info = computation.get_bayes_factors(mask1, mask2, mode=mode, **bayes_kwargs)
        if statistics is not None:
            info = {**info, **statistics(mask1, mask2)}
        frame = pd.DataFrame(info, index=feature_names).rename(columns=rename)
        if mode == "change":
            frame = frame.sort_values(probability_key, ascending=False)
            frame[f"is_{probability_key.removeprefix('proba_')}_fdr_{fdr_target}"] = fdr_flags(
                frame[probability_key], fdr_target
            )
        else:
            frame = frame.sort_values("bayes_factor", ascending=False)
        if name1 is not None:
            frame["comparison"] = f"{name1} vs {name2}"
            frame["group1"], frame["group2"] = name1, name2
        frames.append(frame)
    return pd.concat(frames)
