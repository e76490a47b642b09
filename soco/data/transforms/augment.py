"""One view's flip + photometric augmentation, run by the fast CPU kernels, the reference
torchvision pipeline, or deferred to the training device.

``impl`` "fast" (default): :mod:`.photometric_cpu`'s OpenCV kernels; "reference": the torchvision v2
pipeline the project used before (uint8 operations one by one, kept to check the fast path
against and to reproduce older runs). Both draw the same random numbers in the same order, so a
seed gives the same flips and factors either way and views equal to within a level or two on a
few pixels (tests/test_fast_augment.py).

``defer`` True: only the flip is applied (it moves boxes, so it stays with the loader) and the
parameter vector is returned, for :func:`soco.data.transforms.device.apply_deferred_photometric`
to apply batched on the training device.
"""

from typing import Any, Iterator, List, Optional, Tuple

import torch
from torchvision.transforms.v2 import functional as F

from .photometric import FLIP, PhotometricSpec, sample_photometric_params
from .photometric_cpu import apply_photometric_chw
from .photometric_reference import build_reference_transform

__all__ = ["ViewAugmentation", "iter_view_augmentations", "set_augment_impl"]


class ViewAugmentation:
    """Callable ``(image uint8 (3, H, W)[, boxes...]) -> image`` or ``(image, *boxes)``, like a v2
    transform; boxes are ``tv_tensors.BoundingBoxes`` and follow the flip."""

    def __init__(self, spec: PhotometricSpec, impl: str = "fast", defer: bool = False):
        self.spec = spec
        self.reference = build_reference_transform(spec)
        self.configure(impl, defer)

    def configure(self, impl: str, defer: bool) -> None:
        """``impl`` "fast" or "reference"; ``defer`` only with "fast" (the config's
        PRETRAIN.AUGMENT_IMPL / AUGMENT_ON pair is checked at load, ``soco.config.validation``)."""
        self.impl, self.defer = impl, defer

    def apply(self, image: torch.Tensor, *boxes) -> Tuple[torch.Tensor, List[Any], Optional[torch.Tensor]]:
        """(image, boxes, params): params (NUM_PARAMS,) when deferred (photometric not applied), else None."""
        if self.impl == "reference":
            out = self.reference(image, *boxes)
            return (out[0], list(out[1:]), None) if boxes else (out, [], None)
        params = sample_photometric_params(self.spec)
        if params[FLIP]:
            image = F.horizontal_flip(image)
            boxes = tuple(F.horizontal_flip(b) for b in boxes)
        if self.defer:
            return image.as_subclass(torch.Tensor), list(boxes), params
        return apply_photometric_chw(image.as_subclass(torch.Tensor), params), list(boxes), None

    def __call__(self, image: torch.Tensor, *boxes):
        image, boxes, params = self.apply(image, *boxes)
        if params is not None:
            raise RuntimeError("a deferred ViewAugmentation must be called through .apply() to keep its parameters")
        return (image, *boxes) if boxes else image

    def __repr__(self) -> str:
        return f"ViewAugmentation({self.spec}, impl={self.impl!r}, defer={self.defer})"


def iter_view_augmentations(obj) -> Iterator[ViewAugmentation]:
    """Every :class:`ViewAugmentation` inside ``obj`` (multi-view transform, crop view,
    v2.Compose, list or dict of them), depth first."""
    if isinstance(obj, ViewAugmentation):
        yield obj
        return
    children = []
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        children = list(obj)
    else:
        for attr in ("transforms", "views"):
            if hasattr(obj, attr):
                children.append(getattr(obj, attr))
    for child in children:
        yield from iter_view_augmentations(child)


def set_augment_impl(obj, impl: str) -> int:
    """Switch every :class:`ViewAugmentation` in ``obj`` to ``impl`` (not deferred); returns how many."""
    count = 0
    for aug in iter_view_augmentations(obj):
        aug.configure(impl, False)
        count += 1
    return count
