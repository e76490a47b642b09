"""CLSA's stronger augmentation S (Wang & Qi, TPAMI 2022, sec. 3.3 and Table 1).

Fourteen operations with Table 1's magnitude ranges. One strong augmentation repeats five
times: pick one of the 14 at random (with replacement) and apply it with probability 0.5, at a
magnitude drawn uniformly from its range (the official code draws from a 10-level grid over
the same range; uniform is the paper's "drawn from a range"). The strong view is: its crop
(96 px for CLSA; 224/192/160/128/96 px for CLSA*, scales from the official run scripts), the
weak colour/blur/flip augmentation, then S, as the official ``Multi_FixTransform``.

Operations are torchvision transforms v2 functionals; nothing is written by hand except the
magnitude sampling. Geometric operations shear/translate/rotate about the image centre and fill
with black. Input and output: uint8 image tensors (3, H, W), RGB.
"""

import math
from typing import Callable, Dict, List, NamedTuple, Sequence

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .mocov2 import build_mocov2_augment
from .multiview import CropSpec, MultiViewTransform, build_crop_view

__all__ = [
    "StrongOp",
    "CLSA_OPERATIONS",
    "CLSAStrongAugment",
    "CLSA_SINGLE_CROPS",
    "CLSA_MULTI_CROPS",
    "build_clsa_strong_views",
]


class StrongOp(NamedTuple):
    """An operation ``fn(image, magnitude)`` and its magnitude range [low, high] (Table 1).

    ``integer``: magnitude drawn as an integer in [low, high]; low == high == 0: no magnitude.
    """

    fn: Callable
    low: float
    high: float
    integer: bool = False


def _shear(image, v, axis):
    shear = [math.degrees(math.atan(v)), 0.0] if axis == 0 else [0.0, math.degrees(math.atan(v))]
    return TF.affine(image, angle=0.0, translate=[0, 0], scale=1.0, shear=shear)


def _translate(image, v, axis):
    h, w = image.shape[-2:]
    shift = [v * w, 0.0] if axis == 0 else [0.0, v * h]
    return TF.affine(image, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0])


def _solarize(image, threshold):
    # Threshold 256 (Table 1's upper end) inverts nothing; torchvision rejects values above 255.
    return image if threshold > 255 else TF.solarize(image, threshold)


CLSA_OPERATIONS: Dict[str, StrongOp] = {
    "ShearX": StrongOp(lambda im, v: _shear(im, v, 0), -0.3, 0.3),
    "ShearY": StrongOp(lambda im, v: _shear(im, v, 1), -0.3, 0.3),
    "TranslateX": StrongOp(lambda im, v: _translate(im, v, 0), -0.3, 0.3),
    "TranslateY": StrongOp(lambda im, v: _translate(im, v, 1), -0.3, 0.3),
    "Rotate": StrongOp(lambda im, v: TF.rotate(im, v), -30.0, 30.0),
    "AutoContrast": StrongOp(lambda im, v: TF.autocontrast(im), 0, 0),
    "Invert": StrongOp(lambda im, v: TF.invert(im), 0, 0),
    "Equalize": StrongOp(lambda im, v: TF.equalize(im), 0, 0),
    "Solarize": StrongOp(_solarize, 0, 256, integer=True),
    "Posterize": StrongOp(lambda im, v: TF.posterize(im, int(v)), 4, 8, integer=True),
    "Contrast": StrongOp(TF.adjust_contrast, 0.05, 0.95),
    "Color": StrongOp(TF.adjust_saturation, 0.05, 0.95),
    "Brightness": StrongOp(TF.adjust_brightness, 0.05, 0.95),
    "Sharpness": StrongOp(TF.adjust_sharpness, 0.05, 0.95),
}


class CLSAStrongAugment(torch.nn.Module):
    """``num_ops`` times: choose an operation uniformly, apply it with probability ``p``.

    Uses torch's RNG (seeded per data-loader worker by Detectron2). ``ops``: names from
    :data:`CLSA_OPERATIONS` (default: all 14).
    """

    def __init__(self, num_ops: int = 5, p: float = 0.5, ops: Sequence[str] = tuple(CLSA_OPERATIONS)):
        super().__init__()
        unknown = [name for name in ops if name not in CLSA_OPERATIONS]
        if unknown or not ops:
            raise ValueError(f"unknown CLSA operations {unknown}; known: {list(CLSA_OPERATIONS)}")
        if num_ops < 0 or not 0.0 <= p <= 1.0:
            raise ValueError(f"CLSAStrongAugment needs num_ops >= 0 and 0 <= p <= 1, got {num_ops}, {p}")
        self.num_ops, self.p, self.ops = num_ops, p, list(ops)

    @staticmethod
    def sample_magnitude(op: StrongOp) -> float:
        if op.integer:
            return int(torch.randint(int(op.low), int(op.high) + 1, ()).item())
        return op.low + (op.high - op.low) * torch.rand(()).item()

    def forward(self, image):
        for _ in range(self.num_ops):
            op = CLSA_OPERATIONS[self.ops[int(torch.randint(len(self.ops), ()).item())]]
            if torch.rand(()).item() < self.p:
                image = op.fn(image, self.sample_magnitude(op))
        return image


# (size, area scale) of the strong crops: official run scripts (run_single.sh / run_multi.sh).
CLSA_SINGLE_CROPS: List[CropSpec] = [CropSpec(96, (0.086, 0.429))]
CLSA_MULTI_CROPS: List[CropSpec] = [
    CropSpec(224, (0.2, 1.0)),
    CropSpec(192, (0.172, 0.86)),
    CropSpec(160, (0.143, 0.715)),
    CropSpec(128, (0.114, 0.571)),
    CropSpec(96, (0.086, 0.429)),
]


def build_clsa_strong_views(specs: Sequence[CropSpec], num_ops: int = 5, p: float = 0.5) -> MultiViewTransform:
    """One strong view per crop: crop -> MoCo v2's weak augmentation -> :class:`CLSAStrongAugment`."""
    strong = CLSAStrongAugment(num_ops, p)
    views = []
    for spec in specs:
        for _ in range(spec.count):
            views.append(build_crop_view(spec.size, spec.scale, v2.Compose([build_mocov2_augment(spec.size), strong])))
    return MultiViewTransform(views)
