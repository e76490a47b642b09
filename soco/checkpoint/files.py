"""Reading pretraining checkpoints and writing converted weights (atomically)."""

import os
import pickle
import zipfile
from dataclasses import dataclass

import torch
from detectron2.config import CfgNode

from ..utils.errors import InputError
from ..utils.files import atomic_write
from .resnet_names import geometry_mismatch

__all__ = ["ConversionError", "PretrainCheckpoint", "load_pretrain_checkpoint", "read_detector_weights",
           "check_resnet_fits", "save_detectron2", "save_torchvision", "save_mmdet"]


class ConversionError(InputError):
    """Weights that cannot be converted or loaded; the message names the file and the reason."""


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


def _describe(data) -> str:
    """A few words on what an unpickled object is (for errors about files that are not weights)."""
    if isinstance(data, dict):
        return f"a dict with keys {sorted(map(str, data))[:5]}"
    return f"a {type(data).__name__}" + (f" of {len(data)} items" if hasattr(data, "__len__") else "")


def read_detector_weights(path: str) -> dict:
    """Name -> shape of the tensors in a fine-tuning ``MODEL.WEIGHTS`` file (Detectron2's ``.pkl``
    of tools/convert_to_d2.py, or a torch ``.pth`` state dict), read as Detectron2 reads it.

    Raises:
        ConversionError: naming the file and what it holds when it is not weights: missing, not a
            pickle (a text file), a list, a proposal file, a pretraining checkpoint to convert first.
    """
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    if path.endswith(".pkl"):
        try:
            with open(path, "rb") as f:
                data = pickle.load(f, encoding="latin1")
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
                IndexError, KeyError) as exc:
            raise ConversionError(f"{path}: not a pickle of weights ({type(exc).__name__}: {exc}); give the .pkl "
                                  "written by tools/convert_to_d2.py") from exc
    else:
        data = _torch_load(path)
    if isinstance(data, dict) and {"ids", "boxes"} <= set(data):
        raise ConversionError(f"{path}: is a proposal file (keys 'ids', 'boxes'), not weights; MODEL.WEIGHTS takes "
                              "the .pkl of tools/convert_to_d2.py (proposals go to MODEL.SOCO.PROPOSALS)")
    if isinstance(data, dict) and isinstance(data.get("cfg"), str) and "PRETRAIN" in data["cfg"]:
        raise ConversionError(f"{path}: is a pretraining checkpoint of tools/pretrain_net.py; convert it first: "
                              f"python tools/convert_to_d2.py {path} OUT.pkl, then MODEL.WEIGHTS OUT.pkl")
    state = data.get("model", data.get("blobs", data)) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state or not all(hasattr(v, "shape") for v in state.values()):
        raise ConversionError(f"{path}: holds {_describe(data)}, not weights (a dict of names -> tensors under "
                              "'model'); give the .pkl written by tools/convert_to_d2.py")
    return {str(k): tuple(v.shape) for k, v in state.items()}


def check_resnet_fits(path: str, shapes: dict, cfg: CfgNode, key: str = "MODEL.WEIGHTS") -> None:
    """Raise ConversionError when the ResNet in ``shapes`` (name -> shape) is not the one ``cfg``
    builds (depth, width), naming both and the keys to set."""
    resnets = cfg.MODEL.RESNETS
    mismatch = geometry_mismatch(shapes, resnets.DEPTH, resnets.RES2_OUT_CHANNELS)
    if mismatch:
        raise ConversionError(
            f"{key} {path}: {mismatch}. Set MODEL.RESNETS.DEPTH and RES2_OUT_CHANNELS to the weights' values "
            "in the config (or give weights of the config's network)"
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
