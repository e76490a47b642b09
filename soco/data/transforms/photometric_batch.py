"""The photometric operations of :mod:`.photometric`'s parameter vectors, batched in torch:
(N, 3, H, W) on any device, one parameter row per image (the device path, ``AUGMENT_ON: device``).

A leaf kernel module (it imports only the parameter layout). Row i of the result equals
:func:`~.photometric_cpu.apply_photometric_hwc` of image i up to float summation order.
"""

import torch

from .photometric import (KERNEL, BRIGHTNESS, CONTRAST, GRAY, GRAY_WEIGHTS, HUE, JITTER, NUM_PARAMS, ORDER, SATURATION,
                          SIGMA, THRESHOLD, TO_UINT8_SCALE)

__all__ = ["apply_photometric_batch"]

def _gray_n1hw(x: torch.Tensor) -> torch.Tensor:
    w = GRAY_WEIGHTS
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
    return rgb.mul_(TO_UINT8_SCALE).clamp_(0.0, 255.0).floor_()


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

