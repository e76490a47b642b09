"""Proposal methods and the working-resolution wrapper that maps boxes back to original pixels.

Every method is ``fn(image, downscale) -> boxes``: an HxWx3 uint8 RGB image at the working
resolution, ``downscale`` = working size / original size (<= 1), and (N, 4) float32 XYXY boxes in
the working image's pixels (pixel-edge convention: a box covering pixel columns x0..x1 inclusive
is [x0, ., x1 + 1, .]).

SoCo's Felzenszwalb parameters are meant for the original image (the official code searched at
full resolution), so at a working resolution the area parameters k (``scale``) and ``min_size``
are multiplied by ``downscale**2``: a region keeps the same share of the image. sigma is kept.

- ``vectorized`` (default): the project's vectorised selective search, see ``grouping.py``
  (Felzenszwalb k=300, sigma=0.9, min_size=100; two hierarchies on that segmentation: HSV colour
  + texture + size + fill, and size + fill), at 320 px by default.
- ``selectivesearch``: the ``selectivesearch`` package (0.4) with SoCo's parameters scale=300,
  sigma=0.9, min_size=100, exactly as the official SoCo code calls it; its ``rect`` (x, y, w, h)
  with w = max_x - min_x becomes [x, y, x + w + 1, y + h + 1].
- ``opencv_fast`` / ``opencv_quality``: OpenCV's ``SelectiveSearchSegmentation`` in its
  ``switchToSelectiveSearchFast`` / ``switchToSelectiveSearchQuality`` modes (several colour
  spaces, segmentation scales and similarity combinations; many more boxes, slower).
"""
from __future__ import annotations

import cv2
import numpy as np

from .grouping import selective_search_boxes

__all__ = ["METHODS", "DEFAULT_METHOD", "DEFAULT_MAX_SIZE", "SOCO_SEGMENTATION", "resize_longer_side",
           "scale_boxes", "segmentation_params",
           "method_settings", "VECTORIZED_STRATEGIES"]

# (colour, texture) weights of the hierarchies the vectorized method builds on one segmentation:
# the paper's full similarity, and size + fill alone (what the package's similarity amounts to,
# see proposals/README.md). The second costs little and raises recall of SoCo-filtered boxes.
VECTORIZED_STRATEGIES = ((1.0, 1.0), (0.0, 0.0))
# SoCo's selective-search parameters (official code: scale=300, sigma=0.9, min_size=100).
SOCO_SEGMENTATION = {"scale": 300, "sigma": 0.9, "min_size": 100}


def segmentation_params(downscale: float = 1.0) -> dict:
    """SoCo's Felzenszwalb parameters for a search at ``downscale`` x the original resolution."""
    area = downscale ** 2
    return {"scale": SOCO_SEGMENTATION["scale"] * area, "sigma": SOCO_SEGMENTATION["sigma"],
            "min_size": max(1, round(SOCO_SEGMENTATION["min_size"] * area))}


def _selectivesearch_package(image: np.ndarray, downscale: float = 1.0) -> np.ndarray:
    import selectivesearch  # imported lazily: pulls in scikit-image, only this method needs it

    _, regions = selectivesearch.selective_search(image, **segmentation_params(downscale))
    rects = np.array([r["rect"] for r in regions], np.float32).reshape(-1, 4)
    return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:] + 1], axis=1)


def _vectorized(image: np.ndarray, downscale: float = 1.0) -> np.ndarray:
    p = segmentation_params(downscale)
    return selective_search_boxes(image, k=p["scale"], sigma=p["sigma"], min_size=p["min_size"],
                                  strategies=VECTORIZED_STRATEGIES)


def _opencv(mode: str):
    def method(image: np.ndarray, downscale: float = 1.0) -> np.ndarray:  # OpenCV picks its own scales
        search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        search.setBaseImage(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        getattr(search, f"switchToSelectiveSearch{mode}")()
        rects = np.asarray(search.process(), np.float32).reshape(-1, 4)
        return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)

    return method


METHODS = {
    "vectorized": _vectorized,
    "selectivesearch": _selectivesearch_package,
    "opencv_fast": _opencv("Fast"),
    "opencv_quality": _opencv("Quality"),
}
DEFAULT_METHOD = "vectorized"
# Working resolution (longer side, px) per method when --max-size is not given. The paper ran the
# package at full resolution; ours searches at 320 px (the benchmark shows equal or better recall
# of SoCo-filtered boxes, which are >= 0.3 of the image scale); OpenCV's at ImageNet's usual 500 px.
DEFAULT_MAX_SIZE = {"vectorized": 320, "selectivesearch": None, "opencv_fast": 500, "opencv_quality": 500}


def method_settings(method: str) -> dict:
    """What determines ``method``'s boxes besides the image, recorded in a run's manifest so that
    a resumed run never mixes chunks computed with other settings."""
    settings = {"method": method}
    if method in ("vectorized", "selectivesearch"):
        settings["segmentation"] = SOCO_SEGMENTATION
    if method == "vectorized":
        settings["strategies"] = [list(w) for w in VECTORIZED_STRATEGIES]
    if method == "selectivesearch":
        from importlib.metadata import version

        settings["package_version"] = version("selectivesearch")
    if method.startswith("opencv"):
        settings["opencv_version"] = cv2.__version__
    return settings


def resize_longer_side(image: np.ndarray, max_size: int | None) -> np.ndarray:
    """Downscale (area interpolation) so the longer side is <= ``max_size``; never upscale."""
    height, width = image.shape[:2]
    if max_size is None or max(height, width) <= max_size:
        return image
    scale = max_size / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def scale_boxes(boxes: np.ndarray, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """Map (N, 4) XYXY boxes from an image of size ``from_hw`` to the same image at ``to_hw``
    (pixel edges scale exactly: 0 -> 0, W_from -> W_to), clipped to the target image."""
    sy = to_hw[0] / from_hw[0]
    sx = to_hw[1] / from_hw[1]
    out = np.asarray(boxes, np.float32).reshape(-1, 4) * np.array([sx, sy, sx, sy], np.float32)
    np.clip(out[:, 0::2], 0, to_hw[1], out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, to_hw[0], out=out[:, 1::2])
    return out
