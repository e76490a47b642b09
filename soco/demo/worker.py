"""One demo step in a process of its own: ``python -m soco.demo.worker STEP JSON`` calls the
package function of ``STEP`` with the keyword arguments of the JSON object. The demo's steps run
side by side this way, each with its log (``soco.demo.steps.Runner``); they need soco installed,
not a checkout's tools/.
"""

import json
import sys
from typing import Sequence

__all__ = ["STEPS", "main"]


def proposals(image_root: str, output: str, image_list: str = None, scale_range=(0.3, 0.8), min_side: float = 0) -> int:
    """Selective-search proposals of the images (``soco.proposals.generate``); 1 if none could be read."""
    from soco.proposals import generate

    summary = generate(image_root, output, image_list=image_list, progress=False, scale_range=tuple(scale_range),
                       min_side=min_side)
    print(json.dumps(summary, indent=1))
    return 0 if summary["images"] else 1


def pretrain(config_file: str, opts: Sequence[str]) -> int:
    """One process of pretraining from ``config_file`` and ``KEY VALUE`` overrides, resuming from
    ``OUTPUT_DIR``'s last checkpoint if there is one (``soco.engine.pretrain.pretrain_main``, what
    every process of tools/pretrain_net.py runs)."""
    from detectron2.engine import default_argument_parser

    import soco.modeling.meta_arch  # noqa: F401  (registers the methods)
    from soco.engine.pretrain import pretrain_main

    pretrain_main(default_argument_parser().parse_args(["--config-file", config_file, "--resume", *opts]))
    return 0


def convert(checkpoint: str, output: str, layout: str, include: Sequence[str]) -> int:
    """Detectron2 weights of the checkpoint's ResNet and ``include`` parts (``soco.checkpoint.convert``)."""
    from soco.checkpoint import convert as convert_checkpoint

    print(convert_checkpoint(checkpoint, output, layout=layout, include=list(include)).summary())
    return 0


def finetune(args: Sequence[str]) -> int:
    """One process of fine-tuning with the command-line arguments ``args`` (``soco.engine.finetune``)."""
    from soco.engine.finetune import build_parser, main as finetune_main

    finetune_main(build_parser().parse_args(list(args)))
    return 0


def probe(args: Sequence[str]) -> int:
    """The item probe with the command-line arguments ``args`` (``soco.evaluation.item_probe``)."""
    from soco.evaluation.item_probe import main as probe_main

    return probe_main(list(args))


STEPS = {"proposals": proposals, "pretrain": pretrain, "convert": convert, "finetune": finetune, "probe": probe}


def main(argv: Sequence[str] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 2 or argv[0] not in STEPS:
        print(f"usage: python -m soco.demo.worker {{{','.join(STEPS)}}} JSON_KEYWORD_ARGUMENTS", file=sys.stderr)
        return 2
    return STEPS[argv[0]](**json.loads(argv[1]))


if __name__ == "__main__":
    sys.exit(main())
