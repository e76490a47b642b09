"""A labelled detection set: Fashion-MNIST items pasted on real-photo backgrounds.

Each image is a random crop of a source photo (see :mod:`.photos`) with 2-6 items
pasted at random places and sizes. An item's mask is its non-background pixels,
minus what later items cover; boxes and polygons are computed from that visible mask,
so they are tight. Written as COCO instances json (category ids 1..10 in
Fashion-MNIST label order).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np
import scipy.ndimage
from tqdm import tqdm

from .fashion_mnist import CLASS_NAMES
from .photos import random_crop, write_jpeg

__all__ = ["PasteParams", "item_silhouette", "mask_to_box", "mask_to_polygons", "render_image", "build_coco_split"]

# Fashion-MNIST backgrounds are exactly 0; a pixel belongs to the item from this grey level
# (out of 255) on. Dark parts inside an item (prints, shadows) are below it, so holes are
# filled: the mask is the item's silhouette, as an annotator would draw it.
_ITEM_MIN_GREY = 8


def item_silhouette(item: np.ndarray, side: int) -> np.ndarray:
    """Bool (side, side) silhouette of a uint8 28x28 Fashion-MNIST item resized to ``side``."""
    mask = scipy.ndimage.binary_fill_holes(item >= _ITEM_MIN_GREY).astype(np.float32)
    return cv2.resize(mask, (side, side), interpolation=cv2.INTER_LINEAR) >= 0.5


@dataclass(frozen=True)
class PasteParams:
    """How images are composed. Sizes in pixels."""

    image_size: Tuple[int, int] = (256, 320)  # min/max of the image height and width
    objects_per_image: Tuple[int, int] = (2, 6)
    object_size: Tuple[int, int] = (24, 120)  # side of the pasted 28x28 item after resizing
    max_iou: float = 0.3  # between a new item's box and earlier boxes
    max_occlusion: float = 0.25  # fraction of an item's pixels later items may cover, in all
    tries_per_object: int = 30


def mask_to_box(mask: np.ndarray) -> List[float]:
    """Tight box of a non-empty HxW bool mask, COCO ``[x, y, w, h]`` in pixels.

    A pixel (row r, column c) covers [c, c+1) x [r, r+1), so the box lies in the image.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    x0, y0 = int(cols[0]), int(rows[0])
    return [float(x0), float(y0), float(cols[-1] + 1 - x0), float(rows[-1] + 1 - y0)]


def mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """Outer contours of an HxW bool mask as COCO polygons ``[x0, y0, x1, y1, ...]``.

    Vertices are pixel centres (index + 0.5); contours of fewer than 3 points (specks
    and lines one pixel wide) are dropped, since COCO polygons need 3 or more.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [(c.reshape(-1, 2) + 0.5).flatten().tolist() for c in contours if len(c) >= 3]


def _box_iou(a: List[float], b: List[float]) -> float:
    """IoU of two COCO ``[x, y, w, h]`` boxes."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def render_image(
    rng: np.random.Generator,
    background: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    params: PasteParams,
) -> Tuple[np.ndarray, List[dict]]:
    """Compose one image.

    Args:
        background: RGB uint8 source photo; a random crop of it is the background.
        items, labels: the Fashion-MNIST pool, uint8 (N, 28, 28) and int (N,).
    Returns:
        image: RGB uint8 HxWx3.
        objects: ``{"label", "bbox" (COCO xywh), "segmentation", "area"}`` per visible item,
            in pasting order.
    """
    h = int(rng.integers(params.image_size[0], params.image_size[1] + 1))
    w = int(rng.integers(params.image_size[0], params.image_size[1] + 1))
    crop = random_crop(rng, background, area_range=(0.2, 1.0), aspect_range=(w / h * 0.8, w / h * 1.25))
    image = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    if rng.random() < 0.5:
        image = image[:, ::-1]

    placed = []  # dicts with "label", "full" area, "visible" mask, "bbox"
    num_objects = int(rng.integers(params.objects_per_image[0], params.objects_per_image[1] + 1))
    for _ in range(num_objects):
        index = int(rng.integers(len(items)))
        side = int(rng.integers(params.object_size[0], params.object_size[1] + 1))
        side = min(side, h, w)
        item_mask = item_silhouette(items[index], side)
        if not item_mask.any():
            continue
        for _ in range(params.tries_per_object):
            x0 = int(rng.integers(0, w - side + 1))
            y0 = int(rng.integers(0, h - side + 1))
            mask = np.zeros((h, w), bool)
            mask[y0 : y0 + side, x0 : x0 + side] = item_mask
            bbox = mask_to_box(mask)
            if any(_box_iou(bbox, p["bbox"]) > params.max_iou for p in placed):
                continue
            # Occlusion is counted against what is still visible, so several later items
            # together cover at most max_occlusion of an earlier one.
            if any((p["visible"] & ~mask).sum() < (1 - params.max_occlusion) * p["full"] for p in placed):
                continue
            break
        else:
            continue  # no room for this item
        # The item is drawn in a random colour with its grey levels as shading; its
        # pixels replace the background (hard mask, so the mask is exactly what is seen).
        colour = rng.uniform(0.5, 1.0, size=3).astype(np.float32)
        grey = cv2.resize(items[index], (side, side), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        patch = image[y0 : y0 + side, x0 : x0 + side]
        shaded = grey[:, :, None] * colour
        patch[item_mask] = shaded[item_mask]
        for p in placed:
            p["visible"] &= ~mask
        placed.append({"label": int(labels[index]), "full": int(item_mask.sum()), "visible": mask, "bbox": bbox})

    objects = []
    for p in placed:
        polygons = mask_to_polygons(p["visible"])
        if not polygons:
            continue
        objects.append(
            {
                "label": p["label"],
                "bbox": mask_to_box(p["visible"]),
                "segmentation": polygons,
                "area": float(p["visible"].sum()),
            }
        )
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), objects


def build_coco_split(
    image_dir: Path,
    num_images: int,
    seed: int,
    split_code: int,
    backgrounds: List[np.ndarray],
    items: np.ndarray,
    labels: np.ndarray,
    params: PasteParams = PasteParams(),
) -> dict:
    """Render ``num_images`` JPEGs ``image_dir/<id>.jpg`` and return the COCO dict.

    Image ``i`` depends only on ``(seed, split_code, i)`` and the inputs. Image ids
    start at 1; annotation ids are consecutive from 1; category id = label + 1.
    """
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in tqdm(range(num_images), desc=f"detection images ({image_dir.name})", disable=None):
        rng = np.random.default_rng([seed, split_code, i])
        background = backgrounds[int(rng.integers(len(backgrounds)))]
        image, objects = render_image(rng, background, items, labels, params)
        file_name = f"{i:06d}.jpg"
        write_jpeg(image_dir / file_name, image, quality=95)
        image_id = i + 1
        images.append({"id": image_id, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]})
        for obj in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj["label"] + 1,
                    "bbox": obj["bbox"],
                    "area": obj["area"],
                    "segmentation": obj["segmentation"],
                    "iscrowd": 0,
                }
            )
    return {
        "info": {"description": "Fashion-MNIST items pasted on real photos (soco demo set)", "seed": seed},
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": k + 1, "name": name, "supercategory": "fashion"} for k, name in enumerate(CLASS_NAMES)
        ],
    }
