"""Memory checks that run before an output is computed, so that a result too large for RAM fails early and clearly."""

from __future__ import annotations

from pathlib import Path


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``; psutil elsewhere), or ``None``."""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        import psutil
    except ImportError:  # no way to know: do not block the user
        return None
    return int(psutil.virtual_memory().available)


def check_output_fits(n_bytes: int, what: str, routes: str) -> None:
    """Raise :class:`MemoryError` if an output of ``n_bytes`` would not fit in the memory available now.

    Parameters
    ----------
    n_bytes
        Size of the output.
    what
        The output, as the message should name it.
    routes
        How to get the result in less memory, as the message should suggest it.
    """
    available = available_memory()
    if available is not None and n_bytes > available:
        raise MemoryError(
            f"{what} would need {n_bytes / 1e9:.1f} GB, but only {available / 1e9:.1f} GB of memory is available. "
            f"{routes}"
        )
