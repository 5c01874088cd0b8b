"""Which modalities each cell was measured in: paired, RNA-only and ATAC-only cells in one model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

# registry key of the per-cell modality codes, the ``.obs`` column that holds them and the codes' meanings
OBSERVED_MODALITIES_KEY = "observed_modalities"
OBS_COLUMN = "_scmvp_observed_modalities"
KINDS = ("paired", "rna_only", "atac_only")
# values of ``setup_mudata(missing_modality=...)``
MISSING_MODALITY_OPTIONS = (None, "zero_rows")


def _row_totals(matrix) -> np.ndarray:
    return np.asarray(matrix.sum(axis=1)).ravel()


def observed_modalities(rna, atac, obs_names: pd.Index, where: dict[str, str]) -> pd.Categorical:
    """Classify cells as paired, RNA-only or ATAC-only from their all-zero rows.

    Parameters
    ----------
    rna, atac
        Count matrices (cells x features) of the two modalities, rows aligned.
    obs_names
        Cell names, for the error messages.
    where
        Where each matrix lives in the MuData (e.g. ``{"rna": "mdata['rna'].X", ...}``), for the messages.

    Raises
    ------
    ValueError
        If a cell has no counts in either modality, or no cell has both (the joint encoder needs paired cells).
    """
    has_rna, has_atac = _row_totals(rna) > 0, _row_totals(atac) > 0
    if (neither := ~has_rna & ~has_atac).any():
        raise ValueError(
            f"{int(neither.sum())} cells have no counts in {where['rna']} nor in {where['atac']} (e.g. "
            f"{list(obs_names[neither][:3])}): they hold nothing to learn from. Remove them, e.g. "
            "mdata = mdata[mdata.obs_names.difference(empty)].copy()."
        )
    if not (has_rna & has_atac).any():
        raise ValueError(
            "No cell has counts in both modalities. SCMVP learns how RNA and ATAC relate from paired cells, so a "
            "mosaic needs some (a multiome sample); train on each modality separately otherwise."
        )
    codes = np.where(has_rna & has_atac, 0, np.where(has_rna, 1, 2))
    return pd.Categorical.from_codes(codes, categories=list(KINDS))


def modality_counts(codes: pd.Categorical | pd.Series) -> dict[str, int]:
    """Count the paired, RNA-only and ATAC-only cells."""
    counts = pd.Series(codes).value_counts()
    return {kind: int(counts.get(kind, 0)) for kind in KINDS}


def describe_counts(counts: dict[str, int]) -> str:
    """``"120 paired, 90 rna-only, 90 atac-only"``."""
    return ", ".join(f"{n:,} {kind.replace('_', '-')}" for kind, n in counts.items())


def masks(codes: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Boolean ``(has_rna, has_atac)`` columns of shape ``(n, 1)`` from a minibatch's codes (``None``: paired)."""
    if codes is None:
        return None, None
    codes = codes.reshape(-1, 1)
    return codes != KINDS.index("atac_only"), codes != KINDS.index("rna_only")
