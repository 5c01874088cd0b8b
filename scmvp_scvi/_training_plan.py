"""Training plan of SCMVP: scvi-tools' plan plus a warm-up of the cluster terms."""

from __future__ import annotations

import torch
from scvi.train import TrainingPlan


class SCMVPTrainingPlan(TrainingPlan):
    """:class:`scvi.train.TrainingPlan` that also ramps the weight of the cluster terms.

    The cluster terms (consistency, sharpness and balance of the responsibilities) rise linearly from 0 to their
    full weight over the first ``n_epochs_cluster_warmup`` epochs of a phase, so that switching on the mixture
    prior does not force every cell into the cluster it was given at initialisation. The module receives the
    factor as ``cluster_warmup`` in its loss.

    Parameters
    ----------
    module
        The :class:`~scmvp_scvi.SCMVPModule`.
    n_epochs_cluster_warmup
        Epochs of the ramp; ``None`` or 0: full weight from the start.
    **kwargs
        Arguments of :class:`scvi.train.TrainingPlan` (``lr``, ``n_epochs_kl_warmup``, ...).
    """

    def __init__(self, module, n_epochs_cluster_warmup: int | None = None, **kwargs):
        super().__init__(module, **kwargs)
        self.n_epochs_cluster_warmup = n_epochs_cluster_warmup or None

    @property
    def cluster_warmup(self) -> float:
        """Current factor of the cluster terms, in [0, 1]."""
        if self.n_epochs_cluster_warmup is None:
            return 1.0
        return min(1.0, self.current_epoch / self.n_epochs_cluster_warmup)

    def training_step(self, batch, batch_idx):
        """Set this step's cluster factor, then take scvi-tools' training step."""
        self.loss_kwargs["cluster_warmup"] = self.cluster_warmup
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        """Validate with the cluster factor of the current epoch."""
        self.loss_kwargs["cluster_warmup"] = self.cluster_warmup
        return super().validation_step(batch, batch_idx)

    def compute_and_log_metrics(self, loss_output, metrics, mode):
        """Log the metrics as scvi-tools does, under ``no_grad`` instead of inference mode.

        Lightning sums logged values across processes at the end of an epoch, in place; on the CPU (gloo) that
        fails for tensors made in inference mode, so scvi-tools' plan cannot train with DDP on CPU processes.
        """
        with torch.no_grad():
            return TrainingPlan.compute_and_log_metrics.__wrapped__(self, loss_output, metrics, mode)
