#!/usr/bin/env python
"""Convert a pretraining checkpoint into weights for a stock Detectron2 detector (or torchvision).

    python tools/convert_to_d2.py INPUT.pth OUTPUT.pkl [--network online|target]
        [--include fpn,head] [--format d2|torchvision] [--layout fpn|c4]

INPUT is a checkpoint of tools/pretrain_net.py (model_final.pth, ...) of any registered method;
the method (from its config) declares which of its modules transfer, so nothing here is
method-specific. The ResNet is always exported; --include picks the method's optional parts
(SoCo-FPN: fpn, head; "none" for the ResNet only); --layout places the ResNet for an FPN
(backbone.bottom_up.*) or a C4 detector (backbone.* + roi_heads.res5.*), default: the method's
own. --format mmdet writes mmdetection names (as the official convert_mmdetection_* scripts).
The projector, predictor, the other network and method state (queues, ...) are left out,
and the summary says so. --format torchvision writes a resnet<depth> state_dict (no fc).
A file that cannot be converted prints one line naming it and why, and exits with status 2
(traceback with --debug or SOCO_DEBUG=1).
"""

import argparse
import sys

from soco.checkpoint import FORMATS, convert
from soco.checkpoint.export import NETWORKS
from soco.checkpoint.resnet_names import LAYOUTS
from soco.utils.errors import add_debug_argument, run_tool


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="pretraining checkpoint (.pth of tools/pretrain_net.py)")
    parser.add_argument("output", help="file to write (.pkl for Detectron2, .pth for torchvision)")
    parser.add_argument("--network", choices=NETWORKS, default="online",
                        help="online network (default, as the official SoCo converter) or the "
                             "EMA target network")
    parser.add_argument("--include", default=None,
                        help="comma-separated optional parts besides the ResNet, e.g. fpn,head; "
                             "'none': ResNet only (default: every part the method declares)")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="d2",
                        help="d2: Detectron2 model-zoo pickle (default); torchvision: resnet "
                             "state_dict; mmdet: mmdetection checkpoint (backbone, neck and "
                             "shared 4conv1fc bbox head names)")
    parser.add_argument("--layout", choices=LAYOUTS, default=None,
                        help="detector the ResNet is placed for (default: the method's own)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip checking the tensors against the method built from the "
                             "checkpoint's config (saves building the model once)")
    add_debug_argument(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_tool(_run, args, debug=args.debug)


def _run(args) -> int:
    include = None if args.include is None else [p.strip() for p in args.include.split(",")]
    export = convert(args.input, args.output, network=args.network, include=include,
                     fmt=args.fmt, layout=args.layout, verify=not args.no_verify)
    print(export.summary())
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
