"""SoCo's views and the proposal boxes that follow them (Wei et al. 2021, section 3.2).

Boxes are XYXY in absolute pixels of the view they belong to.

* V1: the whole image resized to ``view1_size`` x ``view1_size`` (aspect ratio not kept).
* V2: a random crop of V1 (area fraction in ``crop_scale``, aspect ratio in ``crop_ratio``:
  torchvision's RandomResizedCrop parameters) resized to ``view2_size`` x ``view2_size``.
* V3: V2 downsampled to ``view3_size`` x ``view3_size`` (same boxes, scaled).
* V4 (SoCo*): another random crop of V1 resized to ``view4_size`` x ``view4_size``; it has its
  own K proposals, paired with their own boxes in V1 (as the official SoCo* code pairs V1-V4).

Proposals outside a crop: a proposal stays when at least ``min_visible_fraction`` of its area
(in V1) lies inside the crop, and it is clipped to the crop, so its box covers the same pixels in
every view. K boxes are always returned: the crop is redrawn up to ``max_crop_attempts`` times
until it keeps a proposal; if none does, the crop itself (the visible part of the whole image)
is the only proposal. K are then drawn from the kept ones: without replacement when there are
at least K, otherwise each kept one once and the rest drawn with replacement.

Box jitter: applied independently per view and proposal with probability ``jitter_prob``
(paper: b = (x, y, w, h) with centre x, y; x' = x + r w, y' = y + r h, w' = w + r w,
h' = h + r h, r ~ U[-ratio, ratio], one r per box; ``jitter_per_coordinate`` draws one r per
coordinate instead), then clipped to the view.

Each view then gets BYOL's augmentation without crop (horizontal flip moves the boxes): V1 gets
BYOL's T (blur p=1), V2/V3/V4 get T' (blur p=0.1, solarize p=0.2), as the official code does.

``views="official"`` replaces the geometry above by the official code's (``soco_official_views``
lists the differences): V2 (and V4) are crops of the original image; V3 is an independent crop
with its own proposals (or V2 resized when V4 is on, as the official SoCo* script); each cropped
view is paired with its own set of V1 boxes (``v1`` for V2, ``v1_v3`` for V3, ``v1_v4`` for V4),
which alone are jittered. Box-aware cutout (``cutout_prob`` > 0, ``box_cutout``) applies to every
view but V1 in both modes.

The colour operations run with the fast CPU kernels, the reference torchvision pipeline, or are
deferred to the training device (``configure_augmentation``; see ``transforms/augment.py``):
deferred, the views are returned flipped but without colour changes, with their parameters.
Randomness comes from torch's global generator (seeded per sample by the pretraining loader).
"""

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .box_cutout import box_cutout
from .soco_official_views import clip_to, jitter_corner, overlapping, select_with_padding
from .transforms.augment import ViewAugmentation
from .transforms.byol import build_byol_transform

__all__ = [
    "SoCoViewParams",
    "SoCoViewBuilder",
    "visible_fraction",
    "keep_visible",
    "sample_indices",
    "jitter_boxes",
]

Crop = Tuple[int, int, int, int]  # top, left, height, width in V1 pixels


@dataclass(frozen=True)
class SoCoViewParams:
    """Geometry and augmentation settings of SoCo's views; defaults are the paper's."""

    num_proposals: int = 4
    view1_size: int = 224
    view2_size: int = 224
    view3_size: int = 112  # 0: no V3 (C4 variant)
    view4_size: int = 0  # 0: no V4; SoCo*: 192
    crop_scale: Tuple[float, float] = (0.5, 1.0)
    crop_ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    min_visible_fraction: float = 0.5
    max_crop_attempts: int = 10
    jitter_prob: float = 0.5
    jitter_ratio: float = 0.1
    jitter_per_coordinate: bool = False
    views: str = "paper"  # "paper" | "official"
    cutout_prob: float = 0.0
    cutout_scale: Tuple[float, float] = (0.1, 0.3)
    cutout_fill: Tuple[int, int, int] = (124, 116, 104)  # the mean pixel (RGB, rounded)
    # False: only the horizontal flip of BYOL's pipeline (geometry tests, visualisation).
    photometric: bool = True

    @classmethod
    def from_config(cls, cfg) -> "SoCoViewParams":
        c = cfg.MODEL.SOCO
        use_v3 = c.USE_VIEW3 and c.VARIANT == "FPN"
        return cls(
            num_proposals=c.NUM_PROPOSALS,
            view1_size=c.VIEW1_SIZE,
            view2_size=c.VIEW2_SIZE,
            view3_size=c.VIEW3_SIZE if use_v3 else 0,
            view4_size=c.VIEW4_SIZE if c.USE_VIEW4 else 0,
            crop_scale=tuple(c.CROP_SCALE),
            crop_ratio=tuple(c.CROP_RATIO),
            min_visible_fraction=c.MIN_VISIBLE_FRACTION,
            max_crop_attempts=c.MAX_CROP_ATTEMPTS,
            jitter_prob=c.JITTER_PROB,
            jitter_ratio=c.JITTER_RATIO,
            jitter_per_coordinate=c.JITTER_PER_COORDINATE,
            views=c.VIEWS,
            cutout_prob=c.CUTOUT_PROB,
            cutout_scale=tuple(c.CUTOUT_SCALE),
            cutout_fill=tuple(int(round(m)) for m in cfg.MODEL.PIXEL_MEAN),
        )

    def __post_init__(self):
        if self.num_proposals < 1:
            raise ValueError(f"MODEL.SOCO.NUM_PROPOSALS must be >= 1, got {self.num_proposals}")
        if self.max_crop_attempts < 1:
            raise ValueError(f"MODEL.SOCO.MAX_CROP_ATTEMPTS must be >= 1, got {self.max_crop_attempts}")
        if not 0.0 < self.min_visible_fraction <= 1.0:
            raise ValueError(
                f"MODEL.SOCO.MIN_VISIBLE_FRACTION must be in (0, 1], got {self.min_visible_fraction}"
            )
        if not (0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0):
            raise ValueError(f"MODEL.SOCO.CROP_SCALE must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        if not 0.0 <= self.jitter_ratio < 1.0:
            raise ValueError(f"MODEL.SOCO.JITTER_RATIO must be in [0, 1), got {self.jitter_ratio}")
        if not 0.0 <= self.cutout_prob <= 1.0:
            raise ValueError(f"MODEL.SOCO.CUTOUT_PROB must be in [0, 1], got {self.cutout_prob}")
        lo, hi = self.cutout_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"MODEL.SOCO.CUTOUT_SCALE must satisfy 0 < lo <= hi <= 1, got {self.cutout_scale}")
        if len(self.cutout_fill) != 3:
            raise ValueError(f"MODEL.PIXEL_MEAN must have 3 values for the cutout fill, got {self.cutout_fill}")


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def _crop_box(crop: Crop) -> torch.Tensor:
    top, left, height, width = crop
    return torch.tensor([left, top, left + width, top + height], dtype=torch.float32)


def visible_fraction(boxes: torch.Tensor, crop: Crop) -> torch.Tensor:
    """(N, 4) boxes, crop (top, left, height, width) in the same pixels -> (N,) area fraction inside."""
    cb = _crop_box(crop)
    inter = torch.stack(
        [
            boxes[:, 0].clamp(min=cb[0]),
            boxes[:, 1].clamp(min=cb[1]),
            boxes[:, 2].clamp(max=cb[2]),
            boxes[:, 3].clamp(max=cb[3]),
        ],
        dim=1,
    )
    return _area(inter) / _area(boxes).clamp(min=1e-6)


def keep_visible(boxes: torch.Tensor, crop: Crop, min_fraction: float) -> torch.Tensor:
    """Boxes with >= ``min_fraction`` of their area inside ``crop``, clipped to it: (M, 4)."""
    keep = visible_fraction(boxes, crop) >= min_fraction
    cb = _crop_box(crop)
    kept = boxes[keep]
    return torch.maximum(torch.minimum(kept, cb[[2, 3, 2, 3]]), cb[[0, 1, 0, 1]])


def sample_indices(n: int, k: int) -> torch.Tensor:
    """K indices into n >= 1 items: distinct when n >= k, else all n once plus k - n repeats."""
    if n < 1:
        raise ValueError("sample_indices needs at least one item")
    perm = torch.randperm(n)
    if n >= k:
        return perm[:k]
    return torch.cat([perm, torch.randint(n, (k - n,))])


def jitter_boxes(
    boxes: torch.Tensor, prob: float, ratio: float, view_size: int, per_coordinate: bool = False
) -> torch.Tensor:
    """Paper's box jitter on (N, 4) XYXY boxes of a ``view_size``^2 view, clipped to the view.

    With probability ``prob`` per box: centre (x, y) += r * (w, h) and (w, h) += r * (w, h),
    r ~ U[-ratio, ratio] (one r per box, or one per coordinate when ``per_coordinate``).
    """
    n = boxes.shape[0]
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    cx = boxes[:, 0] + 0.5 * w
    cy = boxes[:, 1] + 0.5 * h
    r = (torch.rand(n, 4 if per_coordinate else 1) * 2.0 - 1.0) * ratio
    r = r.expand(n, 4) * (torch.rand(n, 1) < prob)
    cx, cy = cx + r[:, 0] * w, cy + r[:, 1] * h
    w, h = w + r[:, 2] * w, h + r[:, 3] * h
    out = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=1)
    return out.clamp(min=0.0, max=float(view_size))


class SoCoViewBuilder:
    """Callable: (image uint8 (3, H, W), proposals (N, 4) in its pixels) -> views and boxes.

    Returns ``{"images": {name: uint8 (3, S, S)}, "boxes": {name: float32 (K, 4)}}`` with image
    names ``v1``, ``v2``, ``v3`` (if enabled), ``v4`` (if enabled) and box names ``v1``, ``v2``,
    ``v3`` (one proposal set: box i of each view is the same region) and, with V4, ``v1_v4`` /
    ``v4`` (V4's own set, its boxes in V1 and in V4). An image without proposals uses its whole
    area as the proposal. With the photometric operations deferred
    (``configure_augmentation(defer=True)``) it also returns ``"params": {name: (NUM_PARAMS,)}``.
    """

    def __init__(self, params: SoCoViewParams):
        self.params = params
        p = params
        self._crop_v2 = v2.RandomResizedCrop(p.view2_size, scale=p.crop_scale, ratio=p.crop_ratio)
        self._crop_v3 = v2.RandomResizedCrop(p.view3_size, scale=p.crop_scale, ratio=p.crop_ratio) if p.view3_size else None
        self._crop_v4 = (
            v2.RandomResizedCrop(p.view4_size, scale=p.crop_scale, ratio=p.crop_ratio) if p.view4_size else None
        )
        sizes = {"v1": p.view1_size, "v2": p.view2_size, "v3": p.view3_size, "v4": p.view4_size}
        self._augment = {
            name: self._build_augmentation(0 if name == "v1" else 1, size) for name, size in sizes.items() if size
        }

    def configure_augmentation(self, impl: str = "fast", defer: bool = False) -> None:
        """Colour operations by the fast kernels or the reference pipeline, or deferred (``defer``).

        Deferring does not go with box-aware cutout (the cut squares must hold the mean pixel after
        the colour operations): the config check at load refuses that pair
        (``soco.config.validation``)."""
        for aug in self._augment.values():
            if isinstance(aug, ViewAugmentation):
                aug.configure(impl, defer)

    def _build_augmentation(self, byol_view: int, size: int):
        if self.params.photometric:
            return build_byol_transform(byol_view, size)
        return v2.RandomHorizontalFlip(p=0.5)

    def _crop_with_proposals(self, v1_image: torch.Tensor, boxes_v1: torch.Tensor, rrc) -> Tuple[Crop, torch.Tensor]:
        """A crop of V1 keeping >= 1 proposal, and K proposal regions (V1 pixels) inside it."""
        p = self.params
        for _ in range(p.max_crop_attempts):
            params = rrc.make_params([v1_image])
            crop = (params["top"], params["left"], params["height"], params["width"])
            kept = keep_visible(boxes_v1, crop, p.min_visible_fraction)
            if len(kept):
                break
        else:
            kept = _crop_box(crop)[None]
        return crop, kept[sample_indices(len(kept), p.num_proposals)]

    def _jitter(self, boxes: torch.Tensor, size: int) -> torch.Tensor:
        p = self.params
        return jitter_boxes(boxes, p.jitter_prob, p.jitter_ratio, size, p.jitter_per_coordinate)

    def __call__(self, image: torch.Tensor, proposals: torch.Tensor) -> Dict[str, Dict[str, torch.Tensor]]:
        p = self.params
        if image.dim() != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise ValueError(f"SoCoViewBuilder expects a uint8 (3, H, W) image, got {image.dtype} {tuple(image.shape)}")
        height, width = image.shape[1:]
        proposals = torch.as_tensor(proposals, dtype=torch.float32).reshape(-1, 4)
        if len(proposals) == 0:
            proposals = torch.tensor([[0.0, 0.0, width, height]])
        if p.views == "official":
            images, boxes = self._official_geometry(image, proposals)
        else:
            images, boxes = self._paper_geometry(image, proposals)
        out_images, out_boxes, out_params = {}, {}, {}
        for name, img in images.items():
            size = img.shape[-1]
            # Every box set drawn in this view (V1 carries two with V4) is jittered independently
            # and moves with the view's flip.
            names = [b for b in boxes if b == name or b.startswith(name + "_")]
            # (the official geometry has jittered V1's boxes already).
            bbs = [
                tv_tensors.BoundingBoxes(
                    boxes[b] if p.views == "official" else self._jitter(boxes[b], size),
                    format="XYXY",
                    canvas_size=(size, size),
                )
                for b in names
            ]
            augment = self._augment[name]
            if isinstance(augment, ViewAugmentation):
                img_out, bbs_out, params = augment.apply(img, *bbs)
                if params is not None:
                    out_params[name] = params
            else:
                img_out, *bbs_out = augment(img, *bbs)
            for b, bb in zip(names, bbs_out):
                out_boxes[b] = bb.as_subclass(torch.Tensor).float()
            img_out = img_out.as_subclass(torch.Tensor)
            if p.cutout_prob > 0 and name != "v1":
                img_out = box_cutout(img_out, out_boxes[name], p.cutout_prob, p.cutout_scale, p.cutout_fill)
            out_images[name] = img_out.contiguous()
        out = {"images": out_images, "boxes": out_boxes}
        if out_params:
            out["params"] = out_params
        return out

    def _paper_geometry(self, image: torch.Tensor, proposals: torch.Tensor):
        """Views (uint8, before augmentation) and box sets of the paper's reading."""
        p = self.params
        height, width = image.shape[1:]
        s1 = p.view1_size
        v1 = F.resize(image, [s1, s1], antialias=True)
        boxes_v1 = F.resize(tv_tensors.BoundingBoxes(proposals, format="XYXY", canvas_size=(height, width)), [s1, s1])
        boxes_v1 = boxes_v1.as_subclass(torch.Tensor)

        images = {"v1": v1}
        boxes = {}
        crop2, boxes["v1"] = self._crop_with_proposals(v1, boxes_v1, self._crop_v2)
        images["v2"], boxes["v2"] = self._resized_crop(v1, boxes["v1"], crop2, p.view2_size)
        if p.view3_size:
            images["v3"] = F.resize(images["v2"], [p.view3_size] * 2, antialias=True)
            boxes["v3"] = boxes["v2"] * (p.view3_size / p.view2_size)
        if self._crop_v4 is not None:
            crop4, boxes["v1_v4"] = self._crop_with_proposals(v1, boxes_v1, self._crop_v4)
            images["v4"], boxes["v4"] = self._resized_crop(v1, boxes["v1_v4"], crop4, p.view4_size)

        return images, boxes

    def _official_geometry(self, image: torch.Tensor, proposals: torch.Tensor):
        """Views (uint8, before augmentation) and box sets of the official code's pipeline."""
        p = self.params
        height, width = image.shape[1:]
        whole = (0.0, 0.0, float(width), float(height))
        crops = {"v2": (self._crop_v2, p.view2_size)}
        if p.view3_size and self._crop_v4 is None:
            crops["v3"] = (self._crop_v3, p.view3_size)
        if self._crop_v4 is not None:
            crops["v4"] = (self._crop_v4, p.view4_size)
        least = max(p.num_proposals // 2, 1)
        for _ in range(p.max_crop_attempts):
            params = {v: rrc.make_params([image]) for v, (rrc, _) in crops.items()}
            regions = {
                v: (float(q["left"]), float(q["top"]), float(q["left"] + q["width"]), float(q["top"] + q["height"]))
                for v, q in params.items()
            }
            kept = {v: proposals[overlapping(proposals, regions[v])] for v in crops}
            if all(len(k) >= least for k in kept.values()):
                break
            least = max(least // 2, 1)
        s1 = p.view1_size
        images = {"v1": F.resize(image, [s1, s1], antialias=True)}
        boxes = {}
        to_v1 = proposals.new_tensor([s1 / width, s1 / height] * 2)
        for v, (_, size) in crops.items():
            region = regions[v]
            # No proposal overlaps after every attempt: the crop itself is the proposal.
            chosen = kept[v] if len(kept[v]) else proposals.new_tensor([region])
            index, padded = select_with_padding(len(chosen), p.num_proposals)
            chosen = chosen[index]
            v1_set = "v1" if v == "v2" else "v1_" + v
            boxes[v1_set] = self._official_v1_boxes(chosen, padded, whole) * to_v1
            in_crop = clip_to(chosen, region)
            in_crop = clip_to(jitter_corner(in_crop, padded.float(), p.jitter_ratio), region)
            q = params[v]
            images[v] = F.resized_crop(image, q["top"], q["left"], q["height"], q["width"], [size, size], antialias=True)
            offset = in_crop.new_tensor([region[0], region[1]] * 2)
            scale = in_crop.new_tensor([size / q["width"], size / q["height"]] * 2)
            boxes[v] = (in_crop - offset) * scale
            if v == "v2" and p.view3_size and "v3" not in crops:
                # Official SoCo*: the small view is V2 resized, with V1 boxes jittered anew.
                images["v3"] = F.resize(images["v2"], [p.view3_size] * 2, antialias=True)
                boxes["v3"] = boxes["v2"] * (p.view3_size / size)
                boxes["v1_v3"] = self._official_v1_boxes(chosen, padded, whole) * to_v1
        return images, boxes

    def _official_v1_boxes(self, chosen: torch.Tensor, padded: torch.Tensor, whole) -> torch.Tensor:
        """Whole proposals jittered (padding copies always), clipped to the image (original pixels)."""
        p = self.params
        prob = torch.where(padded, torch.ones(len(padded)), torch.full((len(padded),), p.jitter_prob))
        return clip_to(jitter_corner(chosen, prob, p.jitter_ratio), whole)

    @staticmethod
    def _resized_crop(v1: torch.Tensor, boxes: torch.Tensor, crop: Crop, size: int):
        """Crop (top, left, h, w) of V1 resized to size^2, with boxes (V1 pixels) following."""
        bb = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=tuple(v1.shape[-2:]))
        image = F.resized_crop(v1, *crop, [size, size], antialias=True)
        bb = F.resized_crop(bb, *crop, [size, size])
        return image, bb.as_subclass(torch.Tensor)
