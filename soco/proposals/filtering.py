"""SoCo's proposal filter (the official code's ``ratio3size0308``) and its fallbacks."""
from __future__ import annotations

import numpy as np

__all__ = ["FALLBACK_LEVELS", "PAPER_MIN_SIDE", "PAPER_SCALE_RANGE", "dedup_boxes", "soco_filter"]

# Index = fallback level stored per image. 0 is the paper's rule; 1 and 2 are the official
# post-processing's relaxations for images left with nothing; 3 is the whole image.
FALLBACK_LEVELS = ("ratio3size0308", "ratio3", "size32", "whole_image")
# The paper's rule: sqrt(wh) within 0.3-0.8 of the image's, sides of at least 32 px.
PAPER_SCALE_RANGE = (0.3, 0.8)
PAPER_MIN_SIDE = 32.0


def dedup_boxes(boxes: np.ndarray) -> np.ndarray:
    """Drop exact duplicate rows of (N, 4) boxes, keeping first occurrences in their order."""
    if len(boxes) == 0:
        return boxes
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)]


def soco_filter(boxes: np.ndarray, image_hw: tuple[int, int], min_side: float = PAPER_MIN_SIDE,
                max_aspect: float = 3.0, scale_range: tuple[float, float] = PAPER_SCALE_RANGE):
    """Keep the boxes SoCo trains on.

    Rule (level 0): w >= min_side, h >= min_side, 1/max_aspect <= w/h <= max_aspect and
    scale_range[0] <= sqrt(w*h) / sqrt(W*H) <= scale_range[1], with W, H the image size. If no
    box passes, the first non-empty of: level 1 (sides and aspect only), level 2 (sides only),
    level 3 (the whole image [0, 0, W, H]).

    Args:
        boxes: (N, 4) XYXY in the pixels of the image of size ``image_hw`` = (H, W).

    Returns:
        (kept boxes (K, 4) float32, deduplicated, in input order; fallback level 0..3).
    """
    height, width = image_hw
    boxes = dedup_boxes(np.asarray(boxes, np.float32).reshape(-1, 4))
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    sides_ok = (w >= min_side) & (h >= min_side)
    aspect = w / np.maximum(h, 1e-6)
    aspect_ok = sides_ok & (aspect >= 1.0 / max_aspect) & (aspect <= max_aspect)
    scale = np.sqrt(w * h) / np.sqrt(float(width) * float(height))
    scale_ok = aspect_ok & (scale >= scale_range[0]) & (scale <= scale_range[1])
    for level, keep in enumerate((scale_ok, aspect_ok, sides_ok)):
        if keep.any():
            return boxes[keep], level
    return np.array([[0, 0, width, height]], np.float32), len(FALLBACK_LEVELS) - 1
