"""Keys of the CLSA method, with the paper's defaults."""

from detectron2.config import CfgNode as CN


def add_clsa_config(cfg: CN) -> None:
    cfg.MODEL.CLSA = CN()
