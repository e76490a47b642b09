"""One module per pretraining method over a shared base; importing this registers them all
in Detectron2's META_ARCH_REGISTRY (BYOL, SoCo, CoKe, CLSA, SMoG)."""

from . import byol, clsa, coke, smog, soco  # noqa: F401  (registration side effects)
from .base import ImageLevelMetaArch, PretrainMetaArch
from .build import build_pretrain_model, pretrain_method_class

__all__ = ["PretrainMetaArch", "ImageLevelMetaArch", "build_pretrain_model", "pretrain_method_class"]
