"""The downloadable labelled SNARE-seq cortex data: download, verification, cache and assembly."""

import functools
import hashlib
import http.server
import os
import threading
from pathlib import Path

import mudata as md
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from scmvp_scvi import data

SHARED_DATA = Path(os.environ.get("SCMVP_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
SHARED_SOURCE = SHARED_DATA / "source" / "scmomat_mop"


def write_source(folder: Path, n_cells: int = 9) -> dict:
    """Small files in the layout of the real source: features x cells matrices, name lists and a cell table."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    genes = ["Gad1", "Slc17a7", "Mbp", "Aqp4"]
    regions = ["chr1_100_600", "chr2_1000_1500", "chr10_50_900", "chrX_7_70", "chr1_900_1000"]
    rna = sparse.csr_matrix(rng.poisson(2.0, size=(len(genes), n_cells)))
    atac = sparse.csr_matrix(rng.poisson(0.5, size=(len(regions), n_cells)))
    sparse.save_npz(folder / "GxC1.npz", rna)
    sparse.save_npz(folder / "RxC1.npz", atac)
    links = sparse.csr_matrix(rng.random((len(genes), len(regions))) < 0.3, dtype=np.float64)
    sparse.save_npz(folder / "GxR.npz", links)
    (folder / "genes.txt").write_text("\n".join(genes) + "\n")
    (folder / "regions.txt").write_text("\n".join(regions) + "\n")
    cells = [f"09{'AB'[k % 2]}_CELL{k}" for k in range(n_cells)]
    meta = pd.DataFrame(
        {
            "Batch": [c[:3] for c in cells],
            "Barcode": [c[4:] for c in cells],
            "Ident": [f"fine{k % 3}" for k in range(n_cells)],
            "cluster (remapped)": [["L2/3", "Oligo", "Astro"][k % 3] for k in range(n_cells)],
        },
        index=cells,
    )
    meta.to_csv(folder / "meta_c1.csv")
    return {"rna": rna, "atac": atac, "links": links, "genes": genes, "regions": regions, "meta": meta}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def registered_source(tmp_path, monkeypatch):
    """Small source files, with their checksums registered in place of the real ones."""
    source = tmp_path / "remote"
    written = write_source(source)
    for name in data.SNARE_CORTEX_FILES:
        monkeypatch.setitem(data.SNARE_CORTEX_FILES, name, sha256(source / name))
    return source, written


@pytest.fixture
def http_server():
    """Serve a folder over HTTP on this machine (the real download path, without a network)."""
    servers = []

    def serve(folder: Path) -> str:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_snare_cortex_downloads_verifies_caches_and_assembles(tmp_path, registered_source, http_server):
    source, written = registered_source
    url = http_server(source)
    cache = tmp_path / "cache"
    mdata = data.snare_cortex(cache_dir=cache, base_url=url)

    assert sorted(p.name for p in cache.iterdir()) == [
        "GxC1.npz",
        "RxC1.npz",
        "genes.txt",
        "meta_c1.csv",
        "regions.txt",
    ]
    assert list(mdata.mod) == ["rna", "atac"]
    assert list(mdata.obs_names) == list(written["meta"].index)
    np.testing.assert_array_equal(mdata["rna"].X.toarray(), written["rna"].T.toarray())
    np.testing.assert_array_equal(mdata["atac"].X.toarray(), written["atac"].T.toarray())
    assert mdata["rna"].X.dtype == np.float32 and mdata["atac"].X.format == "csr"
    assert list(mdata["rna"].var_names) == written["genes"]
    assert list(mdata["atac"].var_names) == [
        "chr1:100-600",
        "chr2:1000-1500",
        "chr10:50-900",
        "chrX:7-70",
        "chr1:900-1000",
    ]
    assert list(mdata["atac"].var["start"]) == [100, 1000, 50, 7, 900]
    assert list(mdata["atac"].var["chrom"].cat.categories) == ["chr1", "chr2", "chr10", "chrX"]
    for frame in (mdata.obs, mdata["rna"].obs, mdata["atac"].obs):
        assert list(frame["cell_type"]) == list(written["meta"]["cluster (remapped)"])
        assert list(frame["batch"]) == list(written["meta"]["Batch"])
        assert list(frame["cell_type_fine"]) == list(written["meta"]["Ident"])

    links = data.snare_cortex_gene_peak_links(cache_dir=cache, base_url=url)
    assert links.shape == (mdata["rna"].n_vars, mdata["atac"].n_vars)
    np.testing.assert_array_equal(links.toarray(), written["links"].toarray())

    # later calls read the cache: they work with the server gone and give the same data
    for name in data.SNARE_CORTEX_FILES:
        (source / name).unlink()
    again = data.snare_cortex(cache_dir=cache, base_url=url)
    np.testing.assert_array_equal(again["atac"].X.toarray(), mdata["atac"].X.toarray())


def test_snare_cortex_rejects_files_that_do_not_match_their_checksum(tmp_path, registered_source, http_server):
    source, _ = registered_source
    (source / "RxC1.npz").write_bytes(b"not the published matrix")
    cache = tmp_path / "cache"
    with pytest.raises(OSError, match="Checksum mismatch"):
        data.snare_cortex(cache_dir=cache, base_url=http_server(source))
    assert [p.name for p in cache.iterdir()] == ["GxC1.npz"]  # the verified file before it; no partial download


def test_snare_cortex_reads_a_local_mirror_named_by_the_environment(tmp_path, registered_source, monkeypatch):
    source, written = registered_source
    monkeypatch.setenv("SCMVP_SNARE_CORTEX_URL", str(source))
    mdata = data.snare_cortex(cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(mdata["rna"].X.toarray(), written["rna"].T.toarray())


def test_snare_cortex_says_which_files_do_not_belong_together(tmp_path, registered_source):
    source, _ = registered_source
    (source / "genes.txt").write_text("Gad1\nMbp\n")
    data.SNARE_CORTEX_FILES["genes.txt"] = sha256(source / "genes.txt")
    with pytest.raises(ValueError, match="do not belong together"):
        data.snare_cortex(cache_dir=tmp_path / "cache", base_url=source.as_uri())


def assert_same_table(built: pd.DataFrame, shipped: pd.DataFrame) -> None:
    """Same names, values, column kinds and categories; strings may be stored as object or as pandas strings
    (which one depends on the pandas version that reads the file)."""
    pd.testing.assert_frame_equal(built.astype(str), shipped.astype(str), check_index_type=False)
    for column in shipped:
        assert isinstance(built[column].dtype, pd.CategoricalDtype) == isinstance(
            shipped[column].dtype, pd.CategoricalDtype
        )
        if isinstance(shipped[column].dtype, pd.CategoricalDtype):
            assert set(built[column].cat.categories) == set(shipped[column].cat.categories)
        elif pd.api.types.is_numeric_dtype(shipped[column]):
            assert built[column].dtype == shipped[column].dtype


@pytest.mark.skipif(not SHARED_SOURCE.exists(), reason="the public source files of snare_cortex are not here")
def test_snare_cortex_from_the_public_files_equals_the_shipped_file(tmp_path):
    mdata = data.snare_cortex(cache_dir=tmp_path / "cache", base_url=str(SHARED_SOURCE))
    expected = md.read_h5mu(SHARED_DATA / "snare_cortex.h5mu")
    assert mdata.shape == expected.shape == (10309, 1677 + 25734)
    assert_same_table(mdata.obs, expected.obs)
    assert mdata.uns["source"] == expected.uns["source"]
    for name in ("rna", "atac"):
        built, shipped = mdata[name], expected[name]
        assert built.X.dtype == shipped.X.dtype and built.X.format == shipped.X.format
        assert (built.X != shipped.X).nnz == 0
        assert_same_table(built.obs, shipped.obs)
        assert_same_table(built.var, shipped.var)
    links = data.snare_cortex_gene_peak_links(cache_dir=tmp_path / "cache", base_url=str(SHARED_SOURCE))
    assert (links != sparse.load_npz(SHARED_DATA / "snare_cortex_gene_peak_links.npz")).nnz == 0
