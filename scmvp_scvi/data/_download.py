"""Public paired data sets, downloaded once into a cache and checked against their published checksums."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from mudata import MuData

from ._readers import read_snare_seq

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


def default_cache_dir() -> Path:
    """Return ``$SCMVP_CACHE_DIR``, or ``~/.cache/scmvp_scvi``."""
    return Path(os.environ.get("SCMVP_CACHE_DIR", Path.home() / ".cache" / "scmvp_scvi"))


def md5sum(path: str | Path) -> str:
    """Return the hex MD5 digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, path: str | Path, md5: str | None = None) -> Path:
    """Download ``url`` to ``path`` unless a file with the right checksum is already there.

    The download goes to a temporary file that is moved into place only once its checksum matches, so an
    interrupted or corrupted download never poisons the cache.
    """
    path = Path(path)
    if path.exists() and (md5 is None or md5sum(path) == md5):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading %s to %s.", url, path)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        with urllib.request.urlopen(url) as response:
            shutil.copyfileobj(response, tmp)
    if md5 is not None and (found := md5sum(tmp.name)) != md5:
        os.unlink(tmp.name)
        raise OSError(f"Checksum mismatch for {url}: expected MD5 {md5}, got {found}. Try again later.")
    os.replace(tmp.name, path)
    return path


def snare_seq_cortex(cache_dir: str | Path | None = None, base_url: str = _GEO_SNARE) -> MuData:
    """Download (once) and read SNARE-seq adult mouse cortex (Chen et al. 2019, GEO GSE126074).

    All genes and peaks as raw counts. The six GEO files are downloaded once into ``cache_dir`` (default
    :func:`default_cache_dir`) and verified against :data:`SNARE_SEQ_CORTEX_FILES`.
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "GSE126074"
    for name, md5 in SNARE_SEQ_CORTEX_FILES.items():
        fetch(base_url + name, directory / name, md5)
    return read_snare_seq(directory)
