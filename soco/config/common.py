"""Keys shared by every pretraining method: data, schedule in epochs, optimiser, EMA, heads."""

from detectron2.config import CfgNode as CN


def add_common_config(cfg: CN) -> None:
    cfg.PRETRAIN = CN()
    # Image-folder dataset (walked recursively; ImageNet's class sub-folders included) and an
    # optional list of image paths relative to IMAGE_ROOT. Empty: use DATASETS.TRAIN.
    cfg.PRETRAIN.IMAGE_ROOT = ""
    cfg.PRETRAIN.IMAGE_LIST = ""
    # Schedules are given in epochs and converted to iterations from the dataset size;
    # SOLVER.MAX_ITER > 0 (e.g. on the command line) overrides the length, and every schedule
    # (lr, EMA momentum, method-specific ramps) follows the overridden length.
    cfg.PRETRAIN.EPOCHS = 100
    cfg.PRETRAIN.WARMUP_EPOCHS = 10
    # lr = SOLVER.BASE_LR * SOLVER.IMS_PER_BATCH / LR_REFERENCE_BATCH (linear scaling rule).
    cfg.PRETRAIN.LR_REFERENCE_BATCH = 256
    # Gradient accumulation: optimiser steps every ACCUM_STEPS iterations (small GPU counts).
    cfg.PRETRAIN.ACCUM_STEPS = 1
    cfg.PRETRAIN.CHANNELS_LAST = False
    cfg.PRETRAIN.COMPILE = False
    # Batch norm of the pretraining network: "SyncBN" on GPU with DDP, "BN" on CPU / one process.
    cfg.PRETRAIN.NORM = "SyncBN"

    cfg.SOLVER.OPTIMIZER = "LARS"  # "LARS" | "SGD"
    cfg.SOLVER.LARS = CN()
    cfg.SOLVER.LARS.TRUST_COEF = 0.001
    cfg.SOLVER.LARS.EPS = 1e-8
    # Biases and normalisation parameters get neither weight decay nor the LARS adaptation.
    cfg.SOLVER.LARS.EXCLUDE_BIAS_AND_NORM = True

    # EMA target network (BYOL): tau goes from MOMENTUM to MOMENTUM_END with a cosine schedule.
    cfg.MODEL.EMA = CN()
    cfg.MODEL.EMA.MOMENTUM = 0.99
    cfg.MODEL.EMA.MOMENTUM_END = 1.0

    # Projector g and predictor q: Linear(->HIDDEN_DIM) - BN - ReLU - Linear(->OUT_DIM).
    cfg.MODEL.PROJECTOR = CN()
    cfg.MODEL.PROJECTOR.HIDDEN_DIM = 4096
    cfg.MODEL.PROJECTOR.OUT_DIM = 256
