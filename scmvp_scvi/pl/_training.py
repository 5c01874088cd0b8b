"""Training history per loss term, with the two training phases marked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ._figure import finish, panel_grid

#: Terms drawn by default, in this order, when the history has them.
DEFAULT_TERMS = (
    "loss",
    "nll_rna",
    "nll_atac",
    "kl_prior",
    "kl_joint",
    "nll_rna_single",
    "nll_atac_single",
    "kl_cycle",
    "cluster_consistency",
)
_TITLES = {
    "loss": "total loss",
    "nll_rna": "RNA reconstruction (NLL)",
    "nll_atac": "ATAC reconstruction (NLL)",
    "kl_prior": "KL to the prior",
    "kl_joint": "KL of the joint encoder",
    "nll_rna_single": "RNA NLL from its own encoder",
    "nll_atac_single": "ATAC NLL from its own encoder",
    "kl_cycle": "cycle-consistency KL",
    "cluster_consistency": "cluster consistency",
}


def training_history(
    model_or_history,
    terms: Sequence[str] | None = None,
    *,
    validation: bool = True,
    ncols: int = 3,
    save: str | Path | None = None,
) -> Figure:
    """Plot each logged loss term per epoch, for training and validation cells.

    Pretraining epochs are shaded, so the jump at the start of joint training (the mixture prior and the cycle
    head switch on) is not mistaken for divergence.

    Parameters
    ----------
    model_or_history
        A trained :class:`~scmvp_scvi.SCMVP` or its ``model.history``.
    terms
        Terms to draw, without the ``_train``/``_validation`` suffix (e.g. ``["nll_rna", "kl_prior"]``);
        default: those of :data:`DEFAULT_TERMS` that were logged.
    validation
        Also draw the validation curve when it was logged.
    ncols
        Panels per row.
    save
        File to write the figure to (format from its suffix).

    Returns
    -------
    The figure, one panel per term.
    """
    history = _history(model_or_history)
    if terms is None:
        terms = [term for term in DEFAULT_TERMS if f"{term}_train" in history or _key(term) in history]
    else:
        terms = [term.removesuffix("_train").removesuffix("_validation") for term in terms]
        missing = [term for term in terms if _key(term) not in history]
        if missing:
            logged = sorted({key.removesuffix("_train") for key in history if key.endswith("_train")})
            raise ValueError(f"Terms {missing} were not logged; the history has {logged}.")
    if not terms:
        raise ValueError("The history has none of the default terms; pass terms=[...] explicitly.")
    phases = history.get("training_phase")
    fig, axes = panel_grid(len(terms), ncols)
    for ax, term in zip(axes, terms, strict=True):
        train = history[_key(term)].iloc[:, 0]
        ax.plot(train.index, train.to_numpy(), marker=".", label="train")
        valid_key = "validation_loss" if term == "loss" else f"{term}_validation"
        if validation and valid_key in history:
            valid = history[valid_key].iloc[:, 0]
            ax.plot(valid.index, valid.to_numpy(), marker=".", label="validation")
        if phases is not None:
            _shade_pretraining(ax, phases.iloc[:, 0])
        ax.set_title(_TITLES.get(term, term))
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize="small")
    return finish(fig, save)


def _history(model_or_history) -> Mapping[str, pd.DataFrame]:
    history = getattr(model_or_history, "history", model_or_history)
    if not isinstance(history, Mapping) or not history:
        raise ValueError("No training history: train the model first (model.train()).")
    return history


def _key(term: str) -> str:
    return "train_loss" if term == "loss" else f"{term}_train"


def _shade_pretraining(ax, phases: pd.Series) -> None:
    pretraining = phases.index[phases.to_numpy() == "pretraining"]
    if len(pretraining):
        ax.axvspan(pretraining.min() - 0.5, pretraining.max() + 0.5, color="0.9", zorder=0, label="pretraining")
