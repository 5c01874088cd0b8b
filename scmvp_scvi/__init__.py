"""scMVP for paired scRNA-seq + scATAC-seq on scvi-tools."""

from importlib.metadata import PackageNotFoundError, version

from . import data, metrics, pl, pp
from ._model import SCMVP
from ._module import SCMVPModule

try:
    __version__ = version("scmvp_scvi")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["SCMVP", "SCMVPModule", "data", "metrics", "pl", "pp"]
