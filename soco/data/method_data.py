"""Which mapper and dataset preparation each pretraining method uses, keyed by the method's name
(``MODEL.META_ARCHITECTURE``), as Detectron2's trainers pick their mapper in ``build_train_loader``.

The engine asks this module, not the meta-architecture, for the data of a method:
``prepare_dataset_dicts(cfg, dicts)`` attaches per-image method data before mapping (SoCo: its
proposals; CoKe: each image's index), ``build_mapper(cfg)`` returns the callable turning one
dataset dict into the method's views (the batch contract is in ``soco.modeling.meta_arch.base``).
A new method registers its entry here with :func:`register_method_data`.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence

from detectron2.config import CfgNode

from .image_level_mapper import ImageLevelMapper, build_byol_multi_crop
from .indexed_datasets import IndexedDataset
from .soco_mapper import SoCoMapper, attach_proposals
from .transforms.clsa_strong import build_clsa_strong_views
from .transforms.mocov2 import build_mocov2_transform
from .transforms.multiview import CropSpec, MultiViewTransform

__all__ = ["MethodData", "register_method_data", "method_data", "build_mapper", "prepare_dataset_dicts"]

Dicts = Sequence[Dict[str, Any]]  # a list, or an index that makes each dict on access
Mapper = Callable[[Dict[str, Any]], Optional[Dict[str, Any]]]


def _unchanged(cfg: CfgNode, dicts: Dicts) -> Dicts:
    return dicts


@dataclass(frozen=True)
class MethodData:
    """A method's data: ``build_mapper(cfg) -> mapper`` and ``prepare(cfg, dicts) -> dicts``."""

    build_mapper: Callable[[CfgNode], Mapper]
    prepare: Callable[[CfgNode, Dicts], Dicts] = _unchanged


_REGISTRY: Dict[str, MethodData] = {}


def register_method_data(name: str, build_mapper: Callable[[CfgNode], Mapper],
                         prepare: Callable[[CfgNode, Dicts], Dicts] = _unchanged) -> None:
    """Register the data of the method ``name`` (its ``MODEL.META_ARCHITECTURE``); once per name."""
    if name in _REGISTRY:
        raise KeyError(f"the data of method {name!r} is already registered")
    _REGISTRY[name] = MethodData(build_mapper, prepare)


def method_data(cfg: CfgNode) -> MethodData:
    """The registered data of ``cfg.MODEL.META_ARCHITECTURE``; KeyError naming the key if none."""
    name = cfg.MODEL.META_ARCHITECTURE
    if name not in _REGISTRY:
        raise KeyError(
            f"MODEL.META_ARCHITECTURE={name!r} has no data registered in soco.data.method_data "
            f"(known: {sorted(_REGISTRY)})"
        )
    return _REGISTRY[name]


def build_mapper(cfg: CfgNode) -> Mapper:
    """The mapper of ``cfg``'s method (one dataset dict -> its views; raises ImageReadError for
    an unreadable image, or one above ``PRETRAIN.MAX_IMAGE_PIXELS``, which it does not decode)."""
    mapper = method_data(cfg).build_mapper(cfg)
    mapper.max_pixels = cfg.PRETRAIN.MAX_IMAGE_PIXELS
    return mapper


def prepare_dataset_dicts(cfg: CfgNode, dicts: Dicts) -> Dicts:
    """``dicts`` with the per-image data ``cfg``'s method needs before mapping."""
    return method_data(cfg).prepare(cfg, dicts)


# --------------------------------------------------------------------------------- the methods
def _byol_mapper(cfg: CfgNode) -> ImageLevelMapper:
    """Two RandomResizedCrops of ``MODEL.BYOL.CROP_SIZE`` px (area scale ``MODEL.BYOL.CROP_SCALE``),
    then BYOL's asymmetric augmentations T and T' (they differ in blur and solarisation)."""
    return ImageLevelMapper({"views": build_byol_multi_crop(cfg.MODEL.BYOL.CROP_SIZE, cfg.MODEL.BYOL.CROP_SCALE)})


def _coke_mapper(cfg: CfgNode) -> ImageLevelMapper:
    """NUM_VIEWS large crops (BYOL's augmentations) plus NUM_SMALL_CROPS small ones."""
    c = cfg.MODEL.COKE
    views = build_byol_multi_crop(
        c.CROP_SIZE, c.CROP_SCALE, c.NUM_SMALL_CROPS, c.SMALL_CROP_SIZE, c.SMALL_CROP_SCALE, c.NUM_VIEWS
    )
    return ImageLevelMapper({"views": views})


def _coke_prepare(cfg: CfgNode, dicts: Dicts) -> Dicts:
    """CoKe keeps one label per image: every item gets its ``instance_index`` (its position, set on
    access: no copy of the dicts)."""
    return IndexedDataset(dicts)


def _clsa_mapper(cfg: CfgNode) -> ImageLevelMapper:
    """Two MoCo v2 weak views (query, key) and, when BETA > 0, the strong views."""
    c = cfg.MODEL.CLSA
    weak = build_mocov2_transform(c.CROP_SIZE, c.CROP_SCALE)
    view_sets = {"views": MultiViewTransform([weak, weak])}
    if c.BETA > 0:
        lens = {len(c.STRONG_CROP_SIZES), len(c.STRONG_CROP_MIN_SCALES), len(c.STRONG_CROP_MAX_SCALES)}
        if len(lens) != 1 or not c.STRONG_CROP_SIZES:
            raise ValueError(
                "MODEL.CLSA.STRONG_CROP_SIZES / _MIN_SCALES / _MAX_SCALES must be non-empty lists of equal length"
            )
        specs = [
            CropSpec(int(s), (float(lo), float(hi)))
            for s, lo, hi in zip(c.STRONG_CROP_SIZES, c.STRONG_CROP_MIN_SCALES, c.STRONG_CROP_MAX_SCALES)
        ]
        view_sets["strong_views"] = build_clsa_strong_views(specs, c.NUM_STRONG_OPS, c.STRONG_OP_PROB)
    return ImageLevelMapper(view_sets)


def _smog_mapper(cfg: CfgNode) -> ImageLevelMapper:
    """Two large crops (BYOL's augmentations) plus NUM_SMALL_CROPS small ones."""
    c = cfg.MODEL.SMOG
    views = build_byol_multi_crop(c.CROP_SIZE, c.CROP_SCALE, c.NUM_SMALL_CROPS, c.SMALL_CROP_SIZE, c.SMALL_CROP_SCALE)
    return ImageLevelMapper({"views": views})


def _soco_mapper(cfg: CfgNode) -> SoCoMapper:
    """SoCo's views and boxes (``SoCoViewParams`` from ``MODEL.SOCO``)."""
    return SoCoMapper.from_config(cfg)


def _soco_prepare(cfg: CfgNode, dicts: Dicts) -> Dicts:
    """Every item gets its ``proposal_boxes`` from ``MODEL.SOCO.PROPOSALS`` (the memory-mapped store)."""
    return attach_proposals(dicts, cfg.MODEL.SOCO.PROPOSALS, cfg.MODEL.SOCO.MAX_IMAGES_WITHOUT_BOXES)


register_method_data("BYOL", _byol_mapper)
register_method_data("CoKe", _coke_mapper, _coke_prepare)
register_method_data("CLSA", _clsa_mapper)
register_method_data("SMoG", _smog_mapper)
register_method_data("SoCo", _soco_mapper, _soco_prepare)
