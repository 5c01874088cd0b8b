"""Plots that scanpy does not have: training history, cluster probabilities, imputed vs observed values.

Each function returns the :class:`~matplotlib.figure.Figure` it drew and writes it to ``save`` when given. Use
scanpy for everything else, e.g. ``sc.pl.umap(mdata, color="scmvp_cluster")``.
"""

from ._clusters import cluster_probabilities
from ._imputation import imputed_vs_observed
from ._training import training_history

__all__ = ["cluster_probabilities", "imputed_vs_observed", "training_history"]
