"""Pretraining in memory: a few hundred steps on images held in a tensor, with no files, no data
loader and no trainer, for the learning checks (tests/test_image_level_learning.py) and the
benchmarks, which measure the result with :mod:`soco.evaluation.quick_check`. The step is the
one real runs take (:func:`~soco.engine.step.training_step`), with the project's optimiser and
lr schedule; the views come from the method's own mapper.
"""

import time
from typing import Dict, List

import torch
from detectron2.config import CfgNode

from ..data.method_data import build_mapper
from ..solver import build_lr_scheduler, build_optimizer
from .pretrain import build_training_model
from .step import training_step

__all__ = ["pretrain_in_memory", "unpair_views"]


def unpair_views(batch: List[Dict[str, object]]) -> List[Dict[str, object]]:
    """Copies of ``batch`` items that keep only their first ``"views"`` entry and take every other
    view, of every view set (keys ending in ``views``, e.g. CLSA's ``strong_views``), from the next
    item (cyclically): a broken-pairing control for image-level methods."""
    out = []
    for b, item in enumerate(batch):
        following = batch[(b + 1) % len(batch)]
        copy = dict(item, **{key: following[key] for key in item if key.endswith("views")})
        copy["views"] = [item["views"][0], *following["views"][1:]]
        out.append(copy)
    return out


def pretrain_in_memory(
    cfg: CfgNode, images: torch.Tensor, steps: int, seed: int = 0, model=None, warmup_steps: int = 0,
    unpaired_views: bool = False,
) -> Dict[str, object]:
    """Train ``cfg``'s method for ``steps`` optimiser steps of ``SOLVER.IMS_PER_BATCH`` images
    drawn (seeded) from ``images`` (N, 3, H, W) uint8, with the method's own view transforms, the
    project's optimiser (``SOLVER.OPTIMIZER``, scaled BASE_LR), its lr schedule (linear warm-up
    over ``warmup_steps``, then cosine to 0 at ``steps``) and the method's step hooks, through the
    one :func:`~soco.engine.step.training_step`. ``model``: default a new one built for ``len(images)``
    images (:func:`~soco.engine.pretrain.build_training_model`).

    ``unpaired_views``: a broken-pairing control. Every view but the first of each image comes
    from the next image of the batch (``unpair_views``), so the views a method matches show
    different images; a learning check must fail under it.

    Returns {"model", "losses" (list of floats), "seconds_per_iter"}.
    """
    torch.manual_seed(seed)
    model = build_training_model(cfg, len(images)) if model is None else model
    mapper = build_mapper(cfg)
    optimizer = build_optimizer(cfg, model)
    schedule = cfg.clone()
    schedule.defrost()
    schedule.SOLVER.MAX_ITER, schedule.SOLVER.WARMUP_ITERS = steps, warmup_steps
    scheduler = build_lr_scheduler(schedule, optimizer)
    gen = torch.Generator().manual_seed(seed)
    losses: List[float] = []
    model.train()
    start = time.perf_counter()
    for it in range(steps):
        idx = torch.randint(len(images), (cfg.SOLVER.IMS_PER_BATCH,), generator=gen)
        batch = [mapper.map_image(images[i], str(i), i) for i in idx.tolist()]
        if unpaired_views:
            batch = unpair_views(batch)
        metrics, _ = training_step(model, lambda: batch, optimizer, it, steps, scheduler=scheduler)
        losses.append(float(sum(v for key, v in metrics.items() if key.startswith("loss_"))))
    return {"model": model, "losses": losses, "seconds_per_iter": (time.perf_counter() - start) / max(steps, 1)}
