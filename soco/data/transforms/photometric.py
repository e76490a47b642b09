"""The photometric augmentation of one view as a parameter vector: drawn once, applied anywhere.

BYOL's T/T' and MoCo v2's augmentation are a horizontal flip, colour jitter (brightness,
contrast, saturation, hue in a random order, p = ``jitter_p``), grayscale, Gaussian blur and
solarisation. Here they are split in two steps so the same draw can be applied by either path:

* :func:`sample_photometric_params` (this module) draws one view's parameters with torch's global
  generator, **in exactly the order torchvision's v2 pipeline draws them** (``RandomHorizontalFlip``,
  ``RandomApply(ColorJitter)``, ``RandomGrayscale``, ``RandomApply(GaussianBlur)``,
  ``RandomSolarize``; MoCo v2 flips last). With the same seed, the fast and device paths therefore
  see the same flips, factors, orders and sigmas as the reference pipeline
  (:func:`~.photometric_reference.build_reference_transform`), and the loader's per-sample seeding
  makes them reproducible wherever they are applied.
* :func:`~.photometric_cpu.apply_photometric_hwc` (CPU, OpenCV on float32, one conversion from and
  one back to uint8 per view) and :func:`~.photometric_batch.apply_photometric_batch` (torch,
  batched, any device) apply them. Both reproduce torchvision's uint8 arithmetic: each colour
  operation computes in float and truncates to an integer as ``ColorJitter`` on a uint8 tensor
  does (floor after brightness, contrast, saturation and grayscale; x 255.999 and floor after
  hue), the blur rounds, so a view equals the reference pipeline's pixel for pixel up to float
  summation order (tests/test_fast_augment.py measures it). The flip is geometric (it moves boxes)
  and stays with the caller; it commutes with every operation (the blur kernel is symmetric and
  its border reflect-101).

The methods' recipes (:func:`~.byol.byol_spec`, :func:`~.mocov2.mocov2_spec`) live with their
methods; this module is a leaf: it imports nothing from soco.

Parameter vector (float32, length :data:`NUM_PARAMS`, columns named by :data:`PARAM_NAMES`):
flip (0/1), jitter (0/1), brightness, contrast, saturation, hue factors, the order of the four
jitter operations (0 brightness, 1 contrast, 2 saturation, 3 hue, as torchvision numbers them),
grayscale (0/1), blur sigma (0: no blur), blur kernel size (px, odd), solarisation threshold
(256: none). A vector with jitter, grayscale and blur off and threshold 256 is the identity.
"""

from dataclasses import dataclass
from typing import Tuple

import torch

__all__ = [
    "PARAM_NAMES",
    "NUM_PARAMS",
    "PhotometricSpec",
    "identity_params",
    "sample_photometric_params",
]

PARAM_NAMES = (
    "flip", "jitter", "brightness", "contrast", "saturation", "hue",
    "order0", "order1", "order2", "order3", "grayscale", "blur_sigma", "blur_kernel", "solarize_threshold",
)  # fmt: skip
NUM_PARAMS = len(PARAM_NAMES)
_I = {name: i for i, name in enumerate(PARAM_NAMES)}
FLIP, JITTER, BRIGHTNESS, CONTRAST, SATURATION, HUE = (_I[n] for n in PARAM_NAMES[:6])
ORDER, GRAY, SIGMA, KERNEL, THRESHOLD = _I["order0"], _I["grayscale"], _I["blur_sigma"], _I["blur_kernel"], _I["solarize_threshold"]
NO_SOLARIZE = 256.0

# torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma, rounded as torchvision rounds them).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
# torchvision's float -> uint8 conversion multiplies by 255 + 1 - 1e-3 and truncates.
TO_UINT8_SCALE = 255.0 + 1.0 - 1e-3


@dataclass(frozen=True)
class PhotometricSpec:
    """Probabilities and ranges of one view's flip + colour augmentation (torchvision semantics).

    ``brightness``/``contrast``/``saturation`` v: factor ~ U[max(0, 1 - v), 1 + v]; ``hue`` v:
    factor ~ U[-v, v]. ``blur_kernel``: odd size in px; ``blur_sigma``: U range of sigma (px).
    ``flip_last``: the flip is drawn after the colour operations (MoCo v2) instead of first
    (BYOL). ``blur_impl`` names the reference's blur kernel: "opencv" (``GaussianBlurCV2``,
    BYOL here) or "torchvision" (``v2.GaussianBlur``, MoCo v2); both draw sigma the same way.
    """

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 1.0
    blur_kernel: int = 23
    blur_sigma: Tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    solarize_threshold: int = 128
    flip_p: float = 0.5
    flip_last: bool = False
    blur_impl: str = "opencv"

    def __post_init__(self):
        if self.blur_kernel % 2 == 0 or self.blur_kernel < 1:
            raise ValueError(f"blur_kernel must be odd and positive, got {self.blur_kernel}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")
        if self.blur_impl not in ("opencv", "torchvision"):
            raise ValueError(f"blur_impl must be 'opencv' or 'torchvision', got {self.blur_impl!r}")

    def factor_range(self, name: str) -> Tuple[float, float]:
        value = getattr(self, name)
        return (-value, value) if name == "hue" else (max(0.0, 1.0 - value), 1.0 + value)


_IDENTITY = [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, NO_SOLARIZE]


def identity_params() -> torch.Tensor:
    """(NUM_PARAMS,) float32: no flip, no jitter, no grayscale, no blur, no solarisation."""
    return torch.tensor(_IDENTITY)


def _uniform(lo: float, hi: float) -> float:
    # The call torchvision makes (ColorJitter._generate_value, GaussianBlur.make_params).
    return float(torch.empty(1).uniform_(lo, hi).item())


def _bernoulli(prob: float) -> bool:
    # _RandomApplyTransform / RandomApply: applied unless torch.rand(1) >= p.
    return bool(torch.rand(1) < prob)


def sample_photometric_params(spec: PhotometricSpec) -> torch.Tensor:
    """One view's parameters (NUM_PARAMS,) float32, drawn from torch's global generator in the
    same order and with the same calls as the reference v2 pipeline of ``spec``."""
    p = list(_IDENTITY)  # filled as a list: indexing a tensor per value cost more than the draws
    p[KERNEL] = float(spec.blur_kernel)
    flip_drawn = spec.flip_p > 0  # a p = 0 flip is not built, so it draws nothing
    if flip_drawn and not spec.flip_last:
        p[FLIP] = float(_bernoulli(spec.flip_p))
    if _bernoulli(spec.jitter_p):  # RandomApply([ColorJitter])
        p[JITTER] = 1.0
        p[ORDER : ORDER + 4] = [float(i) for i in torch.randperm(4).tolist()]
        for col, name in ((BRIGHTNESS, "brightness"), (CONTRAST, "contrast"), (SATURATION, "saturation"), (HUE, "hue")):
            p[col] = _uniform(*spec.factor_range(name))
    p[GRAY] = float(_bernoulli(spec.grayscale_p))  # RandomGrayscale
    if _bernoulli(spec.blur_p):  # RandomApply([GaussianBlur])
        p[SIGMA] = _uniform(*spec.blur_sigma)
    if spec.solarize_p > 0 and _bernoulli(spec.solarize_p):  # RandomSolarize
        p[THRESHOLD] = float(spec.solarize_threshold)
    if flip_drawn and spec.flip_last:
        p[FLIP] = float(_bernoulli(spec.flip_p))
    return torch.tensor(p)

