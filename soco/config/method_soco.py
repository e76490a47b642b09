"""Keys of the SOCO method, with the paper's defaults."""

from detectron2.config import CfgNode as CN


def add_soco_config(cfg: CN) -> None:
    cfg.MODEL.SOCO = CN()
