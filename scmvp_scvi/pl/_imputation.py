"""Imputed values against the observed counts, feature by feature."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from scipy import sparse
from scipy.stats import spearmanr

from .._validation import layer_names
from ._figure import finish, panel_grid


def imputed_vs_observed(
    mdata,
    features: Sequence[str],
    *,
    modality: str = "rna",
    layer: str = "scmvp_imputed",
    observed_layer: str | None = None,
    max_count: int = 3,
    ncols: int = 4,
    save: str | Path | None = None,
) -> Figure:
    """Box plots of the imputed value of each feature, by the count observed in the same cell.

    A good imputation rises with the observed count and spreads the cells observed at zero: most zeros of
    sparse single-cell data are dropouts, and the imputed value tells the expressed (or open) ones apart from
    the silent ones. The title gives Spearman's correlation between observed and imputed values, and each box
    its number of cells.

    Parameters
    ----------
    mdata
        MuData with the imputed layer (:meth:`~scmvp_scvi.SCMVP.get_imputed_values`), or one modality's AnnData.
    features
        Names of genes or peaks (``var_names`` of the modality).
    modality
        Modality of the features (ignored for an AnnData).
    layer
        Layer with the imputed values.
    observed_layer
        Layer with the observed counts; default ``.X``.
    max_count
        Counts from ``max_count`` up share the last box.
    ncols
        Panels per row.
    save
        File to write the figure to (format from its suffix).

    Returns
    -------
    The figure, one panel per feature.
    """
    adata = mdata.mod[modality] if hasattr(mdata, "mod") else mdata
    for name in (layer, observed_layer):
        if name is not None and name not in adata.layers:
            raise ValueError(
                f"Layer {name!r} not found (layers: {layer_names(adata)}); for the imputed values run "
                "model.get_imputed_values() first."
            )
    features = [features] if isinstance(features, str) else list(features)
    missing = [name for name in features if name not in adata.var_names]
    if missing or not features:
        raise ValueError(f"Features {missing} are not in the var_names of {modality!r}." if missing else "No features.")
    if max_count < 1:
        raise ValueError(f"max_count must be at least 1, got {max_count}.")
    columns = adata.var_names.get_indexer(features)
    observed = _dense(adata.X if observed_layer is None else adata.layers[observed_layer], columns)
    imputed = _dense(adata.layers[layer], columns)

    fig, axes = panel_grid(len(features), ncols)
    for j, (ax, name) in enumerate(zip(axes, features, strict=True)):
        bins = np.minimum(np.rint(observed[:, j]).astype(int), max_count)
        present = np.unique(bins)
        ax.boxplot(
            [imputed[bins == b, j] for b in present], positions=present, showfliers=False, medianprops={"gid": "median"}
        )
        counts = [int((bins == b).sum()) for b in present]
        labels = [f"{b}+\nn={n:,}" if b == max_count else f"{b}\nn={n:,}" for b, n in zip(present, counts, strict=True)]
        ax.set_xticks(present, labels)
        rho = spearmanr(observed[:, j], imputed[:, j]).statistic if len(present) > 1 else np.nan
        # two lines, so that long names (peaks) do not run into the next panel's title
        ax.set_title(f"{name}\nSpearman {rho:.2f}")
        ax.set_xlabel("observed count")
        ax.set_ylabel("imputed")
    return finish(fig, save)


def _dense(matrix, columns: np.ndarray) -> np.ndarray:
    block = matrix[:, columns]
    return np.asarray(block.toarray() if sparse.issparse(block) else block, dtype=float)
