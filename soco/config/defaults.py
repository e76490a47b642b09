"""`add_pretrain_config`: one entry point that adds the common keys and each method's keys.

Each method keeps its keys (with the paper's defaults) in its own module under `soco.config`,
``method_<name>.py`` with a function ``add_<name>_config(cfg)``; this module finds and calls them
all (a new method's module needs no line here). Keys that are not added here are errors when a YAML file or the
command line names them (Detectron2's CfgNode raises ``KeyError: 'Non-existent config key: X'``).
"""

import os
from typing import Sequence

from detectron2.config import CfgNode, get_cfg

from ..utils.errors import ConfigError, ConfigKeyError
from ..utils.modules import import_submodules
from .common import add_common_config
from .validation import check_config


def method_config_adders():
    """``add_<name>_config`` of every ``soco/config/method_<name>.py``, in module name order."""
    adders = []
    for module in import_submodules(__package__, prefix="method_"):
        name = f"add_{module.__name__.rpartition('.method_')[2]}_config"
        if not callable(getattr(module, name, None)):
            raise AttributeError(f"{module.__file__}: a method's config module must define {name}(cfg)")
        adders.append(getattr(module, name))
    return adders


def add_pretrain_config(cfg: CfgNode) -> CfgNode:
    """Add every pretraining key to ``cfg`` in place (idempotent) and return it."""
    if "PRETRAIN" in cfg:
        return cfg
    add_common_config(cfg)
    for add_method_config in method_config_adders():
        add_method_config(cfg)
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
