"""How confidently and how cleanly the mixture prior assigns cells to clusters."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ._figure import finish


def cluster_probabilities(
    mdata,
    groupby: str | None = None,
    *,
    key: str = "scmvp_cluster",
    cmap: str = "viridis",
    save: str | Path | None = None,
) -> Figure:
    """Mean cluster probability per group of cells, and the distribution of each cell's top probability.

    The left panel is a heatmap whose row ``g`` holds the mean probability of each mixture component over the
    cells of group ``g``. With a known cell type as ``groupby`` it shows which components a cell type is split
    into or shares with others; without it, rows are the SCMVP clusters themselves, and off-diagonal mass
    shows clusters that the model cannot tell apart. The right panel is the histogram of each cell's highest
    probability: mass near 1 means confident assignments.

    Parameters
    ----------
    mdata
        MuData or AnnData with ``obsm[key + "_probs"]`` and ``obs[key]``, as written by
        :meth:`~scmvp_scvi.SCMVP.get_cluster_assignments`.
    groupby
        Column of ``obs`` that defines the rows (e.g. the known cell type); default ``key``.
    key
        ``key_added`` used by :meth:`~scmvp_scvi.SCMVP.get_cluster_assignments`.
    cmap
        Colour map of the heatmap.
    save
        File to write the figure to (format from its suffix).

    Returns
    -------
    The figure with the heatmap and the histogram.
    """
    probs_key = f"{key}_probs"
    if probs_key not in mdata.obsm:
        raise ValueError(f"obsm[{probs_key!r}] not found: run model.get_cluster_assignments(key_added={key!r}) first.")
    groupby = key if groupby is None else groupby
    if groupby not in mdata.obs:
        raise ValueError(f"groupby {groupby!r} is not a column of obs (its columns: {list(mdata.obs.columns)}).")
    probs = np.asarray(mdata.obsm[probs_key], dtype=float)
    table = mean_probabilities(probs, mdata.obs[groupby])

    heat_width, height = 0.4 * table.shape[1] + 2.5, 0.3 * table.shape[0] + 1.5
    fig, (heat, hist) = plt.subplots(
        1, 2, figsize=(heat_width + 3.5, height), width_ratios=[heat_width, 3.5], layout="constrained"
    )
    image = heat.imshow(table.to_numpy(), aspect="auto", cmap=cmap, vmin=0, vmax=1)
    heat.grid(False)
    heat.set_xticks(range(table.shape[1]), table.columns)
    heat.set_yticks(range(table.shape[0]), table.index)
    heat.set_xlabel("SCMVP cluster")
    heat.set_ylabel(groupby)
    heat.set_title("mean cluster probability")
    fig.colorbar(image, ax=heat, shrink=0.8, label="probability")
    hist.hist(probs.max(axis=1), bins=np.linspace(0, 1, 21), color="0.4")
    hist.set_xlabel("highest cluster probability of a cell")
    hist.set_ylabel("cells")
    hist.set_title("assignment confidence")
    return finish(fig, save)


def mean_probabilities(probs: np.ndarray, groups: pd.Series) -> pd.DataFrame:
    """Mean of each cluster's probability over the cells of each group (groups x clusters)."""
    frame = pd.DataFrame(probs, index=groups.index, columns=[str(k) for k in range(probs.shape[1])])
    grouped = frame.groupby(groups.astype("category"), observed=True).mean()
    grouped.index = grouped.index.astype(str)
    return grouped
