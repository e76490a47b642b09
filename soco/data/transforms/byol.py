"""BYOL's asymmetric augmentation pipeline (Grill et al. 2020, table 6), without the random crop.

Methods that crop themselves (SoCo builds its views geometrically, with boxes) apply this after
their crop; image-level methods put a ``v2.RandomResizedCrop`` in front of it.

Input and output: a uint8 image tensor (3, H, W), RGB, 0-255, optionally together with
``tv_tensors.BoundingBoxes`` (the flip moves them; the colour operations leave them alone).
Normalisation by the ImageNet mean/std is the model's job (Detectron2's ``PIXEL_MEAN``/``PIXEL_STD``).
"""

from .augment import ViewAugmentation
from .photometric import PhotometricSpec

__all__ = ["BYOL_VIEW_PROBABILITIES", "blur_kernel_size", "byol_spec", "build_byol_transform"]

# (Gaussian blur probability, solarization probability) of BYOL's two augmentations T and T'.
BYOL_VIEW_PROBABILITIES = ((1.0, 0.0), (0.1, 0.2))


def blur_kernel_size(image_size: int) -> int:
    """Odd kernel size of about 10% of the side, as BYOL's 23 px for 224 px images."""
    return 2 * round(0.05 * image_size) + 1


def byol_spec(view: int, image_size: int, hflip: bool = True) -> PhotometricSpec:
    """BYOL's T (``view`` 0: blur p=1, no solarisation) or T' (1: blur p=0.1, solarise p=0.2)."""
    if view not in (0, 1):
        raise ValueError(f"BYOL has two augmentations, view must be 0 or 1, got {view}")
    blur_p, solarize_p = BYOL_VIEW_PROBABILITIES[view]
    return PhotometricSpec(
        blur_p=blur_p, solarize_p=solarize_p, blur_kernel=blur_kernel_size(image_size), flip_p=0.5 if hflip else 0.0
    )


def build_byol_transform(view: int, image_size: int, hflip: bool = True, impl: str = "fast") -> ViewAugmentation:
    """Augmentation T (``view`` 0) or T' (``view`` 1) of BYOL for ``image_size`` px images.

    Horizontal flip p=0.5; colour jitter (brightness 0.4, contrast 0.4, saturation 0.2,
    hue 0.1) p=0.8; grayscale p=0.2; Gaussian blur sigma ~ U[0.1, 2.0] with p = 1.0 (T) or
    0.1 (T'); solarization (threshold 128 of 255) with p = 0.0 (T) or 0.2 (T').
    ``impl``: "fast" (OpenCV kernels) or "reference" (torchvision v2 uint8 operations); see
    :mod:`.augment`. The reference pipeline is ``.reference`` of the returned object.
    """
    return ViewAugmentation(byol_spec(view, image_size, hflip), impl=impl)
