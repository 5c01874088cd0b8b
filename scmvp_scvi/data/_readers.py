"""Paired RNA + ATAC MuData from the public file formats: GEO matrix-market releases and 10x Multiome."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from anndata.utils import make_index_unique
from mudata import MuData
from scipy import io, sparse

logger = logging.getLogger("scmvp_scvi")

_PEAK = re.compile(r"^(?P<chrom>[^:_-]+)[:_-](?P<start>\d+)[_-](?P<end>\d+)$")


def _existing(path: str | Path) -> Path:
    """Return ``path``, or ``path`` + ``.gz`` when only the compressed file exists."""
    path = Path(path)
    if path.exists():
        return path
    compressed = path.with_name(path.name + ".gz")
    if compressed.exists():
        return compressed
    raise FileNotFoundError(f"{path} (or {compressed.name}) not found.")


def peak_coordinates(names: Sequence[str]) -> pd.DataFrame:
    """Split peak names such as ``chr1:100-600`` or ``chr1_100_600`` into ``chrom``, ``start``, ``end``.

    Names that do not look like genomic intervals give missing values.
    """
    parsed = pd.Series(list(names), dtype=str).str.extract(_PEAK)
    parsed["start"] = pd.to_numeric(parsed["start"]).astype("Int64")
    parsed["end"] = pd.to_numeric(parsed["end"]).astype("Int64")
    return parsed


def read_mtx_modality(
    matrix: str | Path,
    barcodes: str | Path,
    features: str | Path,
    features_by_cells: bool = True,
    barcode_column: int | str = 0,
    feature_column: int | str = 0,
    header: bool = False,
) -> AnnData:
    """Read one modality from a matrix-market file and its barcode and feature tables (plain or gzipped).

    Parameters
    ----------
    matrix
        Matrix-market counts.
    barcodes, features
        Tables naming the cells and the features, one per line (tab-separated, or comma-separated for ``.csv``
        files and for ``.txt`` files with a header).
    features_by_cells
        The matrix has features as rows (the GEO convention); otherwise cells as rows.
    barcode_column, feature_column
        Column (position or, with ``header``, name) holding the cell barcode and the feature name.
    header
        The tables have a header line.

    Returns
    -------
    Cells x features, float32 CSR counts; the other columns of the tables go to ``obs`` and ``var``.
    """
    matrix, barcodes, features = _existing(matrix), _existing(barcodes), _existing(features)
    counts = sparse.csr_matrix(io.mmread(matrix), dtype=np.float32)
    if features_by_cells:
        counts = counts.T.tocsr()
    cell_table = pd.read_csv(barcodes, sep=_sep(barcodes, header), header=0 if header else None, dtype=str)
    feature_table = pd.read_csv(features, sep=_sep(features, header), header=0 if header else None, dtype=str)
    if counts.shape != (len(cell_table), len(feature_table)):
        raise ValueError(
            f"{matrix.name} holds a {counts.shape[0]} x {counts.shape[1]} matrix (cells x features), but "
            f"{barcodes.name} lists {len(cell_table)} cells and {features.name} {len(feature_table)} features; "
            "check the files belong together and `features_by_cells`."
        )
    cell_names = pd.Index(_column(cell_table, barcode_column, barcodes), dtype=str)
    if cell_names.has_duplicates:
        duplicated = cell_names[cell_names.duplicated()].unique()[:3].tolist()
        raise ValueError(f"{barcodes.name} lists some barcodes twice (e.g. {duplicated}); cells cannot be paired.")
    obs = cell_table.set_axis([str(c) for c in cell_table.columns], axis=1).drop(columns=[str(barcode_column)])
    var = feature_table.set_axis([str(c) for c in feature_table.columns], axis=1).drop(columns=[str(feature_column)])
    obs.index = cell_names
    var.index = make_index_unique(pd.Index(_column(feature_table, feature_column, features), dtype=str))
    return AnnData(counts, obs=obs, var=var)


def _sep(path: Path, header: bool) -> str:
    return "," if ".csv" in path.suffixes or (".txt" in path.suffixes and header) else "\t"


def _column(table: pd.DataFrame, column: int | str, path: Path) -> pd.Series:
    if isinstance(column, str):
        if column not in table.columns:
            raise ValueError(f"Column {column!r} not found in {path.name}; its columns are {list(table.columns)}.")
        return table[column]
    return table.iloc[:, column]


def pair_modalities(rna: AnnData, atac: AnnData) -> MuData:
    """Pair two modalities on their cell barcodes (``obs_names``), in the RNA order, and log dropped cells.

    Peak coordinates are parsed from the ATAC feature names into ``var`` (``chrom``, ``start``, ``end``).
    """
    for name, adata in (("RNA", rna), ("ATAC", atac)):
        if adata.obs_names.has_duplicates:
            duplicated = adata.obs_names[adata.obs_names.duplicated()].unique()[:3].tolist()
            raise ValueError(f"{name} barcodes are not unique (e.g. {duplicated}); cells cannot be paired.")
    shared = rna.obs_names[rna.obs_names.isin(atac.obs_names)]
    if len(shared) == 0:
        raise ValueError(
            f"No barcode is shared between RNA (e.g. {rna.obs_names[0]!r}) and ATAC (e.g. {atac.obs_names[0]!r}); "
            "check that both files come from the same experiment and that the barcode column is right."
        )
    logger.info(
        "Paired %d cells; dropped %d RNA-only and %d ATAC-only cells.",
        len(shared),
        rna.n_obs - len(shared),
        atac.n_obs - len(shared),
    )
    rna, atac = rna[shared].copy(), atac[shared].copy()
    coordinates = peak_coordinates(atac.var_names)
    if coordinates["chrom"].notna().all():
        for column in ("chrom", "start", "end"):
            if column not in atac.var:
                atac.var[column] = coordinates[column].to_numpy()
    return MuData({"rna": rna, "atac": atac})


def read_snare_seq(directory: str | Path, prefix: str = "GSE126074_AdBrainCortex_SNAREseq") -> MuData:
    """Read SNARE-seq as released on GEO (GSE126074) into a paired MuData.

    Files: ``{prefix}_cDNA.{counts.mtx,barcodes.tsv,genes.tsv}`` and
    ``{prefix}_chromatin.{counts.mtx,barcodes.tsv,peaks.tsv}`` (each possibly gzipped), features x cells.
    """
    directory = Path(directory)
    rna = read_mtx_modality(
        directory / f"{prefix}_cDNA.counts.mtx",
        directory / f"{prefix}_cDNA.barcodes.tsv",
        directory / f"{prefix}_cDNA.genes.tsv",
    )
    atac = read_mtx_modality(
        directory / f"{prefix}_chromatin.counts.mtx",
        directory / f"{prefix}_chromatin.barcodes.tsv",
        directory / f"{prefix}_chromatin.peaks.tsv",
    )
    return pair_modalities(rna, atac)


def read_sci_car(
    directory: str | Path,
    rna_prefix: str,
    atac_prefix: str,
    barcode_column: str = "sample",
    gene_column: str = "gene_short_name",
    peak_column: str = "peak",
) -> MuData:
    """Read sci-CAR as released on GEO (GSE117089) into a paired MuData.

    Per modality, a matrix-market count file (features x cells) and comma-separated cell and feature tables with
    a header. RNA files: ``{rna_prefix}_gene_count.txt``, ``{rna_prefix}_cell.txt``, ``{rna_prefix}_gene.txt``;
    ATAC files: ``{atac_prefix}_peak_count.txt``, ``{atac_prefix}_cell.txt``, ``{atac_prefix}_peak.txt`` (each possibly
    gzipped). Cells are paired on ``barcode_column`` of the two cell tables.
    """
    directory = Path(directory)
    rna = read_mtx_modality(
        directory / f"{rna_prefix}_gene_count.txt",
        directory / f"{rna_prefix}_cell.txt",
        directory / f"{rna_prefix}_gene.txt",
        barcode_column=barcode_column,
        feature_column=gene_column,
        header=True,
    )
    atac = read_mtx_modality(
        directory / f"{atac_prefix}_peak_count.txt",
        directory / f"{atac_prefix}_cell.txt",
        directory / f"{atac_prefix}_peak.txt",
        barcode_column=barcode_column,
        feature_column=peak_column,
        header=True,
    )
    return pair_modalities(rna, atac)


def read_paired_seq(
    directory: str | Path,
    prefix: str,
    rna_suffixes: tuple[str, str, str] = ("RNA_matrix.mtx", "RNA_barcodes.tsv", "RNA_genes.tsv"),
    atac_suffixes: tuple[str, str, str] = ("DNA_matrix.mtx", "DNA_barcodes.tsv", "DNA_peaks.tsv"),
) -> MuData:
    """Read Paired-seq count matrices into a paired MuData.

    Per modality, ``{prefix}_{suffix}`` files for the matrix-market counts (features x cells), the barcodes and
    the features (possibly gzipped). Cells are paired on their barcodes. The suffixes default to the layout of the
    GEO release (GSE130399); pass others for renamed files.
    """
    directory = Path(directory)
    rna = read_mtx_modality(*(directory / f"{prefix}_{suffix}" for suffix in rna_suffixes))
    atac = read_mtx_modality(*(directory / f"{prefix}_{suffix}" for suffix in atac_suffixes))
    return pair_modalities(rna, atac)


def read_10x_multiome(path: str | Path) -> MuData:
    """Read a 10x Multiome ``filtered_feature_bc_matrix.h5`` (with muon) as a MuData with ``rna`` and ``atac``.

    Gene names are made unique and peak coordinates are parsed into ``var`` (``chrom``, ``start``, ``end``).
    """
    import muon as mu

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found.")
    with warnings.catch_warnings():
        # gene names repeat in 10x files; they are made unique below
        warnings.filterwarnings("ignore", message=".*names are not unique", category=UserWarning)
        mdata = mu.read_10x_h5(path, extended=False)
        missing = {"rna", "atac"} - set(mdata.mod)
        if missing:
            raise ValueError(
                f"{path.name} has modalities {list(mdata.mod)} but no {sorted(missing)}: a Multiome file holds "
                "both 'Gene Expression' and 'Peaks' features."
            )
        rna, atac = mdata.mod["rna"].copy(), mdata.mod["atac"].copy()
    rna.var_names_make_unique()
    rna.X = sparse.csr_matrix(rna.X, dtype=np.float32)
    atac.X = sparse.csr_matrix(atac.X, dtype=np.float32)
    return pair_modalities(rna, atac)
