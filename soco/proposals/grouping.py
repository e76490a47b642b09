"""Vectorised selective search (Uijlings et al., IJCV 2013): the project's fast proposal method.

Steps, all on an RGB uint8 image at the working resolution:

1. Initial regions: Felzenszwalb-Huttenlocher graph segmentation, OpenCV's C++ implementation
   (``cv2.ximgproc.segmentation``) with SoCo's parameters (k = scale = 300, sigma = 0.9,
   min_size = 100): the same algorithm the ``selectivesearch`` package calls through
   scikit-image, several times faster.
2. Region descriptors in one pass each with ``np.bincount`` over ``label * bins + bin``:
   size, bounding box, colour histogram (25 bins per HSV channel, 75-d) and texture histogram
   (per channel, 8 gradient orientations x 10 magnitude bins, 240-d; each pixel votes for its
   dominant orientation, a cheap stand-in for the paper's 8 oriented Gaussian derivatives).
   Histograms are L1-normalised as in the paper.
3. Neighbours: regions that touch (4-connectivity), from label changes between adjacent pixels.
4. Hierarchical grouping: repeatedly merge the most similar neighbouring pair,
   s = a_c s_colour + a_t s_texture + s_size + s_fill (histogram intersections; size and fill
   relative to the image area), with a heap and lazy deletion; descriptors of a merged region are
   size-weighted means. Every region of the hierarchy (initial and merged) yields one box. Several
   (a_c, a_t) strategies can share one segmentation (the paper's diversification).

Why hand-written: neither OpenCV's ``SelectiveSearchSegmentation`` (C++, but ~1-2 s per
ImageNet image in its fast mode and not configurable to SoCo's single strategy) nor the
``selectivesearch`` package (pure-Python pixel loops) is fast enough for 1.28M images.
"""
from __future__ import annotations

import heapq

import cv2
import numpy as np

__all__ = ["segment", "region_descriptors", "region_neighbours", "hierarchical_grouping",
           "selective_search_boxes"]

COLOUR_BINS = 25
ORIENTATIONS = 8
MAGNITUDE_BINS = 10


def segment(image: np.ndarray, k: float = 300.0, sigma: float = 0.9, min_size: int = 100) -> np.ndarray:
    """Felzenszwalb-Huttenlocher segmentation of an HxWx3 uint8 image -> HxW int32 labels 0..n-1."""
    segmenter = cv2.ximgproc.segmentation.createGraphSegmentation(sigma=sigma, k=k, min_size=min_size)
    labels = segmenter.processImage(np.ascontiguousarray(image))
    counts = np.bincount(labels.ravel())
    if np.any(counts == 0):  # make labels contiguous if the segmenter ever leaves gaps
        labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int32)
    return labels


def _colour_codes(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> HxWx3 bin indices in [0, 75): channel c uses bins c*25 .. c*25+24."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.int32)
    hsv[..., 0] = hsv[..., 0] * COLOUR_BINS // 180  # OpenCV hue is 0..179
    hsv[..., 1:] = hsv[..., 1:] * COLOUR_BINS // 256
    return hsv + np.arange(3, dtype=np.int32) * COLOUR_BINS


def _texture_codes(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> HxWx3 bin indices in [0, 240): (channel, orientation, magnitude) per pixel."""
    smoothed = cv2.GaussianBlur(image, (0, 0), 1.0).astype(np.float32)
    gx = cv2.Sobel(smoothed, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smoothed, cv2.CV_32F, 0, 1, ksize=3)
    magnitude, angle = cv2.cartToPolar(gx.reshape(-1, 3), gy.reshape(-1, 3))
    magnitude = magnitude.reshape(gx.shape)
    angle = angle.reshape(gx.shape)
    orientation = np.minimum((angle * (ORIENTATIONS / (2 * np.pi))).astype(np.int32), ORIENTATIONS - 1)
    peak = magnitude.reshape(-1, 3).max(axis=0) + 1e-6  # per-channel normalisation to [0, 1]
    level = np.minimum((magnitude / peak * MAGNITUDE_BINS).astype(np.int32), MAGNITUDE_BINS - 1)
    channel = np.arange(3, dtype=np.int32) * (ORIENTATIONS * MAGNITUDE_BINS)
    return channel + orientation * MAGNITUDE_BINS + level


def _histograms(labels: np.ndarray, codes: np.ndarray, n: int, bins: int) -> np.ndarray:
    """Per-region L1-normalised histograms (n, bins) float32 of per-pixel bin ``codes`` (HxWxC)."""
    flat = (labels[..., None].astype(np.int64) * bins + codes).ravel()
    hist = np.bincount(flat, minlength=n * bins).reshape(n, bins).astype(np.float32)
    return hist / hist.sum(axis=1, keepdims=True)


def region_descriptors(image: np.ndarray, labels: np.ndarray):
    """Descriptors of the ``n`` regions of ``labels`` (HxW, 0..n-1).

    Returns:
        sizes (n,) float64 pixel counts; boxes (n, 4) float64 XYXY with exclusive x2, y2 (pixel
        edges, so a one-pixel region at (x, y) is [x, y, x+1, y+1]); colour (n, 75) and
        texture (n, 240) float32 L1-normalised histograms.
    """
    height, width = labels.shape
    n = int(labels.max()) + 1
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=n).astype(np.float64)
    ys, xs = np.divmod(np.arange(flat.size), width)
    x1 = np.full(n, width, np.int64)
    y1 = np.full(n, height, np.int64)
    x2 = np.zeros(n, np.int64)
    y2 = np.zeros(n, np.int64)
    np.minimum.at(x1, flat, xs)
    np.minimum.at(y1, flat, ys)
    np.maximum.at(x2, flat, xs)
    np.maximum.at(y2, flat, ys)
    boxes = np.stack([x1, y1, x2 + 1, y2 + 1], axis=1).astype(np.float64)
    colour = _histograms(labels, _colour_codes(image), n, 3 * COLOUR_BINS)
    texture = _histograms(labels, _texture_codes(image), n, 3 * ORIENTATIONS * MAGNITUDE_BINS)
    return sizes, boxes, colour, texture


def region_neighbours(labels: np.ndarray) -> np.ndarray:
    """(m, 2) int64 sorted unique pairs (i < j) of regions that share a 4-connected pixel edge."""
    n = int(labels.max()) + 1
    pairs = []
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        changed = a != b
        lo = np.minimum(a[changed], b[changed]).astype(np.int64)
        hi = np.maximum(a[changed], b[changed]).astype(np.int64)
        pairs.append(lo * n + hi)
    keys = np.unique(np.concatenate(pairs))
    return np.stack(np.divmod(keys, n), axis=1)


def _similarity(i: int, others: np.ndarray, boxes, colour, texture, image_area: float,
                weights: tuple[float, float]) -> np.ndarray:
    """Selective-search similarity of region ``i`` with each region in ``others`` -> (len(others),).

    s_size + s_fill = (1 - (r_i + r_j) / A) + (1 - (B_ij - r_i - r_j) / A) = 2 - B_ij / A, with
    B_ij the area of the joint bounding box: the region sizes cancel.
    """
    box = boxes[others]
    bw = np.maximum(boxes[i, 2], box[:, 2]) - np.minimum(boxes[i, 0], box[:, 0])
    bh = np.maximum(boxes[i, 3], box[:, 3]) - np.minimum(boxes[i, 1], box[:, 1])
    s = 2.0 - bw * bh / image_area
    if weights[0]:
        s = s + weights[0] * np.minimum(colour[i], colour[others]).sum(axis=1)
    if weights[1]:
        s = s + weights[1] * np.minimum(texture[i], texture[others]).sum(axis=1)
    return s


def hierarchical_grouping(sizes, boxes, colour, texture, neighbours, image_area: float,
                          weights: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Greedy merging of the most similar neighbours until one region is left.

    Args:
        sizes (n,), boxes (n, 4), colour (n, Dc), texture (n, Dt): from ``region_descriptors``.
        neighbours (m, 2): from ``region_neighbours``.
        image_area: H * W at the working resolution.
        weights: (colour, texture) weights of the similarity; size and fill always weigh 1.

    Returns:
        (2n - 1 - c, 4) float64 boxes of every region in the hierarchy, initial regions first,
        then merged regions in merge order (c = number of connected components beyond one).
    """
    n = len(sizes)
    capacity = 2 * n - 1
    use_colour, use_texture = bool(weights[0]), bool(weights[1])
    sizes = sizes.tolist() + [0.0] * (capacity - n)  # Python scalars: cheaper than NumPy indexing here
    boxes = np.concatenate([boxes, np.zeros((capacity - n, 4))])
    if use_colour:
        colour = np.concatenate([colour, np.zeros((capacity - n, colour.shape[1]), colour.dtype)])
    if use_texture:
        texture = np.concatenate([texture, np.zeros((capacity - n, texture.shape[1]), texture.dtype)])
    alive = bytearray(capacity)
    alive[:n] = b"\x01" * n
    adjacent = [set() for _ in range(capacity)]
    for i, j in neighbours.tolist():
        adjacent[i].add(j)
        adjacent[j].add(i)

    heap = []
    if len(neighbours):
        first = neighbours[:, 0]
        second = neighbours[:, 1]
        # Vectorised initial similarities (all pairs at once), same formula as _similarity.
        bw = np.maximum(boxes[first, 2], boxes[second, 2]) - np.minimum(boxes[first, 0], boxes[second, 0])
        bh = np.maximum(boxes[first, 3], boxes[second, 3]) - np.minimum(boxes[first, 1], boxes[second, 1])
        s = 2.0 - bw * bh / image_area
        if use_colour:
            s = s + weights[0] * np.minimum(colour[first], colour[second]).sum(axis=1)
        if use_texture:
            s = s + weights[1] * np.minimum(texture[first], texture[second]).sum(axis=1)
        heap = list(zip((-s).tolist(), first.tolist(), second.tolist()))
        heapq.heapify(heap)

    new = n
    while heap:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue  # stale pair: one side was merged already
        size_i, size_j = sizes[i], sizes[j]
        total = sizes[new] = size_i + size_j
        boxes[new, :2] = np.minimum(boxes[i, :2], boxes[j, :2])
        boxes[new, 2:] = np.maximum(boxes[i, 2:], boxes[j, 2:])
        if use_colour:
            colour[new] = (colour[i] * size_i + colour[j] * size_j) / total
        if use_texture:
            texture[new] = (texture[i] * size_i + texture[j] * size_j) / total
        alive[i] = alive[j] = 0
        around = (adjacent[i] | adjacent[j]) - {i, j}
        for k in around:
            adjacent[k].discard(i)
            adjacent[k].discard(j)
            adjacent[k].add(new)
        adjacent[new] = around
        alive[new] = 1
        if around:
            others = np.fromiter(around, np.int64, len(around))  # heap keys are unique: order is irrelevant
            s = _similarity(new, others, boxes, colour, texture, image_area, weights)
            for value, k in zip((-s).tolist(), others.tolist()):
                heapq.heappush(heap, (value, k, new))
        new += 1
    return boxes[:new]


def selective_search_boxes(image: np.ndarray, k: float = 300.0, sigma: float = 0.9, min_size: int = 100,
                           strategies=((1.0, 1.0),)) -> np.ndarray:
    """All hierarchy boxes of an HxWx3 uint8 RGB image -> (N, 4) float32 XYXY in its pixels.

    ``strategies``: (colour, texture) similarity weights, one hierarchy each over the same
    segmentation (the paper's diversification); boxes of all hierarchies are concatenated.
    """
    labels = segment(image, k=k, sigma=sigma, min_size=min_size)
    sizes, boxes, colour, texture = region_descriptors(image, labels)
    neighbours = region_neighbours(labels)
    area = float(labels.shape[0] * labels.shape[1])
    return np.concatenate([hierarchical_grouping(sizes, boxes, colour, texture, neighbours, area, weights)
                           for weights in strategies]).astype(np.float32)
