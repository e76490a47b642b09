"""Cross-process tensor gathering for methods with global state (queues, clusters, groups).

Detectron2's ``comm.all_gather`` pickles arbitrary objects through a CPU group; these helpers
gather same-shaped tensors on the training device with ``torch.distributed.all_gather``. With
one process (CPU tests) they return their input.
"""

import torch
import torch.distributed as dist
from detectron2.utils import comm

__all__ = ["concat_all_gather", "concat_all_gather_keep_local_grad"]


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """(B, ...) per process -> (world_size * B, ...), rank-major, no gradient."""
    if comm.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(comm.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def concat_all_gather_keep_local_grad(tensor: torch.Tensor) -> torch.Tensor:
    """As :func:`concat_all_gather`, but this process's slice is ``tensor`` itself, so gradients
    reach the local inputs (each process back-propagates its own part)."""
    if comm.get_world_size() == 1:
        return tensor
    parts = list(concat_all_gather(tensor.detach()).chunk(comm.get_world_size(), dim=0))
    parts[comm.get_rank()] = tensor
    return torch.cat(parts, dim=0)
