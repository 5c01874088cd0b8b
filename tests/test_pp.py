import logging

import anndata as ad
import muon as mu
import numpy as np
import pandas as pd
import pytest
from mudata import MuData
from scipy import sparse

from scmvp_scvi import pp


def _modality(x: np.ndarray, cells: list[str], prefix: str) -> ad.AnnData:
    return ad.AnnData(
        sparse.csr_matrix(x),
        obs=pd.DataFrame(index=cells),
        var=pd.DataFrame(index=[f"{prefix}{k}" for k in range(x.shape[1])]),
    )


def crafted() -> MuData:
    """400 paired cells plus 3 RNA-only cells; which cells and features each filter removes is known exactly."""
    n = 400
    rna = np.zeros((n + 3, 230), dtype=np.float32)
    rna[:, :220] = 2
    rna[:5, 150:220] = 0  # cells 0-4: 150 genes -> removed
    rna[10:19, 220] = 1  # gene 220 in 9 cells -> removed
    rna[10:20, 221] = 1  # gene 221 in 10 cells -> kept
    atac = np.zeros((n, 404), dtype=np.float32)
    i, j = np.indices((n, 400))
    atac[:, :400] = (i + j) % 2 == 0  # 200 open peaks per cell, each peak open in 200 cells
    atac[5:8, :200] = 0  # cells 5-7: about 100 open peaks -> removed
    atac[:, 400] = 1  # open in every cell: more than 336 -> removed by the Paired-seq preset only
    atac[8:344, 401] = 3  # open in exactly 336 kept cells -> kept by every preset
    atac[20:29, 402] = 1  # 9 cells -> removed
    atac[20:30, 403] = 1  # 10 cells -> kept
    cells = [f"c{k}" for k in range(n)]
    return MuData({"rna": _modality(rna, [*cells, "r0", "r1", "r2"], "gene"), "atac": _modality(atac, cells, "peak")})


@pytest.mark.parametrize(
    ("preset", "removed_peaks"),
    [("sci-car", {"peak402"}), ("snare-seq", {"peak402"}), ("paired-seq", {"peak400", "peak402"})],
)
def test_presets_remove_exactly_the_crafted_cells_and_features(preset, removed_peaks, caplog):
    mdata = crafted()
    original = mdata.copy()
    with caplog.at_level(logging.INFO, logger="scmvp_scvi"):
        filtered = pp.filter_paired(mdata, preset, copy=True)
    expected_cells = [f"c{k}" for k in range(8, 400)]
    assert list(filtered.obs_names) == expected_cells
    assert list(filtered["rna"].obs_names) == list(filtered["atac"].obs_names) == expected_cells
    assert set(original["rna"].var_names) - set(filtered["rna"].var_names) == {f"gene{k}" for k in range(220, 230)} - {
        "gene221"
    }
    assert set(original["atac"].var_names) - set(filtered["atac"].var_names) == removed_peaks
    # values of what is kept are unchanged, and the input was not touched
    np.testing.assert_array_equal(
        filtered["atac"].X.toarray(), original["atac"][expected_cells, filtered["atac"].var_names].X.toarray()
    )
    assert mdata.shape == original.shape and (mdata["rna"].X != original["rna"].X).nnz == 0
    messages = caplog.text
    assert "Removed 3 of 403 cells not assayed in both" in messages
    assert "Removed 8 of 400 cells with fewer than 200 detected genes or 200 open peaks" in messages
    assert "Removed 9 of 230 genes detected in fewer than 10 cells" in messages
    assert f"Removed {len(removed_peaks)} of 404 peaks" in messages
    # inplace=False: the same decisions as masks over the input, nothing changed
    masks = pp.filter_paired(mdata, preset, inplace=False)
    assert list(mdata.obs_names[masks["cells"]]) == expected_cells
    assert list(mdata["rna"].var_names[masks["genes"]]) == list(filtered["rna"].var_names)
    assert list(mdata["atac"].var_names[masks["peaks"]]) == list(filtered["atac"].var_names)
    assert mdata.shape == original.shape


def test_filter_paired_inplace_and_overrides():
    mdata = crafted()
    assert pp.filter_paired(mdata, "paired-seq", max_cells_per_peak=1000, min_genes=0) is None
    assert mdata.n_obs == 397  # only the 3 ATAC-poor cells go when min_genes is 0
    assert "peak400" in mdata["atac"].var_names
    with pytest.raises(ValueError, match="Unknown preset 'smart-seq'"):
        pp.filter_paired(mdata, "smart-seq")
    with pytest.raises(ValueError, match="Modality 'gex' not found"):
        pp.filter_paired(mdata, rna="gex")
    with pytest.raises(TypeError, match="MuData"):
        pp.filter_paired(mdata["rna"])
    with pytest.raises(ValueError, match="Pass one of them"):
        pp.filter_paired(mdata, "sci-car", inplace=False, copy=True)


def test_peak_prevalence_bounds_are_inclusive():
    n = 1000
    counts = np.zeros((n, 5), dtype=np.float32)
    for peak, n_open in enumerate([0, 1, 50, 100, 101]):
        counts[:n_open, peak] = 2
    mdata = MuData(
        {
            "rna": _modality(np.ones((n, 2)), [str(k) for k in range(n)], "g"),
            "atac": _modality(counts, [str(k) for k in range(n)], "peak"),
        }
    )
    kept = pp.filter_peak_prevalence(mdata, copy=True)
    assert list(kept["atac"].var_names) == ["peak1", "peak2", "peak3"]
    assert list(pp.filter_peak_prevalence(mdata, inplace=False)) == [False, True, True, True, False]
    assert mdata["atac"].n_vars == 5
    pp.filter_peak_prevalence(mdata, min_fraction=0.05, max_fraction=0.2)
    assert list(mdata["atac"].var_names) == ["peak2", "peak3", "peak4"]
    with pytest.raises(ValueError, match="min_fraction <= max_fraction"):
        pp.filter_peak_prevalence(mdata, min_fraction=0.5, max_fraction=0.1)


def test_highly_variable_genes_find_the_varying_genes():
    rng = np.random.default_rng(0)
    means = np.geomspace(0.5, 20, 200)
    markers = [20, 60, 100, 140, 180]  # spread over the range of means; up in half of the cells, down in the rest
    scale = np.ones((300, 200))
    scale[:150, markers], scale[150:, markers] = 0.2, 1.8
    counts = rng.poisson(means * scale).astype(np.float32)
    cells = [str(k) for k in range(300)]
    mdata = MuData({"rna": _modality(counts, cells, "gene"), "atac": _modality(counts > 5, cells, "peak")})
    pp.highly_variable_genes(mdata, n_top_genes=5)
    assert set(mdata["rna"].var_names[mdata["rna"].var["highly_variable"]]) == {f"gene{k}" for k in markers}
    np.testing.assert_array_equal(mdata["rna"].X.toarray(), counts)  # counts untouched
    subset = pp.highly_variable_genes(mdata, n_top_genes=5, subset=True, copy=True)
    assert subset["rna"].n_vars == 5 and mdata["rna"].n_vars == 200
    fresh = MuData({"rna": _modality(counts, cells, "gene"), "atac": _modality(counts > 5, cells, "peak")})
    table = pp.highly_variable_genes(fresh, n_top_genes=5, inplace=False)
    assert set(table.index[table["highly_variable"]]) == {f"gene{k}" for k in markers}
    assert "highly_variable" not in fresh["rna"].var  # nothing written


def test_top_accessible_peaks():
    counts = np.zeros((20, 6), dtype=np.float32)
    for peak, n_open in enumerate([3, 10, 1, 10, 7, 0]):
        counts[:n_open, peak] = 1
    cells = [str(k) for k in range(20)]
    mdata = MuData({"rna": _modality(np.ones((20, 2)), cells, "g"), "atac": _modality(counts, cells, "peak")})
    pp.top_accessible_peaks(mdata, n_top_peaks=3)
    assert list(mdata["atac"].var["n_cells_open"]) == [3, 10, 1, 10, 7, 0]
    assert list(mdata["atac"].var_names[mdata["atac"].var["top_accessible"]]) == ["peak1", "peak3", "peak4"]
    table = pp.top_accessible_peaks(mdata, n_top_peaks=2, inplace=False)
    assert list(table.index[table["top_accessible"]]) == ["peak1", "peak3"]
    assert mdata["atac"].var["top_accessible"].sum() == 3  # unchanged by inplace=False
    pp.top_accessible_peaks(mdata, n_top_peaks=2, subset=True)
    assert list(mdata["atac"].var_names) == ["peak1", "peak3"]


def test_binarize_and_tfidf_write_layers_and_keep_counts():
    rng = np.random.default_rng(1)
    counts = rng.poisson(0.5, size=(30, 40)).astype(np.float32)
    counts[:, 0] = 1  # no empty cell
    cells = [str(k) for k in range(30)]
    mdata = MuData({"rna": _modality(np.ones((30, 2)), cells, "g"), "atac": _modality(counts, cells, "peak")})
    pp.store_counts(mdata)
    pp.binarize(mdata)
    pp.tfidf(mdata)
    atac = mdata["atac"]
    np.testing.assert_array_equal(atac.X.toarray(), counts)
    np.testing.assert_array_equal(atac.layers["counts"].toarray(), counts)
    np.testing.assert_array_equal(atac.layers["binary"].toarray(), (counts > 0).astype(np.float32))
    reference = ad.AnnData(sparse.csr_matrix(counts))
    mu.atac.pp.tfidf(reference, scale_factor=1e4)
    np.testing.assert_allclose(atac.layers["tfidf"].toarray(), reference.X.toarray(), rtol=1e-6)
    assert (atac.layers["tfidf"].toarray() > 0).sum() == (counts > 0).sum()
    binary = pp.binarize(mdata, inplace=False)
    np.testing.assert_array_equal(binary.toarray(), atac.layers["binary"].toarray())
    copied = pp.tfidf(mdata, key_added="tfidf2", copy=True)
    assert "tfidf2" in copied["atac"].layers and "tfidf2" not in atac.layers
    with pytest.raises(ValueError, match="Layer 'raw' not found"):
        pp.binarize(mdata, layer="raw")
    atac.X = sparse.csr_matrix(np.vstack([counts[:3], np.zeros((1, 40)), counts[4:]]))
    with pytest.raises(ValueError, match="no ATAC counts"):
        pp.tfidf(mdata)
