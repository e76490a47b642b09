"""One call from a pretraining checkpoint to a Detectron2 ``.pkl`` or a torchvision state dict."""

import os

from .export import Export, relayout, select, to_mmdet, to_torchvision
from .files import ConversionError, load_pretrain_checkpoint, save_detectron2, save_mmdet, save_torchvision

FORMATS = ("d2", "torchvision", "mmdet")


def convert(input_path: str, output_path: str, network: str = "online", include=None,
            fmt: str = "d2", layout: str = None, verify: bool = True) -> Export:
    """Convert ``input_path`` and write ``output_path`` atomically; return what was exported.

    network: "online" (default, as the official SoCo converter) or "target" (the EMA network).
    include: optional parts besides the ResNet (e.g. ["fpn", "head"]); None: all declared.
    fmt: "d2" (Detectron2 model-zoo pickle), "torchvision" (``resnet<depth>`` state dict) or
    "mmdet" (mmdetection ``{"state_dict", "meta"}``: ResNet, FPN neck and shared 4conv1fc head).
    layout: "fpn" or "c4" to place the ResNet for that detector; None: the method's own.
    verify: check the checkpoint against the method built from its own config first.
    """
    if fmt not in FORMATS:
        raise ConversionError(f"unknown format '{fmt}' (choose from {', '.join(FORMATS)})")
    if os.path.exists(input_path) and os.path.exists(output_path) and os.path.samefile(input_path, output_path):
        raise ConversionError(
            f"{output_path}: the output is the input checkpoint, which converting would destroy; "
            "give another output file (e.g. .pkl for Detectron2)"
        )
    ckpt = load_pretrain_checkpoint(input_path)
    export = select(ckpt, network=network, include=include, verify=verify)
    if fmt == "torchvision":
        export = to_torchvision(export, ckpt.cfg)
        save_torchvision(export.tensors, output_path)
    elif fmt == "mmdet":
        export = to_mmdet(export, ckpt.cfg)
        save_mmdet(export.tensors, output_path)
    else:
        if layout is not None:
            export = relayout(export, layout, explicit_parts=include is not None)
        save_detectron2(export.tensors, output_path)
    return export
