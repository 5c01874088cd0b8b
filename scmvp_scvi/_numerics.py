"""Floating-point settings for training on the CPU."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat subnormal floats (below about 1.2e-38 in float32) as zero while the block runs.

    Decoded peak proportions, their gradients and sharp cluster responsibilities can fall into that range, and CPU
    arithmetic on subnormal numbers is tens of times slower than on normal ones; rounding them to zero changes no
    result that matters. The setting is the PyTorch default (off) again afterwards.
    """
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)
