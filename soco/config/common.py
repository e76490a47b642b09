"""Keys shared by every pretraining method: data, schedule in epochs, optimiser, EMA, heads.

Pixel format used by every method (and therefore by the fine-tune configs): mappers emit RGB
uint8 images, the meta-architecture normalises them with ImageNet mean/std in RGB order
(``MODEL.PIXEL_MEAN/STD`` below, set in ``configs/Base-Pretrain.yaml``), and the ResNet puts the
stride in the 3x3 convolution (``MODEL.RESNETS.STRIDE_IN_1X1: False``, torchvision style).
"""

from detectron2.config import CfgNode as CN


def add_common_config(cfg: CN) -> None:
    cfg.PRETRAIN = CN()
    # Image-folder dataset (walked recursively; ImageNet's class sub-folders included) and an
    # optional list of image paths relative to IMAGE_ROOT. Empty: use DATASETS.TRAIN.
    cfg.PRETRAIN.IMAGE_ROOT = ""
    cfg.PRETRAIN.IMAGE_LIST = ""
    # Schedules are given in epochs and converted to iterations (optimiser steps) from the
    # dataset size: MAX_ITER = EPOCHS * (num_images // SOLVER.IMS_PER_BATCH). SOLVER.MAX_ITER > 0
    # (e.g. on the command line) overrides the length, and every schedule (lr warm-up and
    # cosine, EMA momentum, method-specific ramps) follows the overridden length. The trainer
    # writes the resolved values into SOLVER.MAX_ITER, SOLVER.WARMUP_ITERS and
    # PRETRAIN.NUM_IMAGES, so the saved config records the run.
    cfg.PRETRAIN.EPOCHS = 100
    cfg.PRETRAIN.WARMUP_EPOCHS = 10
    # Filled by the trainer (number of training images after the method's dataset preparation):
    # a record of the run, checked on --resume and used to rebuild a model from a checkpoint (the
    # engine passes the size to CoKe's constructor itself). 0 = not resolved yet.
    cfg.PRETRAIN.NUM_IMAGES = 0
    # lr = SOLVER.BASE_LR * SOLVER.IMS_PER_BATCH / LR_REFERENCE_BATCH (linear scaling rule).
    cfg.PRETRAIN.LR_REFERENCE_BATCH = 256
    # Gradient accumulation: SOLVER.IMS_PER_BATCH stays the effective batch of one optimiser
    # step (what the lr scaling and schedules see); each process runs ACCUM_STEPS forward/
    # backward passes of IMS_PER_BATCH / (world_size * ACCUM_STEPS) images per step.
    cfg.PRETRAIN.ACCUM_STEPS = 1
    # Memory format and graph compilation of the model (GPU speed options; off by default).
    cfg.PRETRAIN.CHANNELS_LAST = False
    cfg.PRETRAIN.COMPILE = False
    # Convert every BatchNorm (backbone, FPN, heads, projector, target) to SyncBatchNorm when
    # training on GPU with more than one process. Ignored on CPU and with one process, where
    # plain BN is used, so world size 1 on CPU always works.
    # MoCo v2 and CLSA set it False: their key encoder uses per-process BN with shuffle-BN.
    cfg.PRETRAIN.SYNC_BN = True
    # Every STATE_CHECK_PERIOD iterations (and at the start and the end) the processes compare
    # a hash of the global state (parameters, EMA copies, queues, clusters, groups) and stop
    # with an error naming the tensor if they differ. 0 disables it; one process: no cost.
    cfg.PRETRAIN.STATE_CHECK_PERIOD = 1000
    # How long a collective (gradient all-reduce, gathers) waits for a missing process before
    # every process stops with an error naming it (PyTorch's default is 30 minutes). Minutes;
    # fractions allowed. A watchdog logs the late rank and where it is well before that.
    cfg.PRETRAIN.DIST_TIMEOUT_MINUTES = 10.0
    # Metrics go to the console (with ETA), OUTPUT_DIR/metrics.json and TensorBoard every
    # LOG_PERIOD iterations.
    cfg.PRETRAIN.LOG_PERIOD = 20
    # Representation health (soco.engine.health): every PERIOD iterations and at the end, the
    # online ResNet's weight-norm ratio per stage against the start, the stem's effective rank,
    # BN running variances, the embeddings' per-dimension std and, for CoKe / SMoG, occupied
    # clusters and assignment entropy go to metrics.json / TensorBoard as health/*; a warning
    # names the metric, the layer and the iteration when one crosses its threshold, the end of
    # the run logs a one-line summary and writes OUTPUT_DIR/health.json. 0 disables it. A
    # check costs a few milliseconds (one 64 x 147 SVD, one norm per convolution).
    cfg.PRETRAIN.HEALTH = CN()
    cfg.PRETRAIN.HEALTH.PERIOD = 50
    # Warn when a convolution's weight norm exceeds NORM_RATIO_MAX x its start (BN makes a conv
    # scale-invariant: plain SGD inflates it, and a fine-tune then barely moves it) ...
    cfg.PRETRAIN.HEALTH.NORM_RATIO_MAX = 5.0
    # ... when the stem's effective rank falls below STEM_RANK_MIN (64 random filters: ~51) ...
    cfg.PRETRAIN.HEALTH.STEM_RANK_MIN = 8.0
    # ... when the embeddings' per-dimension std falls below EMBED_STD_MIN_FRAC x 1/sqrt(D)
    # (collapse to a point) ...
    cfg.PRETRAIN.HEALTH.EMBED_STD_MIN_FRAC = 0.2
    # ... and when fewer than OCCUPIED_MIN_FRAC of a head's clusters / groups are occupied.
    cfg.PRETRAIN.HEALTH.OCCUPIED_MIN_FRAC = 0.1
    # Optional online kNN monitor (solo-learn's): every KNN_PERIOD iterations (0: off) and at the
    # end, the weighted-kNN top-1 (%, k = KNN_K) of the online backbone's pooled features (eval
    # mode) on KNN_QUERIES Fashion-MNIST test images against KNN_BANK training images, resized
    # to KNN_SIZE px, as health/knn_top1. Needs Fashion-MNIST (docs/EMBEDDED_DATA.md).
    cfg.PRETRAIN.HEALTH.KNN_PERIOD = 0
    cfg.PRETRAIN.HEALTH.KNN_BANK = 1000
    cfg.PRETRAIN.HEALTH.KNN_QUERIES = 500
    cfg.PRETRAIN.HEALTH.KNN_SIZE = 64
    cfg.PRETRAIN.HEALTH.KNN_K = 20
    # Where the photometric augmentation (colour jitter, grayscale, blur, solarisation) runs.
    # "cpu": in the loader's workers. "device": the loader only decodes, crops, resizes and flips
    # (boxes follow), and the trainer applies the colour operations batched on MODEL.DEVICE with
    # each view's parameters, drawn in the loader from the same per-sample seeds (resume exact).
    # CLSA's strong views stay on the CPU. docs/PIPELINE.md, "Data loading speed", says how to choose.
    cfg.PRETRAIN.AUGMENT_ON = "cpu"
    # Kernels of the CPU path: "fast" (OpenCV on float32, torchvision's uint8 arithmetic; default)
    # or "reference" (torchvision v2's uint8 operations one by one, the implementation before
    # the fast path). Both draw the same random numbers; views agree to a level or two on few pixels.
    cfg.PRETRAIN.AUGMENT_IMPL = "fast"
    # Images with more pixels (upright width x height) are skipped from their header, never
    # decoded (a 30000 x 30000 JPEG would take ~2.7 GB and seconds per draw); the log names both
    # sizes. The default is tools/gen_proposals.py's limit (soco.data.image_io.MAX_IMAGE_PIXELS).
    # 0: no limit of the project's.
    cfg.PRETRAIN.MAX_IMAGE_PIXELS = 178_956_970

    # Pretraining defaults that differ from Detectron2's (configs/Base-Pretrain.yaml repeats
    # them so the fine-tune configs can be checked against it): run length from epochs,
    # RGB 0-255 input normalised by ImageNet mean/std in RGB order, stride in the 3x3 conv,
    # every stage trained, plain BN (SyncBN by PRETRAIN.SYNC_BN where it applies).
    cfg.SOLVER.MAX_ITER = -1
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0

    cfg.SOLVER.OPTIMIZER = "LARS"  # "LARS" | "SGD"
    cfg.SOLVER.LARS = CN()
    cfg.SOLVER.LARS.TRUST_COEF = 0.001
    # Biases and normalisation parameters get neither weight decay nor the LARS adaptation.
    cfg.SOLVER.LARS.EXCLUDE_BIAS_AND_NORM = True

    # EMA target network (BYOL): tau goes from MOMENTUM to MOMENTUM_END with BYOL's cosine
    # schedule tau_k = END - (END - MOMENTUM) * (cos(pi k / K) + 1) / 2 over the K iterations.
    cfg.MODEL.EMA = CN()
    cfg.MODEL.EMA.MOMENTUM = 0.99
    cfg.MODEL.EMA.MOMENTUM_END = 1.0

    # Projector g: NUM_LAYERS linear layers, each hidden one followed by NORM ("BN" or "" for
    # none) and ReLU: Linear(->HIDDEN_DIM) - BN - ReLU - Linear(->OUT_DIM) for BYOL and SoCo.
    cfg.MODEL.PROJECTOR = CN()
    cfg.MODEL.PROJECTOR.HIDDEN_DIM = 4096
    cfg.MODEL.PROJECTOR.OUT_DIM = 256
    cfg.MODEL.PROJECTOR.NUM_LAYERS = 2
    cfg.MODEL.PROJECTOR.NORM = "BN"
    # Predictor q (same shape rules; input and output size = PROJECTOR.OUT_DIM).
    cfg.MODEL.PREDICTOR = CN()
    cfg.MODEL.PREDICTOR.HIDDEN_DIM = 4096
    cfg.MODEL.PREDICTOR.NUM_LAYERS = 2
    cfg.MODEL.PREDICTOR.NORM = "BN"

    # Plain image-level BYOL (the baseline meta-architecture `BYOL`): two views, each a
    # RandomResizedCrop of CROP_SIZE px with area scale CROP_SCALE, then BYOL's augmentations.
    cfg.MODEL.BYOL = CN()
    cfg.MODEL.BYOL.CROP_SIZE = 224
    cfg.MODEL.BYOL.CROP_SCALE = (0.08, 1.0)
