import numpy as np
import pytest
from scipy import sparse

from scmvp_scvi.data import synthetic_paired


def test_shapes_labels_and_counts():
    mdata = synthetic_paired(n_cells=120, n_genes=30, n_peaks=60, n_cell_types=4, n_batches=2, seed=3)
    assert mdata["rna"].shape == (120, 30) and mdata["atac"].shape == (120, 60)
    assert mdata["rna"].obs_names.equals(mdata.obs_names) and mdata["atac"].obs_names.equals(mdata.obs_names)
    assert mdata.obs["cell_type"].nunique() == 4 and mdata.obs["batch"].nunique() == 2
    for name in ("rna", "atac"):
        x = mdata[name].X
        assert sparse.issparse(x) and x.dtype == np.float32
        assert np.all(x.data >= 0) and np.all(x.data == np.round(x.data))


def test_seeded():
    a, b, c = (
        synthetic_paired(n_cells=50, seed=1),
        synthetic_paired(n_cells=50, seed=1),
        synthetic_paired(n_cells=50, seed=2),
    )
    assert (a["rna"].X != b["rna"].X).nnz == 0 and (a["atac"].X != b["atac"].X).nnz == 0
    assert (a["rna"].X != c["rna"].X).nnz > 0


def test_cell_types_drive_both_modalities():
    mdata = synthetic_paired(n_cells=600, n_genes=120, n_peaks=600, n_cell_types=3, seed=0)
    labels = mdata.obs["cell_type"].to_numpy()
    for name in ("rna", "atac"):
        x = mdata[name].X.toarray()
        x = x / x.sum(1, keepdims=True)
        means = np.stack([x[labels == t].mean(0) for t in np.unique(labels)])
        # some features differ at least two-fold between types
        fold = means.max(0) / np.maximum(means.min(0), 1e-9)
        assert np.mean(fold > 2) > 0.1


def test_rejects_empty_sizes():
    with pytest.raises(ValueError, match="positive"):
        synthetic_paired(n_cells=0)


def test_no_cell_is_empty_even_with_few_features():
    # with these settings one cell draws no open peak at all; it gets a read at its most likely peak
    mdata = synthetic_paired(n_cells=120, n_genes=30, n_peaks=60, n_cell_types=3, seed=7)
    for name in ("rna", "atac"):
        assert np.asarray(mdata[name].X.sum(axis=1)).min() > 0
