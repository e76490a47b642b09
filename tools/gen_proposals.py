#!/usr/bin/env python
"""Offline selective-search proposals for SoCo pre-training.

    python tools/gen_proposals.py --image-root DIR|train.zip --output proposals/NAME.store \
        [--image-list FILE] [--num-workers N] [--method M] [--max-size S] [--shard i/n] \
        [--scale-range MIN MAX] [--min-side PX]
    python tools/gen_proposals.py --output proposals/NAME.store --merge

An output ending in .pkl writes Detectron2's proposal pickle; any other name the memory-mapped
proposal store (about 0.5 KB per image, merged chunk by chunk, shared by every training
process; tools/convert_proposals.py converts between them). --image-root may be a folder or the
official train.zip (with train_map.txt next to it used as the image list), read without extraction.

Rerunning the same command after an interruption continues where it stopped. Unreadable images
(and images whose worker process died, or that stayed in a worker past --image-timeout) are
recorded as failures and skipped by training; the exit status is 1 when no image at all could be
read. With --shard i/n on n machines (sharing the output folder, or copying NAME.pkl.shards/
together), the last shard to finish writes the output; --merge does it explicitly, and names the
shards to rerun when chunks are missing. The work folder records n: a later --shard i/m with
another m is refused. Images above soco.data.image_io.MAX_IMAGE_PIXELS (the training key
PRETRAIN.MAX_IMAGE_PIXELS's default) are refused from their header and recorded as failures.
Input errors (bad --shard, a foreign work folder) print one line and exit with status 2
(traceback with --debug or SOCO_DEBUG=1). See proposals/README.md and docs/SCALE.md.
"""
import argparse
import json
import sys

from soco.proposals import DEFAULT_MAX_SIZE, DEFAULT_METHOD, METHODS, generate, merge
from soco.proposals.filtering import PAPER_MIN_SIDE, PAPER_SCALE_RANGE
from soco.proposals.runner import DEFAULT_IMAGE_TIMEOUT, output_paths
from soco.utils.errors import add_debug_argument, run_tool


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-root", help="image folder (recursive; ImageNet class subfolders are fine) or a zip archive")
    parser.add_argument("--output", required=True, help="proposal file to write: NAME.store (memory-mapped store) or NAME.pkl (Detectron2's pickle)")
    parser.add_argument("--image-list", help="text file of image paths relative to --image-root (optional label column)")
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=sorted(METHODS),
                        help=f"proposal method (default: {DEFAULT_METHOD}; 'selectivesearch' is the paper's)")
    parser.add_argument("--max-size", type=int, default=None,
                        help="working resolution: longer side in px for the search, boxes are mapped back to "
                             f"original pixels; 0 = full resolution (default per method: {DEFAULT_MAX_SIZE})")
    parser.add_argument("--scale-range", type=float, nargs=2, default=PAPER_SCALE_RANGE, metavar=("MIN", "MAX"),
                        help="keep boxes whose sqrt(w*h) is within MIN-MAX of the image's (default: the paper's "
                             f"{PAPER_SCALE_RANGE[0]} {PAPER_SCALE_RANGE[1]}; lower it for small objects)")
    parser.add_argument("--min-side", type=float, default=PAPER_MIN_SIDE,
                        help=f"keep boxes whose sides are at least this many original pixels (default {PAPER_MIN_SIDE:g})")
    parser.add_argument("--num-workers", type=int, default=None, help="processes (default: all cores; 0: in-process)")
    parser.add_argument("--image-timeout", type=float, default=DEFAULT_IMAGE_TIMEOUT, metavar="SECONDS",
                        help="an image still in a worker after this long is recorded as a failure and skipped "
                             f"(default {DEFAULT_IMAGE_TIMEOUT:g}; 0: no limit; needs --num-workers >= 1)")
    parser.add_argument("--shard", default="0/1", help="i/n: compute only this machine's share (default 0/1)")
    parser.add_argument("--chunk-size", type=int, default=1000, help="images per checkpoint file (default 1000)")
    parser.add_argument("--merge", action="store_true", help="only merge finished shards into --output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_argument(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    # "--shard -1/2" would be read by argparse as an unknown option: hand the value over as one token.
    for k, token in enumerate(argv[:-1]):
        if token == "--shard" and argv[k + 1].startswith("-"):
            argv[k:k + 2] = [f"--shard={argv[k + 1]}"]
            break
    args = parser.parse_args(argv)
    if not args.merge and not args.image_root:
        parser.error("--image-root is required (unless --merge)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_tool(_run, args, debug=args.debug)


def _run(args) -> int:
    if args.merge:
        summary = merge(args.output)
    else:
        max_size = "default" if args.max_size is None else (args.max_size or None)
        try:
            summary = generate(args.image_root, args.output, image_list=args.image_list, method=args.method,
                               max_size=max_size, num_workers=args.num_workers, shard=args.shard,
                               chunk_size=args.chunk_size, progress=not args.no_progress,
                               scale_range=tuple(args.scale_range), min_side=args.min_side,
                               image_timeout=args.image_timeout)
        except KeyboardInterrupt:
            print("\ninterrupted: finished chunks are kept; rerun the same command to continue", file=sys.stderr)
            return 130
    if summary is None:
        print(f"shard {args.shard} done; {args.output} is written when every shard has finished "
              "(or run with --merge once they have)")
        return 0
    print(json.dumps(summary, indent=1))
    if summary["images"] == 0:
        print(f"error: no image could be read ({summary['failures']} failures, reasons in "
              f"{output_paths(args.output)['failures']})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
