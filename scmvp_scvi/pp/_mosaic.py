"""Bring a MuData whose modalities cover different cells into the all-zero-row form SCMVP trains on."""

from __future__ import annotations

import logging

import numpy as np
from anndata import AnnData
from mudata import MuData
from scipy import sparse

logger = logging.getLogger(__name__)


def _pad_rows(matrix, rows: np.ndarray, n_rows: int):
    """``matrix`` with its rows placed at positions ``rows`` of an ``n_rows``-row matrix of zeros."""
    if sparse.issparse(matrix):
        placement = sparse.csr_matrix(
            (np.ones(len(rows), dtype=matrix.dtype), (rows, np.arange(len(rows)))), shape=(n_rows, matrix.shape[0])
        )
        return sparse.csr_matrix(placement @ matrix)
    padded = np.zeros((n_rows, matrix.shape[1]), dtype=np.asarray(matrix).dtype)
    padded[rows] = matrix
    return padded


def pad_unpaired(mdata: MuData) -> MuData:
    """Return a copy of ``mdata`` in which every modality holds every cell, unmeasured cells as all-zero rows.

    A MuData built from a multiome sample and single-modality samples holds, in each modality, only the cells
    measured in it (``mdata.obs`` is their union). SCMVP trains on such a mosaic when every modality lists every
    cell, in the order of ``mdata.obs_names``, and a cell that was not measured in a modality has an all-zero row
    there (the convention of MultiVI). Register the result with
    ``SCMVP.setup_mudata(padded, missing_modality="zero_rows")``.

    The matrices (``.X`` and every layer) are padded with zero rows, and each modality's ``.obs`` is reindexed
    to all cells (missing values for the cells it lacks); ``.var``, ``.varm``, ``.varp`` and ``.uns`` are kept,
    while per-cell arrays of a modality (``.obsm``, ``.obsp``) are left out, since the padded cells have no values.
    ``mdata.obs`` and ``mdata.obsm`` are kept. The MuData passed in is not changed.

    Parameters
    ----------
    mdata
        MuData whose modalities hold overlapping sets of cells.

    Returns
    -------
    A new MuData with the same cells as ``mdata``, in the same order, in every modality.
    """
    if not isinstance(mdata, MuData):
        raise TypeError(f"pad_unpaired expects a MuData, got {type(mdata).__name__}.")
    cells = mdata.obs_names
    if not cells.is_unique:
        raise ValueError(
            "Cell names of the MuData are not unique; make them unique first: mdata.obs_names_make_unique()."
        )
    padded = {}
    for name, mod in mdata.mod.items():
        if not mod.obs_names.is_unique:
            raise ValueError(
                f"Cell names of modality {name!r} are not unique; make them unique first: "
                f"mdata.mod[{name!r}].obs_names_make_unique(); mdata.update()."
            )
        rows = cells.get_indexer(mod.obs_names)
        if (rows < 0).any():
            raise ValueError(
                f"Modality {name!r} has cells that mdata.obs_names lacks; call mdata.update() first so that the "
                "MuData lists every cell."
            )
        adata = AnnData(
            X=None if mod.X is None else _pad_rows(mod.X, rows, len(cells)),
            obs=mod.obs.reindex(cells),
            var=mod.var.copy(),
            layers={key: _pad_rows(layer, rows, len(cells)) for key, layer in mod.layers.items() if key is not None},
            varm={key: value.copy() for key, value in mod.varm.items()},
            varp={key: value.copy() for key, value in mod.varp.items()},
            uns=mod.uns.copy(),
        )
        logger.info("Modality %r: %d measured cells, %d padded with zeros.", name, mod.n_obs, len(cells) - mod.n_obs)
        padded[name] = adata
    result = MuData(padded)  # every modality lists ``cells`` in order, so the MuData's cells are ``cells``
    result.obs = mdata.obs.copy()
    for key, value in mdata.obsm.items():
        if key not in mdata.mod:  # mudata's own per-modality membership masks are rebuilt by MuData()
            result.obsm[key] = value.copy()
    result.uns = dict(mdata.uns)
    return result
