"""The few-label setting's data: a pool of unlabelled mosaics to pretrain on, and a few labelled
images to fine-tune on.

The pool's images are made like ``soco_demo_det_train``'s (Fashion-MNIST *train* items pasted
on crops of the embedded photos, :func:`.detection.build_coco_split`) with their own split code,
so they are other images than the fine-tuning and validation ones: image ``i`` of the pool
depends only on ``(seed, POOL_SPLIT_CODE, i)``. Its boxes are written to
``instances_pool.json`` for inspection only; the registered dataset has none (it is unlabelled).

The few labels are the first ``count`` images of ``soco_demo_det_train`` (in image-id order),
so a larger count keeps the smaller set's images.
"""
from pathlib import Path
from typing import List

from ..utils.files import atomic_write_json
from .detection import PasteParams, build_coco_split
from .fashion_mnist import load_split
from .photos import load_source_photos

__all__ = ["POOL_SPLIT_CODE", "build_pool", "pool_dicts", "first_images"]

# Split codes of build_coco_split: 0 = soco_demo_det_train, 1 = soco_demo_det_val.
POOL_SPLIT_CODE = 2


def build_pool(out_dir: Path, fashion_root: Path, num_images: int, seed: int, paste: PasteParams) -> dict:
    """Render ``num_images`` JPEGs into ``out_dir/images``; returns the manifest info
    ``{"images", "annotations", "files": {file_name: [height, width]}}``."""
    items, labels = load_split(fashion_root, "train")
    coco = build_coco_split(Path(out_dir) / "images", num_images, seed, POOL_SPLIT_CODE,
                            list(load_source_photos().values()), items, labels, paste)
    coco["info"]["description"] = "unlabelled pool of the few-label demo setting (boxes for inspection only)"
    atomic_write_json(Path(out_dir) / "instances_pool.json", coco, indent=None)
    return {
        "images": len(coco["images"]),
        "annotations": len(coco["annotations"]),
        "files": {im["file_name"]: [im["height"], im["width"]] for im in coco["images"]},
    }


def pool_dicts(image_dir: Path, info: dict) -> List[dict]:
    """Unlabelled dataset dicts (file_name, image_id, height, width) of a pool built by
    :func:`build_pool` (``info``: its manifest info), in file order."""
    return [
        {"file_name": str(Path(image_dir) / name), "image_id": name, "height": hw[0], "width": hw[1]}
        for name, hw in sorted(info["files"].items())
    ]


def first_images(dicts: List[dict], count: int, name: str) -> List[dict]:
    """The ``count`` dicts of smallest ``image_id``; a clear error when there are fewer."""
    if not 1 <= count <= len(dicts):
        raise ValueError(f"{name}: asked for {count} labelled images, the training set has {len(dicts)}")
    return sorted(dicts, key=lambda d: d["image_id"])[:count]
