"""Hooks of the pretraining loop (the rest are Detectron2's own)."""

import random

import numpy as np
import torch
from detectron2.engine import HookBase
from torch.nn.parallel import DistributedDataParallel

__all__ = ["MethodStepHook", "RNGStateHook", "unwrap_model"]


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The meta-architecture inside DDP and/or torch.compile wrappers."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


class MethodStepHook(HookBase):
    """Calls the method's ``on_step_start`` / ``on_step_end(iteration, max_iter)`` around each
    optimiser step (EMA update, momentum / temperature schedules, periodic resets)."""

    def __init__(self, model: torch.nn.Module):
        self._model = unwrap_model(model)

    def before_step(self):
        self._model.on_step_start(self.trainer.iter, self.trainer.max_iter)

    def after_step(self):
        self._model.on_step_end(self.trainer.iter, self.trainer.max_iter)


class RNGStateHook(HookBase):
    """Puts the process's Python/NumPy/torch (and CUDA) RNG states into checkpoints, so random
    choices made inside a model (k-means initialisation, sampling) resume exactly too.
    The data pipeline does not need it (it seeds per sample)."""

    def state_dict(self):
        # Plain lists and tensors only: checkpoints are read with torch.load(weights_only=True).
        name, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "python": random.getstate(),
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state_dict):
        random.setstate(state_dict["python"])
        name, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state(state_dict["cuda"])
