"""One optimiser step of a pretraining method: the single definition of a training iteration.

``PretrainTrainer.run_step``, the in-memory pretraining of the quick checks (``soco.engine.in_memory``),
the benchmarks and the tests all call :func:`training_step`, so what they measure or check is
what a real run does: the method's ``on_step_start`` hook, ``accum_steps`` forward/backward
passes (only ``loss_*`` entries are summed; DDP syncs on the last micro-batch only), AMP
(float16 + GradScaler on GPU, bfloat16 autocast on CPU), the optimiser step, the lr schedule's
step when one is given, and the method's ``on_step_end`` hook (EMA, schedules, resets).
"""

import contextlib
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch.nn.parallel import DistributedDataParallel

from .hooks import unwrap_model

__all__ = ["autocast_context", "make_grad_scaler", "training_step"]


def autocast_context(amp: bool, device_type: str):
    """float16 autocast on GPU, bfloat16 on CPU (CPUs have no fast float16), or nothing."""
    if not amp:
        return contextlib.nullcontext()
    dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    return torch.autocast(device_type, dtype=dtype)


def make_grad_scaler(amp: bool, device_type: str) -> Optional[torch.amp.GradScaler]:
    """A GradScaler for float16 AMP on GPU; None otherwise (bfloat16 needs no loss scaling)."""
    return torch.amp.GradScaler("cuda") if amp and device_type == "cuda" else None


def training_step(
    model: torch.nn.Module,
    next_batch: Callable[[], List[dict]],
    optimizer: torch.optim.Optimizer,
    iteration: int,
    max_iter: int,
    accum_steps: int = 1,
    amp: bool = False,
    device_type: str = "cpu",
    grad_scaler: Optional[torch.amp.GradScaler] = None,
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None,
    method_hooks: bool = True,
) -> Tuple[Dict[str, torch.Tensor], float]:
    """Run optimiser step ``iteration`` (0-based) of ``max_iter`` on ``model`` (the meta-
    architecture, possibly wrapped by DDP and/or torch.compile).

    ``next_batch()`` returns one micro-batch (a list of mapped dicts); it is called
    ``accum_steps`` times. ``scheduler`` (optional) is stepped after the optimiser (the trainer
    leaves that to Detectron2's LRScheduler hook instead). ``method_hooks=False`` skips
    ``on_step_start`` / ``on_step_end`` (a caller that runs them itself); a model without them
    (a plain ``nn.Module``) runs without.

    Returns (metrics, data_time): every scalar entry of the model's output dicts averaged over
    the micro-batches as detached 0-d tensors (no device sync: callers reduce and log them when
    they choose), and the seconds spent in ``next_batch``.
    """
    assert model.training, "training_step needs the model in training mode"
    method = unwrap_model(model)
    # A plain nn.Module (no PretrainMetaArch) has no step hooks to call.
    method_hooks = method_hooks and hasattr(method, "on_step_start")
    if method_hooks:
        method.on_step_start(iteration, max_iter)
    optimizer.zero_grad(set_to_none=True)
    metrics: Dict[str, torch.Tensor] = {}
    data_time = 0.0
    for micro in range(accum_steps):
        start = time.perf_counter()
        data = next_batch()
        data_time += time.perf_counter() - start
        last = micro == accum_steps - 1
        no_sync = isinstance(model, DistributedDataParallel) and not last
        with model.no_sync() if no_sync else contextlib.nullcontext():
            with autocast_context(amp, device_type):
                out = model(data)
            losses = [v for k, v in out.items() if k.startswith("loss_")]
            if not losses:
                raise ValueError(f"the model returned no 'loss_*' entry, only {sorted(out)}")
            loss = sum(losses) / accum_steps
            (grad_scaler.scale(loss) if grad_scaler is not None else loss).backward()
        for k, v in out.items():
            value = v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v))
            metrics[k] = metrics[k] + value / accum_steps if k in metrics else value / accum_steps
    if grad_scaler is not None:
        grad_scaler.step(optimizer)
        grad_scaler.update()
    else:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    if method_hooks:
        method.on_step_end(iteration, max_iter)
    return metrics, data_time

