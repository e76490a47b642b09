#!/usr/bin/env python
"""Fine-tune a Detectron2 detector from converted weights (Detectron2's train_net, plus soco's
heads and embedded datasets).

    python tools/convert_to_d2.py output/soco_r50_fpn/model_final.pth output/soco_r50_fpn_d2.pkl
    python tools/finetune_net.py --config-file configs/finetune/mask_rcnn_R_50_FPN_1x_soco.yaml \
        --num-gpus 8 MODEL.WEIGHTS output/soco_r50_fpn_d2.pkl
    python tools/finetune_net.py --config-file configs/finetune/faster_rcnn_R18_FPN_demo_cpu.yaml \
        MODEL.WEIGHTS output/demo/soco_d2.pkl OUTPUT_DIR output/demo/finetune

Evaluation (COCO AP; Pascal VOC AP for VOC datasets) runs at the end of training and every
TEST.EVAL_PERIOD iterations if > 0; the final numbers are also written to
OUTPUT_DIR/eval_results.json. With one process (CPU or one GPU) SyncBN layers are built as plain
BN, which computes the same thing there. Without CUDA, MODEL.DEVICE is set to cpu.
"""

import logging
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.utils import comm

import soco.data.embedded  # noqa: F401  (registers soco_demo_det_train / _val)
import soco.modeling.roi_heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from soco.utils.files import atomic_write_json

logger = logging.getLogger("soco.finetune")


class Trainer(DefaultTrainer):
    """DefaultTrainer with an evaluator chosen from the dataset's ``evaluator_type``
    (DefaultTrainer has none, and evaluates at the end of training even with EVAL_PERIOD 0)."""

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


NORM_NODES = ("RESNETS", "FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD")


def use_plain_bn(cfg) -> None:
    """SyncBN -> BN in every layer (same computation with one process; SyncBN needs DDP)."""
    for node in NORM_NODES:
        if cfg.MODEL[node].NORM == "SyncBN":
            cfg.MODEL[node].NORM = "BN"


def build_config(config_file: str, opts=(), world_size: int = 1):
    """Detectron2 config from ``config_file`` and KEY VALUE ``opts``, adjusted for the run."""
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if world_size == 1:
        use_plain_bn(cfg)
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def write_results(results, output_dir: str) -> None:
    """``eval_results.json`` in ``output_dir``, written atomically."""
    atomic_write_json(os.path.join(output_dir, "eval_results.json"), results)


def main(args):
    cfg = build_config(args.config_file, args.opts, comm.get_world_size())
    cfg.freeze()
    default_setup(cfg, args)
    if cfg.MODEL.DEVICE == "cpu":
        torch.set_flush_denormal(True)  # denormals make CPU convolutions very slow
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
        # DefaultTrainer returns the final evaluation only with TEST.EXPECTED_RESULTS; its
        # evaluation hook keeps it here.
        results = getattr(trainer, "_last_eval_results", None)
    if comm.is_main_process() and results:
        write_results(results, cfg.OUTPUT_DIR)
    return results


if __name__ == "__main__":
    args = default_argument_parser(epilog=__doc__).parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
