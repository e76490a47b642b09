"""The pretraining loop: Detectron2's SimpleTrainer with accumulation, AMP and loss filtering.

``run_step`` differs from SimpleTrainer's in three ways, which is why it is overridden:
only ``loss_*`` entries of the model's dict are summed (others are logged); one optimiser step
may accumulate gradients over ``accum_steps`` micro-batches (DDP syncs on the last only); AMP is
an option of the same class (float16 + GradScaler on GPU, bfloat16 autocast on CPU) rather than
a second trainer class, so accumulation and AMP combine.
"""

import contextlib
import time
from typing import Dict, Mapping

import numpy as np
import torch
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch.nn.parallel import DistributedDataParallel

from ..data.transforms.device import apply_deferred_photometric

__all__ = ["PretrainTrainer"]


class PretrainTrainer(SimpleTrainer):
    """SimpleTrainer whose iterations are optimiser steps over ``accum_steps`` micro-batches.

    ``data_loader`` yields per-process micro-batches; if it has a ``start_iter`` attribute
    (``soco.data.build.ResumableLoader``), ``train`` sets it so a resumed run sees the data an
    uninterrupted run would.
    """

    def __init__(self, model, data_loader, optimizer, accum_steps: int = 1, amp: bool = False, device: str = "cpu"):
        super().__init__(model, data_loader, optimizer)
        self.accum_steps = accum_steps
        self.amp = amp
        self.device_type = torch.device(device).type
        use_scaler = amp and self.device_type == "cuda"
        self.grad_scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    def train(self, start_iter: int, max_iter: int):
        if hasattr(self.data_loader, "start_iter"):
            self.data_loader.start_iter = start_iter
        super().train(start_iter, max_iter)

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.device_type == "cuda" else torch.bfloat16
        return torch.autocast(self.device_type, dtype=dtype)

    def run_step(self):
        assert self.model.training, "[PretrainTrainer] model was changed to eval mode!"
        self.optimizer.zero_grad(set_to_none=True)
        metrics: Dict[str, float] = {}
        data_time = 0.0
        for micro in range(self.accum_steps):
            start = time.perf_counter()
            data = next(self._data_loader_iter)
            data_time += time.perf_counter() - start
            data = apply_deferred_photometric(data, self.device_type)  # PRETRAIN.AUGMENT_ON "device"
            last = micro == self.accum_steps - 1
            no_sync = isinstance(self.model, DistributedDataParallel) and not last
            with self.model.no_sync() if no_sync else contextlib.nullcontext():
                with self._autocast():
                    out = self.model(data)
                losses = [v for k, v in out.items() if k.startswith("loss_")]
                if not losses:
                    raise ValueError(f"the model returned no 'loss_*' entry, only {sorted(out)}")
                loss = sum(losses) / self.accum_steps
                (self.grad_scaler.scale(loss) if self.grad_scaler else loss).backward()
            for k, v in out.items():
                value = v.detach().float().item() if torch.is_tensor(v) else float(v)
                metrics[k] = metrics.get(k, 0.0) + value / self.accum_steps
        self.write_pretrain_metrics(metrics, data_time)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    @staticmethod
    def write_pretrain_metrics(metrics: Mapping[str, float], data_time: float) -> None:
        """Average over processes; ``total_loss`` = sum of the ``loss_*`` entries only."""
        all_metrics = comm.gather(dict(metrics, data_time=data_time))
        if not comm.is_main_process():
            return
        storage = get_event_storage()
        storage.put_scalar("data_time", np.max([m.pop("data_time") for m in all_metrics]))
        mean = {k: float(np.mean([m[k] for m in all_metrics])) for k in all_metrics[0]}
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
