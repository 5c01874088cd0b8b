"""Seeded synthetic paired RNA + ATAC data with known cell types and batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData
from scipy import sparse


def synthetic_paired(
    n_cells: int = 1500,
    n_genes: int = 300,
    n_peaks: int = 1500,
    n_cell_types: int = 6,
    n_batches: int = 1,
    batch_effect: float = 0.5,
    rna_library_size: float = 1500.0,
    atac_open_fraction: float = 0.05,
    marker_effect: float = 1.5,
    seed: int = 0,
) -> MuData:
    """Simulate paired RNA and ATAC counts in which cell types drive both modalities.

    Each cell type up-regulates its own marker genes and opens its own marker peaks (disjoint sets of about
    ``1 / (2 * n_cell_types)`` of the features each), on top of shared baselines and per-cell noise.
    RNA counts are negative binomial with log-normal library sizes; ATAC counts are open/closed draws whose
    probability scales with a per-cell sequencing depth, plus occasional extra reads. Batches shift every gene and
    peak by a batch-specific amount. A cell left without counts in a modality gets one read at its most likely
    feature, so that every cell is observed in both.

    Parameters
    ----------
    n_cells, n_genes, n_peaks
        Data size.
    n_cell_types
        Number of cell types (assigned uniformly at random).
    n_batches
        Number of batches (assigned uniformly at random).
    batch_effect
        Standard deviation of the per-feature batch shifts on the log (RNA) and logit (ATAC) scales.
    rna_library_size
        Median RNA counts per cell.
    atac_open_fraction
        Typical fraction of open peaks per cell.
    marker_effect
        Log-fold change of marker genes and logit shift of marker peaks.
    seed
        Random seed; the same seed gives the same data.

    Returns
    -------
    MuData with modalities ``rna`` and ``atac`` (float32 CSR counts in ``.X``), ``obs`` columns ``cell_type``
    and ``batch`` (also in each modality's ``obs``), and in each modality's ``var`` the column ``marker_of``: the
    cell type a feature is a planted marker of (empty for the others).
    """
    if min(n_cells, n_genes, n_peaks, n_cell_types, n_batches) < 1:
        raise ValueError("n_cells, n_genes, n_peaks, n_cell_types and n_batches must all be positive.")
    rng = np.random.default_rng(seed)
    cell_type = rng.integers(n_cell_types, size=n_cells)
    batch = rng.integers(n_batches, size=n_cells)

    markers = {}  # modality -> cell type each feature is a marker of ("" for none)

    def programs(n_features: int, modality: str) -> np.ndarray:
        effects = rng.normal(0.0, 0.2, size=(n_cell_types, n_features))
        per_type = max(1, n_features // (2 * n_cell_types))
        order = rng.permutation(n_features)
        marker_of = np.full(n_features, "", dtype=object)
        for t in range(n_cell_types):
            chosen = order[t * per_type : (t + 1) * per_type]
            effects[t, chosen] += marker_effect
            marker_of[chosen] = f"type_{t}"
        markers[modality] = marker_of
        return effects

    # RNA: NB counts around type-specific log-means
    log_mean = rng.normal(0.0, 1.0, n_genes) + programs(n_genes, "rna")[cell_type]
    log_mean += rng.normal(0.0, batch_effect, (n_batches, n_genes))[batch] if n_batches > 1 else 0.0
    log_mean += rng.normal(0.0, 0.3, (n_cells, n_genes))
    proportions = np.exp(log_mean - log_mean.max(1, keepdims=True))
    proportions /= proportions.sum(1, keepdims=True)
    library = rna_library_size * rng.lognormal(0.0, 0.3, n_cells)
    mean = proportions * library[:, None]
    theta = 5.0
    rna = rng.negative_binomial(theta, theta / (theta + mean)).astype(np.float32)

    # ATAC: open/closed peaks driven by type programs and per-cell depth, plus duplicate reads
    logit = np.log(atac_open_fraction / (1 - atac_open_fraction)) + rng.normal(0.0, 0.5, n_peaks)
    logit = logit + 1.5 * programs(n_peaks, "atac")[cell_type]
    logit += rng.normal(0.0, batch_effect, (n_batches, n_peaks))[batch] if n_batches > 1 else 0.0
    logit += rng.normal(0.0, 0.4, n_cells)[:, None]
    is_open = rng.random((n_cells, n_peaks)) < 1 / (1 + np.exp(-logit))
    atac = (is_open * (1 + rng.poisson(0.2, (n_cells, n_peaks)))).astype(np.float32)
    # as after any cell-calling step, no cell is empty: give an empty cell a read at its most likely feature
    for counts, scores in ((rna, mean), (atac, logit)):
        empty = np.flatnonzero(counts.sum(axis=1) == 0)
        counts[empty, scores[empty].argmax(axis=1)] = 1

    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type_{t}" for t in cell_type]),
            "batch": pd.Categorical([f"batch_{b}" for b in batch]),
        },
        index=[f"cell_{i}" for i in range(n_cells)],
    )
    rna_adata = AnnData(sparse.csr_matrix(rna), obs=obs.copy())
    rna_adata.var_names = [f"gene_{g}" for g in range(n_genes)]
    atac_adata = AnnData(sparse.csr_matrix(atac), obs=obs.copy())
    atac_adata.var_names = [f"peak_{p}" for p in range(n_peaks)]
    rna_adata.var["marker_of"] = pd.Categorical(markers["rna"])
    atac_adata.var["marker_of"] = pd.Categorical(markers["atac"])
    mdata = MuData({"rna": rna_adata, "atac": atac_adata})
    for column in obs.columns:
        mdata.obs[column] = obs[column].to_numpy()
    return mdata
