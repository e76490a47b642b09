"""Pretraining engine: Detectron2's trainer loop with the project's hooks and checkpointer."""

from .checkpoint import PretrainCheckpointer
from .hooks import MethodStepHook, RNGStateHook, unwrap_model
from .pretrain import build_pretrain_trainer, run_pretraining
from .trainer import PretrainTrainer

__all__ = [
    "MethodStepHook",
    "PretrainCheckpointer",
    "PretrainTrainer",
    "RNGStateHook",
    "build_pretrain_trainer",
    "run_pretraining",
    "unwrap_model",
]
