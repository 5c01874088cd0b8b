"""Property-based checks: small random paired data with random corruptions either trains or fails clearly."""

import mudata as md
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scipy import sparse

from scmvp_scvi import SCMVP

CORRUPTIONS = (
    "none",
    "negative",
    "nan",
    "inf",
    "empty_cell",
    "empty_feature",
    "fractional",
    "reordered",
    "fewer_atac_cells",
    "boolean",
    "view",
    "dense",
    "integer_dtype",
    "missing_batch_key",
    "too_many_centroids",
)


def _modality(x: np.ndarray, cells: list[str], prefix: str) -> AnnData:
    return AnnData(
        sparse.csr_matrix(x.astype(np.float32)),
        obs=pd.DataFrame(index=cells),
        var=pd.DataFrame(index=[f"{prefix}{k}" for k in range(x.shape[1])]),
    )


@st.composite
def corrupted_paired_data(draw):
    n_cells = draw(st.integers(10, 60))
    n_genes, n_peaks = draw(st.integers(2, 12)), draw(st.integers(2, 20))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    rna = rng.poisson(draw(st.floats(0.5, 6.0)), (n_cells, n_genes)).astype(np.float32)
    atac = rng.poisson(draw(st.floats(0.1, 2.0)), (n_cells, n_peaks)).astype(np.float32)
    for counts in (rna, atac):  # clean data has no empty cell: corruptions are the only way to get one
        empty = np.flatnonzero(counts.sum(axis=1) == 0)
        counts[empty, rng.integers(counts.shape[1], size=len(empty))] = 1
    corruption = draw(st.sampled_from(CORRUPTIONS))
    row, col = draw(st.integers(0, n_cells - 1)), draw(st.integers(0, n_genes - 1))
    setup, model = {}, {}
    if corruption in ("negative", "nan", "inf"):
        rna[row, col] = {"negative": -3.0, "nan": np.nan, "inf": np.inf}[corruption]
    elif corruption == "empty_cell":
        atac[row] = 0
    elif corruption == "empty_feature":
        rna[:, col] = 0
    elif corruption == "fractional":
        rna *= 0.5
    elif corruption == "missing_batch_key":
        setup["batch_key"] = "donor"
    elif corruption == "too_many_centroids":
        model["n_centroids"] = n_cells + 1
    cells = [f"cell{k}" for k in range(n_cells)]
    rna_adata, atac_adata = _modality(rna, cells, "gene"), _modality(atac, cells, "peak")
    if corruption == "reordered":
        atac_adata = atac_adata[::-1].copy()
    elif corruption == "fewer_atac_cells":
        atac_adata = atac_adata[1:].copy()
    elif corruption == "boolean":
        atac_adata.X = atac_adata.X > 0
    elif corruption == "dense":
        rna_adata.X = rna_adata.X.toarray()
    elif corruption == "integer_dtype":
        atac_adata.X = atac_adata.X.astype(np.int64)
    mdata = md.MuData({"rna": rna_adata, "atac": atac_adata})
    if corruption == "view":
        mdata = mdata[: n_cells // 2]
    return mdata, setup, model


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=corrupted_paired_data())
def test_random_input_trains_or_fails_with_a_clear_error(case):
    mdata, setup_kwargs, model_kwargs = case
    try:
        SCMVP.setup_mudata(mdata, **setup_kwargs)
        model = SCMVP(mdata, n_latent=3, n_hidden=16, n_heads=2, **model_kwargs)
    except (ValueError, TypeError) as error:
        assert len(str(error)) > 20  # a sentence, not a bare key or index
        event(f"rejected with {type(error).__name__}")
        return
    event("trained")
    model.train(max_epochs=1, pretrain_epochs=1, batch_size=16, accelerator="cpu", enable_progress_bar=False)
    assert np.isfinite(model.get_latent_representation(key_added=None)).all()
    rna, atac = model.get_imputed_values(layer_key=None)
    assert np.isfinite(rna).all() and np.isfinite(atac).all()
    assert np.isfinite(model.get_cluster_assignments(key_added=None).astype(float)).all()
