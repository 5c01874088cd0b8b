"""Training output: a progress bar per phase, and Lightning's start-up lines kept out of the way."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from lightning.pytorch.callbacks import ProgressBar
from tqdm.auto import tqdm

logger = logging.getLogger("scmvp_scvi")

# Lightning's loggers that print device lines and tips each time a trainer starts
LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda")


class PhaseProgressBar(ProgressBar):
    """One bar per training phase, named after it, advancing by epoch and showing the training loss.

    Parameters
    ----------
    phase
        Label of the bar, e.g. ``"pretraining"`` or ``"joint training"``.
    """

    def __init__(self, phase: str):
        super().__init__()
        self.phase = phase
        self._enabled = True
        self._bar: tqdm | None = None

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        # in a DDP job only the first process shows the bar
        disable = self.is_disabled or not trainer.is_global_zero
        self._bar = tqdm(total=trainer.max_epochs, desc=self.phase, unit="epoch", disable=disable)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._bar is None:
            return
        self._bar.update(1)
        metrics = self.get_metrics(trainer, pl_module)
        loss = next((metrics[k] for k in ("train_loss", "train_loss_epoch", "train_loss_step") if k in metrics), None)
        if loss is not None:
            self._bar.set_postfix(loss=f"{float(loss):.4g}")

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Hide Lightning's device lines and tips, unless the ``scmvp_scvi`` logger is set to ``DEBUG``."""
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)
