"""`add_pretrain_config`: one entry point that adds the common keys and each method's keys.

Each method keeps its keys (with the paper's defaults) in its own module under `soco.config`;
this module only gathers them. Keys that are not added here are errors when a YAML file or the
command line names them (Detectron2's CfgNode raises ``KeyError: 'Non-existent config key: X'``).
"""

from typing import Sequence

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


def load_pretrain_config(config_file: str = "", opts: Sequence[str] = ()) -> CfgNode:
    """Defaults, then ``config_file`` (with ``_BASE_`` inheritance), then ``KEY VALUE`` pairs.

    Raises ``KeyError`` naming the key (and the file) for a key that does not exist, and
    ``ValueError`` naming the key for a value of the wrong type.
    """
    cfg = get_pretrain_cfg()
    if config_file:
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, ValueError) as e:
            raise type(e)(f"{config_file}: {e.args[0] if e.args else e}") from e
    if len(opts) % 2:
        raise ValueError(f"command-line overrides must be KEY VALUE pairs, got an odd list: {list(opts)}")
    try:
        cfg.merge_from_list(list(opts))
    except AssertionError as e:  # yacs reports a missing key by a bare assertion
        raise KeyError(f"command line: {e}") from None
    return cfg
