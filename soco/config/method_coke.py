"""Keys of the COKE method, with the paper's defaults."""

from detectron2.config import CfgNode as CN


def add_coke_config(cfg: CN) -> None:
    cfg.MODEL.COKE = CN()
