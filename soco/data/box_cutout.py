"""Box-aware cutout of the official SoCo code (``RandomCutoutInBbox``), on uint8 views.

Not in the paper; the official FPN 100-epoch and C4 scripts use it on V2 (and V3). Written here
rather than taken from torchvision: ``RandomErasing`` erases one rectangle per image anywhere,
this erases one square per box, centred inside the box, sized by the box's area.
"""

from typing import Sequence, Tuple

import torch

__all__ = ["box_cutout"]


def box_cutout(
    image: torch.Tensor, boxes: torch.Tensor, prob: float, scale: Tuple[float, float], fill: Sequence[int]
) -> torch.Tensor:
    """A copy of ``image`` (uint8 (3, S, S)) with one square per box set to ``fill``.

    boxes: (K, 4) XYXY in the view's pixels. Per box, with probability ``prob``: side
    s = round(sqrt(u * w * h)), u ~ U[scale]; centre (cx, cy) uniform in the box; pixels
    [cx - s/2, cx + s/2) x [cy - s/2, cy + s/2), clipped to the view, take ``fill`` (the mean
    pixel, i.e. 0 after normalisation, as the official code zeroes normalised tensors).
    The official code draws integer centres (``random.randint``, which fails on the float boxes
    of its last release) and erases s + 1 pixels for even s; here centres are continuous.
    """
    out = image.clone()
    k = boxes.shape[0]
    if k == 0 or prob <= 0:
        return out
    height, width = image.shape[-2:]
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=0)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    lo, hi = scale
    apply = torch.rand(k) < prob
    side = torch.sqrt((lo + torch.rand(k) * (hi - lo)) * w * h).round()
    cx = boxes[:, 0] + torch.rand(k) * w
    cy = boxes[:, 1] + torch.rand(k) * h
    left = (cx - side / 2).round()
    top = (cy - side / 2).round()
    x0, x1 = left.clamp(0, width).long(), (left + side).clamp(0, width).long()
    y0, y1 = top.clamp(0, height).long(), (top + side).clamp(0, height).long()
    value = torch.as_tensor(list(fill), dtype=image.dtype).view(-1, 1, 1)
    for i in torch.nonzero(apply).flatten().tolist():
        out[:, y0[i]:y1[i], x0[i]:x1[i]] = value
    return out
