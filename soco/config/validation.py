"""Checks of a pretraining config: once when it is loaded, and once more against the dataset size.

:func:`check_config` runs in :func:`soco.config.load_pretrain_config`, before any process,
model or loader exists: every key that chooses a code path is one of its choices
(:data:`CHOICES`), and keys that contradict each other are named. :func:`check_dataset_size` runs
when the engine knows how many images the method trains on. Each error is a
:class:`~soco.utils.errors.ConfigError` naming the key, the value and what to set.
"""

import logging

from detectron2.config import CfgNode

from ..utils.errors import ConfigError
from .method_soco import check_soco_config

__all__ = ["CHOICES", "check_choices", "check_config", "check_dataset_size", "config_value"]

logger = logging.getLogger(__name__)

# Every key whose value selects a code path -> its choices (the code reads them unchecked).
# SoCo's own (MODEL.SOCO.VARIANT, VIEWS, FPN_UPSAMPLE) are checked by check_soco_config.
CHOICES = {
    "PRETRAIN.AUGMENT_ON": ("cpu", "device"),
    "PRETRAIN.AUGMENT_IMPL": ("fast", "reference"),
    "SOLVER.OPTIMIZER": ("LARS", "SGD"),
    "MODEL.PROJECTOR.NORM": ("BN", ""),
    "MODEL.PREDICTOR.NORM": ("BN", ""),
    "MODEL.SMOG.PREDICTOR_BRANCH": ("online", "momentum"),
}


def config_value(cfg: CfgNode, key: str):
    """The value of a dotted key, e.g. ``config_value(cfg, "MODEL.SOCO.VIEWS")``."""
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def check_choices(cfg: CfgNode) -> None:
    """Raise ConfigError for the first key of :data:`CHOICES` whose value is not a choice."""
    for key, choices in CHOICES.items():
        value = config_value(cfg, key)
        if value not in choices:
            raise ConfigError(f"{key} is {value!r}; choose one of {', '.join(repr(c) for c in choices)}")
    device = cfg.MODEL.DEVICE
    if not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
        raise ConfigError(f"MODEL.DEVICE is {device!r}; choose 'cpu', 'cuda' or 'cuda:N'")


def check_config(cfg: CfgNode) -> None:
    """Raise ConfigError naming the keys of the first contradiction found in ``cfg``."""
    check_choices(cfg)
    if cfg.PRETRAIN.AUGMENT_ON == "device" and cfg.PRETRAIN.AUGMENT_IMPL != "fast":
        raise ConfigError("PRETRAIN.AUGMENT_IMPL 'reference' runs on the CPU only: set PRETRAIN.AUGMENT_ON cpu "
                          "or PRETRAIN.AUGMENT_IMPL fast")
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch == "SoCo":
        check_soco_config(cfg)
    if arch == "SoCo" and cfg.PRETRAIN.AUGMENT_ON == "device" and cfg.MODEL.SOCO.CUTOUT_PROB > 0:
        raise ConfigError(
            "PRETRAIN.AUGMENT_ON 'device' cannot be combined with MODEL.SOCO.CUTOUT_PROB > 0 (the cut squares "
            "would be recoloured on the device); set PRETRAIN.AUGMENT_ON cpu"
        )
    if cfg.PRETRAIN.MAX_IMAGE_PIXELS < 0:
        raise ConfigError(f"PRETRAIN.MAX_IMAGE_PIXELS is {cfg.PRETRAIN.MAX_IMAGE_PIXELS}; give a pixel count, or 0 for no limit")
    if not 0.0 <= cfg.MODEL.SOCO.MAX_IMAGES_WITHOUT_BOXES <= 1.0:
        raise ConfigError(f"MODEL.SOCO.MAX_IMAGES_WITHOUT_BOXES is {cfg.MODEL.SOCO.MAX_IMAGES_WITHOUT_BOXES}; give a "
                          "fraction of the training images in [0, 1] (default 0.02)")
    health = cfg.PRETRAIN.HEALTH
    if health.PERIOD < 0 or health.KNN_PERIOD < 0:
        raise ConfigError(f"PRETRAIN.HEALTH.PERIOD ({health.PERIOD}) and PRETRAIN.HEALTH.KNN_PERIOD "
                          f"({health.KNN_PERIOD}) must be >= 0 (0 turns the check off)")
    knn_sizes = {k: health[k] for k in ("KNN_BANK", "KNN_QUERIES", "KNN_SIZE", "KNN_K")}
    if health.KNN_PERIOD > 0 and min(knn_sizes.values()) < 1:
        raise ConfigError(f"the kNN monitor (PRETRAIN.HEALTH.KNN_PERIOD > 0) needs PRETRAIN.HEALTH.{', '.join(knn_sizes)} "
                          f">= 1; got {knn_sizes}")
    if cfg.SOLVER.MAX_ITER == 0:
        raise ConfigError(
            "SOLVER.MAX_ITER is 0: set a positive number of iterations, or -1 for PRETRAIN.EPOCHS over the dataset"
        )
    if arch == "CoKe":
        clusters = list(cfg.MODEL.COKE.NUM_CLUSTERS)
        if not clusters or min(clusters) < 1:
            raise ConfigError(f"MODEL.COKE.NUM_CLUSTERS is {clusters}: give one or more positive cluster counts, "
                              "e.g. [3000, 4000, 5000]")
    if arch == "SMoG":
        c = cfg.MODEL.SMOG
        cached = c.RESET_PERIOD * cfg.SOLVER.IMS_PER_BATCH
        if c.NUM_GROUPS < 1 or c.RESET_PERIOD < 1:
            raise ConfigError(f"MODEL.SMOG.NUM_GROUPS ({c.NUM_GROUPS}) and RESET_PERIOD ({c.RESET_PERIOD}) must be >= 1")
        if c.NUM_GROUPS > cached:
            raise ConfigError(
                f"MODEL.SMOG.NUM_GROUPS={c.NUM_GROUPS} is more than the {cached} features that re-group them "
                f"(MODEL.SMOG.RESET_PERIOD {c.RESET_PERIOD} x SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH}); "
                "lower NUM_GROUPS or raise RESET_PERIOD"
            )


def check_dataset_size(cfg: CfgNode, num_images: int) -> None:
    """Raise ConfigError where the method needs more images than the dataset has (CoKe's
    clusters, SMoG's groups); warn when one batch repeats images (SOLVER.IMS_PER_BATCH >
    ``num_images``: the sampler wraps into the next epoch inside the batch)."""
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch == "CoKe" and max(cfg.MODEL.COKE.NUM_CLUSTERS) > num_images:
        raise ConfigError(
            f"MODEL.COKE.NUM_CLUSTERS {list(cfg.MODEL.COKE.NUM_CLUSTERS)} asks for more clusters than the "
            f"{num_images} training images; use at most {num_images} clusters per head"
        )
    if arch == "SMoG" and cfg.MODEL.SMOG.NUM_GROUPS > num_images:
        raise ConfigError(
            f"MODEL.SMOG.NUM_GROUPS={cfg.MODEL.SMOG.NUM_GROUPS} is more than the {num_images} training images; "
            f"use at most {num_images} groups"
        )
    if cfg.SOLVER.IMS_PER_BATCH > num_images:
        logger.warning(
            f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is more than the {num_images} training images: "
            "every batch repeats images (each image is in it about "
            f"{cfg.SOLVER.IMS_PER_BATCH / num_images:.1f} times)"
        )
