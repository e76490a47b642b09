"""Multi-view image transforms: two views, multi-crop (e.g. 2 x 224 + N x 96), asymmetric pairs.

A view is a RandomResizedCrop (size in px, area scale range) followed by a view-specific
augmentation; a :class:`MultiViewTransform` applies a list of them to one image and returns the
list of views, in order. Input: uint8 image tensor (3, H, W) RGB; outputs: uint8 tensors
(3, size, size).
"""

from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from .augment import ViewAugmentation

__all__ = ["CropSpec", "CropView", "MultiViewTransform", "build_crop_view", "build_multi_crop", "to_image_tensor"]


@dataclass(frozen=True)
class CropSpec:
    """``count`` views cropped to ``size`` px with area fraction in ``scale`` = (min, max)."""

    size: int
    scale: Tuple[float, float]
    count: int = 1

    def __post_init__(self):
        lo, hi = self.scale
        if not (0 < lo <= hi <= 1) or self.size <= 0 or self.count < 0:
            raise ValueError(f"invalid crop spec {self}: need size > 0, count >= 0, 0 < min <= max <= 1")


def to_image_tensor(image) -> tv_tensors.Image:
    """HxWx3 uint8 numpy array (as ``read_image_rgb`` returns) or (3, H, W) tensor -> tv_tensors.Image."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB array, got shape {image.shape} dtype {image.dtype}")
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return tv_tensors.Image(image)


class CropView(v2.Compose):
    """RandomResizedCrop(size, scale) followed by ``augment`` (``.transforms`` = [crop, augment]).

    When ``augment`` is a :class:`ViewAugmentation`, :meth:`split` can stop after the crop and
    flip and return the photometric parameters instead (device path).
    """

    def __init__(self, size: int, scale: Sequence[float], augment: Callable):
        super().__init__([v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True), augment])

    @property
    def deferrable(self) -> bool:
        return isinstance(self.transforms[1], ViewAugmentation)

    def split(self, image) -> Tuple[torch.Tensor, torch.Tensor]:
        """(cropped and flipped uint8 (3, S, S), photometric params (NUM_PARAMS,))."""
        crop, augment = self.transforms
        if not self.deferrable:
            raise TypeError(f"view {self} has no ViewAugmentation to defer")
        if not augment.defer:
            raise RuntimeError("CropView.split needs its ViewAugmentation configured with defer=True")
        view, _, params = augment.apply(crop(image))
        return view, params


def build_crop_view(size: int, scale: Sequence[float], augment: Callable) -> CropView:
    """RandomResizedCrop(size, scale) followed by ``augment`` (a callable on image tensors)."""
    return CropView(size, scale, augment)


class MultiViewTransform:
    """Applies each of ``views`` (callables image -> image) to the same input image."""

    def __init__(self, views: Sequence[Callable]):
        if not views:
            raise ValueError("MultiViewTransform needs at least one view")
        self.views = list(views)

    def __call__(self, image) -> List[torch.Tensor]:
        image = to_image_tensor(image)
        return [view(image).as_subclass(torch.Tensor) for view in self.views]

    def __len__(self) -> int:
        return len(self.views)

    @property
    def deferrable(self) -> bool:
        """Whether every view ends with a :class:`ViewAugmentation` that can run on the device."""
        return all(isinstance(view, CropView) and view.deferrable for view in self.views)

    def set_defer(self, defer: bool) -> None:
        for view in self.views:
            view.transforms[1].configure("fast", defer)

    def split(self, image) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Views without their photometric operations, and their parameters (V, NUM_PARAMS)."""
        image = to_image_tensor(image)
        pairs = [view.split(image) for view in self.views]
        return [v.as_subclass(torch.Tensor) for v, _ in pairs], torch.stack([p for _, p in pairs])


def build_multi_crop(specs: Sequence[CropSpec], augment_for: Callable[[int, int], Callable]) -> MultiViewTransform:
    """Views for each spec in order (all crops of the first spec, then the second, ...).

    ``augment_for(view_index, size)`` gives the augmentation after the crop of the view with
    that global index, so asymmetric pairs (BYOL's T and T') are ``lambda i, s: T if i % 2 == 0
    else T'``. Example, SwAV/SMoG multi-crop: [CropSpec(224, (0.2, 1), 2), CropSpec(96, (0.05, 0.2), 4)].
    """
    views = []
    for spec in specs:
        for _ in range(spec.count):
            views.append(build_crop_view(spec.size, spec.scale, augment_for(len(views), spec.size)))
    return MultiViewTransform(views)
