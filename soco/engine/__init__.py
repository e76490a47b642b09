"""Pretraining engine: Detectron2's trainer loop with the project's hooks and checkpointer."""

from .checkpoint import PretrainCheckpointer
from .hooks import GlobalStateCheckHook, RNGStateHook, unwrap_model
from .pretrain import build_pretrain_trainer, build_training_model, run_pretraining
from .step import training_step
from .trainer import PretrainTrainer

__all__ = [
    "GlobalStateCheckHook",
    "PretrainCheckpointer",
    "PretrainTrainer",
    "RNGStateHook",
    "build_pretrain_trainer",
    "build_training_model",
    "run_pretraining",
    "training_step",
    "unwrap_model",
]
