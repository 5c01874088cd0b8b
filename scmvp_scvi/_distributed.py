"""Work done once in a distributed (DDP) training job and shared with every process."""

from __future__ import annotations

from collections.abc import Callable

import torch


def distributed_rank() -> int | None:
    """Return the rank of this process in a running process group of several processes, else ``None``."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank()
    return None


def computed_once[T](compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0 of a running process group, its result sent to every rank; else ``compute()``.

    Lightning's DDP runs the user's script in every process and keeps the process group between two ``fit``
    calls, so a step between them (the mixture initialisation) would otherwise run once per process, each
    time on all cells. An error on rank 0 is raised on every rank, so that no rank waits forever.
    """
    rank = distributed_rank()
    if rank is None:
        return compute()
    box: list = [None]
    if rank == 0:
        try:
            box[0] = (True, compute())
        except Exception as error:
            box[0] = (False, error)
    torch.distributed.broadcast_object_list(box, src=0)
    succeeded, value = box[0]
    if not succeeded:
        raise value
    return value
