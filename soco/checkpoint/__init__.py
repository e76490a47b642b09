"""Conversion of pretraining checkpoints to Detectron2 (``.pkl``) and torchvision formats."""

from .convert import FORMATS, convert
from .export import Export, relayout, select, to_torchvision
from .files import ConversionError, PretrainCheckpoint, load_pretrain_checkpoint

__all__ = [
    "FORMATS",
    "ConversionError",
    "Export",
    "PretrainCheckpoint",
    "convert",
    "load_pretrain_checkpoint",
    "relayout",
    "select",
    "to_torchvision",
]
