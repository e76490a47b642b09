"""MoCo v2's augmentation (Chen et al. 2020, "Improved baselines"), also CLSA's weak augmentation T.

Input and output: a uint8 image tensor (3, H, W), RGB, 0-255 (``tv_tensors.Image`` or plain
tensor). Normalisation by the ImageNet mean/std is the model's job.
"""

from typing import Sequence

from torchvision.transforms import v2

from .byol import blur_kernel_size

__all__ = ["build_mocov2_augment", "build_mocov2_transform"]


def build_mocov2_augment(image_size: int) -> v2.Compose:
    """MoCo v2's colour/blur/flip part (everything after the crop), for ``image_size`` px views.

    Colour jitter (brightness 0.4, contrast 0.4, saturation 0.4, hue 0.1) p=0.8; grayscale
    p=0.2; Gaussian blur sigma ~ U[0.1, 2.0] p=0.5; horizontal flip p=0.5.
    """
    return v2.Compose(
        [
            v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(blur_kernel_size(image_size), sigma=(0.1, 2.0))], p=0.5),
            v2.RandomHorizontalFlip(p=0.5),
        ]
    )


def build_mocov2_transform(image_size: int = 224, scale: Sequence[float] = (0.2, 1.0)) -> v2.Compose:
    """RandomResizedCrop(image_size, scale) then :func:`build_mocov2_augment` (MoCo v2's T)."""
    return v2.Compose(
        [v2.RandomResizedCrop(image_size, scale=tuple(scale), antialias=True), build_mocov2_augment(image_size)]
    )
