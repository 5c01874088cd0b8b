"""Data: readers of the public paired formats, downloadable data sets and a synthetic generator."""

from ._download import (
    SNARE_CORTEX_FILES,
    SNARE_CORTEX_URL,
    SNARE_SEQ_CORTEX_FILES,
    default_cache_dir,
    fetch,
    snare_cortex,
    snare_cortex_gene_peak_links,
    snare_seq_cortex,
)
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
    "SNARE_CORTEX_FILES",
    "SNARE_CORTEX_URL",
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
    "snare_cortex",
    "snare_cortex_gene_peak_links",
    "snare_seq_cortex",
    "synthetic_paired",
]
