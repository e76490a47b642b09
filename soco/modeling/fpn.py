"""An FPN whose top-down path upsamples to the lateral's size, so inputs need no padding.

Detectron2's ``FPN`` upsamples each coarser level by exactly 2, so an input whose side is not a
multiple of the last stride (32) fails or must be padded: SoCo's V3 (112 px) was padded to 128 px,
and the padding pixels then entered batch-norm statistics. The official SoCo code uses
mmdetection's FPN, which interpolates to the lateral's size instead. ``LateralSizeFPN`` does that
with Detectron2's own modules (``fpn_lateral{2..5}``, ``fpn_output{2..5}``, ``bottom_up``, the
parameter-free ``LastLevelMaxPool``): same names and tensors as Detectron2's FPN, so its weights
load into a stock Detectron2 detector unchanged, and for inputs that are multiples of 32 both
compute exactly the same features.
"""

from typing import Dict

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN, build_resnet_backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

__all__ = ["LateralSizeFPN", "build_resnet_lateral_size_fpn_backbone"]


class LateralSizeFPN(FPN):
    """Detectron2's ``FPN`` with ``interpolate(size=lateral's H, W)`` in the top-down path.

    Input: (N, C, H, W) with any H, W. Output: ``{"p2": (N, C_out, ceil(H/4), ...), ...}``, the
    sizes of the bottom-up features (a ResNet halves with ceil: 112 px gives res5 of 4x4 and P5
    of 4x4, P6 of 2x2). ``size_divisibility`` is 1: callers need not pad.
    """

    @property
    def size_divisibility(self) -> int:
        return 1

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        bottom_up_features = self.bottom_up(x)
        prev = self.lateral_convs[0](bottom_up_features[self.in_features[-1]])
        results = [self.output_convs[0](prev)]
        # lateral_convs / output_convs run coarsest first (Detectron2's order).
        for idx in range(1, len(self.lateral_convs)):
            lateral = self.lateral_convs[idx](bottom_up_features[self.in_features[-idx - 1]])
            prev = lateral + F.interpolate(prev, size=lateral.shape[-2:], mode="nearest")
            if self._fuse_type == "avg":
                prev = prev / 2
            results.insert(0, self.output_convs[idx](prev))
        if self.top_block is not None:
            if self.top_block.in_feature in bottom_up_features:
                top_in = bottom_up_features[self.top_block.in_feature]
            else:
                top_in = results[self._out_features.index(self.top_block.in_feature)]
            results.extend(self.top_block(top_in))
        return dict(zip(self._out_features, results))


@BACKBONE_REGISTRY.register()
def build_resnet_lateral_size_fpn_backbone(cfg, input_shape: ShapeSpec) -> LateralSizeFPN:
    """``build_resnet_fpn_backbone`` (same keys: MODEL.RESNETS.*, MODEL.FPN.*, P6 by max-pool)
    building a :class:`LateralSizeFPN`."""
    return LateralSizeFPN(
        bottom_up=build_resnet_backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
