"""The project's YAML configs, found by name wherever soco is installed::

    from soco import model_zoo
    from soco.config import load_pretrain_config

    cfg = load_pretrain_config(model_zoo.get_config_file("SoCo/SoCo_R50_FPN_100ep.yaml"))

The files live in ``configs/`` at the repository root, where users look for them. Building the
package (``setup.py``, also for ``pip install .``) ships that folder inside it as
``soco/model_zoo/configs``, as Detectron2 ships its model zoo, so an installed wheel carries them;
``_BASE_`` references resolve there as in the checkout. From a checkout that was not built,
the root's ``configs/`` is used.
"""

import os
from typing import List

from ..utils.paths import PACKAGE_PARENT

__all__ = ["config_root", "get_config_file", "list_configs"]

_PACKAGED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
_CHECKOUT = os.path.join(PACKAGE_PARENT, "configs")


def config_root() -> str:
    """The folder holding the configs: the package's copy, else the checkout's ``configs/``."""
    for root in (_PACKAGED, _CHECKOUT):
        if os.path.isdir(root):
            return root
    raise FileNotFoundError(
        f"soco's configs are neither in the package ({_PACKAGED}) nor in a checkout ({_CHECKOUT}); "
        "reinstall soco (pip install .) so that the wheel carries them"
    )


def list_configs() -> List[str]:
    """Every config's name relative to the root, '/'-separated and sorted (e.g. 'SoCo/official/...')."""
    root = config_root()
    names = []
    for folder, _, files in os.walk(root, followlinks=True):
        names += [os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/") for f in files if f.endswith(".yaml")]
    return sorted(names)


def get_config_file(config_path: str) -> str:
    """The absolute path of the config named ``config_path`` relative to ``configs/`` (e.g.
    ``"SoCo/SoCo_R50_FPN_100ep.yaml"``, ``"finetune/faster_rcnn_R18_FPN_demo_cpu.yaml"``).

    Raises FileNotFoundError naming it and the root searched when there is no such config."""
    root = config_root()
    path = os.path.normpath(os.path.join(root, config_path))
    if os.path.isabs(config_path) or not path.startswith(root + os.sep) or not os.path.isfile(path):
        raise FileNotFoundError(
            f"{config_path!r} is not one of soco's configs under {root} "
            "(names are relative to configs/, e.g. 'SoCo/SoCo_R50_FPN_100ep.yaml'; soco.model_zoo.list_configs() lists them)"
        )
    return path
