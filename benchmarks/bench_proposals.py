#!/usr/bin/env python
"""Proposal methods against the paper's baseline (the ``selectivesearch`` package, SoCo parameters).

Same images for every method, in one run: the embedded detection set ``soco_demo_det_val``
(Fashion-MNIST items pasted on real photos), upscaled to an ImageNet-like 500 px longer side with
its ground-truth boxes. Methods alternate image by image, so load from other processes hits all
of them alike. Reports, per method:

- s/img on one core (decoded image -> filtered boxes, OpenCV single-threaded) and the speed-up;
- img/s with all cores (a process pool, after warm-up);
- recall of the ground-truth boxes at IoU >= 0.5, after SoCo's filter and before it (raw);
- share of the baseline's filtered boxes that the method also produces (IoU >= 0.7);
- kept boxes per image, and projected core-hours for ImageNet-1k (1.28M images at this cost).

    python benchmarks/bench_proposals.py --num-images 16
"""
import argparse
import multiprocessing
import os
import time
import warnings

import cv2
import numpy as np

from soco.proposals import METHODS, soco_filter
from soco.proposals.methods import DEFAULT_MAX_SIZE, resize_longer_side, scale_boxes
from soco.utils.files import atomic_write_json

BASELINE = "selectivesearch"
IMAGENET_IMAGES = 1_281_167


def load_images(num_images: int, longer_side: int):
    """[(RGB uint8 image, GT (G, 4) XYXY or None)] at ``longer_side`` px, and a description."""
    from soco.data.image_io import read_image_rgb

    try:
        from detectron2.data import DatasetCatalog
        from detectron2.structures import BoxMode

        import soco.embedded  # noqa: F401  (registers soco_demo_det_val)

        records = DatasetCatalog.get("soco_demo_det_val")[:num_images]
        source = f"soco_demo_det_val ({len(records)} images, upscaled to {longer_side} px)"
    except Exception as e:  # embedded data unavailable: photos without ground truth
        import skimage.data

        print(f"embedded detection set unavailable ({e}); timing on scikit-image photos without recall")
        photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
        records = [{"image": p, "annotations": None} for p in photos][:num_images]
        source = f"scikit-image photos ({len(records)}, at {longer_side} px)"
    data = []
    for record in records:
        image = record["image"] if "image" in record else read_image_rgb(record["file_name"])
        scale = longer_side / max(image.shape[:2])
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        gt = None
        if record.get("annotations") is not None:
            gt = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                           for a in record["annotations"]], np.float32).reshape(-1, 4) * scale
        data.append((image, gt))
    return data, source


def run_method(method: str, max_size, image: np.ndarray):
    """(raw boxes, filtered boxes) in the image's pixels, as the generator computes them."""
    work = resize_longer_side(image, max_size)
    raw = scale_boxes(METHODS[method](work, work.shape[0] / image.shape[0]), work.shape[:2], image.shape[:2])
    kept, _ = soco_filter(raw, image.shape[:2])
    return raw, kept


def _pool_task(args):
    run_method(*args)


def _pool_init():
    warnings.simplefilter("ignore")
    cv2.setNumThreads(1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, 4) x (B, 4) XYXY -> (A, B) IoU."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def matched(queries: np.ndarray, boxes: np.ndarray, threshold: float) -> int:
    """How many ``queries`` have a box in ``boxes`` with IoU >= threshold."""
    if len(queries) == 0 or len(boxes) == 0:
        return 0
    return int((iou_matrix(queries, boxes).max(axis=1) >= threshold).sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--longer-side", type=int, default=500, help="image size (ImageNet-like)")
    parser.add_argument("--methods", default=f"vectorized,{BASELINE}",
                        help=f"comma-separated, from {sorted(METHODS)}; the baseline is always included")
    parser.add_argument("--max-size", type=int, default=None, help="working resolution for every method "
                        f"except the baseline (default: per method, {DEFAULT_MAX_SIZE})")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes for the all-cores pass (0: skip)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # scikit-image's LBP warning in the baseline, once per image
    cv2.setNumThreads(1)

    methods = [m for m in args.methods.split(",") if m != BASELINE] + [BASELINE]
    sizes = {m: (None if m == BASELINE else args.max_size or DEFAULT_MAX_SIZE[m]) for m in methods}
    data, source = load_images(args.num_images, args.longer_side)
    seconds = {m: [] for m in methods}
    outputs = {m: [] for m in methods}
    for image, _ in data:  # interleaved: every method sees the same load
        for m in methods:
            start = time.perf_counter()
            outputs[m].append(run_method(m, sizes[m], image))
            seconds[m].append(time.perf_counter() - start)

    throughput = {}
    if args.workers:
        with multiprocessing.get_context("spawn").Pool(args.workers, _pool_init) as pool:
            for m in methods:
                pool.map(_pool_task, [(m, sizes[m], data[0][0])] * args.workers, chunksize=1)  # warm-up
                start = time.perf_counter()
                pool.map(_pool_task, [(m, sizes[m], image) for image, _ in data], chunksize=1)
                throughput[m] = len(data) / (time.perf_counter() - start)

    has_gt = data[0][1] is not None
    gt_total = sum(len(gt) for _, gt in data) if has_gt else 0
    rows = []
    for m in methods:
        per_image = float(np.mean(seconds[m]))
        row = {
            "method": m,
            "max_size": sizes[m],
            "s_per_img_1core": round(per_image, 4),
            "speedup_vs_baseline": round(float(np.mean(seconds[BASELINE])) / per_image, 1),
            "img_per_s_all_cores": round(throughput[m], 2) if m in throughput else None,
            "kept_boxes_per_img": round(float(np.mean([len(k) for _, k in outputs[m]])), 1),
            "imagenet_core_hours": round(per_image * IMAGENET_IMAGES / 3600, 1),
        }
        if has_gt:
            row["recall@0.5_filtered"] = round(sum(matched(gt, k, 0.5) for (_, gt), (_, k) in zip(data, outputs[m])) / gt_total, 3)
            row["recall@0.5_raw"] = round(sum(matched(gt, r, 0.5) for (_, gt), (r, _) in zip(data, outputs[m])) / gt_total, 3)
        base_total = sum(len(k) for _, k in outputs[BASELINE])
        row["covers_baseline@0.7"] = round(sum(matched(b, k, 0.7) for (_, b), (_, k) in zip(outputs[BASELINE], outputs[m])) / max(1, base_total), 3)
        rows.append(row)

    print(f"\nimages: {source}; ground-truth boxes: {gt_total}; cores: {os.cpu_count()} "
          f"(load average at end: {os.getloadavg()[0]:.1f})")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    if args.json:
        atomic_write_json(args.json, {"source": source, "cores": os.cpu_count(), "rows": rows})


if __name__ == "__main__":
    main()
