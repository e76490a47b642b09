#!/usr/bin/env python
"""Build the embedded demo datasets (photos, detection set, Fashion-MNIST) and print what was written.

Example::

    python tools/build_embedded_data.py                      # defaults, into $SOCO_DATASETS or ./datasets
    python tools/build_embedded_data.py --num-photos 32 --det-train 20 --det-val 10 --fashion-limit 1000

Everything is deterministic from ``--seed`` and cached: a second run with the same
arguments only checks the manifests.
"""
import argparse
import logging
import sys

from soco.embedded import EmbeddedDataConfig, FashionMNISTNotFoundError, build_all


def parse_args(argv=None) -> argparse.Namespace:
    defaults = EmbeddedDataConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=None, help="output folder (default: $SOCO_DATASETS or <repo>/datasets)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--num-photos", type=int, default=defaults.num_photos, help="images in soco_demo_photos")
    parser.add_argument(
        "--det-train", type=int, default=defaults.det_train_images, help="images in soco_demo_det_train"
    )
    parser.add_argument("--det-val", type=int, default=defaults.det_val_images, help="images in soco_demo_det_val")
    parser.add_argument(
        "--fashion-limit", type=int, default=defaults.fashion_limit,
        help="keep the first N items of each Fashion-MNIST split (default: all 60000/10000)",
    )
    parser.add_argument("--no-fashion-mnist", action="store_true", help="skip the Fashion-MNIST PNG folder")
    return parser.parse_args(argv)


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = EmbeddedDataConfig(
        root=args.root,
        seed=args.seed,
        num_photos=args.num_photos,
        det_train_images=args.det_train,
        det_val_images=args.det_val,
        fashion_limit=args.fashion_limit,
    )
    try:
        summary = build_all(config, fashion_mnist=not args.no_fashion_mnist)
    except FashionMNISTNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    photos, det = summary["demo_photos"], summary["demo_det"]
    print(f"soco_demo_photos: {len(photos['info']['files'])} JPEGs in {photos['path']} "
          f"({_megabytes(photos['bytes'])}, {photos['seconds']:.1f} s)")
    for split in ("train", "val"):
        n = det["info"][split]
        print(f"soco_demo_det_{split}: {n['images']} images, {n['annotations']} boxes+masks in "
              f"{det['path']}/{split}, annotations {det['path']}/annotations/instances_{split}.json")
    print(f"  detection set: {_megabytes(det['bytes'])}, {det['seconds']:.1f} s")
    if "fashion_mnist" in summary:
        fm = summary["fashion_mnist"]
        for split, per_class in fm["info"]["counts"].items():
            print(f"fashion_mnist_{split}: {sum(per_class.values())} PNGs in {fm['path']}/{split} "
                  f"({len(per_class)} classes)")
        print(f"  Fashion-MNIST folder: {_megabytes(fm['bytes'])}, {fm['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
