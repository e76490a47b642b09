"""ROI heads that detectors fine-tuned from self-supervised weights use and Detectron2 lacks.

Importing this module registers them in Detectron2's ``ROI_HEADS_REGISTRY``, so a config naming
them builds with stock Detectron2 (``import soco.modeling.roi_heads`` before ``build_model``).
"""

from detectron2.layers import get_norm
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads

__all__ = ["Res5ROIHeadsExtraNorm"]


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """``Res5ROIHeads`` with one more normalisation layer (``MODEL.RESNETS.NORM``) after res5.

    The C4 detection configs of MoCo (and of SoCo, which reuses them) add it: with BN in every
    layer, the res5 output that feeds the box predictor is otherwise unnormalised, unlike the
    pretrained network's pooled features. Its weights are new (``roi_heads.res5.norm.*``), so a
    converted checkpoint lacks only them.
    """

    @classmethod
    def _build_res5_block(cls, cfg):
        blocks, out_channels = super()._build_res5_block(cfg)
        blocks.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        return blocks, out_channels
