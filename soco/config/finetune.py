"""The Detectron2 fine-tuning config as a run builds it (tools/finetune_net.py, the item probe)."""

import torch
from detectron2.config import CfgNode, get_cfg

__all__ = ["NORM_NODES", "use_plain_bn", "build_finetune_config"]

NORM_NODES = ("RESNETS", "FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD")


def use_plain_bn(cfg: CfgNode) -> None:
    """SyncBN -> BN in every layer, in place (same computation with one process; SyncBN needs DDP)."""
    for node in NORM_NODES:
        if cfg.MODEL[node].NORM == "SyncBN":
            cfg.MODEL[node].NORM = "BN"


def build_finetune_config(config_file: str, opts=(), world_size: int = 1) -> CfgNode:
    """Detectron2 config from ``config_file`` and KEY VALUE ``opts``, adjusted for the run:
    plain BN with one process, MODEL.DEVICE cpu without CUDA."""
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if world_size == 1:
        use_plain_bn(cfg)
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    return cfg
