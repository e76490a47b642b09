"""Configuration: Detectron2's CfgNode extended with every key the pretraining methods use."""

from .defaults import add_pretrain_config, get_pretrain_cfg

__all__ = ["add_pretrain_config", "get_pretrain_cfg"]
