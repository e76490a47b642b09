#!/usr/bin/env python
"""Fine-tune a Detectron2 detector from converted weights (Detectron2's train_net, plus soco's
heads and embedded datasets). The same as ``python -m soco.engine.finetune``; usage, evaluation
and the weights check are in ``--help`` and soco/engine/finetune.py.

    python tools/finetune_net.py --config-file configs/finetune/faster_rcnn_R18_FPN_demo_cpu.yaml \
        MODEL.WEIGHTS output/demo/soco_d2.pkl OUTPUT_DIR output/demo/finetune
"""

from soco.engine.finetune import Trainer, WeightsCheckingCheckpointer, check_resnet_loaded, cli, main  # noqa: F401

if __name__ == "__main__":
    cli()
