"""Checks on the user's MuData that run before any model is built or trained."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from anndata import AnnData
from mudata import MuData
from scipy import sparse

DEFAULT_MODALITIES = {"rna_layer": "rna", "atac_layer": "atac"}


def resolve_modalities(mdata: MuData, modalities: dict[str, str] | None) -> dict[str, str]:
    """Return the modality mapping, defaulting to the modalities named ``rna`` and ``atac``."""
    if not isinstance(mdata, MuData):
        hint = " Build one with mudata.MuData({'rna': rna, 'atac': atac})." if isinstance(mdata, AnnData) else ""
        raise TypeError(f"SCMVP.setup_mudata expects a MuData object, got {type(mdata).__name__}.{hint}")
    if mdata.is_view:
        raise ValueError("The MuData is a view; call setup_mudata on a copy instead: mdata = mdata.copy().")
    if mdata.isbacked or any(mod.isbacked for mod in mdata.mod.values()):
        raise ValueError(
            f"The MuData is opened in backed mode (its counts stay in {mdata.filename}); SCMVP reads every cell in "
            "each epoch, so it needs them in memory. Read the file without backed mode: "
            "mdata = mudata.read_h5mu(path); to keep memory down, subset the features first."
        )
    available = list(mdata.mod)
    if modalities is None:
        missing = [name for name in DEFAULT_MODALITIES.values() if name not in mdata.mod]
        if missing:
            raise ValueError(
                f"No modality named {missing} in the MuData (it has {available}). Name them explicitly, e.g. "
                "modalities={'rna_layer': 'gex', 'atac_layer': 'peaks'}."
            )
        return dict(DEFAULT_MODALITIES)
    if not isinstance(modalities, dict):
        raise TypeError(f"modalities must be a dict such as {DEFAULT_MODALITIES}, got {type(modalities).__name__}.")
    resolved = {**DEFAULT_MODALITIES, **modalities}
    for argument, name in resolved.items():
        if name is not None and name not in mdata.mod:
            raise ValueError(f"modalities[{argument!r}] = {name!r} is not a modality of the MuData ({available}).")
    if resolved["rna_layer"] == resolved["atac_layer"]:
        raise ValueError("The RNA and ATAC data must come from two different modalities.")
    return resolved


def layer_matrix(adata: AnnData, layer: str | None, modality: str):
    """Return the matrix registered from ``adata`` (``.X`` or a layer), with a clear error when it is missing."""
    if layer is None:
        if adata.X is None:
            raise ValueError(f"mdata[{modality!r}].X is empty; pass the layer holding the counts.")
        return adata.X
    if layer not in adata.layers:
        raise ValueError(
            f"Layer {layer!r} not found in mdata[{modality!r}].layers (available: {layer_names(adata)}). "
            "Pass layer=None to use .X."
        )
    return adata.layers[layer]


def _stored_values(x) -> np.ndarray:
    if sparse.issparse(x):
        return np.asarray(x.data)
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"Unsupported matrix type {type(x).__name__}; use a numpy array or a scipy sparse CSR/CSC matrix.")


def _first_fractional(values: np.ndarray, chunk: int = 1 << 22) -> float | None:
    """Return the first non-integer value (or ``None``), checking in chunks so that no copy of all values is made."""
    for start in range(0, values.size, chunk):
        block = values[start : start + chunk]
        fractional = block[block != np.round(block)]
        if fractional.size:
            return float(fractional[0])
    return None


def check_counts(adata: AnnData, layer: str | None, modality: str, allow_empty_cells: bool = False) -> None:
    """Raise if the registered matrix is not a finite, non-negative numeric matrix with cells and features.

    ``allow_empty_cells`` accepts cells without counts (a modality not measured in them).
    """
    x = layer_matrix(adata, layer, modality)
    where = f"mdata[{modality!r}]" + (f".layers[{layer!r}]" if layer else ".X")
    values = _stored_values(x)
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise TypeError(
            f"{where} has dtype {values.dtype}; counts must be integers or floats. Convert them, e.g. "
            f"{where} = {where}.astype(np.float32)."
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{where} has shape {x.shape}; it needs at least one cell and one feature.")
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
        raise ValueError(f"{where} contains NaN or infinite values; remove or impute them before setup.")
    if values.size and values.min() < 0:
        raise ValueError(
            f"{where} contains negative values (minimum {values.min():g}); SCMVP models raw, non-negative counts. "
            "Pass the layer that holds them, not scaled or centred data."
        )
    cell_totals = np.asarray(x.sum(axis=1)).ravel()
    if not allow_empty_cells and (empty := cell_totals == 0).any():
        examples = list(adata.obs_names[empty][:3])
        raise ValueError(
            f"{int(empty.sum())} cells have no counts in {where} (e.g. {examples}); a cell needs counts in both "
            "modalities. Remove them, e.g. scmvp_scvi.pp.filter_paired(mdata, min_genes=1, min_peaks=1), or, if "
            "the modality was not measured in them, register the mosaic with "
            "SCMVP.setup_mudata(mdata, missing_modality='zero_rows')."
        )
    if np.issubdtype(values.dtype, np.floating) and (example := _first_fractional(values)) is not None:
        warnings.warn(
            f"{where} holds non-integer values (e.g. {example:g}), but SCMVP's likelihoods model raw "
            "counts. Pass the layer with raw counts; for normalised or TF-IDF peaks, binarise them "
            "(scmvp_scvi.pp.binarize) and use atac_likelihood='bernoulli'.",
            UserWarning,
            stacklevel=3,
        )
    # the values are non-negative, so a feature without counts is one whose column sums to zero
    if (empty_features := np.asarray(x.sum(axis=0)).ravel() == 0).any():
        warnings.warn(
            f"{int(empty_features.sum())} features of {where} have no counts in any cell; they only cost time. "
            "Remove them with scmvp_scvi.pp.filter_paired(mdata, min_cells_per_gene=1, min_cells_per_peak=1).",
            UserWarning,
            stacklevel=3,
        )


def check_alignment(mdata: MuData, modalities: Sequence[str]) -> None:
    """Raise unless cell names are unique and every modality holds exactly ``mdata.obs_names`` in the same order."""
    # where cell names live -> (the names, how to make them unique there)
    places = {"the MuData": (mdata.obs_names, "mdata.obs_names_make_unique()")}
    for m in modalities:
        fix = f"mdata.mod[{m!r}].obs_names_make_unique(); mdata.update()"
        places[f"modality {m!r}"] = (mdata.mod[m].obs_names, fix)
    for name, (names, fix) in places.items():
        if not names.is_unique:
            repeated = names[names.duplicated()].unique()
            raise ValueError(
                f"{len(repeated)} cell names appear more than once in {name} (e.g. {list(repeated[:3])}), so cells "
                f"cannot be matched across modalities. Make them unique first, e.g. {fix}, or, if the duplicates "
                "come from merged samples, prefix each sample's names before merging."
            )
    for name in modalities:
        mod_names = mdata.mod[name].obs_names
        if mod_names.equals(mdata.obs_names):
            continue
        if len(mod_names) != mdata.n_obs or not mod_names.isin(mdata.obs_names).all():
            raise ValueError(
                f"Modality {name!r} has {mdata.mod[name].n_obs} cells but the MuData has {mdata.n_obs}. To train on "
                "all of them (paired and single-modality cells together), pad the modalities and say what the "
                "zero rows mean: mdata = scmvp_scvi.pp.pad_unpaired(mdata); "
                "SCMVP.setup_mudata(mdata, missing_modality='zero_rows'). To keep only the paired cells: "
                "muon.pp.intersect_obs(mdata)."
            )
        raise ValueError(
            f"Cells of modality {name!r} are ordered differently from mdata.obs_names. Reorder them, e.g. "
            f"mdata.mod[{name!r}] = mdata.mod[{name!r}][mdata.obs_names].copy(); mdata.update()."
        )


def check_obs_keys(mdata: MuData, keys: Sequence[str], modality: str | None, argument: str) -> None:
    """Raise if an ``.obs`` column is missing, saying where it was looked for and where it exists."""
    obs = mdata.obs if modality is None else mdata.mod[modality].obs
    place = "mdata.obs" if modality is None else f"mdata[{modality!r}].obs"
    for key in keys:
        if key in obs.columns:
            if obs[key].isna().any():
                raise ValueError(f"{place}[{key!r}] (from {argument}) has missing values; fill them first.")
            continue
        found = [name for name in mdata.mod if key in mdata.mod[name].obs.columns]
        hint = (
            f" It exists in {[f'mdata[{n!r}].obs' for n in found]}: pass modalities={{{argument!r}: {found[0]!r}}} "
            "or copy it with mdata.pull_obs()."
            if found
            else ""
        )
        raise ValueError(f"{argument} {key!r} not found in {place} (its columns: {list(obs.columns)}).{hint}")


def check_saved_features(mdata: MuData, saved: dict[str, np.ndarray], modalities: dict[str, str]) -> None:
    """Raise unless each registered modality of ``mdata`` has the features a saved model was trained on."""
    if not isinstance(mdata, MuData):
        raise TypeError(f"SCMVP.load expects a MuData object, got {type(mdata).__name__}.")
    for argument in ("rna_layer", "atac_layer"):
        name = modalities[argument]
        if name not in mdata.mod:
            raise ValueError(f"The model was trained on modality {name!r}, which the MuData lacks ({list(mdata.mod)}).")
        expected, found = np.asarray(saved[name]).astype(str), np.asarray(mdata.mod[name].var_names).astype(str)
        if len(expected) == len(found) and (expected == found).all():
            continue
        missing = np.setdiff1d(expected, found)
        if len(missing):
            raise ValueError(
                f"mdata[{name!r}] lacks {len(missing)} of the {len(expected)} features the model was trained on "
                f"(e.g. {[str(m) for m in missing[:3]]}). Load the model onto data that has all of them."
            )
        extra = "also other features" if len(found) > len(expected) else "its features in another order"
        raise ValueError(
            f"mdata[{name!r}] has {extra} than at training. Subset and order it like the training data: "
            f"mdata.mod[{name!r}] = mdata[{name!r}][:, training_var_names].copy(); mdata.update()."
        )


def layer_names(adata: AnnData) -> list[str]:
    """Names of the layers (recent anndata also lists ``.X`` under the key ``None``)."""
    return [key for key in adata.layers if key is not None]


MIN_TRAINING_CELLS = 2  # batch normalisation needs two cells in a training minibatch


def check_trainable(n_cells: int, train_size: float | None) -> None:
    """Raise if too few cells are left for training (scvi-tools' split: ``ceil(train_size * n)`` cells)."""
    n_train = math.ceil((0.9 if train_size is None else train_size) * n_cells)
    if n_cells < MIN_TRAINING_CELLS + 1 or n_train < MIN_TRAINING_CELLS:
        raise ValueError(
            f"SCMVP cannot train on {n_cells} cells ({n_train} in the training split): it needs at least "
            f"{MIN_TRAINING_CELLS} training cells, as its batch-normalised layers compare the cells of a "
            f"minibatch, and {MIN_TRAINING_CELLS + 1} cells in all for the mixture initialisation. Train on more "
            "cells (a useful model needs hundreds), or raise train_size."
        )
