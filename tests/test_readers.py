import gzip
import logging
from pathlib import Path

import h5py
import numpy as np
import pooch
import pytest
from scipy import io, sparse

from scmvp_scvi import data

RNG = np.random.default_rng(0)
CELLS = [f"AAAC{k:04d}" for k in range(12)]
GENES = ["Snap25", "Gad1", "Mbp", "Gad1", "Pdgfra"]  # one duplicated name
PEAKS = ["chr1:100-600", "chr2:1000-1500", "chrX:50-900"]


def counts(n_features: int, n_cells: int) -> sparse.csr_matrix:
    return sparse.csr_matrix(RNG.poisson(1.0, size=(n_features, n_cells)).astype(np.float32))


def write_lines(path: Path, lines: list[str], compress: bool) -> None:
    text = "\n".join(lines) + "\n"
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)


def write_mtx(path: Path, matrix, compress: bool) -> None:
    with open(path, "wb") as handle:  # a handle: mmwrite would append .mtx to a file name
        io.mmwrite(handle, sparse.coo_matrix(matrix))
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()


def write_snare(directory: Path, rna_cells: list[str], atac_cells: list[str], compress: bool = True):
    prefix = directory / "GSE126074_AdBrainCortex_SNAREseq"
    rna, atac = counts(len(GENES), len(rna_cells)), counts(len(PEAKS), len(atac_cells))
    write_mtx(Path(f"{prefix}_cDNA.counts.mtx"), rna, compress)
    write_lines(Path(f"{prefix}_cDNA.barcodes.tsv"), rna_cells, compress)
    write_lines(Path(f"{prefix}_cDNA.genes.tsv"), GENES, compress)
    write_mtx(Path(f"{prefix}_chromatin.counts.mtx"), atac, compress)
    write_lines(Path(f"{prefix}_chromatin.barcodes.tsv"), atac_cells, compress)
    write_lines(Path(f"{prefix}_chromatin.peaks.tsv"), PEAKS, compress)
    return rna, atac


def test_snare_seq_pairs_cells_in_rna_order_and_reports_dropped(tmp_path, caplog):
    atac_cells = ["EXTRA001", *CELLS[::-1][1:]]  # reversed order, one ATAC-only cell, CELLS[-1] missing
    rna, atac = write_snare(tmp_path, CELLS, atac_cells)
    with caplog.at_level(logging.INFO, logger="scmvp_scvi"):
        mdata = data.read_snare_seq(tmp_path)
    assert "Paired 11 cells; dropped 1 RNA-only and 1 ATAC-only cells." in caplog.text
    assert list(mdata.obs_names) == CELLS[:-1]
    assert list(mdata["rna"].var_names) == ["Snap25", "Gad1", "Mbp", "Gad1-1", "Pdgfra"]
    np.testing.assert_array_equal(mdata["rna"].X.toarray(), rna.T.toarray()[:-1])
    order = [atac_cells.index(cell) for cell in CELLS[:-1]]
    np.testing.assert_array_equal(mdata["atac"].X.toarray(), atac.T.toarray()[order])
    assert mdata["atac"].X.dtype == np.float32 and sparse.issparse(mdata["atac"].X)
    assert list(mdata["atac"].var["chrom"]) == ["chr1", "chr2", "chrX"]
    assert list(mdata["atac"].var["start"]) == [100, 1000, 50]
    assert list(mdata["atac"].var["end"]) == [600, 1500, 900]


def test_sci_car_tables_with_headers_and_pairing_column(tmp_path):
    rna, atac = counts(len(GENES), 4), counts(2, 4)
    write_mtx(tmp_path / "RNA_A549_gene_count.txt", rna, compress=True)
    write_lines(
        tmp_path / "RNA_A549_cell.txt",
        ["sample,cell_name,experiment", *[f"s{k},rna{k},A549" for k in range(4)]],
        compress=True,
    )
    write_lines(
        tmp_path / "RNA_A549_gene.txt",
        ["gene_id,gene_type,gene_short_name", *[f"ENSG{k},protein_coding,{g}" for k, g in enumerate(GENES)]],
        compress=True,
    )
    write_mtx(tmp_path / "ATAC_A549_peak_count.txt", atac, compress=False)
    write_lines(tmp_path / "ATAC_A549_cell.txt", ["sample,group", "s3,x", "s1,y", "s0,z", "s9,w"], compress=False)
    write_lines(tmp_path / "ATAC_A549_peak.txt", ["id,peak", "1,chr1-10-20", "2,chr3-30-90"], compress=False)
    # 4 ATAC cells in the table but 4 columns in the matrix: one of them (s9) is not in the RNA table
    mdata = data.read_sci_car(tmp_path, "RNA_A549", "ATAC_A549")
    assert list(mdata.obs_names) == ["s0", "s1", "s3"]
    assert mdata["rna"].obs["cell_name"].tolist() == ["rna0", "rna1", "rna3"]
    assert mdata["rna"].var["gene_id"].tolist() == [f"ENSG{k}" for k in range(5)]
    np.testing.assert_array_equal(mdata["atac"].X.toarray(), atac.T.toarray()[[2, 1, 0]])
    assert list(mdata["atac"].var["chrom"]) == ["chr1", "chr3"]
    with pytest.raises(ValueError, match=r"Column 'barcode' not found in RNA_A549_cell\.txt"):
        data.read_sci_car(tmp_path, "RNA_A549", "ATAC_A549", barcode_column="barcode")


def test_paired_seq_plain_files(tmp_path):
    rna, atac = counts(len(GENES), 5), counts(len(PEAKS), 5)
    cells = CELLS[:5]
    write_mtx(tmp_path / "Cortex_RNA_matrix.mtx", rna, compress=False)
    write_lines(tmp_path / "Cortex_RNA_barcodes.tsv", cells, compress=False)
    write_lines(tmp_path / "Cortex_RNA_genes.tsv", GENES, compress=False)
    write_mtx(tmp_path / "Cortex_DNA_matrix.mtx", atac, compress=False)
    write_lines(tmp_path / "Cortex_DNA_barcodes.tsv", cells, compress=False)
    write_lines(tmp_path / "Cortex_DNA_peaks.tsv", PEAKS, compress=False)
    mdata = data.read_paired_seq(tmp_path, "Cortex")
    assert mdata.shape == (5, len(GENES) + len(PEAKS))
    np.testing.assert_array_equal(mdata["atac"].X.toarray(), atac.T.toarray())


def test_reader_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cDNA\.counts\.mtx"):
        data.read_snare_seq(tmp_path)
    write_snare(tmp_path, CELLS, [f"OTHER{k}" for k in range(12)])
    with pytest.raises(ValueError, match="No barcode is shared"):
        data.read_snare_seq(tmp_path)
    write_snare(tmp_path, CELLS, CELLS)
    write_lines(tmp_path / "GSE126074_AdBrainCortex_SNAREseq_cDNA.genes.tsv", GENES[:3], compress=True)
    with pytest.raises(ValueError, match=r"lists 12 cells and .* 3 features"):
        data.read_snare_seq(tmp_path)
    write_snare(tmp_path, [*CELLS[:-1], CELLS[0]], CELLS)
    with pytest.raises(ValueError, match=r"cDNA\.barcodes\.tsv\.gz lists some barcodes twice"):
        data.read_snare_seq(tmp_path)


def write_10x_h5(path: Path, feature_types: list[str], names: list[str], matrix: sparse.csc_matrix) -> None:
    """A Cell Ranger ARC style filtered_feature_bc_matrix.h5 (features x cells, CSC)."""
    with h5py.File(path, "w") as f:
        group = f.create_group("matrix")
        group["barcodes"] = np.array([f"{c}-1" for c in CELLS], dtype="S")
        group["data"] = matrix.data.astype(np.int32)
        group["indices"] = matrix.indices.astype(np.int64)
        group["indptr"] = matrix.indptr.astype(np.int64)
        group["shape"] = np.array(matrix.shape, dtype=np.int32)
        features = group.create_group("features")
        features["_all_tag_keys"] = np.array(["genome", "interval"], dtype="S")
        features["feature_type"] = np.array(feature_types, dtype="S")
        features["genome"] = np.array(["GRCh38"] * len(names), dtype="S")
        features["id"] = np.array([f"id{k}" for k in range(len(names))], dtype="S")
        features["name"] = np.array(names, dtype="S")
        features["interval"] = np.array(
            [n if t == "Peaks" else "NA" for n, t in zip(names, feature_types, strict=True)], dtype="S"
        )


def test_10x_multiome_h5(tmp_path):
    names = GENES + PEAKS
    types = ["Gene Expression"] * len(GENES) + ["Peaks"] * len(PEAKS)
    matrix = sparse.csc_matrix(counts(len(names), len(CELLS)))
    write_10x_h5(tmp_path / "filtered_feature_bc_matrix.h5", types, names, matrix)
    mdata = data.read_10x_multiome(tmp_path / "filtered_feature_bc_matrix.h5")
    assert list(mdata.mod) == ["rna", "atac"]
    assert list(mdata.obs_names) == [f"{c}-1" for c in CELLS]
    assert mdata["rna"].var_names.is_unique
    np.testing.assert_array_equal(mdata["rna"].X.toarray(), matrix.T.toarray()[:, : len(GENES)])
    np.testing.assert_array_equal(mdata["atac"].X.toarray(), matrix.T.toarray()[:, len(GENES) :])
    assert mdata["atac"].X.dtype == np.float32
    assert list(mdata["atac"].var["start"]) == [100, 1000, 50]

    write_10x_h5(tmp_path / "rna_only.h5", ["Gene Expression"] * len(GENES), GENES, matrix[: len(GENES)])
    with pytest.raises(ValueError, match="no \\['atac'\\]"):
        data.read_10x_multiome(tmp_path / "rna_only.h5")
    with pytest.raises(FileNotFoundError):
        data.read_10x_multiome(tmp_path / "missing.h5")


def test_fetch_caches_and_verifies_checksums(tmp_path):
    source = tmp_path / "remote" / "file.txt"
    source.parent.mkdir()
    source.write_text("peaks")
    md5 = pooch.file_hash(str(source), alg="md5")
    target = tmp_path / "cache" / "file.txt"
    assert data.fetch(source.as_uri(), target, md5).read_text() == "peaks"
    source.unlink()
    assert data.fetch(source.as_uri(), target, md5) == target  # cached: no new download
    source.write_text("tampered")
    with pytest.raises(OSError, match="Checksum mismatch"):
        data.fetch(source.as_uri(), tmp_path / "cache" / "other.txt", md5)
    assert not (tmp_path / "cache" / "other.txt").exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["file.txt"]  # no partial download left


def test_snare_seq_dataset_downloads_verifies_and_reads(tmp_path, monkeypatch):
    remote = tmp_path / "geo"
    remote.mkdir()
    write_snare(remote, CELLS, CELLS)
    for name in data.SNARE_SEQ_CORTEX_FILES:
        monkeypatch.setitem(data.SNARE_SEQ_CORTEX_FILES, name, pooch.file_hash(str(remote / name), alg="md5"))
    mdata = data.snare_seq_cortex(cache_dir=tmp_path / "cache", base_url=remote.as_uri() + "/")
    assert mdata.shape == (12, len(GENES) + len(PEAKS))
    assert len(list((tmp_path / "cache").iterdir())) == 6
