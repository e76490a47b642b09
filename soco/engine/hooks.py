"""Hooks of the pretraining loop (the rest are Detectron2's own)."""

import logging
import random

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

from ..modeling.distributed import check_global_state

__all__ = ["GlobalStateCheckHook", "RNGStateHook", "unwrap_model"]

logger = logging.getLogger(__name__)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The meta-architecture inside DDP and/or torch.compile wrappers."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def _local_rng_state():
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


def _set_local_rng_state(state):
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class RNGStateHook(HookBase):
    """Puts every process's Python/NumPy/torch (and CUDA) RNG states into checkpoints, so
    random choices made inside a model (k-means initialisation, sampling) resume exactly too.
    The data pipeline does not need it (it seeds per sample).

    Only rank 0 writes checkpoints, so at each iteration where the PeriodicCheckpointer saves
    (``(iter + 1) % period == 0`` and the last one) this hook, placed before it, gathers the
    states of all processes. Resuming at another world size gives process r the state of old
    process r mod W (logged): the run continues, but random draws inside the model differ
    from an uninterrupted run at the new size.
    """

    def __init__(self, checkpoint_period: int):
        self.period = checkpoint_period
        self._gathered = None

    def after_step(self):
        it = self.trainer.iter
        if (it + 1) % self.period == 0 or it >= self.trainer.max_iter - 1:
            self._gathered = comm.all_gather(_local_rng_state())

    def state_dict(self):
        return {"per_rank": self._gathered or [_local_rng_state()]}

    def load_state_dict(self, state_dict):
        states = state_dict["per_rank"] if "per_rank" in state_dict else [state_dict]  # older single-state files
        rank, world = comm.get_rank(), comm.get_world_size()
        if len(states) != world:
            logger.warning(
                f"the checkpoint holds the RNG states of {len(states)} processes, this run has {world}: "
                f"process {rank} continues with those of process {rank % len(states)}"
            )
        _set_local_rng_state(states[rank % len(states)])


class GlobalStateCheckHook(HookBase):
    """Every ``period`` iterations (and before the first and after the last), check that the
    global state (parameters, EMA copies, queues, clusters, groups; see
    ``soco.modeling.distributed``) is bit-identical on every process; stop the run with an
    error naming the tensors and the iteration otherwise. ``period`` 0 disables it; with one
    process it costs nothing."""

    def __init__(self, model: torch.nn.Module, period: int):
        self._model = unwrap_model(model)
        self.period = period

    def before_train(self):
        if self.period > 0:
            check_global_state(self._model, self.trainer.iter)

    def after_step(self):
        it = self.trainer.iter
        if self.period > 0 and ((it + 1) % self.period == 0 or it >= self.trainer.max_iter - 1):
            check_global_state(self._model, it)
