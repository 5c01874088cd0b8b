"""Data: readers of the public paired formats, downloadable data sets and a synthetic generator."""

from ._download import SNARE_SEQ_CORTEX_FILES, default_cache_dir, fetch, snare_seq_cortex
from ._readers import (
    pair_modalities,
    peak_coordinates,
    read_10x_multiome,
    read_mtx_modality,
    read_paired_seq,
    read_sci_car,
    read_snare_seq,
)
from ._synthetic import synthetic_paired

__all__ = [
    "SNARE_SEQ_CORTEX_FILES",
    "default_cache_dir",
    "fetch",
    "pair_modalities",
    "peak_coordinates",
    "read_10x_multiome",
    "read_mtx_modality",
    "read_paired_seq",
    "read_sci_car",
    "read_snare_seq",
    "snare_seq_cortex",
    "synthetic_paired",
]
