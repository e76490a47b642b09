#!/usr/bin/env python
"""COCO box evaluation time: Detectron2's evaluator (``COCOeval_opt``) vs pycocotools' ``COCOeval``.

The official Detectron2 build evaluates with its C++ ``COCOeval_opt``; the registry build
(``0.6+nocsrc``) has no C++ ops and uses pycocotools' ``COCOeval`` for it, so its ratio is 1 by
construction. Both are timed in the same run on the same random detections (evaluate +
accumulate, the part that differs) and must give the same 12 AP/AR numbers.

usage: python benchmarks/bench_coco_eval.py [--images 500] [--objects 10] [--detections 100] [--repeats 3]
"""

import argparse
import contextlib
import io
import time

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import detectron2
from detectron2.evaluation import coco_evaluation


def synthetic_coco(images: int, objects: int, detections: int, classes: int = 10, seed: int = 0):
    """Ground truth (``objects`` boxes per 640x480 image) and ``detections`` scored boxes per image:
    jittered copies of the truth plus random boxes. Returns (COCO gt, COCO detections)."""
    rng = np.random.default_rng(seed)
    annotations, results = [], []
    for image_id in range(1, images + 1):
        xy = rng.uniform([0, 0], [560, 400], size=(objects, 2))
        wh = rng.uniform(8, 80, size=(objects, 2))
        labels = rng.integers(1, classes + 1, size=objects)
        for (x, y), (w, h), label in zip(xy, wh, labels):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h), "iscrowd": 0})
        for k in range(detections):
            if k < objects:
                box = np.r_[xy[k] + rng.normal(0, 4, 2), wh[k] * rng.uniform(0.8, 1.2, 2)]
                label = labels[k]
            else:
                box = np.r_[rng.uniform([0, 0], [560, 400]), rng.uniform(8, 80, 2)]
                label = rng.integers(1, classes + 1)
            results.append({"image_id": image_id, "category_id": int(label), "bbox": [float(v) for v in box],
                            "score": float(rng.uniform())})
    gt = COCO()
    gt.dataset = {"images": [{"id": i, "height": 480, "width": 640} for i in range(1, images + 1)],
                  "annotations": annotations, "categories": [{"id": c, "name": str(c)} for c in range(1, classes + 1)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(results)
    return gt, dt


def time_evaluator(evaluator_class, gt, dt, repeats: int):
    """Best wall time (s) of evaluate + accumulate over ``repeats`` runs, and the summary stats."""
    best = float("inf")
    for _ in range(repeats):
        run = evaluator_class(gt, dt, "bbox")
        with contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            run.evaluate()
            run.accumulate()
            best = min(best, time.perf_counter() - start)
            run.summarize()
    return best, run.stats


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--objects", type=int, default=10, help="ground-truth boxes per image")
    parser.add_argument("--detections", type=int, default=100, help="detections per image")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    gt, dt = synthetic_coco(args.images, args.objects, args.detections)
    ours, ours_stats = time_evaluator(coco_evaluation.COCOeval_opt, gt, dt, args.repeats)
    base, base_stats = time_evaluator(COCOeval, gt, dt, args.repeats)
    np.testing.assert_allclose(ours_stats, base_stats, atol=1e-12)
    name = f"{coco_evaluation.COCOeval_opt.__module__}.{coco_evaluation.COCOeval_opt.__name__}"
    print(f"detectron2 {detectron2.__version__}: {args.images} images, {args.objects} objects and "
          f"{args.detections} detections each (AP {100 * base_stats[0]:.2f}, identical)")
    print(f"  COCOEvaluator's {name}: {ours:.2f} s")
    print(f"  pycocotools.cocoeval.COCOeval: {base:.2f} s")
    print(f"  speed-up: {base / ours:.2f}x")


if __name__ == "__main__":
    main()
