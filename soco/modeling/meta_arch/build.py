"""Build a pretraining method from a config and the facts about its data the engine knows."""

import torch
from detectron2.config import CfgNode
from detectron2.modeling import META_ARCH_REGISTRY

from .base import PretrainMetaArch

__all__ = ["pretrain_method_class", "build_pretrain_model"]


def pretrain_method_class(cfg: CfgNode) -> type:
    """The registered class of ``MODEL.META_ARCHITECTURE``; it must be a PretrainMetaArch."""
    name = cfg.MODEL.META_ARCHITECTURE
    try:
        cls = META_ARCH_REGISTRY.get(name)
    except KeyError:
        raise KeyError(f"MODEL.META_ARCHITECTURE={name!r} is not registered") from None
    if not (isinstance(cls, type) and issubclass(cls, PretrainMetaArch)):
        raise TypeError(f"MODEL.META_ARCHITECTURE={name!r} is not a pretraining method (PretrainMetaArch)")
    return cls


def build_pretrain_model(cfg: CfgNode, num_images: int, iters_per_epoch: int = 0) -> PretrainMetaArch:
    """``cfg``'s method on ``MODEL.DEVICE``, as Detectron2's ``build_model`` builds it; methods
    that keep per-image state (``needs_dataset_size``) also get ``num_images`` and
    ``iters_per_epoch`` (optimiser steps per pass over the data).

    Both come from the engine, which knows the data and the schedule
    (``soco.engine.build_training_model``). A model rebuilt from a saved run to export or
    evaluate it passes the size its resolved config records (``PRETRAIN.NUM_IMAGES``), which
    sizes its buffers, and no iteration count: it does not train."""
    cls = pretrain_method_class(cfg)
    data = {}
    if cls.needs_dataset_size:
        data = {"num_images": int(num_images), "iters_per_epoch": int(iters_per_epoch)}
    model = cls(cfg, **data)
    model.to(torch.device(cfg.MODEL.DEVICE))
    return model
