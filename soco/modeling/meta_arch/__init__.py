"""One module per pretraining method over a shared base; importing this package imports every
module in it, which registers the methods in Detectron2's META_ARCH_REGISTRY (BYOL, SoCo, CoKe,
CLSA, SMoG, and any new ``<name>.py`` placed here: no line to add)."""

from ...utils.modules import import_submodules
from .base import ImageLevelMetaArch, PretrainMetaArch
from .build import build_pretrain_model, pretrain_method_class

METHOD_MODULES = import_submodules(__name__, exclude=("base", "build"))

__all__ = ["PretrainMetaArch", "ImageLevelMetaArch", "build_pretrain_model", "pretrain_method_class", "METHOD_MODULES"]
