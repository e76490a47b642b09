"""SoCo (Wei et al. 2021): object-level BYOL over a detector's backbone, neck and RoI head.

FPN variant: Detectron2 ResNet + FPN (P2-P5; P6 is built, as in the detector, but unused; by
default ``soco.modeling.fpn.LateralSizeFPN``, same tensors, so V3 runs at 112 px unpadded),
7x7 ROIAlignV2 with SoCo's scale-aware level assignment, the 4conv1fc ``FastRCNNConvFCHead``.
C4 variant: ResNet up to res4, 14x14 ROIAlignV2 on C4, then res5 (as ``Res5ROIHeads`` builds it)
and a spatial mean; no V3. Projector g and predictor q: Linear(4096)-BN-ReLU-Linear(256).
Target network: EMA of backbone, RoI head and projector (``target.*``), tau 0.99 -> 1 (cosine).

Loss (eq. 5-6, symmetrised): for each view pair (V1, Vj), j in {2, 3} (+ 4 for SoCo*),
mean over proposals and images of -2 cos(q(g(h_1)), g'(h_j)) - 2 cos(q(g(h_j)), g'(h_1)); the
terms are logged separately (``loss_v1_v2``, ``loss_v1_v3``, ``loss_v1_v4``) and summed by the
trainer. Module names are those of a stock Detectron2 detector (``backbone.bottom_up.*``,
``backbone.fpn_*``, ``roi_heads.box_head.*``; C4: ``backbone.*``, ``roi_heads.res5.*``).
"""

from typing import Any, Dict, List, Sequence

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import Res5ROIHeads, build_box_head
from detectron2.structures import Boxes
from torch import nn

from ...config.method_soco import SOCO_FPN_LEVELS
from ..fpn import build_resnet_lateral_size_fpn_backbone
from ..heads import MLPHead, build_predictor, build_projector
from ..level_assignment import scale_aware_roi_pool
from ..losses.soco import soco_pair_loss
from .base import ExportSpec, PretrainMetaArch, backbone_build_cfg, build_pretrain_resnet

__all__ = ["SoCo"]

# (online view, its box set) paired with (other view, its box set), per loss term.
VIEW_PAIRS = {
    "loss_v1_v2": (("v1", "v1"), ("v2", "v2")),
    "loss_v1_v3": (("v1", "v1"), ("v3", "v3")),
    "loss_v1_v4": (("v1", "v1_v4"), ("v4", "v4")),
}
# MODEL.SOCO.VIEWS "official": V3 has its own V1 boxes (an independent crop, or SoCo*'s V2 resized
# with V1 boxes jittered anew), as the official data pipeline pairs them.
OFFICIAL_V3_PAIR = (("v1", "v1_v3"), ("v3", "v3"))
FPN_BUILDERS = {
    "lateral_size": build_resnet_lateral_size_fpn_backbone,
    "scale2": build_resnet_fpn_backbone,
}


def _head_build_cfg(cfg: CfgNode) -> CfgNode:
    """``backbone_build_cfg`` plus the box head's norm built as plain BN (SyncBN is the trainer's job)."""
    out = backbone_build_cfg(cfg)
    out.defrost()
    if out.MODEL.ROI_BOX_HEAD.NORM == "SyncBN":
        out.MODEL.ROI_BOX_HEAD.NORM = "BN"
    out.freeze()
    return out


@META_ARCH_REGISTRY.register()
class SoCo(PretrainMetaArch):
    """Online: ``backbone``, ``roi_heads`` (``box_head`` or ``res5``), ``projector``, ``predictor``;
    target: EMA copies of ``backbone``, ``roi_heads``, ``projector``."""

    @configurable
    def __init__(self, *, variant: str, backbone: nn.Module, roi_heads: nn.ModuleDict, pooler: ROIPooler,
                 projector: MLPHead, predictor: MLPHead, level_thresholds: Sequence[float] = (48, 96, 192),
                 use_view3: bool = True, use_view4: bool = False, official_views: bool = False, **kwargs):
        """``variant``: "FPN" (``roi_heads["box_head"]`` on P2-P5) or "C4" (``roi_heads["res5"]``
        on res4); ``pooler``: RoIAlign per pooled level; ``level_thresholds``: sqrt-area bounds
        P2|P3|P4|P5 in view pixels; ``use_view3`` / ``use_view4``: the views the batch carries;
        ``official_views``: V3 is paired with its own V1 boxes (``MODEL.SOCO.VIEWS`` "official").
        Other arguments go to :class:`PretrainMetaArch`."""
        super().__init__(**kwargs)
        self.variant = variant
        self.level_thresholds = tuple(float(t) for t in level_thresholds)
        self.view_names = ["v1", "v2"] + (["v3"] if use_view3 else []) + (["v4"] if use_view4 else [])
        pairs = dict(VIEW_PAIRS, loss_v1_v3=OFFICIAL_V3_PAIR) if official_views else VIEW_PAIRS
        self.loss_pairs = {k: v for k, v in pairs.items() if v[1][0] in self.view_names}
        self.backbone = backbone
        self.roi_heads = roi_heads
        # The pooler has no parameters; its per-level RoIAlign modules are reused by
        # scale_aware_roi_pool with SoCo's level assignment.
        self.pooler = pooler
        self.projector = projector
        self.predictor = predictor
        self.make_target("backbone", "roi_heads", "projector")

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        """Networks built in the order backbone, RoI head, projector, predictor."""
        c = cfg.MODEL.SOCO
        bcfg = _head_build_cfg(cfg)
        head_cfg = cfg.MODEL.ROI_BOX_HEAD
        resolution = head_cfg.POOLER_RESOLUTION
        if c.VARIANT == "FPN":
            backbone = FPN_BUILDERS[c.FPN_UPSAMPLE](bcfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
            shapes = backbone.output_shape()
            scales = [1.0 / shapes[f].stride for f in SOCO_FPN_LEVELS]
            head = build_box_head(bcfg, ShapeSpec(channels=shapes["p2"].channels, height=resolution, width=resolution))
            roi_heads = nn.ModuleDict({"box_head": head})
            feature_dim = head.output_shape.channels
        else:
            backbone = build_pretrain_resnet(cfg, ("res4",))
            scales = [1.0 / backbone.output_shape()["res4"].stride]
            res5, feature_dim = Res5ROIHeads._build_res5_block(bcfg)
            roi_heads = nn.ModuleDict({"res5": res5})
        pooler = ROIPooler(
            output_size=resolution,
            scales=scales,
            sampling_ratio=head_cfg.POOLER_SAMPLING_RATIO,
            pooler_type=head_cfg.POOLER_TYPE,
        )
        return {
            **super().from_config(cfg),
            "variant": c.VARIANT,
            "backbone": backbone,
            "roi_heads": roi_heads,
            "pooler": pooler,
            "projector": build_projector(cfg, feature_dim),
            "predictor": build_predictor(cfg),
            "level_thresholds": tuple(c.LEVEL_THRESHOLDS),
            "use_view3": c.USE_VIEW3,
            "use_view4": c.USE_VIEW4,
            "official_views": c.VIEWS == "official",
        }

    # ----------------------------------------------------------------------------- features
    def object_features(self, images: torch.Tensor, box_sets: List[List[torch.Tensor]], target: bool) -> List[torch.Tensor]:
        """Object-level representations h of several box sets drawn in the same views.

        images: (N, 3, S, S) normalised; box_sets: each a list of N tensors (K, 4) in view pixels.
        Returns one (N * K, D) tensor per box set, rows ordered image by image. The sets share
        one RoI-head call so batch norm sees all of this view's boxes together.
        """
        backbone = self.target["backbone"] if target else self.backbone
        roi_heads = self.target["roi_heads"] if target else self.roi_heads
        features = backbone(self.pad_to_divisible(images, backbone.size_divisibility))
        if self.variant == "FPN":
            levels = [features[f] for f in SOCO_FPN_LEVELS]
            pooled = [scale_aware_roi_pool(self.pooler, levels, boxes, self.level_thresholds) for boxes in box_sets]
            h = roi_heads["box_head"](torch.cat(pooled))
        else:
            pooled = [self.pooler([features["res4"]], [Boxes(b) for b in boxes]) for boxes in box_sets]
            h = roi_heads["res5"](torch.cat(pooled)).mean(dim=(2, 3))
        return list(h.split([p.shape[0] for p in pooled]))

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB 0-255 -> (N, 2048 or res5 width) pooled res5 of the online ResNet
        (FPN: the bottom-up network; C4: res4 backbone, then the RoI head's res5)."""
        x = self.normalize(images)
        if self.variant == "FPN":
            return self.backbone.bottom_up(x)["res5"].mean(dim=(2, 3))
        return self.roi_heads["res5"](self.backbone(x)["res4"]).mean(dim=(2, 3))

    @staticmethod
    def pad_to_divisible(images: torch.Tensor, divisor: int) -> torch.Tensor:
        """Zero-pad (N, C, H, W) normalised images at the bottom/right to multiples of ``divisor``.

        Only with MODEL.SOCO.FPN_UPSAMPLE "scale2": Detectron2's FPN upsamples by exactly 2, so its
        input must be a multiple of 32 (V3 is 112 px); the default ``LateralSizeFPN`` has divisor 1
        and runs every view unpadded. Padding with 0 after normalisation is padding with the mean
        pixel, as Detectron2's ``ImageList`` does, and leaves box coordinates unchanged.
        """
        if divisor <= 1:
            return images
        h, w = images.shape[-2:]
        pad_h, pad_w = -h % divisor, -w % divisor
        return nn.functional.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images

    def embed(self, images: torch.Tensor, box_sets: List[List[torch.Tensor]], target: bool) -> List[torch.Tensor]:
        """Online: predictions q(g(h)); target: projections g'(h'). One (N * K, OUT_DIM) per set."""
        projector = self.target["projector"] if target else self.projector
        h = self.object_features(images, box_sets, target)
        z = projector(torch.cat(h))
        out = z if target else self.predictor(z)
        return list(out.split([x.shape[0] for x in h]))

    # ----------------------------------------------------------------------------- training
    def forward(self, batched_inputs: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        views = self.preprocess_images(batched_inputs, "views")
        if len(views) != len(self.view_names):
            raise ValueError(
                f"SoCo is configured for views {self.view_names} but the batch has {len(views)} views per image"
            )
        images = dict(zip(self.view_names, views))
        sets_of_view = {v: [] for v in self.view_names}
        for (va, sa), (vb, sb) in self.loss_pairs.values():
            for view, box_set in ((va, sa), (vb, sb)):
                if box_set not in sets_of_view[view]:
                    sets_of_view[view].append(box_set)
        boxes = {
            s: [x["boxes"][s].to(self.device, non_blocking=True) for x in batched_inputs]
            for sets in sets_of_view.values()
            for s in sets
        }
        online, target = {}, {}
        for view, sets in sets_of_view.items():
            box_sets = [boxes[s] for s in sets]
            online.update(zip(sets, self.embed(images[view], box_sets, target=False)))
            with torch.no_grad():
                target.update(zip(sets, self.embed(images[view], box_sets, target=True)))
        return {
            name: soco_pair_loss(online[sa], target[sb], online[sb], target[sa])
            for name, ((_, sa), (_, sb)) in self.loss_pairs.items()
        }

    # ----------------------------------------------------------------------------- classmethods
    @classmethod
    def export_spec(cls, cfg: CfgNode) -> ExportSpec:
        if cfg.MODEL.SOCO.VARIANT == "C4":
            return {"backbone": [("backbone.", "backbone.")], "res5": [("roi_heads.res5.", "roi_heads.res5.")]}
        return {
            "backbone": [("backbone.bottom_up.", "backbone.bottom_up.")],
            "fpn": [("backbone.fpn_", "backbone.fpn_")],
            "head": [("roi_heads.box_head.", "roi_heads.box_head.")],
        }
