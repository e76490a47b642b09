"""The photometric operations of :mod:`.photometric`'s parameter vectors on the CPU: OpenCV on an
(H, W, 3) float32 image holding integer values 0..255, in reused per-thread scratch arrays.

A leaf kernel module (it imports only the parameter layout); the loader workers run it on the
fast CPU path (``PRETRAIN.AUGMENT_IMPL: fast``).
"""

import threading

import cv2
import numpy as np
import torch

from .photometric import (KERNEL, BRIGHTNESS, CONTRAST, GRAY, GRAY_WEIGHTS, HUE, JITTER, NUM_PARAMS, ORDER, PARAM_NAMES,
                          SATURATION, SIGMA, THRESHOLD, TO_UINT8_SCALE)

__all__ = ["apply_photometric_hwc", "apply_photometric_chw"]

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
_GRAY_MATRIX = np.array([GRAY_WEIGHTS], dtype=np.float32)


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
    ws.x *= np.float32(TO_UINT8_SCALE)
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

