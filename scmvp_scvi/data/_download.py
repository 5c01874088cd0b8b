"""Public paired data sets, downloaded once into a cache (with pooch) and checked against their checksums."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pooch
from anndata import AnnData
from mudata import MuData
from scipy import sparse

from ._readers import peak_coordinates, read_snare_seq

logger = logging.getLogger("scmvp_scvi")

_GEO_SNARE = "https://ftp.ncbi.nlm.nih.gov/geo/series/GSE126nnn/GSE126074/suppl/"
#: MD5 checksums of the SNARE-seq adult mouse cortex files on GEO (GSE126074).
SNARE_SEQ_CORTEX_FILES = {
    "GSE126074_AdBrainCortex_SNAREseq_cDNA.counts.mtx.gz": "068a9754299c4f769d131ce2a4f35134",
    "GSE126074_AdBrainCortex_SNAREseq_cDNA.barcodes.tsv.gz": "deb151424a15ecfa604e5e3991d33d04",
    "GSE126074_AdBrainCortex_SNAREseq_cDNA.genes.tsv.gz": "7e7cf58b72cceb1811de8be7d8739572",
    "GSE126074_AdBrainCortex_SNAREseq_chromatin.counts.mtx.gz": "c8bd4b5e1178b07ff5bce8009c968aef",
    "GSE126074_AdBrainCortex_SNAREseq_chromatin.barcodes.tsv.gz": "b4217e005793b8d200fd071970c48382",
    "GSE126074_AdBrainCortex_SNAREseq_chromatin.peaks.tsv.gz": "8634ff5f9a356f9af4bb11b1651fa4f7",
}

#: Where :func:`snare_cortex` downloads its files from: the scMoMaT repository (MIT licence) at a fixed commit.
SNARE_CORTEX_URL = (
    "https://raw.githubusercontent.com/PeterZZQ/scMoMaT/dbd954de4b1be415cdea543baf2856df0fda6992/"
    "data/real/MOp_5batches/"
)
#: SHA-256 checksums of the files :func:`snare_cortex` and :func:`snare_cortex_gene_peak_links` read.
SNARE_CORTEX_FILES = {
    "GxC1.npz": "44e48e6243954feafe0541f33b6b116093ca1ed4a25fc2f3ca146d89d1ab1bab",
    "GxR.npz": "a08249c98fb40a18c8271c9653bbd9540c23464135bf1b02f37a1243d472489f",
    "RxC1.npz": "59d6f46dc4e908194bfc859b7773bc666d96ab74d9386b0a8f92d6b29dfcacf7",
    "genes.txt": "9d722d1d281f5ff152dc8a1fb257fec883b8aa28ea3f4f79783d0595dd8b4833",
    "regions.txt": "d77319b1ad8a51af2c97ffa5d23d5458e95356b1926e9ae4e0ab821cc7e492a3",
    "meta_c1.csv": "05ea13be8042f66ee51516ccf9fd28ca43972498a69748a9e89b5b1ca280b037",
}
SNARE_CORTEX_DESCRIPTION = (
    "SNARE-seq adult mouse cortex (Chen et al. 2019, GEO GSE126074, AdBrainCortex), the 10,309 cells and the gene "
    "and peak subsets used in the scMoMaT repository (PeterZZQ/scMoMaT, data/real/MOp_5batches, MIT)."
)


def default_cache_dir() -> Path:
    """Return ``$SCMVP_CACHE_DIR``, or ``~/.cache/scmvp_scvi``."""
    return Path(os.environ.get("SCMVP_CACHE_DIR", Path.home() / ".cache" / "scmvp_scvi"))


def _local_path(url: str) -> Path | None:
    """Return the file a ``file://`` URL or a plain path points to; ``None`` for a remote URL."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if len(parsed.scheme) <= 1:  # a plain path (a one-letter scheme is a Windows drive)
        return Path(url)
    return None


def _copy_local(url: str, output_file: str, _pooch: object) -> None:
    """Copy a file on this machine into the cache: pooch's downloader for a local mirror."""
    shutil.copyfile(_local_path(url), output_file)


def fetch(url: str, path: str | Path, checksum: str | None = None) -> Path:
    """Download ``url`` to ``path`` unless a file with the right checksum is already there.

    Parameters
    ----------
    url
        ``https://``, ``ftp://`` or ``file://`` URL, or a path on this machine.
    path
        Where the file is kept.
    checksum
        Its expected hash: ``"md5:..."``, ``"sha256:..."``, or a bare hex digest (MD5 if 32 characters long,
        SHA-256 otherwise). ``None``: not checked.

    The download goes to a temporary file that is moved into place only once its checksum matches, so an
    interrupted or corrupted download never poisons the cache.
    """
    path = Path(path)
    if checksum is not None and ":" not in checksum:
        checksum = f"{'md5' if len(checksum) == 32 else 'sha256'}:{checksum}"
    downloader = _copy_local if _local_path(url) is not None else None
    try:
        found = pooch.retrieve(
            url, known_hash=checksum, fname=path.name, path=path.parent, downloader=downloader, progressbar=False
        )
    except ValueError as error:
        if "hash" not in str(error):
            raise
        raise OSError(
            f"Checksum mismatch for {url}: {error} Try again later, or delete {path} if it is there."
        ) from error
    return Path(found)


def snare_seq_cortex(cache_dir: str | Path | None = None, base_url: str = _GEO_SNARE) -> MuData:
    """Download (once) and read SNARE-seq adult mouse cortex (Chen et al. 2019, GEO GSE126074).

    All genes and peaks as raw counts, without cell-type labels (for the labelled subset the tutorials use, see
    :func:`snare_cortex`). The six GEO files are downloaded once into ``cache_dir`` (default
    :func:`default_cache_dir`) and verified against :data:`SNARE_SEQ_CORTEX_FILES`.
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "GSE126074"
    for name, md5 in SNARE_SEQ_CORTEX_FILES.items():
        fetch(base_url + name, directory / name, f"md5:{md5}")
    return read_snare_seq(directory)


def snare_cortex(cache_dir: str | Path | None = None, base_url: str | None = None) -> MuData:
    """Labelled SNARE-seq adult mouse cortex: 10,309 cells, 1,677 genes, 25,734 peaks, 15 cell types.

    The data of the tutorials and benchmarks (Chen et al. 2019, GEO GSE126074): the cells, cell-type labels and
    gene and peak subsets that the scMoMaT repository (PeterZZQ/scMoMaT, MIT) distributes. Five files (about
    6 MB) are downloaded once into ``cache_dir`` and verified against :data:`SNARE_CORTEX_FILES`; later calls
    read the cache.

    Parameters
    ----------
    cache_dir
        Folder for the downloaded files; default ``default_cache_dir() / "snare_cortex"``.
    base_url
        Where the files are: a URL (of the folder holding them) or a folder on this machine. Default
        ``$SCMVP_SNARE_CORTEX_URL`` if set, else :data:`SNARE_CORTEX_URL`.

    Returns
    -------
    MuData with modalities ``rna`` and ``atac`` holding raw counts (float32 CSR); ``obs`` has ``batch`` (12
    library preparations), ``cell_type`` (15 types) and ``cell_type_fine`` (23), also in each modality; peaks are
    named ``chrom:start-end`` (mm10) with ``chrom``, ``start`` and ``end`` in ``var``.
    """
    names = ("GxC1.npz", "RxC1.npz", "genes.txt", "regions.txt", "meta_c1.csv")
    return build_snare_cortex({name: _snare_cortex_file(name, cache_dir, base_url) for name in names})


def snare_cortex_gene_peak_links(cache_dir: str | Path | None = None, base_url: str | None = None) -> sparse.csr_matrix:
    """Which peaks of :func:`snare_cortex` belong to which gene: a 0/1 genes x peaks matrix, in its orders.

    Downloaded once like :func:`snare_cortex` (same ``cache_dir`` and ``base_url``).
    """
    links = sparse.load_npz(_snare_cortex_file("GxR.npz", cache_dir, base_url))
    return sparse.csr_matrix(links, dtype=np.float32)


def _snare_cortex_file(name: str, cache_dir: str | Path | None, base_url: str | None) -> Path:
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "snare_cortex"
    base_url = base_url or os.environ.get("SCMVP_SNARE_CORTEX_URL") or SNARE_CORTEX_URL
    local = _local_path(base_url)
    url = str(local / name) if local is not None else base_url.rstrip("/") + "/" + name
    return fetch(url, directory / name, f"sha256:{SNARE_CORTEX_FILES[name]}")


def build_snare_cortex(paths: dict[str, Path]) -> MuData:
    """Assemble the :func:`snare_cortex` MuData from its five source files (keys of :data:`SNARE_CORTEX_FILES`)."""
    meta = pd.read_csv(paths["meta_c1.csv"], index_col=0)
    obs = pd.DataFrame(
        {
            "batch": meta["Batch"].astype(str),
            "cell_type": meta["cluster (remapped)"].astype(str),
            "cell_type_fine": meta["Ident"].astype(str),
        },
        index=meta.index.astype(str),
    ).astype("category")
    obs.index.name = None
    genes = Path(paths["genes.txt"]).read_text().split()
    regions = Path(paths["regions.txt"]).read_text().split()
    coordinates = peak_coordinates(regions)
    peaks = coordinates["chrom"] + ":" + coordinates["start"].astype(str) + "-" + coordinates["end"].astype(str)
    rna_var = pd.DataFrame({"feature_types": pd.Categorical(["Gene Expression"] * len(genes))}, index=genes)
    atac_var = pd.DataFrame(
        {
            "chrom": pd.Categorical(coordinates["chrom"], categories=coordinates["chrom"].unique()),
            "start": coordinates["start"].astype(np.int64).to_numpy(),
            "end": coordinates["end"].astype(np.int64).to_numpy(),
            "feature_types": pd.Categorical(["Peaks"] * len(regions)),
        },
        index=pd.Index(peaks.to_numpy(), dtype=str),
    )
    modalities = {}
    for name, matrix_file, var in (("rna", "GxC1.npz", rna_var), ("atac", "RxC1.npz", atac_var)):
        counts = sparse.csr_matrix(sparse.load_npz(paths[matrix_file]).T, dtype=np.float32)
        if counts.shape != (len(obs), len(var)):
            raise ValueError(
                f"{matrix_file} holds {counts.shape[1]} x {counts.shape[0]} (features x cells), but the name files "
                f"list {len(var)} features and {len(obs)} cells; the files do not belong together."
            )
        counts.sort_indices()
        modalities[name] = AnnData(counts, obs=obs.copy(), var=var)
    mdata = MuData(modalities)
    for column in obs:  # the labels at the top level too, as in scverse pipelines
        mdata.obs[column] = obs[column]
    mdata.uns["source"] = SNARE_CORTEX_DESCRIPTION
    return mdata
