#!/usr/bin/env python
"""Fine-tune a Detectron2 detector from converted weights (Detectron2's train_net, plus soco's
heads and embedded datasets). The same as ``python -m soco.engine.finetune``; usage, evaluation
and the weights checks are in ``--help`` and soco/engine/finetune.py.

    python tools/finetune_net.py --config-file configs/finetune/faster_rcnn_R18_FPN_demo_cpu.yaml \
        MODEL.WEIGHTS output/demo/soco_d2.pkl OUTPUT_DIR output/demo/finetune
"""

import sys

from soco.engine.finetune import (Trainer, WeightsCheckingCheckpointer, check_resnet_loaded,  # noqa: F401
                                  check_weights_file, cli, main)

if __name__ == "__main__":
    sys.exit(cli())
