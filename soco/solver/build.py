"""Optimiser, lr schedule and the epochs -> iterations conversion of pretraining runs."""

import logging
from typing import Any, Dict, List

import torch
from detectron2.config import CfgNode
from detectron2.solver.build import get_default_optimizer_params
from detectron2.solver.lr_scheduler import LRMultiplier
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
    ParamScheduler,
)
from torch import nn

from ..utils.errors import ConfigError
from .lars import LARS

__all__ = [
    "iterations_per_epoch",
    "resolve_schedule",
    "scaled_lr",
    "lars_param_groups",
    "build_optimizer",
    "build_lr_multiplier",
    "build_lr_scheduler",
]

logger = logging.getLogger(__name__)

# Parameters of these modules (and every 1-D parameter: biases) are excluded from LARS's
# weight decay and adaptation, as in BYOL and SimCLR.
_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def iterations_per_epoch(num_images: int, batch: int) -> int:
    """Optimiser steps of ``batch`` images in one pass over ``num_images`` (incomplete batch dropped)."""
    return num_images // batch


def resolve_schedule(cfg: CfgNode, num_images: int, world_size: int = 1) -> CfgNode:
    """A frozen copy of ``cfg`` with the run length resolved from the dataset size.

    Writes ``PRETRAIN.NUM_IMAGES = num_images``; ``SOLVER.MAX_ITER`` = the given value when > 0,
    else ``PRETRAIN.EPOCHS * (num_images // SOLVER.IMS_PER_BATCH)`` (incomplete batches dropped);
    ``SOLVER.WARMUP_ITERS = round(MAX_ITER * WARMUP_EPOCHS / EPOCHS)`` (so an overridden length
    keeps the warm-up's share). Iterations are optimiser steps of ``IMS_PER_BATCH`` images.

    Raises ConfigError naming the keys for an inconsistent config.
    """
    batch, accum = cfg.SOLVER.IMS_PER_BATCH, cfg.PRETRAIN.ACCUM_STEPS
    epochs, warmup_epochs = cfg.PRETRAIN.EPOCHS, cfg.PRETRAIN.WARMUP_EPOCHS
    if accum < 1:
        raise ConfigError(f"PRETRAIN.ACCUM_STEPS must be >= 1, got {accum}")
    if batch <= 0 or batch % (world_size * accum):
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH={batch} must be a positive multiple of the number of processes "
            f"({world_size}) times PRETRAIN.ACCUM_STEPS ({accum})"
        )
    if batch // (world_size * accum) < 2:
        raise ConfigError(
            f"each process's micro-batch SOLVER.IMS_PER_BATCH / (processes x PRETRAIN.ACCUM_STEPS) = "
            f"{batch} / ({world_size} x {accum}) is below 2 images; BatchNorm needs at least 2"
        )
    if epochs <= 0 or not 0 <= warmup_epochs <= epochs:
        raise ConfigError(
            f"need PRETRAIN.EPOCHS > 0 and 0 <= PRETRAIN.WARMUP_EPOCHS <= EPOCHS, "
            f"got EPOCHS={epochs}, WARMUP_EPOCHS={warmup_epochs}"
        )
    if num_images <= 0:
        raise ConfigError("the training set is empty (check DATASETS.TRAIN / PRETRAIN.IMAGE_ROOT)")
    max_iter = cfg.SOLVER.MAX_ITER
    if max_iter <= 0:
        iters_per_epoch = iterations_per_epoch(num_images, batch)
        if iters_per_epoch == 0:
            raise ConfigError(
                f"the training set has {num_images} images, fewer than one batch "
                f"(SOLVER.IMS_PER_BATCH={batch}); lower the batch or set SOLVER.MAX_ITER"
            )
        max_iter = epochs * iters_per_epoch
    out = cfg.clone()
    out.defrost()
    out.PRETRAIN.NUM_IMAGES = num_images
    out.SOLVER.MAX_ITER = max_iter
    out.SOLVER.WARMUP_ITERS = round(max_iter * warmup_epochs / epochs)
    out.freeze()
    return out


def scaled_lr(cfg: CfgNode) -> float:
    """Linear scaling rule: SOLVER.BASE_LR * SOLVER.IMS_PER_BATCH / PRETRAIN.LR_REFERENCE_BATCH."""
    return cfg.SOLVER.BASE_LR * cfg.SOLVER.IMS_PER_BATCH / cfg.PRETRAIN.LR_REFERENCE_BATCH


def lars_param_groups(model: nn.Module, weight_decay: float, exclude_bias_and_norm: bool = True) -> List[Dict[str, Any]]:
    """Two groups of trainable parameters: regular weights (weight decay + LARS adaptation)
    and, if ``exclude_bias_and_norm``, biases / norm parameters (neither)."""
    regular, excluded, seen = [], [], set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or p in seen:
                continue
            seen.add(p)
            is_bias_or_norm = isinstance(module, _NORM_TYPES) or p.ndim <= 1
            (excluded if exclude_bias_and_norm and is_bias_or_norm else regular).append(p)
    groups = [{"params": regular, "weight_decay": weight_decay, "lars_adaptation": True}]
    if excluded:
        groups.append({"params": excluded, "weight_decay": 0.0, "lars_adaptation": False})
    return groups


def build_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER``: "LARS" (see soco.solver.lars) or "SGD" (Detectron2's parameter
    groups: WEIGHT_DECAY_NORM / WEIGHT_DECAY_BIAS apply), both at the scaled lr."""
    lr = scaled_lr(cfg)
    name = cfg.SOLVER.OPTIMIZER
    if name == "LARS":
        groups = lars_param_groups(model, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.LARS.EXCLUDE_BIAS_AND_NORM)
        return LARS(groups, lr=lr, momentum=cfg.SOLVER.MOMENTUM, trust_coef=cfg.SOLVER.LARS.TRUST_COEF)
    if name == "SGD":
        params = get_default_optimizer_params(
            model,
            base_lr=lr,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        return torch.optim.SGD(params, lr=lr, momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV)
    raise ValueError(f"SOLVER.OPTIMIZER must be 'LARS' or 'SGD', got {name!r}")


def build_lr_multiplier(cfg: CfgNode, zero_lr_iters: int = 0) -> ParamScheduler:
    """lr factor over training progress t in [0, 1): linear warm-up from SOLVER.WARMUP_FACTOR to 1
    over SOLVER.WARMUP_ITERS, then cosine decay from 1 to 0 over the remaining iterations.

    ``zero_lr_iters``: the factor is 0 for the first iterations a method asks for (CoKe's
    cluster-initialisation epoch); the warm-up + cosine curve is unchanged after them, so its
    first iterations are the ones skipped.
    """
    max_iter, warmup = cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS
    if max_iter <= 0:
        raise ValueError("SOLVER.MAX_ITER is not resolved; call resolve_schedule first")
    if not 0 <= zero_lr_iters < max_iter:
        raise ValueError(f"{zero_lr_iters} iterations at lr 0 leave nothing of SOLVER.MAX_ITER={max_iter}")
    cosine = CosineParamScheduler(1.0, 0.0)
    if warmup >= max_iter:
        raise ValueError(f"SOLVER.WARMUP_ITERS={warmup} must be shorter than SOLVER.MAX_ITER={max_iter}")
    schedule = cosine
    if warmup > 0:
        share = warmup / max_iter
        schedule = CompositeParamScheduler(
            [LinearParamScheduler(cfg.SOLVER.WARMUP_FACTOR, 1.0), cosine],
            lengths=[share, 1.0 - share],
            interval_scaling=["rescaled", "rescaled"],
        )
    if zero_lr_iters == 0:
        return schedule
    share = zero_lr_iters / max_iter
    return CompositeParamScheduler(
        [ConstantParamScheduler(0.0), schedule], lengths=[share, 1.0 - share], interval_scaling=["rescaled", "fixed"]
    )


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer, zero_lr_iters: int = 0) -> LRMultiplier:
    """Detectron2's LRMultiplier stepping ``build_lr_multiplier(cfg, zero_lr_iters)`` once per iteration."""
    return LRMultiplier(optimizer, build_lr_multiplier(cfg, zero_lr_iters), cfg.SOLVER.MAX_ITER)
