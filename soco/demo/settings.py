"""What the demo compares: the starts (pretraining methods), the data settings and the budgets.

Every start is fine-tuned with the same config (``FINETUNE_CONFIG``), schedule and seeds; the
pretraining methods see the same unlabelled images for the same budget, counted in images
(iterations x batch: ``PRETRAIN_ITERS[budget][method] x`` the config's ``SOLVER.IMS_PER_BATCH``
is equal for every method of a budget; tests/test_demo.py checks it).
"""

from dataclasses import dataclass
from typing import Dict, Optional

__all__ = [
    "FINETUNE_CONFIG", "PRETRAIN_CONFIGS", "CONVERT_INCLUDE", "METHODS", "PROPOSAL_FILTER", "Setting", "SETTINGS",
    "Budget", "BUDGETS", "RANDOM_INIT",
]

# Config names for soco.model_zoo.get_config_file (files under configs/).
FINETUNE_CONFIG = "finetune/faster_rcnn_R18_FPN_demo_cpu.yaml"
RANDOM_INIT = "random init"

# The methods, in table order, and their CPU demo configs on the detection images. The
# image-level methods' configs crop views at the scale of the items (see each file), so that
# their views can show one object, as SoCo's proposals do.
PRETRAIN_CONFIGS = {
    "SoCo": "SoCo/SoCo_demo_R18_FPN_cpu.yaml",
    "BYOL": "BYOL/byol_R18_demo_det_cpu.yaml",
    "CoKe": "CoKe/coke_R18_demo_det_cpu.yaml",
    "CLSA": "CLSA/clsa_R18_demo_det_cpu.yaml",
    "SMoG": "SMoG/smog_R18_demo_det_cpu.yaml",
}
METHODS = tuple(PRETRAIN_CONFIGS)

# What each method's conversion exports besides the ResNet. SoCo: the FPN but not the box head.
# At the "full" budget the pretrained 4conv1fc head costs AP: with it, 4.2 and 7.3 AP
# (fine-tuning seeds 1, 2); without it, 10.1 and 10.1 (random init: 9.2, 8.6). On
# ImageNet-scale pretraining the paper transfers the head too (tools/convert_to_d2.py exports it
# by default). The image-level methods pretrain a ResNet only.
CONVERT_INCLUDE = {"SoCo": "fpn", "BYOL": "none", "CoKe": "none", "CLSA": "none", "SMoG": "none"}

# The detection items are 24-120 px in 256-320 px images: below the paper's 0.3-0.8 size band.
PROPOSAL_FILTER = {"scale_range": [0.08, 0.5], "min_side": 16}


@dataclass(frozen=True)
class Setting:
    """Where the starts pretrain and fine-tune (registered dataset names; the fine-tune config's
    DATASETS.TEST, soco_demo_det_val, is the evaluation set of every setting)."""

    name: str
    pretrain_dataset: str
    finetune_dataset: str
    description: str


SETTINGS = {
    "current": Setting(
        "current", "soco_demo_det_train", "soco_demo_det_train",
        "pretraining on the 200 training images (labels unused), fine-tuning on the same 200 labelled"),
    "few-label": Setting(
        "few-label", "soco_demo_pool", "soco_demo_det_train_few",
        "pretraining on a pool of unlabelled mosaics (other images than the labelled ones), "
        "fine-tuning on the first 64 labelled training images"),
}


@dataclass(frozen=True)
class Budget:
    """pretrain_images: how many of the pretraining set's images (the first ones; None: all);
    pretrain_iters: per method; finetune_iters; evals: AP evaluations per fine-tune (evenly
    spaced, the last at the end)."""

    name: str
    pretrain_images: Optional[int]
    pretrain_iters: Dict[str, int]
    finetune_iters: int
    evals: int
    description: str = ""


def _iters(soco_iters: int) -> Dict[str, int]:
    """Equal images seen: SoCo's batch is 4, the image-level demo configs' 16."""
    return {"SoCo": soco_iters, **{m: soco_iters // 4 for m in METHODS if m != "SoCo"}}


BUDGETS = {
    # `make demo`: ~9 min on 2 idle cores (20 on shared ones) for random init and SoCo, one seed.
    "full": Budget("full", None, _iters(300), 600, 2, "make demo: ~9 min on 2 idle cores (2 starts, 1 seed)"),
    # Smoke mode: every step, tiny budgets (AP values mean nothing).
    "quick": Budget("quick", 24, _iters(8), 12, 1, "smoke test: minutes"),
    # The few-label comparison that fits an hour on a shared 2-core CPU: 800 pool images seen
    # once, 200 fine-tuning iterations (12.5 epochs of 64 images).
    "short": Budget("short", 800, _iters(200), 200, 1, "probes; AP stays at the floor (0.3)"),
    # The short budget's pretraining (so its pretrained weights serve again) with the full
    # budget's fine-tuning, for AP above the floor that 200 iterations on 64 images leave.
    # Measured on 2 idle cores: 25 min for SoCo and random init (2 x 3 seeds), 52 more for BYOL,
    # CoKe, CLSA and SMoG.
    "medium": Budget("medium", 800, _iters(200), 600, 2,
                     "short pretraining, full fine-tuning: 25 min for SoCo vs random init, 2 x 3 seeds"),
    # Hours: the whole 3000-image pool, 4 epochs of it. Estimated from the measured per-iteration
    # times: ~35 min per SoCo pretraining and ~5 min per fine-tune on one core.
    "long": Budget("long", None, _iters(3000), 600, 3, "hours: ~35 min per pretraining, ~5 min per fine-tune, one core"),
}
