"""Keys of the SMOG method, with the paper's defaults."""

from detectron2.config import CfgNode as CN


def add_smog_config(cfg: CN) -> None:
    cfg.MODEL.SMOG = CN()
