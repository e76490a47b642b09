"""Conversion of pretraining checkpoints to Detectron2 (``.pkl``) and torchvision formats."""

from .convert import FORMATS, convert
from .export import Export, relayout, select, to_torchvision
from .files import ConversionError, PretrainCheckpoint, check_resnet_fits, load_pretrain_checkpoint, read_detector_weights

__all__ = [
    "FORMATS",
    "ConversionError",
    "Export",
    "PretrainCheckpoint",
    "check_resnet_fits",
    "convert",
    "load_pretrain_checkpoint",
    "read_detector_weights",
    "relayout",
    "select",
    "to_torchvision",
]
