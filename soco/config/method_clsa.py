"""Keys of CLSA (Wang & Qi, "Contrastive Learning with Stronger Augmentations"), paper defaults.

CLSA = MoCo v2 (queue, key encoder by momentum 0.999 set through MODEL.EMA, 2-layer MLP head
2048 -> 128 set through MODEL.PROJECTOR) + the distributional divergence L_D on strong views.
"""

from detectron2.config import CfgNode as CN


def add_clsa_config(cfg: CN) -> None:
    cfg.MODEL.CLSA = CN()
    cfg.MODEL.CLSA.QUEUE_SIZE = 65536
    # tau of both L_C and L_D (the paper uses one temperature for both).
    cfg.MODEL.CLSA.TEMPERATURE = 0.2
    # L = L_C + BETA * L_D; BETA = 0 is plain MoCo v2 (the baseline of benchmarks/).
    cfg.MODEL.CLSA.BETA = 1.0
    # Weak views (query and key): MoCo v2 augmentation on CROP_SIZE px crops of CROP_SCALE.
    cfg.MODEL.CLSA.CROP_SIZE = 224
    cfg.MODEL.CLSA.CROP_SCALE = (0.2, 1.0)
    # Strong views: one per entry (CLSA: 96 px; CLSA*: 224/192/160/128/96 px); scales from the
    # official run scripts. Each: crop, weak augmentation, then NUM_STRONG_OPS random Table-1
    # operations each applied with probability STRONG_OP_PROB.
    cfg.MODEL.CLSA.STRONG_CROP_SIZES = [96]
    cfg.MODEL.CLSA.STRONG_CROP_MIN_SCALES = [0.086]
    cfg.MODEL.CLSA.STRONG_CROP_MAX_SCALES = [0.429]
    cfg.MODEL.CLSA.NUM_STRONG_OPS = 5
    cfg.MODEL.CLSA.STRONG_OP_PROB = 0.5
    # MoCo's shuffle-BN for the key encoder under DDP (no effect with one process).
    cfg.MODEL.CLSA.SHUFFLE_BN = True
