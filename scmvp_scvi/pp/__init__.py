"""Preprocessing of paired RNA + ATAC data (scanpy style: ``inplace`` or a returned copy, steps logged)."""

from ._features import binarize, highly_variable_genes, store_counts, tfidf, top_accessible_peaks
from ._filter import PRESETS, cells_per_feature, detected_per_cell, filter_paired, filter_peak_prevalence

__all__ = [
    "PRESETS",
    "binarize",
    "cells_per_feature",
    "detected_per_cell",
    "filter_paired",
    "filter_peak_prevalence",
    "highly_variable_genes",
    "store_counts",
    "tfidf",
    "top_accessible_peaks",
]
