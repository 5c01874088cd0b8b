"""Preprocessing of paired RNA + ATAC data, with scanpy's conventions, every step logged.

``inplace=False`` returns the result (masks, scores or a matrix) and changes nothing; ``copy=True`` applies the
step to a copy and returns it; by default the step changes the MuData it is given.
"""

from ._features import binarize, highly_variable_genes, store_counts, tfidf, top_accessible_peaks
from ._filter import PRESETS, cells_per_feature, detected_per_cell, filter_paired, filter_peak_prevalence
from ._mosaic import pad_unpaired

__all__ = [
    "PRESETS",
    "binarize",
    "cells_per_feature",
    "detected_per_cell",
    "filter_paired",
    "filter_peak_prevalence",
    "highly_variable_genes",
    "pad_unpaired",
    "store_counts",
    "tfidf",
    "top_accessible_peaks",
]
