"""Cell and feature filters of the scMVP protocols, on a paired MuData."""

from __future__ import annotations

import logging

import muon as mu
import numpy as np
from anndata import AnnData
from mudata import MuData

logger = logging.getLogger("scmvp_scvi")

#: Filters of the scMVP paper per protocol: cells need ``min_genes`` detected genes and ``min_peaks`` open peaks,
#: features must be seen in ``min_cells_per_*`` cells, and Paired-seq peaks open in more than 336 cells go.
PRESETS: dict[str, dict[str, int | None]] = {
    "sci-car": {
        "min_genes": 200,
        "min_peaks": 200,
        "min_cells_per_gene": 10,
        "min_cells_per_peak": 10,
        "max_cells_per_peak": None,
    },
    "snare-seq": {
        "min_genes": 200,
        "min_peaks": 200,
        "min_cells_per_gene": 10,
        "min_cells_per_peak": 10,
        "max_cells_per_peak": None,
    },
    "paired-seq": {
        "min_genes": 200,
        "min_peaks": 200,
        "min_cells_per_gene": 10,
        "min_cells_per_peak": 10,
        "max_cells_per_peak": 336,
    },
}


def _modality(mdata: MuData, name: str, argument: str) -> AnnData:
    if not isinstance(mdata, MuData):
        raise TypeError(f"Expected a MuData with RNA and ATAC modalities, got {type(mdata).__name__}.")
    if name not in mdata.mod:
        raise ValueError(
            f"Modality {name!r} not found; the MuData has {list(mdata.mod)}. Pass its name as `{argument}`."
        )
    return mdata.mod[name]


def detected_per_cell(counts) -> np.ndarray:
    """Count the features with a non-zero value in each cell (row) of a dense or sparse matrix."""
    return np.asarray((counts > 0).sum(axis=1)).ravel()


def cells_per_feature(counts) -> np.ndarray:
    """Count the cells in which each feature (column) of a dense or sparse matrix has a non-zero value."""
    return np.asarray((counts > 0).sum(axis=0)).ravel()


def check_inplace_copy(inplace: bool, copy: bool) -> None:
    """Raise on the contradictory ``inplace=False, copy=True`` (scanpy's convention for the two)."""
    if copy and not inplace:
        raise ValueError(
            "inplace=False returns the result and changes nothing; copy=True returns a changed copy. Pass one of them."
        )


def _kept(before: MuData, after: MuData, rna: str, atac: str) -> dict[str, np.ndarray]:
    """Return which cells and features of ``before`` are still in ``after``."""
    return {
        "cells": before.obs_names.isin(after.obs_names),
        "genes": before.mod[rna].var_names.isin(after.mod[rna].var_names),
        "peaks": before.mod[atac].var_names.isin(after.mod[atac].var_names),
    }


def _filter_var(adata: AnnData, keep: np.ndarray, what: str) -> None:
    removed = int((~keep).sum())
    logger.info("Removed %d of %d %s.", removed, adata.n_vars, what)
    if removed:
        mu.pp.filter_var(adata, adata.var_names[keep])


def filter_paired(
    mdata: MuData,
    preset: str | None = None,
    *,
    min_genes: int | None = None,
    min_peaks: int | None = None,
    min_cells_per_gene: int | None = None,
    min_cells_per_peak: int | None = None,
    max_cells_per_peak: int | None = None,
    rna: str = "rna",
    atac: str = "atac",
    inplace: bool = True,
    copy: bool = False,
) -> MuData | dict[str, np.ndarray] | None:
    """Keep co-assayed cells and filter cells and features as the scMVP paper did for each protocol.

    Steps, in order: keep only cells present in both modalities; remove cells with fewer than ``min_genes``
    detected genes or fewer than ``min_peaks`` open peaks; remove genes detected in fewer than
    ``min_cells_per_gene`` cells and peaks open in fewer than ``min_cells_per_peak`` or more than
    ``max_cells_per_peak`` cells (counted on the cells kept). Each step logs what it removed.

    The presets were made for the complete matrices released with each protocol. On data already reduced to a
    subset of genes or peaks, cells detect fewer features: check the logged counts, and lower ``min_genes`` or
    ``min_peaks`` rather than lose most cells.

    Parameters
    ----------
    mdata
        Paired data with an RNA and an ATAC modality holding counts in ``.X``.
    preset
        ``"sci-car"``, ``"snare-seq"`` or ``"paired-seq"`` (see :data:`PRESETS`); explicit arguments override it.
    min_genes, min_peaks, min_cells_per_gene, min_cells_per_peak, max_cells_per_peak
        Thresholds; ``None`` skips that filter.
    rna, atac
        Names of the modalities.
    inplace
        Filter ``mdata``; with ``False``, return what would be kept and change nothing.
    copy
        Filter a copy of ``mdata`` and return it; ``mdata`` is left unchanged.

    Returns
    -------
    ``None``; with ``inplace=False`` a dict of boolean masks, ``"cells"`` over ``mdata.obs_names``, ``"genes"``
    and ``"peaks"`` over the features of each modality (``True``: kept); with ``copy=True`` the filtered copy.
    """
    settings = {
        "min_genes": min_genes,
        "min_peaks": min_peaks,
        "min_cells_per_gene": min_cells_per_gene,
        "min_cells_per_peak": min_cells_per_peak,
        "max_cells_per_peak": max_cells_per_peak,
    }
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
        settings = {key: PRESETS[preset][key] if value is None else value for key, value in settings.items()}
    _modality(mdata, rna, "rna")
    _modality(mdata, atac, "atac")
    check_inplace_copy(inplace, copy)
    original = mdata
    if copy or not inplace:
        mdata = mdata.copy()

    paired = mdata.mod[rna].obs_names.intersection(mdata.mod[atac].obs_names, sort=False)
    dropped = mdata.n_obs - len(paired)
    logger.info("Removed %d of %d cells not assayed in both %r and %r.", dropped, mdata.n_obs, rna, atac)
    if dropped or mdata.mod[rna].n_obs != len(paired) or mdata.mod[atac].n_obs != len(paired):
        mu.pp.intersect_obs(mdata)

    keep = np.ones(mdata.n_obs, dtype=bool)
    for modality, minimum in ((rna, settings["min_genes"]), (atac, settings["min_peaks"])):
        if minimum is not None:
            counts = detected_per_cell(mdata.mod[modality].X)
            keep &= mdata.obs_names.isin(mdata.mod[modality].obs_names[counts >= minimum])
    if settings["min_genes"] is not None or settings["min_peaks"] is not None:
        logger.info(
            "Removed %d of %d cells with fewer than %s detected genes or %s open peaks.",
            int((~keep).sum()),
            mdata.n_obs,
            settings["min_genes"] or 0,
            settings["min_peaks"] or 0,
        )
    if not keep.all():
        mu.pp.filter_obs(mdata, mdata.obs_names[keep])

    if settings["min_cells_per_gene"] is not None:
        genes = mdata.mod[rna]
        _filter_var(
            genes,
            cells_per_feature(genes.X) >= settings["min_cells_per_gene"],
            f"genes detected in fewer than {settings['min_cells_per_gene']} cells",
        )
    peaks = mdata.mod[atac]
    n_cells = cells_per_feature(peaks.X)
    low, high = settings["min_cells_per_peak"], settings["max_cells_per_peak"]
    if low is not None or high is not None:
        keep_peaks = (n_cells >= (low or 0)) & (n_cells <= (high if high is not None else np.inf))
        bounds = [f"fewer than {low}" if low is not None else "", f"more than {high}" if high is not None else ""]
        _filter_var(peaks, keep_peaks, f"peaks open in {' or '.join(b for b in bounds if b)} cells")
    mdata.update()
    if not inplace:
        return _kept(original, mdata, rna, atac)
    return mdata if copy else None


def filter_peak_prevalence(
    mdata: MuData,
    min_fraction: float = 0.001,
    max_fraction: float = 0.1,
    atac: str = "atac",
    inplace: bool = True,
    copy: bool = False,
) -> MuData | np.ndarray | None:
    """Keep peaks open in at least ``min_fraction`` and at most ``max_fraction`` of the cells.

    The reference implementation's peak filter (0.1% to 10% of cells): rare peaks carry little signal and
    ubiquitous peaks do not separate cell types.

    Parameters
    ----------
    mdata
        Paired data with an ATAC modality holding counts (or binary values) in ``.X``.
    min_fraction, max_fraction
        Bounds on the fraction of cells in which a peak is open.
    atac
        Name of the ATAC modality.
    inplace
        Filter ``mdata``; with ``False``, return the boolean mask of the peaks that would be kept and change
        nothing.
    copy
        Filter a copy of ``mdata`` and return it; ``mdata`` is left unchanged.
    """
    if not 0 <= min_fraction <= max_fraction <= 1:
        raise ValueError(f"Need 0 <= min_fraction <= max_fraction <= 1, got {min_fraction} and {max_fraction}.")
    _modality(mdata, atac, "atac")
    check_inplace_copy(inplace, copy)
    fraction = cells_per_feature(mdata.mod[atac].X) / mdata.mod[atac].n_obs
    keep = (fraction >= min_fraction) & (fraction <= max_fraction)
    if not inplace:
        return keep
    mdata = mdata.copy() if copy else mdata
    _filter_var(
        mdata.mod[atac], keep, f"peaks open in less than {min_fraction:.2%} or more than {max_fraction:.2%} of cells"
    )
    mdata.update()
    return mdata if copy else None
