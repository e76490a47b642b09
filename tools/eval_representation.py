#!/usr/bin/env python
"""Evaluate a pretrained backbone on a labelled image set: weighted kNN (k=200, T=0.07), a
linear probe on frozen features, and, for CoKe checkpoints, each clustering head's ACC/NMI/ARI.

    python tools/eval_representation.py --config-file configs/CoKe/coke_R18_cpu_demo.yaml \
        --weights output/coke_R18_cpu_demo/model_final.pth --dataset fashion_mnist_train

``--dataset``: a registered dataset with labels (``fashion_mnist_train``) or an ImageFolder
directory (``root/<class>/<image>``); the test split defaults to ``X_test`` or the ``val/`` /
``test/`` sibling of a ``train/`` folder. Without ``--weights`` the network is randomly
initialised (the baseline). Prints a table; ``--output`` also writes it as JSON.
Weights are read with the converter's checks (tools/convert_to_d2.py): a missing or foreign file,
or a ResNet of another depth or width than the config's ("R18 weights, R50 config"), prints one
line and exits with status 2 (traceback with --debug or SOCO_DEBUG=1).
"""

import argparse
import sys

import torch

from soco.config import load_pretrain_config
from soco.evaluation.features import default_test_split, labelled_dicts, subsample
from soco.evaluation.representation import evaluate_representation, format_table, method_crop_size
from soco.utils.errors import add_debug_argument, run_tool
from soco.utils.files import atomic_write_json


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", default="", help="pretraining checkpoint (.pth); empty: random init")
    p.add_argument("--dataset", required=True, help="train split: registered name or ImageFolder path")
    p.add_argument("--test-dataset", default="", help="test split (default: inferred from --dataset)")
    p.add_argument("--image-size", type=int, default=0, help="eval resolution (default: the method's CROP_SIZE)")
    p.add_argument("--max-train", type=int, default=0, help="evenly subsample the train split (0: all)")
    p.add_argument("--max-test", type=int, default=0, help="evenly subsample the test split (0: all)")
    p.add_argument("--knn-k", type=int, default=200)
    p.add_argument("--knn-t", type=float, default=0.07)
    p.add_argument("--no-linear", action="store_true", help="skip the linear probe")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", default="", help="write the results as JSON here")
    add_debug_argument(p)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE overrides")
    return p.parse_args(argv)


def load_cfg(args):
    cfg = load_pretrain_config(args.config_file, args.opts)
    cfg.MODEL.DEVICE = args.device
    return cfg


def evaluate(args) -> dict:
    cfg = load_cfg(args)
    train = subsample(labelled_dicts(args.dataset), args.max_train)
    test = subsample(labelled_dicts(args.test_dataset or default_test_split(args.dataset)), args.max_test)
    return evaluate_representation(
        cfg, args.weights, train, test, args.image_size or method_crop_size(cfg),
        args.knn_k, args.knn_t, linear=not args.no_linear, batch_size=args.batch_size,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_tool(_run, args, debug=args.debug)


def _run(args) -> int:
    torch.set_flush_denormal(True)
    results = evaluate(args)
    print(format_table(results))
    if args.output:
        atomic_write_json(args.output, results, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
