"""SoCo's scale-aware assignment of boxes to FPN levels, and RoI pooling that follows it.

Detectron2's ``ROIPooler`` assigns levels with the FPN paper's formula (canonical 224 px box on
P4); SoCo (section 3.3) assigns by fixed size ranges instead, so the pooling loop is redone here
over the ``ROIPooler``'s own per-level RoIAlign modules.
"""

from typing import List, Sequence

import torch
from detectron2.layers import nonzero_tuple
from detectron2.modeling.poolers import ROIPooler, convert_boxes_to_pooler_format
from detectron2.structures import Boxes

__all__ = ["assign_levels_by_size", "scale_aware_roi_pool"]


def assign_levels_by_size(boxes: torch.Tensor, thresholds: Sequence[float] = (48, 96, 192)) -> torch.Tensor:
    """(N, 4) XYXY boxes in a view's pixels -> (N,) int64 level index 0..len(thresholds).

    Index l means sqrt(area) <= thresholds[l] and > thresholds[l - 1]; above the last threshold
    gives len(thresholds). With (48, 96, 192): <= 48 -> 0 (P2), <= 96 -> 1 (P3), <= 192 -> 2 (P4),
    else 3 (P5): the official code's reading of the paper's 0-48^2 / 49^2-96^2 / 97^2-192^2 /
    193^2-224^2 area ranges, which leave gaps between integers.
    """
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=0)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    bounds = torch.as_tensor(thresholds, dtype=boxes.dtype, device=boxes.device)
    return torch.bucketize(torch.sqrt(w * h), bounds, right=False)


def scale_aware_roi_pool(
    pooler: ROIPooler, features: List[torch.Tensor], boxes: List[torch.Tensor], thresholds: Sequence[float]
) -> torch.Tensor:
    """RoI features with SoCo's level assignment.

    Args:
        pooler: a ``ROIPooler`` whose ``level_poolers`` match ``features`` (len(thresholds) + 1).
        features: per level (N, C, H_l, W_l), finest first (P2, P3, P4, P5).
        boxes: N tensors (K_n, 4), XYXY in input-image pixels.
    Returns:
        (sum K_n, C, R, R) in the order of the concatenated boxes.
    """
    if len(features) != len(pooler.level_poolers) or len(features) != len(thresholds) + 1:
        raise ValueError(
            f"scale_aware_roi_pool: {len(features)} feature levels, {len(pooler.level_poolers)} poolers "
            f"and {len(thresholds)} thresholds do not match (need levels = poolers = thresholds + 1)"
        )
    rois = convert_boxes_to_pooler_format([Boxes(b) for b in boxes])  # (M, 5): batch index, box
    levels = assign_levels_by_size(rois[:, 1:], thresholds)
    out = features[0].new_zeros((rois.shape[0], features[0].shape[1]) + tuple(pooler.output_size))
    for level, (feature, level_pooler) in enumerate(zip(features, pooler.level_poolers)):
        inds = nonzero_tuple(levels == level)[0]
        # index_put_ rather than advanced indexing: the pattern Detectron2's ROIPooler uses.
        out.index_put_((inds,), level_pooler(feature, rois[inds]))
    return out
