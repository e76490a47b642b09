"""MoCo v2's augmentation (Chen et al. 2020, "Improved baselines"), also CLSA's weak augmentation T.

Input and output: a uint8 image tensor (3, H, W), RGB, 0-255 (``tv_tensors.Image`` or plain
tensor). Normalisation by the ImageNet mean/std is the model's job.
"""

from typing import Sequence

from .augment import ViewAugmentation
from .byol import blur_kernel_size
from .multiview import CropView
from .photometric import PhotometricSpec

__all__ = ["mocov2_spec", "build_mocov2_augment", "build_mocov2_transform"]


def mocov2_spec(image_size: int) -> PhotometricSpec:
    """MoCo v2's augmentation after the crop (CLSA's weak T): saturation 0.4, blur p=0.5, flip last."""
    return PhotometricSpec(
        saturation=0.4, blur_p=0.5, blur_kernel=blur_kernel_size(image_size), flip_last=True, blur_impl="torchvision"
    )


def build_mocov2_augment(image_size: int, impl: str = "fast") -> ViewAugmentation:
    """MoCo v2's colour/blur/flip part (everything after the crop), for ``image_size`` px views.

    Colour jitter (brightness 0.4, contrast 0.4, saturation 0.4, hue 0.1) p=0.8; grayscale
    p=0.2; Gaussian blur sigma ~ U[0.1, 2.0] p=0.5; horizontal flip p=0.5 (drawn last).
    ``impl``: "fast" or "reference" (torchvision v2's pipeline, ``.reference``); see :mod:`.augment`.
    """
    return ViewAugmentation(mocov2_spec(image_size), impl=impl)


def build_mocov2_transform(image_size: int = 224, scale: Sequence[float] = (0.2, 1.0)) -> CropView:
    """RandomResizedCrop(image_size, scale) then :func:`build_mocov2_augment` (MoCo v2's T)."""
    return CropView(image_size, scale, build_mocov2_augment(image_size))
