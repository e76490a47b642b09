"""The pretraining loop: Detectron2's SimpleTrainer whose step is :func:`soco.engine.step.training_step`.

``run_step`` differs from SimpleTrainer's, which is why it is overridden: the step (the
method's hooks, gradient accumulation, AMP, loss filtering) is the project's single
``training_step``; and metrics are not synchronised every step: the step's loss tensors stay
on the device and are reduced across processes and written to the EventStorage only at
iterations ``k`` with ``(k + 1) % log_period == 0`` and at the last one (a ``.item()`` or a
``comm.gather`` per step would stall the GPU queue every iteration). The values written are
that iteration's, averaged over processes; the NaN check runs at those iterations too.
"""

from typing import Dict, Mapping

import numpy as np
import torch
import torch.distributed as dist
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from ..data.transforms.device import apply_deferred_photometric
from .step import make_grad_scaler, training_step

__all__ = ["PretrainTrainer"]


class PretrainTrainer(SimpleTrainer):
    """SimpleTrainer whose iterations are optimiser steps over ``accum_steps`` micro-batches.

    ``data_loader`` yields per-process micro-batches; if it has a ``start_iter`` attribute
    (``soco.data.build.ResumableLoader``), ``train`` sets it so a resumed run sees the data an
    uninterrupted run would. ``last_metrics`` holds the latest step's metrics (0-d tensors).
    """

    def __init__(self, model, data_loader, optimizer, accum_steps: int = 1, amp: bool = False,
                 device: str = "cpu", log_period: int = 1):
        super().__init__(model, data_loader, optimizer)
        self.accum_steps = accum_steps
        self.amp = amp
        self.device_type = torch.device(device).type
        self.grad_scaler = make_grad_scaler(amp, self.device_type)
        if log_period < 1:
            raise ValueError(f"PRETRAIN.LOG_PERIOD must be >= 1, got {log_period}")
        self.log_period = log_period
        self.last_metrics: Dict[str, torch.Tensor] = {}

    def train(self, start_iter: int, max_iter: int):
        if hasattr(self.data_loader, "start_iter"):
            self.data_loader.start_iter = start_iter
        super().train(start_iter, max_iter)

    def run_step(self):
        assert self.model.training, "[PretrainTrainer] model was changed to eval mode!"
        def next_batch():
            # PRETRAIN.AUGMENT_ON "device": the loader deferred the colour operations to here.
            return apply_deferred_photometric(next(self._data_loader_iter), self.device_type)

        metrics, data_time = training_step(
            self.model, next_batch, self.optimizer, self.iter, self.max_iter,
            self.accum_steps, self.amp, self.device_type, self.grad_scaler,
        )
        self.last_metrics = metrics
        if (self.iter + 1) % self.log_period == 0 or self.iter + 1 >= self.max_iter:
            self.write_pretrain_metrics(metrics, data_time)

    @staticmethod
    def write_pretrain_metrics(metrics: Mapping[str, torch.Tensor], data_time: float) -> None:
        """Average the metrics over processes (one all-reduce of a stacked vector, in float64,
        so the mean does not depend on the reduction order); data_time is the slowest
        process's; ``total_loss`` = sum of the ``loss_*`` entries only."""
        names = sorted(metrics)
        values = torch.stack([torch.as_tensor(metrics[k]).double().reshape(()).cpu() for k in names])
        if comm.get_world_size() > 1:
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            values = values.to(device)
            dist.all_reduce(values)
            values = values / comm.get_world_size()
            timing = torch.tensor([data_time], dtype=torch.float64, device=device)
            dist.all_reduce(timing, op=dist.ReduceOp.MAX)
            data_time = float(timing)
        if not comm.is_main_process():
            return
        mean = dict(zip(names, values.cpu().tolist()))
        storage = get_event_storage()
        storage.put_scalar("data_time", data_time)
        total = sum(v for k, v in mean.items() if k.startswith("loss_"))
        if not np.isfinite(total):
            raise FloatingPointError(f"Loss became infinite or NaN at iteration={storage.iter}!\n{mean}")
        storage.put_scalar("total_loss", total)
        storage.put_scalars(**mean)

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
