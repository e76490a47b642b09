"""Reading pretraining checkpoints and writing converted weights (atomically)."""

import os
import pickle
import zipfile
from dataclasses import dataclass

import torch
from detectron2.config import CfgNode

from ..utils.files import atomic_write


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the file and the reason."""


@dataclass
class PretrainCheckpoint:
    """A pretraining checkpoint written by Detectron2's ``DetectionCheckpointer``.

    ``state``: the full model state dict (online network, ``target.`` network, heads, buffers);
    ``cfg``: the pretraining config rebuilt from the checkpoint's ``"cfg"`` YAML string.
    """

    path: str
    state: dict
    cfg: CfgNode
    iteration: int

    @property
    def method(self) -> str:
        return self.cfg.MODEL.META_ARCHITECTURE


def _torch_load(path: str) -> dict:
    if not zipfile.is_zipfile(path):
        # torch.save has written zip archives since torch 1.6; anything else (random bytes, a
        # Detectron2 .pkl, a text file) would only produce torch's advice to drop weights_only.
        raise ConversionError(
            f"{path}: cannot be read, the file is truncated or not a torch checkpoint (torch.save "
            "writes a zip archive, this file is not one); give a model_*.pth of tools/pretrain_net.py"
        )
    try:
        # weights_only: a checkpoint holds tensors, numbers and strings; refusing arbitrary
        # objects keeps a downloaded checkpoint from running code.
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise ConversionError(
                f"{path}: holds Python objects other than tensors, numbers and strings, so it "
                f"was not loaded (torch.load weights_only=True): {str(exc).splitlines()[0]}"
            ) from exc
        raise ConversionError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    except (EOFError, RuntimeError, OSError, ValueError) as exc:
        raise ConversionError(
            f"{path}: cannot be read, the file is truncated or not a torch checkpoint "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc


def _config_from_yaml(path: str, yaml_text: str) -> CfgNode:
    # Imported here: soco.config pulls in every method's keys, which is only needed for reading.
    from soco.config import get_pretrain_cfg

    cfg = get_pretrain_cfg()
    try:
        cfg.merge_from_other_cfg(CfgNode.load_cfg(yaml_text))
    except (KeyError, ValueError, TypeError) as exc:
        raise ConversionError(
            f"{path}: its 'cfg' does not fit this version of soco's config ({exc})"
        ) from exc
    return cfg


def load_pretrain_checkpoint(path: str) -> PretrainCheckpoint:
    """Read ``path`` (``model_*.pth`` of ``tools/pretrain_net.py``) with clear errors for missing,
    truncated or foreign files."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    data = _torch_load(path)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ConversionError(
            f"{path}: has no 'model' state dict; expected a DetectionCheckpointer file written "
            "by tools/pretrain_net.py"
        )
    if not isinstance(data.get("cfg"), str):
        raise ConversionError(
            f"{path}: has no 'cfg' entry (the pretraining config as a YAML string), so its "
            "method and architecture are unknown; expected a checkpoint of tools/pretrain_net.py"
        )
    state = {k[len("module."):] if k.startswith("module.") else k: v
             for k, v in data["model"].items()}
    return PretrainCheckpoint(
        path=path,
        state=state,
        cfg=_config_from_yaml(path, data["cfg"]),
        iteration=int(data.get("iteration", -1)),
    )


def save_detectron2(tensors: dict, path: str) -> None:
    """Write Detectron2's model-zoo pickle: names -> numpy arrays, loaded by name as they are."""
    payload = {
        "model": {k: v.detach().cpu().numpy() for k, v in tensors.items()},
        "__author__": "soco",
        "matching_heuristics": False,
    }
    atomic_write(path, lambda f: pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL))


def save_torchvision(tensors: dict, path: str) -> None:
    """Write a torchvision ``state_dict`` (``torch.save`` of name -> tensor)."""
    state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda f: torch.save(state, f))


def save_mmdet(tensors: dict, path: str) -> None:
    """Write an mmdetection checkpoint (``{"state_dict": names -> tensors, "meta": {}}``, the
    layout of the official convert_mmdetection_* scripts)."""
    payload = {"state_dict": {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
               "meta": {"converted_by": "soco"}}
    atomic_write(path, lambda f: torch.save(payload, f))
