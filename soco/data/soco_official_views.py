"""The official SoCo code's proposal geometry (hologerry/SoCo, ``contrast/data``), as an option.

Boxes are XYXY in absolute pixels of the original image unless a function says otherwise.
Differences from the paper's reading in ``soco_views`` (which stays the default):

* a proposal is kept when it overlaps the crop at all (official ``get_overlap_props``), not when
  half of it is inside;
* V1's box is the whole proposal (clipped to the image), the cropped view's box only its part
  inside the crop (official ``clip_bboxs`` on V1's and on the crop's parameters);
* only V1's boxes are jittered (official ``jitter_props``): with probability p per box, the
  top-left corner moves by (r0 w, r1 h) and the size becomes (w (1 + r2), h (1 + r3)), four
  independent r ~ U[-ratio, ratio];
* fewer than K kept proposals are padded with copies that are always jittered, independently in
  each view (official ``pad_bboxs_with_common``);
* crops are redrawn until each cropped view keeps ``least`` proposals, ``least`` starting at
  max(K // 2, 1) and halving per attempt (official ``least_common``).

Written here rather than reused: the official functions work on PIL images and (x1, y1, x2, y2,
id) numpy rows with inclusive pixel ends; these are torch functions on continuous coordinates.
"""

from typing import Tuple

import torch

__all__ = ["overlapping", "clip_to", "jitter_corner", "select_with_padding"]

Region = Tuple[float, float, float, float]  # x1, y1, x2, y2


def overlapping(boxes: torch.Tensor, region: Region) -> torch.Tensor:
    """(N, 4) boxes -> (N,) bool: the box and ``region`` share a positive area."""
    x1, y1, x2, y2 = region
    return (boxes[:, 0] < x2) & (boxes[:, 2] > x1) & (boxes[:, 1] < y2) & (boxes[:, 3] > y1)


def clip_to(boxes: torch.Tensor, region: Region) -> torch.Tensor:
    """(N, 4) boxes clipped to ``region`` (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = region
    low = boxes.new_tensor([x1, y1, x1, y1])
    high = boxes.new_tensor([x2, y2, x2, y2])
    return torch.minimum(torch.maximum(boxes, low), high)


def jitter_corner(boxes: torch.Tensor, prob: torch.Tensor, ratio: float) -> torch.Tensor:
    """The official box jitter on (N, 4) boxes; ``prob``: (N,) probability per box.

    x1' = x1 + r0 w, y1' = y1 + r1 h, w' = w (1 + r2), h' = h (1 + r3), r ~ U[-ratio, ratio]^4.
    """
    n = boxes.shape[0]
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    r = (torch.rand(n, 4) * 2.0 - 1.0) * ratio * (torch.rand(n) < prob).unsqueeze(1)
    x1 = boxes[:, 0] + r[:, 0] * w
    y1 = boxes[:, 1] + r[:, 1] * h
    return torch.stack([x1, y1, x1 + w * (1 + r[:, 2]), y1 + h * (1 + r[:, 3])], dim=1)


def select_with_padding(n: int, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """K indices into n >= 1 kept proposals and a (K,) bool mask of the padding copies.

    n >= k: k distinct (official ``select_props(..., 'random', k)``); n < k: all n, then k - n
    copies drawn with replacement from them (marked True).
    """
    if n < 1:
        raise ValueError("select_with_padding needs at least one proposal")
    perm = torch.randperm(n)
    if n >= k:
        return perm[:k], torch.zeros(k, dtype=torch.bool)
    pad = perm[torch.randint(n, (k - n,))]
    return torch.cat([perm, pad]), torch.arange(k) >= n
