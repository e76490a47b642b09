"""A small, in-memory CPU check that a method learns: pretrain on a Fashion-MNIST subset held in
memory (no files, no data loader), then compare the weighted-kNN accuracy of the backbone with
the same network at its random initialisation. Used by the slow tests and the benchmark;
real runs use ``tools/pretrain_net.py`` and ``tools/eval_representation.py``.
"""

import time
from typing import Dict, List

import torch
from detectron2.config import CfgNode
from fvcore.nn.precise_bn import update_bn_stats
from torchvision.transforms import v2

from ..data.embedded.fashion_mnist import fashion_mnist_subset
from ..data.method_data import build_mapper
from ..engine.step import training_step
from ..modeling.meta_arch import build_pretrain_model
from ..solver import build_lr_scheduler, build_optimizer
from .knn import knn_accuracy

__all__ = ["fashion_mnist_subset", "backbone_features", "knn_of", "pretrain_in_memory", "unpair_views"]


@torch.no_grad()
def backbone_features(model, images: torch.Tensor, size: int, batch: int = 256, precise_bn: bool = True) -> torch.Tensor:
    """Pooled res5 features (N, C) of the online backbone, images resized to ``size`` px.

    ``precise_bn``: first re-estimate the backbone's BN statistics on these images (fvcore's
    ``update_bn_stats``), so that short training runs, whose running statistics still mix
    augmented crops and initial values, are compared with random init on equal terms.
    """
    was_training = model.training
    resize = v2.Resize(size, antialias=True)
    inputs = [(resize(chunk).float() - model.pixel_mean) / model.pixel_std for chunk in images.split(batch)]
    if precise_bn:
        update_bn_stats(model.backbone, inputs, num_iters=len(inputs))
    model.eval()
    out = [model.pooled_features(x) for x in inputs]
    model.train(was_training)
    return torch.cat(out)


def knn_of(model, train, test, size: int, k: int = 200, temperature: float = 0.07) -> float:
    """Weighted-kNN top-1 of the backbone: ``train``/``test`` are (images, labels) pairs."""
    return knn_accuracy(
        backbone_features(model, train[0], size), train[1], backbone_features(model, test[0], size), test[1], k, temperature
    )


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
    over ``warmup_steps``, then cosine to 0 at ``steps``) and the method's step hooks.

    ``unpaired_views``: a broken-pairing control. Every view but the first of each image comes
    from the next image of the batch (``unpair_views``), so the views a method matches show
    different images; a learning check must fail under it.

    Returns {"model", "losses" (list of floats), "seconds_per_iter"}.
    """
    torch.manual_seed(seed)
    model = build_pretrain_model(cfg, len(images)) if model is None else model
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
