"""BYOL's asymmetric augmentation pipeline (Grill et al. 2020, table 6), without the random crop.

Methods that crop themselves (SoCo builds its views geometrically, with boxes) apply this after
their crop; image-level methods put a ``v2.RandomResizedCrop`` in front of it.

Input and output: a uint8 image tensor (3, H, W), RGB, 0-255, optionally together with
``tv_tensors.BoundingBoxes`` (the flip moves them; the colour operations leave them alone).
Normalisation by the ImageNet mean/std is the model's job (Detectron2's ``PIXEL_MEAN``/``PIXEL_STD``).
"""

from typing import TYPE_CHECKING, Any, Dict, List, Tuple

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import is_pure_tensor

if TYPE_CHECKING:
    from .augment import ViewAugmentation

__all__ = ["BYOL_VIEW_PROBABILITIES", "GaussianBlurCV2", "blur_kernel_size", "build_byol_transform"]

# (Gaussian blur probability, solarization probability) of BYOL's two augmentations T and T'.
BYOL_VIEW_PROBABILITIES = ((1.0, 0.0), (0.1, 0.2))


def blur_kernel_size(image_size: int) -> int:
    """Odd kernel size of about 10% of the side, as BYOL's 23 px for 224 px images."""
    return 2 * round(0.05 * image_size) + 1


class GaussianBlurCV2(v2.Transform):
    """Gaussian blur with sigma ~ U[sigma_range] on uint8 (3, H, W) images; boxes pass through.

    Same result as ``v2.GaussianBlur`` (reflect-101 borders, same kernel) up to uint8 rounding
    (<= 2), but OpenCV filters separably: about 3x faster on CPU for BYOL's 23 px kernel at
    224 px, where torchvision's 2-D convolution was the largest cost of SoCo's mapper.
    """

    def __init__(self, kernel_size: int, sigma: Tuple[float, float] = (0.1, 2.0)):
        super().__init__()
        if kernel_size % 2 == 0 or kernel_size < 1:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.kernel_size, self.sigma = kernel_size, sigma

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        return {"sigma": float(torch.empty(1).uniform_(*self.sigma))}

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        if not (is_pure_tensor(inpt) or isinstance(inpt, tv_tensors.Image)):
            return inpt
        if inpt.dtype != torch.uint8 or inpt.dim() != 3:
            raise ValueError(f"GaussianBlurCV2 expects a uint8 (C, H, W) image, got {inpt.dtype} {tuple(inpt.shape)}")
        hwc = np.ascontiguousarray(inpt.permute(1, 2, 0).numpy())
        k = self.kernel_size
        out = cv2.GaussianBlur(hwc, (k, k), params["sigma"], borderType=cv2.BORDER_REFLECT_101)
        out = torch.from_numpy(out.reshape(hwc.shape)).permute(2, 0, 1)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out


def build_byol_transform(view: int, image_size: int, hflip: bool = True, impl: str = "fast") -> "ViewAugmentation":
    """Augmentation T (``view`` 0) or T' (``view`` 1) of BYOL for ``image_size`` px images.

    Horizontal flip p=0.5; colour jitter (brightness 0.4, contrast 0.4, saturation 0.2,
    hue 0.1) p=0.8; grayscale p=0.2; Gaussian blur sigma ~ U[0.1, 2.0] with p = 1.0 (T) or
    0.1 (T'); solarization (threshold 128 of 255) with p = 0.0 (T) or 0.2 (T').
    ``impl``: "fast" (OpenCV kernels) or "reference" (torchvision v2 uint8 operations); see
    :mod:`.augment`. The reference pipeline is ``.reference`` of the returned object.
    """
    from .augment import ViewAugmentation
    from .photometric import byol_spec

    return ViewAugmentation(byol_spec(view, image_size, hflip), impl=impl)
