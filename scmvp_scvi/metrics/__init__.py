"""Evaluation protocol: clustering of an embedding, imputation on all or held-out entries, and baselines."""

from ._baselines import knn_imputation, mean_imputation
from ._batch import batch_mixing
from ._clustering import (
    agreement,
    clustering_report,
    graph_leiden_scores,
    kmeans_scores,
    leiden_scores,
    silhouette,
)
from ._imputation import atac_imputation_scores, rna_imputation_scores, rowwise_auroc_auprc, rowwise_pearson
from ._masking import EntryMask

__all__ = [
    "EntryMask",
    "agreement",
    "atac_imputation_scores",
    "batch_mixing",
    "clustering_report",
    "graph_leiden_scores",
    "kmeans_scores",
    "knn_imputation",
    "leiden_scores",
    "mean_imputation",
    "rna_imputation_scores",
    "rowwise_auroc_auprc",
    "rowwise_pearson",
    "silhouette",
]
