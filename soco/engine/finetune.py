"""Fine-tuning a Detectron2 detector from converted weights: Detectron2's train_net with soco's
heads and embedded datasets, an evaluator per dataset and a check that the weights fill the
ResNet. Its command line is tools/finetune_net.py (or ``python -m soco.engine.finetune``):

    python tools/convert_to_d2.py output/soco_r50_fpn/model_final.pth output/soco_r50_fpn_d2.pkl
    python tools/finetune_net.py --config-file configs/finetune/mask_rcnn_R_50_FPN_1x_soco.yaml \\
        --num-gpus 8 MODEL.WEIGHTS output/soco_r50_fpn_d2.pkl
    python tools/finetune_net.py --config-file configs/finetune/faster_rcnn_R18_FPN_demo_cpu.yaml \\
        MODEL.WEIGHTS output/demo/soco_d2.pkl OUTPUT_DIR output/demo/finetune

Evaluation (COCO AP; Pascal VOC AP for VOC datasets) runs at the end of training and every
TEST.EVAL_PERIOD iterations if > 0; the final numbers are also written to
OUTPUT_DIR/eval_results.json. With one process (CPU or one GPU) SyncBN layers are built as plain
BN, which computes the same thing there. Without CUDA, MODEL.DEVICE is set to cpu.

MODEL.WEIGHTS is checked before training: a file that is not weights (a proposal file, a
pretraining checkpoint not converted yet, a list, a text file) is named with what it holds; a
ResNet of another depth or width than the config's stops with both ("R18 weights ..., R50
config ...") and the keys to set. MODEL.WEIGHTS must then fill every ResNet tensor of the
detector: weights converted for the other layout (tools/convert_to_d2.py --layout fpn|c4) would
otherwise leave a random backbone, so the run stops and names the layout to convert to
(--allow-partial-weights accepts it). These errors print one line and exit with status 2
(traceback with --debug or SOCO_DEBUG=1); the config dump goes to OUTPUT_DIR/log.txt only. Like
tools/pretrain_net.py, one run at a time per OUTPUT_DIR (run.lock), and a folder holding
checkpoints needs --resume or --overwrite.
"""

import logging
import os
import sys
import weakref

import torch
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, default_argument_parser, launch
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.utils import comm

from .. import d2_plugin  # noqa: F401  (soco's demo datasets and ROI heads, as for stock train_net.py)
from ..checkpoint import ConversionError, check_resnet_fits, read_detector_weights
from ..config.finetune import build_finetune_config
from ..utils.errors import add_debug_argument, run_tool
from ..utils.files import atomic_write_json
from .checkpoint import AtomicCheckpointer
from .run_guard import add_overwrite_argument, claim_output_dir_on_all_ranks, truncate_metrics
from .setup import setup_run

logger = logging.getLogger("soco.finetune")


class WeightsCheckingCheckpointer(AtomicCheckpointer):
    """Remembers which model tensors the last load left unset (Detectron2 only logs them);
    saves atomically and resumes from the newest readable checkpoint."""

    missing_keys = None

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        self.missing_keys = list(incompatible.missing_keys) if incompatible is not None else []
        return incompatible


def check_resnet_loaded(model, missing_keys, weights: str) -> None:
    """Raise ConversionError if ``weights`` left ResNet tensors of ``model`` unset, naming the layout
    to convert to. The ResNet is ``backbone.bottom_up.*`` in an FPN detector and ``backbone.*``
    + ``roi_heads.res5.*`` in a C4 one; other parts (FPN, heads) may start from random."""
    names = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    fpn = any(k.startswith("backbone.bottom_up.") for k in names)
    prefixes = ("backbone.bottom_up.",) if fpn else ("backbone.", "roi_heads.res5.")
    resnet = [k for k in names if k.startswith(prefixes)]
    missing = [k for k in resnet if k in set(missing_keys)]
    if missing:
        layout = "fpn" if fpn else "c4"
        raise ConversionError(
            f"MODEL.WEIGHTS {weights} leaves {len(missing)} of the {len(resnet)} ResNet tensors of this "
            f"{layout.upper()} detector unset (e.g. {missing[:3]}): fine-tuning would start from a random "
            f"backbone. Convert for this detector: python tools/convert_to_d2.py CHECKPOINT.pth OUT.pkl "
            f"--layout {layout} (or pass --allow-partial-weights to fine-tune anyway)"
        )


class Trainer(DefaultTrainer):
    """DefaultTrainer with an evaluator chosen from the dataset's ``evaluator_type``
    (DefaultTrainer has none, and evaluates at the end of training even with EVAL_PERIOD 0),
    and a checkpointer that reports what MODEL.WEIGHTS left unset."""

    def build_hooks(self):
        # DefaultTrainer builds its checkpointer just before its hooks: replaced here, so that
        # loading and periodic saving share it.
        self.checkpointer = WeightsCheckingCheckpointer(self._trainer.model, self.cfg.OUTPUT_DIR,
                                                        trainer=weakref.proxy(self))
        return super().build_hooks()

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        kind = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if kind == "coco":
            folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
            return COCOEvaluator(dataset_name, output_dir=folder)
        if kind == "pascal_voc":
            return PascalVOCDetectionEvaluator(dataset_name)
        raise ValueError(
            f"dataset '{dataset_name}' has evaluator_type {kind!r}; tools/finetune_net.py "
            "evaluates COCO-format ('coco') and Pascal VOC ('pascal_voc') datasets"
        )


def write_results(results, output_dir: str) -> None:
    """``eval_results.json`` in ``output_dir``, written atomically."""
    atomic_write_json(os.path.join(output_dir, "eval_results.json"), results)


def check_weights_file(cfg, resume: bool) -> None:
    """MODEL.WEIGHTS (a local file that this run loads) holds weights of the config's ResNet."""
    weights = cfg.MODEL.WEIGHTS
    resuming = resume and os.path.exists(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if weights and "://" not in weights and not resuming:
        check_resnet_fits(weights, read_detector_weights(weights), cfg)


def main(args):
    cfg = build_finetune_config(args.config_file, args.opts, comm.get_world_size())
    cfg.freeze()
    check_weights_file(cfg, args.resume)
    if not args.eval_only:  # before default_setup writes config.yaml
        claim_output_dir_on_all_ranks(cfg.OUTPUT_DIR, args.resume, getattr(args, "overwrite", False))
    setup_run(cfg, args)
    if cfg.MODEL.DEVICE == "cpu":
        torch.set_flush_denormal(True)  # denormals make CPU convolutions very slow
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = WeightsCheckingCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        if checkpointer.missing_keys and not getattr(args, "allow_partial_weights", False):
            check_resnet_loaded(model, checkpointer.missing_keys, cfg.MODEL.WEIGHTS)
        results = Trainer.test(cfg, model)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        if trainer.checkpointer.missing_keys and not getattr(args, "allow_partial_weights", False):
            check_resnet_loaded(trainer.checkpointer.model, trainer.checkpointer.missing_keys, cfg.MODEL.WEIGHTS)
        if comm.is_main_process():
            truncate_metrics(os.path.join(cfg.OUTPUT_DIR, "metrics.json"), trainer.start_iter)
        trainer.train()
        # DefaultTrainer returns the final evaluation only with TEST.EXPECTED_RESULTS; its
        # evaluation hook keeps it here.
        results = getattr(trainer, "_last_eval_results", None)
    if comm.is_main_process() and results:
        write_results(results, cfg.OUTPUT_DIR)
    return results


def build_parser():
    """Detectron2's default arguments, ``--overwrite``, ``--allow-partial-weights`` and ``--debug``."""
    parser = add_overwrite_argument(default_argument_parser(epilog=__doc__))
    parser.add_argument("--allow-partial-weights", action="store_true",
                        help="fine-tune even if MODEL.WEIGHTS leaves ResNet tensors unset (random)")
    return add_debug_argument(parser)


def cli(argv=None) -> int:
    """Parse ``argv`` (default: the command line) and run :func:`main` in every process; the exit
    status (2 with one line for bad input, see ``soco.utils.errors.run_tool``)."""
    args = build_parser().parse_args(argv)
    return run_tool(launch, main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, (args,),
                    debug=args.debug)


if __name__ == "__main__":
    sys.exit(cli())
