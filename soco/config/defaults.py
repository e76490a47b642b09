"""`add_pretrain_config`: one entry point that adds the common keys and each method's keys.

Each method keeps its keys (with the paper's defaults) in its own module under `soco.config`;
this module only gathers them. Keys that are not added here are errors when a YAML file or the
command line names them (Detectron2's CfgNode raises ``KeyError: 'Non-existent config key: X'``).
"""

from detectron2.config import CfgNode, get_cfg

from .common import add_common_config
from .method_clsa import add_clsa_config
from .method_coke import add_coke_config
from .method_smog import add_smog_config
from .method_soco import add_soco_config


def add_pretrain_config(cfg: CfgNode) -> CfgNode:
    """Add every pretraining key to ``cfg`` in place (idempotent) and return it."""
    if "PRETRAIN" in cfg:
        return cfg
    add_common_config(cfg)
    add_soco_config(cfg)
    add_coke_config(cfg)
    add_clsa_config(cfg)
    add_smog_config(cfg)
    return cfg


def get_pretrain_cfg() -> CfgNode:
    """A fresh Detectron2 config with all pretraining keys and their defaults."""
    return add_pretrain_config(get_cfg())
