"""`add_pretrain_config`: one entry point that adds the common keys and each method's keys.

Each method keeps its keys (with the paper's defaults) in its own module under `soco.config`;
this module only gathers them. Keys that are not added here are errors when a YAML file or the
command line names them (Detectron2's CfgNode raises ``KeyError: 'Non-existent config key: X'``).
"""

import os
from typing import Sequence

from detectron2.config import CfgNode, get_cfg

from ..utils.errors import ConfigError, ConfigKeyError
from .common import add_common_config
from .method_clsa import add_clsa_config
from .method_coke import add_coke_config
from .method_smog import add_smog_config
from .method_soco import add_soco_config
from .validation import check_config


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
    """Defaults, then ``config_file`` (with ``_BASE_`` inheritance), then ``KEY VALUE`` pairs,
    then the checks of ``soco.config.validation.check_config`` (choices, contradictions).

    Raises ``ConfigKeyError`` (a ``KeyError``) naming the key (and the file) for a key that does
    not exist, and ``ConfigError`` (a ``ValueError``) naming the key for a value of the wrong type,
    out of its choices, or contradicting another key.
    """
    cfg = get_pretrain_cfg()
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"config file {config_file} does not exist")
        try:
            cfg.merge_from_file(config_file)
        except KeyError as e:
            raise ConfigKeyError(f"{config_file}: {e.args[0] if e.args else e}") from e
        except ValueError as e:
            raise ConfigError(f"{config_file}: {e.args[0] if e.args else e}") from e
    if len(opts) % 2:
        raise ConfigError(f"command-line overrides must be KEY VALUE pairs, got an odd list: {list(opts)}")
    try:
        cfg.merge_from_list(list(opts))
    except AssertionError as e:  # yacs reports a missing key by a bare assertion
        raise ConfigKeyError(f"command line: {e}") from None
    except ValueError as e:
        raise ConfigError(f"command line: {e}") from None
    check_config(cfg)
    return cfg
