"""BYOL (Grill et al. 2020) at image level: the baseline meta-architecture and the base's proof.

Two views of each image through online (backbone -> projector -> predictor) and target
(EMA backbone -> projector) networks; loss = sum over both view orders of the batch mean of
2 - 2 cos(q(view a), z'(view b)).
"""

from typing import Any, Callable, Dict, List, Optional

import torch
from detectron2.config import CfgNode
from detectron2.modeling import META_ARCH_REGISTRY
from torchvision.transforms import v2

from ...data.image_io import ImageReadError, read_image_chw
from ...data.transforms.byol import build_byol_transform
from ..losses import normalized_regression_loss
from .base import ImageLevelMetaArch

__all__ = ["BYOL", "BYOLMapper"]


class BYOLMapper:
    """dataset dict -> ``{"views": [v1, v2], "image_id"}``: two RandomResizedCrops of
    ``MODEL.BYOL.CROP_SIZE`` px (area scale ``MODEL.BYOL.CROP_SCALE``), then BYOL's asymmetric
    augmentations (view 1 and view 2 differ in blur and solarisation probabilities).
    Views are RGB uint8 (3, S, S). Returns ``None`` for an unreadable image (the loader skips it).
    """

    def __init__(self, cfg: CfgNode):
        size = cfg.MODEL.BYOL.CROP_SIZE
        crop = v2.RandomResizedCrop(size, scale=tuple(cfg.MODEL.BYOL.CROP_SCALE), antialias=True)
        self.transforms = [v2.Compose([crop, build_byol_transform(view, size)]) for view in (0, 1)]

    def __call__(self, dataset_dict: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        try:
            image = read_image_chw(dataset_dict["file_name"])
        except ImageReadError:
            return None
        return {"views": [t(image) for t in self.transforms], "image_id": dataset_dict["image_id"]}


@META_ARCH_REGISTRY.register()
class BYOL(ImageLevelMetaArch):
    """Image-level BYOL. Online: backbone, projector, predictor; target: EMA backbone, projector."""

    def __init__(self, cfg: CfgNode):
        super().__init__(cfg, with_predictor=True, with_target=True)

    def forward(self, batched_inputs: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        views = self.preprocess_images(batched_inputs, "views")
        if len(views) != 2:
            raise ValueError(f"BYOL expects 2 views per image, got {len(views)}")
        predictions = [self.predictor(self.project(v)) for v in views]
        with torch.no_grad():
            targets = [self.project(v, target=True) for v in views]
        loss = normalized_regression_loss(predictions[0], targets[1]).mean()
        loss = loss + normalized_regression_loss(predictions[1], targets[0]).mean()
        return {"loss_byol": loss}

    @classmethod
    def build_mapper(cls, cfg: CfgNode) -> Callable[[Dict[str, Any]], Optional[Dict[str, Any]]]:
        return BYOLMapper(cfg)
