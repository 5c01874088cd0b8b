"""Shared figure helpers."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def panel_grid(n_panels: int, ncols: int, panel_size: tuple[float, float] = (3.6, 2.8)) -> tuple[Figure, np.ndarray]:
    """Make a figure with ``n_panels`` axes on a grid of at most ``ncols`` columns; unused axes are removed."""
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False, layout="constrained"
    )
    axes = axes.ravel()
    for ax in axes[n_panels:]:
        ax.remove()
    return fig, axes[:n_panels]


def finish(fig: Figure, save: str | Path | None) -> Figure:
    """Write the figure to ``save`` (format from the suffix) when given, and return it."""
    if save is not None:
        path = Path(save)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight")
    return fig
