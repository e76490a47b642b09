"""Mapper for image-level methods (BYOL, CoKe, CLSA, SMoG): one image -> lists of augmented views.

Output dict (see ``soco.modeling.meta_arch.base``): ``"views"`` and any other view-list keys
(e.g. CLSA's ``"strong_views"``), each a list of RGB uint8 tensors (3, S, S); ``"image_id"``;
and ``"instance_index"`` (position in the dataset) when the dataset dicts carry it (CoKe keeps
per-instance labels).

Augmentation (``configure_augmentation``, set from ``PRETRAIN.AUGMENT_ON`` / ``AUGMENT_IMPL`` by
the loader builder): on the CPU with the fast kernels (default) or the reference torchvision
pipeline; or ``on="device"``: every view set whose views end with a photometric
:class:`~soco.data.transforms.augment.ViewAugmentation` is returned cropped and flipped only, with
``"photometric": {key: (V, NUM_PARAMS) float32}``, and the trainer applies the colour operations
batched on its device (:func:`soco.data.transforms.device.apply_deferred_photometric`). View sets
with further CPU operations after the photometric ones (CLSA's strong views) stay on the CPU.
"""

from typing import Any, Dict, List, Optional, Sequence

import torch

from .image_io import MAX_IMAGE_PIXELS, read_image_chw
from .transforms.augment import set_augment_impl
from .transforms.byol import build_byol_transform
from .transforms.multiview import CropSpec, MultiViewTransform, build_multi_crop

__all__ = ["ImageLevelMapper", "build_byol_multi_crop"]


class ImageLevelMapper:
    """Reads ``file_name`` with ``read_image_chw`` and applies each named :class:`MultiViewTransform`.

    ``view_sets`` must contain ``"views"``. Raises ``ImageReadError`` for an unreadable image or
    one above ``max_pixels`` (not decoded); the loader skips it (``soco.data.build``).
    """

    max_pixels = MAX_IMAGE_PIXELS  # PRETRAIN.MAX_IMAGE_PIXELS, set by soco.data.method_data.build_mapper

    def __init__(self, view_sets: Dict[str, MultiViewTransform], augment_impl: str = "fast", augment_on: str = "cpu"):
        if "views" not in view_sets:
            raise ValueError(f"ImageLevelMapper needs a 'views' transform, got keys {list(view_sets)}")
        self.view_sets = dict(view_sets)
        self.deferred_keys: List[str] = []
        self.configure_augmentation(augment_impl, augment_on)

    def configure_augmentation(self, impl: str = "fast", on: str = "cpu") -> None:
        """``impl`` "fast" | "reference" for the CPU; ``on`` "cpu" | "device" (see the module doc;
        the config's values are checked when it is loaded, ``soco.config.validation``)."""
        set_augment_impl(self.view_sets, impl)
        self.deferred_keys = []
        if on == "device":
            self.deferred_keys = [k for k, t in self.view_sets.items() if getattr(t, "deferrable", False)]
            for key in self.deferred_keys:
                self.view_sets[key].set_defer(True)

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        image = read_image_chw(dataset_dict["file_name"], self.max_pixels)
        return self.map_image(image, dataset_dict["image_id"], dataset_dict.get("instance_index"))

    def map_image(self, image: torch.Tensor, image_id: str, instance_index: Optional[int] = None) -> Dict[str, Any]:
        """The mapped dict of an image already in memory: ``image`` RGB uint8 (3, H, W) -> every
        view set's views (and deferred parameters), ``image_id``, ``instance_index`` if given.
        What ``__call__`` returns for a file, for callers that hold images (in-memory checks,
        benchmarks, tests)."""
        out: Dict[str, Any] = {}
        for key, transform in self.view_sets.items():
            if key in self.deferred_keys:
                out[key], params = transform.split(image)
                out.setdefault("photometric", {})[key] = params
            else:
                out[key] = transform(image)
        out["image_id"] = image_id
        if instance_index is not None:
            out["instance_index"] = int(instance_index)
        return out


def build_byol_multi_crop(
    size: int, scale: Sequence[float], num_small: int = 0, small_size: int = 96,
    small_scale: Sequence[float] = (0.05, 0.14), num_large: int = 2,
) -> MultiViewTransform:
    """``num_large`` crops of ``size`` px then ``num_small`` of ``small_size`` px; view i gets BYOL's
    augmentation T (even i) or T' (odd i), so the two large views form BYOL's asymmetric pair."""
    specs = [CropSpec(size, tuple(scale), num_large)]
    if num_small > 0:
        specs.append(CropSpec(small_size, tuple(small_scale), num_small))
    return build_multi_crop(specs, lambda i, s: build_byol_transform(i % 2, s))

