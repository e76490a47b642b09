"""Optimisers (LARS, SGD), the warm-up + cosine lr schedule and epochs -> iterations."""

from .build import (
    build_lr_multiplier,
    build_lr_scheduler,
    build_optimizer,
    iterations_per_epoch,
    lars_param_groups,
    resolve_schedule,
    scaled_lr,
)
from .lars import LARS

__all__ = [
    "LARS",
    "build_lr_multiplier",
    "build_lr_scheduler",
    "build_optimizer",
    "iterations_per_epoch",
    "lars_param_groups",
    "resolve_schedule",
    "scaled_lr",
]
