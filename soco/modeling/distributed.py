"""Cross-process helpers for methods with global state (queues, clusters, groups).

Detectron2's ``comm.all_gather`` pickles arbitrary objects through a CPU group; these helpers
move same-shaped tensors on the training device with ``torch.distributed``. With one process
they return their input (or do nothing).

Global state (identical on every process by construction):
* every parameter (DDP keeps the online ones equal; EMA copies follow them) and every buffer
  outside BatchNorm layers (queues, dual variables, labels, centres, groups, counters);
* it is broadcast from rank 0 once after the model is built (:func:`broadcast_module_state`),
  then updated only from all-gathered data, and checked now and then
  (:func:`check_global_state`), because equal inputs do not guarantee equal results on GPUs
  (``index_add_`` is not deterministic there).
BatchNorm running statistics are local (per-process BN, MoCo's shuffle-BN) unless SyncBN.
"""

from typing import Dict, List

import torch
import torch.distributed as dist
from detectron2.utils import comm
from torch import nn

__all__ = [
    "all_gather_with_grad",
    "broadcast_module_state",
    "check_global_state",
    "concat_all_gather",
    "global_state_tensors",
    "GlobalStateMismatch",
    "tensor_fingerprint",
]


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """(B, ...) per process -> (world_size * B, ...), rank-major, no gradient."""
    if comm.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(comm.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradients over processes and returns this
    process's slice: every process's loss that used the gathered tensor contributes to the
    gradient of the local rows, as with one process holding the whole batch."""

    @staticmethod
    def forward(ctx, tensor):
        return concat_all_gather(tensor)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(comm.get_world_size(), dim=0)[comm.get_rank()]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """(B, ...) per process -> (world_size * B, ...) rank-major, differentiable.

    The gradient is exact at any world size under DDP's gradient averaging: the local rows get
    the sum over processes of d(loss_r)/d(rows); DDP then divides the parameters' gradients by
    the world size, which gives the gradient of the mean of the per-process losses, the same as
    one process with the whole batch. Every process must call it (and its backward) in the same
    order, as any collective."""
    if comm.get_world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


@torch.no_grad()
def broadcast_module_state(module: nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer of ``module`` from rank ``src`` to the other processes.

    Called once after building, so random initialisations made per process (CoKe's centres,
    CLSA's queue, the heads) are rank 0's everywhere. DDP's own start-up sync is not enough:
    with ``broadcast_buffers=False`` it skips the buffers."""
    if comm.get_world_size() == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=src)


def global_state_tensors(module: nn.Module) -> Dict[str, torch.Tensor]:
    """Name -> tensor of the state that must be equal on every process (module docstring):
    every parameter and every buffer not owned by a BatchNorm layer."""
    local = set()
    for name, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._NormBase):
            local.update(f"{name}.{b}" if name else b for b, _ in sub.named_buffers(recurse=False))
    out = dict(module.named_parameters())
    out.update((n, b) for n, b in module.named_buffers() if n not in local)
    return out


_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_CHUNK = 1 << 22  # elements per step: bounds the int64 temporaries to 32 MB


@torch.no_grad()
def tensor_fingerprint(tensor: torch.Tensor) -> torch.Tensor:
    """A 0-d int64 hash of the tensor's bits: sum_i bits_i * (i mod 65521 + 1), with int64
    wrap-around. Equal tensors give equal hashes; one changed bit changes it (the weights are
    never a multiple of 2^64). Works chunk by chunk, so a large cache costs no full copy."""
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    bits = flat.view(_INT_VIEW[flat.element_size()])
    total = torch.zeros((), dtype=torch.int64, device=flat.device)
    for start in range(0, bits.numel(), _CHUNK):
        part = bits[start : start + _CHUNK].to(torch.int64)
        weights = torch.arange(start, start + part.numel(), device=flat.device) % 65521 + 1
        total += (part * weights).sum()
    return total


class GlobalStateMismatch(RuntimeError):
    """Raised on every process when the global state differs across processes."""


@torch.no_grad()
def check_global_state(module: nn.Module, iteration: int) -> None:
    """All-gather a fingerprint of every global tensor (:func:`global_state_tensors`) and raise
    :class:`GlobalStateMismatch` on every process, naming the tensors and ``iteration``, when
    any process disagrees with rank 0. One small collective: one int64 per tensor."""
    if comm.get_world_size() == 1:
        return
    tensors = global_state_tensors(module)
    names = list(tensors)
    mine = torch.stack([tensor_fingerprint(tensors[n]) for n in names])
    everyone: List[torch.Tensor] = [torch.empty_like(mine) for _ in range(comm.get_world_size())]
    dist.all_gather(everyone, mine)
    stacked = torch.stack(everyone)
    differs = (stacked != stacked[0]).any(dim=0).nonzero().flatten().tolist()
    if differs:
        bad = [names[i] for i in differs]
        ranks = sorted({r for i in differs for r in range(len(everyone)) if stacked[r, i] != stacked[0, i]})
        raise GlobalStateMismatch(
            f"global state differs across processes at iteration {iteration}: "
            f"{', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''} (ranks {ranks} disagree with rank 0)"
        )
