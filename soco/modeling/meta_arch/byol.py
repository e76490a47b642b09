"""BYOL (Grill et al. 2020) at image level: the baseline meta-architecture and the base's proof.

Two views of each image through online (backbone -> projector -> predictor) and target
(EMA backbone -> projector) networks; loss = sum over both view orders of the batch mean of
2 - 2 cos(q(view a), z'(view b)).
"""

from typing import Any, Dict, List

import torch
from detectron2.modeling import META_ARCH_REGISTRY

from ..losses import normalized_regression_loss
from .base import ImageLevelMetaArch

__all__ = ["BYOL"]


@META_ARCH_REGISTRY.register()
class BYOL(ImageLevelMetaArch):
    """Image-level BYOL. Online: backbone, projector, predictor; target: EMA backbone, projector
    (the base's defaults: ``from_config`` builds the predictor, ``__init__`` the target)."""

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
