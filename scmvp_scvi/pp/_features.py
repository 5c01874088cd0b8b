"""Feature selection and ATAC transformations that keep the raw counts for the count likelihoods."""

from __future__ import annotations

import logging

import muon as mu
import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData
from mudata import MuData
from scipy import sparse

from .._validation import layer_names
from ._filter import _filter_var, _modality, cells_per_feature, check_inplace_copy

logger = logging.getLogger("scmvp_scvi")


def _target(mdata: MuData, modality: str, inplace: bool, copy: bool) -> tuple[MuData, AnnData]:
    """Return the MuData to write into (the user's, or a copy with ``copy=True``) and its modality."""
    _modality(mdata, modality, "modality")
    check_inplace_copy(inplace, copy)
    mdata = mdata.copy() if copy else mdata
    return mdata, mdata.mod[modality]


def _counts(adata: AnnData, layer: str | None):
    if layer is not None and layer not in adata.layers:
        raise ValueError(f"Layer {layer!r} not found; the layers are {layer_names(adata)}.")
    return adata.X if layer is None else adata.layers[layer]


def highly_variable_genes(
    mdata: MuData,
    n_top_genes: int = 3000,
    modality: str = "rna",
    layer: str | None = None,
    subset: bool = False,
    inplace: bool = True,
    copy: bool = False,
) -> MuData | pd.DataFrame | None:
    """Mark (or keep only) the ``n_top_genes`` most variable genes, with scanpy on log1p(CP10k) values.

    The counts themselves are not changed: the normalisation happens on a copy. Adds
    ``var["highly_variable"]`` (and scanpy's dispersion columns) to the RNA modality.

    Parameters
    ----------
    mdata
        Paired data.
    n_top_genes
        Number of genes to select (all genes when there are fewer).
    modality
        Name of the RNA modality.
    layer
        Layer holding the counts (``.X`` by default).
    subset
        Keep only the selected genes.
    inplace
        Store the result in ``mdata``; with ``False``, return scanpy's columns as a DataFrame and change nothing.
    copy
        Work on a copy of ``mdata`` and return it; ``mdata`` is left unchanged.

    Returns
    -------
    ``None``; the DataFrame with ``inplace=False``; the changed copy with ``copy=True``.
    """
    mdata, rna = _target(mdata, modality, inplace, copy)
    normalised = AnnData(sparse.csr_matrix(_counts(rna, layer), dtype=np.float32), obs=rna.obs[[]], var=rna.var[[]])
    sc.pp.normalize_total(normalised, target_sum=1e4)
    sc.pp.log1p(normalised)
    sc.pp.highly_variable_genes(normalised, n_top_genes=min(n_top_genes, rna.n_vars), flavor="seurat")
    if not inplace:
        return normalised.var.copy()
    for column in normalised.var.columns:
        rna.var[column] = normalised.var[column].to_numpy()
    if subset:
        _filter_var(rna, rna.var["highly_variable"].to_numpy(), "genes outside the highly variable ones")
        mdata.update()
    return mdata if copy else None


def top_accessible_peaks(
    mdata: MuData,
    n_top_peaks: int = 30000,
    modality: str = "atac",
    layer: str | None = None,
    subset: bool = False,
    inplace: bool = True,
    copy: bool = False,
) -> MuData | pd.DataFrame | None:
    """Mark (or keep only) the ``n_top_peaks`` peaks open in the most cells.

    Adds ``var["n_cells_open"]`` and ``var["top_accessible"]`` to the ATAC modality; ties at the cut are broken
    by peak order.

    Parameters
    ----------
    mdata
        Paired data.
    n_top_peaks
        Number of peaks to select (all peaks when there are fewer).
    modality
        Name of the ATAC modality.
    layer
        Layer holding the counts (``.X`` by default).
    subset
        Keep only the selected peaks.
    inplace
        Store the result in ``mdata``; with ``False``, return the two columns as a DataFrame and change nothing.
    copy
        Work on a copy of ``mdata`` and return it; ``mdata`` is left unchanged.
    """
    mdata, atac = _target(mdata, modality, inplace, copy)
    n_cells = cells_per_feature(_counts(atac, layer))
    order = np.argsort(-n_cells, kind="stable")[: min(n_top_peaks, atac.n_vars)]
    top = np.zeros(atac.n_vars, dtype=bool)
    top[order] = True
    if not inplace:
        return pd.DataFrame({"n_cells_open": n_cells, "top_accessible": top}, index=atac.var_names.copy())
    atac.var["n_cells_open"] = n_cells
    atac.var["top_accessible"] = top
    if subset:
        _filter_var(atac, top, f"peaks outside the {len(order)} most accessible")
        mdata.update()
    return mdata if copy else None


def binarize(
    mdata: MuData,
    modality: str = "atac",
    layer: str | None = None,
    key_added: str = "binary",
    inplace: bool = True,
    copy: bool = False,
) -> MuData | sparse.csr_matrix | None:
    """Write open (1) or closed (0) peaks into ``layers[key_added]``; the counts are kept where they were.

    Parameters
    ----------
    mdata
        Paired data.
    modality
        Name of the ATAC modality.
    layer
        Layer holding the counts (``.X`` by default).
    key_added
        Layer that receives the binary matrix (sparse, float32).
    inplace
        Store the result in ``mdata``; with ``False``, return the matrix and change nothing.
    copy
        Work on a copy of ``mdata`` and return it; ``mdata`` is left unchanged.
    """
    mdata, atac = _target(mdata, modality, inplace, copy)
    binary = sparse.csr_matrix(_counts(atac, layer), dtype=np.float32, copy=True)
    binary.data = (binary.data > 0).astype(np.float32)
    binary.eliminate_zeros()
    if not inplace:
        return binary
    atac.layers[key_added] = binary
    logger.info("Wrote binarised %r into layers[%r].", modality, key_added)
    return mdata if copy else None


def tfidf(
    mdata: MuData,
    modality: str = "atac",
    layer: str | None = None,
    key_added: str = "tfidf",
    scale_factor: float = 1e4,
    inplace: bool = True,
    copy: bool = False,
) -> MuData | sparse.csr_matrix | None:
    """Write muon's TF-IDF of the peaks into ``layers[key_added]``; the counts are kept where they were.

    Parameters
    ----------
    mdata
        Paired data.
    modality
        Name of the ATAC modality.
    layer
        Layer holding the counts (``.X`` by default).
    key_added
        Layer that receives the TF-IDF matrix.
    scale_factor
        Scale of the term frequencies (muon's ``scale_factor``).
    inplace
        Store the result in ``mdata``; with ``False``, return the matrix and change nothing.
    copy
        Work on a copy of ``mdata`` and return it; ``mdata`` is left unchanged.
    """
    mdata, atac = _target(mdata, modality, inplace, copy)
    counts = _counts(atac, layer)
    if (np.asarray(counts.sum(axis=1)).ravel() == 0).any():
        raise ValueError(f"Some cells have no ATAC counts in {modality!r}; filter them first (pp.filter_paired).")
    transformed = mu.atac.pp.tfidf(AnnData(counts), scale_factor=scale_factor, inplace=False)
    if not inplace:
        return transformed
    atac.layers[key_added] = transformed
    logger.info("Wrote TF-IDF of %r into layers[%r].", modality, key_added)
    return mdata if copy else None


def store_counts(mdata: MuData, layer: str = "counts", modalities: tuple[str, ...] = ("rna", "atac")) -> None:
    """Copy the raw counts of ``.X`` into ``layers[layer]`` of each modality, before ``.X`` is transformed."""
    for name in modalities:
        adata = _modality(mdata, name, "modalities")
        adata.layers[layer] = adata.X.copy()
