"""The photometric augmentation of one view as a parameter vector: drawn once, applied anywhere.

BYOL's T/T' and MoCo v2's augmentation are a horizontal flip, colour jitter (brightness,
contrast, saturation, hue in a random order, p = ``jitter_p``), grayscale, Gaussian blur and
solarisation. Here they are split in two steps so the same draw can be applied by either path:

* :func:`sample_photometric_params` draws one view's parameters with torch's global generator,
  **in exactly the order torchvision's v2 pipeline draws them** (``RandomHorizontalFlip``,
  ``RandomApply(ColorJitter)``, ``RandomGrayscale``, ``RandomApply(GaussianBlur)``,
  ``RandomSolarize``; MoCo v2 flips last). With the same seed, the fast and device paths therefore
  see the same flips, factors, orders and sigmas as the reference pipeline
  (:func:`build_reference_transform`), and the loader's per-sample seeding makes them
  reproducible wherever they are applied.
* :func:`apply_photometric_hwc` (CPU, OpenCV on float32, one conversion from and one back to
  uint8 per view) and :func:`apply_photometric_batch` (torch, batched, any device) apply them.

Both appliers reproduce torchvision's uint8 arithmetic: each colour operation computes in float
and truncates to an integer as ``ColorJitter`` on a uint8 tensor does (floor after brightness,
contrast, saturation and grayscale; x 255.999 and floor after hue), the blur rounds. So a view
equals the reference pipeline's pixel for pixel up to float summation order: a few pixels per
view differ by one level (tests/test_fast_augment.py measures it). The flip is geometric (it
moves boxes) and stays with the caller; it commutes with every operation here (the blur kernel
is symmetric and its border reflect-101).

Parameter vector (float32, length :data:`NUM_PARAMS`, columns named by :data:`PARAM_NAMES`):
flip (0/1), jitter (0/1), brightness, contrast, saturation, hue factors, the order of the four
jitter operations (0 brightness, 1 contrast, 2 saturation, 3 hue, as torchvision numbers them),
grayscale (0/1), blur sigma (0: no blur), blur kernel size (px, odd), solarisation threshold
(256: none). A vector with jitter, grayscale and blur off and threshold 256 is the identity.
"""

import threading
from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np
import torch

__all__ = [
    "PARAM_NAMES",
    "NUM_PARAMS",
    "PhotometricSpec",
    "byol_spec",
    "mocov2_spec",
    "identity_params",
    "sample_photometric_params",
    "apply_photometric_hwc",
    "apply_photometric_chw",
    "apply_photometric_batch",
    "build_reference_transform",
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
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
# torchvision's float -> uint8 conversion multiplies by 255 + 1 - 1e-3 and truncates.
_TO_UINT8_SCALE = 255.0 + 1.0 - 1e-3


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


def byol_spec(view: int, image_size: int, hflip: bool = True) -> PhotometricSpec:
    """BYOL's T (``view`` 0: blur p=1, no solarisation) or T' (1: blur p=0.1, solarise p=0.2)."""
    from .byol import BYOL_VIEW_PROBABILITIES, blur_kernel_size

    if view not in (0, 1):
        raise ValueError(f"BYOL has two augmentations, view must be 0 or 1, got {view}")
    blur_p, solarize_p = BYOL_VIEW_PROBABILITIES[view]
    return PhotometricSpec(
        blur_p=blur_p, solarize_p=solarize_p, blur_kernel=blur_kernel_size(image_size), flip_p=0.5 if hflip else 0.0
    )


def mocov2_spec(image_size: int) -> PhotometricSpec:
    """MoCo v2's augmentation after the crop (CLSA's weak T): saturation 0.4, blur p=0.5, flip last."""
    from .byol import blur_kernel_size

    return PhotometricSpec(
        saturation=0.4, blur_p=0.5, blur_kernel=blur_kernel_size(image_size), flip_last=True, blur_impl="torchvision"
    )


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


# ----------------------------------------------------------------------------------------------
# CPU: OpenCV on an (H, W, 3) float32 image holding integer values 0..255.


class _Workspace:
    """Scratch arrays of one view size, reused from view to view (one set per thread).

    Every operation writes into these instead of fresh arrays: a new 0.6-1.2 MB array per
    operation costs page faults, which took longer than the arithmetic on a loaded machine.
    """

    def __init__(self, height: int, width: int):
        self.x = np.empty((height, width, 3), np.float32)  # the view being augmented
        self.tmp = np.empty((height, width, 3), np.float32)  # HSV, blur output, gray as RGB
        self.gray = np.empty((height, width), np.float32)
        self.wide = np.empty((height, width, 3), np.float64)  # exact blends
        self.result = np.empty((height, width, 3), np.uint8)  # interleaved result before planar


_WORKSPACES = threading.local()
_GRAY_MATRIX = np.array([_GRAY_WEIGHTS], dtype=np.float32)


def _workspace(height: int, width: int) -> _Workspace:
    cache = getattr(_WORKSPACES, "by_size", None)
    if cache is None:
        cache = _WORKSPACES.by_size = {}
    ws = cache.get((height, width))
    if ws is None:
        if len(cache) >= 8:  # a handful of view sizes per method
            cache.clear()
        ws = cache[(height, width)] = _Workspace(height, width)
    return ws


def _gray(ws: _Workspace) -> np.ndarray:
    """ws.gray = floor(0.2989 R + 0.587 G + 0.114 B) of ws.x, as torchvision on uint8 images."""
    cv2.transform(ws.x, _GRAY_MATRIX, dst=ws.gray)
    return np.floor(ws.gray, out=ws.gray)


def _clip_floor(x: np.ndarray) -> None:
    np.clip(x, 0.0, 255.0, out=x)
    np.floor(x, out=x)


def _blend(ws: _Workspace, ratio: float, other) -> None:
    """ws.x = fl32(fl32(x * ratio) + (1 - ratio) * other) with one rounding for the sum, as
    torchvision's ``image.mul(ratio).add_(other, alpha=1 - ratio)`` computes it (a fused
    multiply-add; two roundings changed a level on about 2 % of the values), then clip and floor.

    ``other``: ws.gray (saturation, broadcast to the channels) or a scalar (contrast's mean).
    OpenCV forms the sum in float64, where the product is exact.
    """
    x = ws.x
    x *= np.float32(ratio)
    alpha = float(np.float32(1.0 - ratio))
    if np.ndim(other) == 0:
        cv2.addWeighted(x, 1.0, x, 0.0, alpha * float(other), dst=ws.wide, dtype=cv2.CV_64F)
    else:
        gray_rgb = cv2.cvtColor(other, cv2.COLOR_GRAY2RGB, dst=ws.tmp)
        cv2.addWeighted(x, 1.0, gray_rgb, alpha, 0.0, dst=ws.wide, dtype=cv2.CV_64F)
    np.copyto(x, ws.wide, casting="same_kind")
    _clip_floor(x)


def _hue(ws: _Workspace, factor: float) -> None:
    # OpenCV's float HSV: H in degrees [0, 360), S in [0, 1], V in the input's units.
    np.multiply(ws.x, np.float32(1.0 / 255.0), out=ws.x)
    hsv = cv2.cvtColor(ws.x, cv2.COLOR_RGB2HSV, dst=ws.tmp)
    h = hsv[..., 0]
    h += np.float32(factor * 360.0)
    np.mod(h, np.float32(360.0), out=h)
    cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=ws.x)
    ws.x *= np.float32(_TO_UINT8_SCALE)
    _clip_floor(ws.x)


# Taps whose weight is below this fraction of the centre's are left out of the blur: they move no
# output by more than 255 * 23 * 1e-9 of a level, and for a small sigma most of BYOL's 23 taps are
# that small (sigma 0.5 keeps 7), so the blur costs what the sigma needs, not the kernel size.
_NEGLIGIBLE_TAP = 1e-9


def _gaussian_taps(sigma: float, kernel_size: int) -> np.ndarray:
    """The Gaussian kernel of ``kernel_size`` taps normalised over all of them, as torchvision's and
    OpenCV's, without its negligible outer taps: (m, 1) float32, m odd <= kernel_size."""
    half = kernel_size // 2
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    keep = int(np.count_nonzero(weights[half:] >= _NEGLIGIBLE_TAP * weights[half]))
    return weights[half - keep + 1 : half + keep].astype(np.float32).reshape(-1, 1)


def _augment_float(image: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Jitter, grayscale and blur of an (H, W, 3) uint8 image into its workspace's float32 ws.x
    (integer values 0..255), which is returned."""
    ws = _workspace(image.shape[0], image.shape[1])
    x = ws.x
    np.copyto(x, image)
    if p[JITTER]:
        for op in p[ORDER : ORDER + 4].astype(int):
            if op == 0:
                x *= np.float32(p[BRIGHTNESS])
                _clip_floor(x)
            elif op == 1:
                gray = _gray(ws)
                # Integer sums below 2**24 are exact in float32; one float32 division, as torch.
                mean = np.float32(gray.sum(dtype=np.float64)) / np.float32(gray.size)
                _blend(ws, p[CONTRAST], mean)
            elif op == 2:
                _blend(ws, p[SATURATION], _gray(ws))
            else:
                _hue(ws, float(p[HUE]))
    if p[GRAY]:
        cv2.cvtColor(_gray(ws), cv2.COLOR_GRAY2RGB, dst=x)
    if p[SIGMA] > 0:
        taps = _gaussian_taps(float(p[SIGMA]), int(p[KERNEL]))
        cv2.sepFilter2D(x, cv2.CV_32F, taps, taps, dst=ws.tmp, borderType=cv2.BORDER_REFLECT_101)
        np.clip(ws.tmp, 0.0, 255.0, out=x)
        np.rint(x, out=x)
    return x


def _solarize_(out: np.ndarray, threshold: float) -> np.ndarray:
    if threshold <= 255:
        lut = np.arange(256, dtype=np.uint8)
        start = int(np.ceil(threshold))
        lut[start:] = 255 - lut[start:]
        flat = out.reshape(out.shape[0], -1)  # a 2-D view: OpenCV caps the channel count
        cv2.LUT(flat, lut, dst=flat)
    return out


def _check_params(params) -> np.ndarray:
    p = np.asarray(params, dtype=np.float64)
    if p.shape != (NUM_PARAMS,):
        raise ValueError(f"expected {NUM_PARAMS} photometric parameters {PARAM_NAMES}, got shape {p.shape}")
    return p


def apply_photometric_hwc(image: np.ndarray, params) -> np.ndarray:
    """Colour jitter, grayscale, blur, solarisation of ``params`` on an (H, W, 3) uint8 RGB array.

    The flip column is ignored (the caller flips, with its boxes). Returns a new (H, W, 3) uint8
    array; one conversion to float32 and one back, in reused per-thread scratch arrays.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"apply_photometric_hwc expects an (H, W, 3) uint8 array, got {image.dtype} {image.shape}")
    p = _check_params(params)
    return _solarize_(_augment_float(image, p).astype(np.uint8), p[THRESHOLD])


def apply_photometric_chw(image: torch.Tensor, params) -> torch.Tensor:
    """:func:`apply_photometric_hwc` on a (3, H, W) uint8 CPU tensor; returns a new contiguous one.

    The planar <-> interleaved conversions go through ``cv2.merge`` / ``cv2.split`` (a strided
    numpy or torch transpose of a view cost as much as the colour operations)."""
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a uint8 (3, H, W) image, got {image.dtype} {tuple(image.shape)}")
    p = _check_params(params)
    planes = image.contiguous().numpy()
    x = _augment_float(cv2.merge([planes[0], planes[1], planes[2]]), p)
    interleaved = _workspace(x.shape[0], x.shape[1]).result
    np.copyto(interleaved, x, casting="unsafe")  # integer values 0..255: exact
    out = np.empty(planes.shape, np.uint8)
    for channel in range(3):
        cv2.extractChannel(interleaved, channel, dst=out[channel])
    return torch.from_numpy(_solarize_(out, p[THRESHOLD]))


# ----------------------------------------------------------------------------------------------
# Batched torch: (N, 3, H, W) on any device, one parameter row per image.


def _gray_n1hw(x: torch.Tensor) -> torch.Tensor:
    w = _GRAY_WEIGHTS
    return (x[:, 0:1] * w[0] + x[:, 1:2] * w[1] + x[:, 2:3] * w[2]).floor_()


def _brightness_batch(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (x * b).clamp_(0.0, 255.0).floor_()


def _contrast_batch(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    mean = _gray_n1hw(x).mean(dim=(1, 2, 3), keepdim=True)
    return (x * c + (1.0 - c) * mean).clamp_(0.0, 255.0).floor_()


def _saturation_batch(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return (x * s + (1.0 - s) * _gray_n1hw(x)).clamp_(0.0, 255.0).floor_()


def _hue_batch(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # torchvision's own RGB <-> HSV kernels work on batches; only the per-image shift is added.
    from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

    hsv = _rgb_to_hsv(x / 255.0)
    h = (hsv[:, 0] + factor.view(-1, 1, 1)).remainder_(1.0)  # factor: (N,) or (N, 1, 1, 1)
    rgb = _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1))
    return rgb.mul_(_TO_UINT8_SCALE).clamp_(0.0, 255.0).floor_()


# (parameter column, kernel) of ColorJitter's operations 0..3.
_JITTER_KERNELS = (
    (BRIGHTNESS, _brightness_batch),
    (CONTRAST, _contrast_batch),
    (SATURATION, _saturation_batch),
    (HUE, _hue_batch),
)


def _blur_batch(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian per image (sigma 0: identity kernel), reflect-101 borders, rounded.

    Written as sums of shifted copies rather than a grouped convolution so that it is exact
    float32 on every device: cuDNN may run convolutions in TF32 (10-bit mantissa, a level of
    error at 255) and pick algorithms per run, which would break bit-exact resumes.
    """
    n = x.shape[0]
    half = kernel_size // 2
    offsets = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)
    blurred = sigma > 0
    safe = torch.where(blurred, sigma, torch.ones_like(sigma)).view(n, 1)
    k1 = torch.exp(-0.5 * (offsets.view(1, -1) / safe) ** 2)
    k1 = k1 / k1.sum(dim=1, keepdim=True)
    delta = (offsets == 0).to(x.dtype).expand(n, -1)
    k1 = torch.where(blurred.view(n, 1), k1, delta).view(n, 1, 1, 1, kernel_size)
    padded = torch.nn.functional.pad(x, (half, half, half, half), mode="reflect")
    h, w = x.shape[-2:]
    rows = sum(k1[..., j] * padded[:, :, j : j + h, :] for j in range(kernel_size))
    out = sum(k1[..., j] * rows[:, :, :, j : j + w] for j in range(kernel_size))
    return out.clamp_(0.0, 255.0).round_()


def apply_photometric_batch(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Colour jitter, grayscale, blur, solarisation on a batch, one parameter row per image.

    Args:
        images: (N, 3, H, W) uint8 RGB on any device.
        params: (N, NUM_PARAMS) from :func:`sample_photometric_params` (any device); the flip
            column is ignored (applied by the loader), the blur kernel size must be the same for
            every row that blurs.

    Returns:
        (N, 3, H, W) uint8 on ``images``' device; row i equals ``apply_photometric_hwc`` of image i
        up to float summation order.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 (N, 3, H, W) images, got {images.dtype} {tuple(images.shape)}")
    if params.shape != (images.shape[0], NUM_PARAMS):
        raise ValueError(f"expected params of shape ({images.shape[0]}, {NUM_PARAMS}), got {tuple(params.shape)}")
    p = params.to(device=images.device, dtype=torch.float32)
    x = images.float()
    n = x.shape[0]
    jitter = p[:, JITTER] > 0
    for stage in range(4):
        op = torch.where(jitter, p[:, ORDER + stage], torch.full_like(p[:, ORDER], -1.0))
        for op_id, (column, kernel) in enumerate(_JITTER_KERNELS):
            # Only the images whose stage-th operation this is (one small sync per operation).
            rows = (op == op_id).nonzero().squeeze(1)
            if len(rows):
                x[rows] = kernel(x[rows], p[rows, column].view(-1, 1, 1, 1))
    gray = (p[:, GRAY] > 0).view(n, 1, 1, 1)
    x = torch.where(gray, _gray_n1hw(x).expand_as(x), x)
    sigma = p[:, SIGMA]
    rows = (sigma > 0).nonzero().squeeze(1)  # T' blurs one view in ten: blur those rows only
    if len(rows):
        kernels = torch.unique(p[rows, KERNEL])
        if len(kernels) != 1:
            raise ValueError(f"one blur kernel size per batch expected, got {kernels.tolist()}")
        x[rows] = _blur_batch(x[rows], sigma[rows], int(kernels[0]))
    threshold = p[:, THRESHOLD].view(n, 1, 1, 1)
    x = torch.where(x >= threshold, 255.0 - x, x)
    return x.to(torch.uint8)


# ----------------------------------------------------------------------------------------------


def build_reference_transform(spec: PhotometricSpec):
    """The torchvision v2 pipeline of ``spec`` (the implementation before the fast path): flip and
    uint8 colour operations one by one. Kept as the reference the fast and device paths are tested
    against, and selectable with ``PRETRAIN.AUGMENT_IMPL: reference``."""
    from torchvision.transforms import v2

    from .byol import GaussianBlurCV2

    jitter = v2.ColorJitter(brightness=spec.brightness, contrast=spec.contrast, saturation=spec.saturation, hue=spec.hue)
    blur_cls = GaussianBlurCV2 if spec.blur_impl == "opencv" else v2.GaussianBlur
    ops = [
        v2.RandomApply([jitter], p=spec.jitter_p),
        v2.RandomGrayscale(p=spec.grayscale_p),
        v2.RandomApply([blur_cls(spec.blur_kernel, sigma=spec.blur_sigma)], p=spec.blur_p),
    ]
    if spec.solarize_p > 0:
        ops.append(v2.RandomSolarize(threshold=spec.solarize_threshold, p=spec.solarize_p))
    if spec.flip_p > 0:
        flip = v2.RandomHorizontalFlip(p=spec.flip_p)
        ops = ops + [flip] if spec.flip_last else [flip] + ops
    return v2.Compose(ops)
