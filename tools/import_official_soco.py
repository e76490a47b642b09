#!/usr/bin/env python
"""Bring artifacts of the official SoCo code (hologerry/SoCo) into soco's pipeline.

    python tools/import_official_soco.py checkpoint ckpt_epoch_100.pth output/soco_official.pth
    python tools/import_official_soco.py proposals ss_props.json proposals/imagenet_train_ss.pkl \\
        --image-root datasets/imagenet/train [--image-list train.txt]

checkpoint: an official ``ckpt_epoch_*.pth`` (SoCo_FPN, SoCo_FPN_Star or SoCo_C4; online and
``*_k`` target networks; queues ignored) becomes a soco pretraining checkpoint with the matching
config (configs/SoCo/official/*, depth and epochs from the run's ``opt``), checked against soco's
SoCo built from it. Then, as for any soco checkpoint:

    python tools/convert_to_d2.py output/soco_official.pth output/soco_official_d2.pkl
    python tools/finetune_net.py --config-file configs/finetune/mask_rcnn_R_50_FPN_1x_soco.yaml \\
        MODEL.WEIGHTS output/soco_official_d2.pkl

proposals: the official selective-search JSON (``{basename: [[x, y, w, h], ...]}``) becomes a
soco proposal file for the images under --image-root (ids = their relative paths, boxes XYXY),
read as a stream; JSON entries without an image and images without an entry are reported.
"""

import argparse
import logging
import sys

from soco.utils.errors import EXIT_INPUT_ERROR, print_input_error
from soco.checkpoint.official import import_official
from soco.proposals.official_json import import_official_proposals


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    ckpt = sub.add_parser("checkpoint", help="official ckpt_epoch_*.pth -> soco pretraining checkpoint")
    ckpt.add_argument("input", help="official checkpoint (ckpt_epoch_*.pth or current.pth)")
    ckpt.add_argument("output", help="soco checkpoint to write (.pth)")
    ckpt.add_argument("--no-verify", action="store_true",
                      help="skip checking the tensors against SoCo built from the config")
    props = sub.add_parser("proposals", help="official proposal JSON -> soco proposal file")
    props.add_argument("input", help="official proposal JSON ({basename: [[x, y, w, h], ...]})")
    props.add_argument("output", help="soco proposal file to write (.pkl)")
    props.add_argument("--image-root", required=True, help="folder of the training images (PRETRAIN.IMAGE_ROOT)")
    props.add_argument("--image-list", default=None, help="optional list of image paths relative to the root")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.kind == "checkpoint":
            result = import_official(args.input, args.output, verify=not args.no_verify)
        else:
            result = import_official_proposals(args.input, args.image_root, args.output, args.image_list)
    except (ValueError, FileNotFoundError) as exc:  # ConversionError is a ValueError
        print_input_error(exc)
        return EXIT_INPUT_ERROR
    print(result.summary())
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
