"""Configuration: Detectron2's CfgNode extended with every key the pretraining methods use."""

from .defaults import add_pretrain_config, get_pretrain_cfg, load_pretrain_config

__all__ = ["add_pretrain_config", "get_pretrain_cfg", "load_pretrain_config"]
