"""One module per pretraining method over a shared base; importing this registers them all."""

from . import byol  # noqa: F401  (registers BYOL)
from .base import ImageLevelMetaArch, PretrainMetaArch

__all__ = ["PretrainMetaArch", "ImageLevelMetaArch"]
