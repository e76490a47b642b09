"""Import a checkpoint of the official SoCo code (hologerry/SoCo ``ckpt_epoch_*.pth``).

Layout of such a file (``main_pretrain.py``'s ``save_checkpoint``): ``opt`` (the run's
``argparse.Namespace``), ``model`` (the DistributedDataParallel state dict, every name prefixed
``module.``), ``optimizer``, ``scheduler``, ``epoch``, optionally ``amp``. Its network
(``contrast/models/SoCo_FPN.py``, ``SoCo_FPN_Star.py``, ``SoCo_C4.py``):

* ``encoder`` / ``encoder_k``: torchvision-named ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``,
  ``layer1.0.downsample.{0,1}``), no classifier;
* ``neck`` / ``neck_k`` (FPN variants): mmdetection's FPN built with BN, ConvModule names
  ``lateral_convs.{i}.conv`` / ``.bn`` and ``fpn_convs.{i}.conv`` / ``.bn``, level i = P(2 +
  start_level + i);
* ``head`` / ``head_k`` (FPN variants): 4conv1fc with ``conv{1-4}``, ``bn{1-4}``, ``fc1``;
* ``projector`` / ``projector_k``, ``predictor``: ``linear1``, ``bn1``, ``linear2``;
* C4: ``queue`` and ``queue_ptr`` buffers (unused by SoCo's loss), ignored here.

The ``*_k`` modules are the EMA target. ``import_official`` renames every tensor to the name
soco's ``SoCo`` meta-architecture gives it (``target.`` for the ``*_k`` copies), picks the matching
soco config (``configs/SoCo/official/*``) and checks the result against ``SoCo`` built from that
config, so ``tools/convert_to_d2.py`` and fine-tuning take the written file like any other.
"""

import argparse
import os
import re
from dataclasses import dataclass, field

import torch

from ..model_zoo import get_config_file
from ..utils.files import atomic_write
from .files import ConversionError
from .resnet_names import detector_name

__all__ = ["OFFICIAL_MODELS", "OfficialImport", "official_tensor_name", "read_official_checkpoint",
           "import_official"]

# Official --model -> (soco variant, soco config of the matching official script per epochs).
OFFICIAL_MODELS = {
    "SoCo_FPN": ("fpn", {100: "SoCo_R50_FPN_100ep.yaml", 400: "SoCo_R50_FPN_400ep.yaml"}),
    "SoCo_FPN_Star": ("fpn", {400: "SoCo_star_R50_FPN_400ep.yaml"}),
    "SoCo_C4": ("c4", {100: "SoCo_R50_C4_100ep.yaml", 400: "SoCo_R50_C4_400ep.yaml"}),
}
IGNORED = ("queue", "queue_ptr")

# torchvision ResNet name -> Detectron2 ResNet name (the inverse of resnet_names' rules).
_RESNET_RULES = [
    (re.compile(r"^conv1\.weight$"), lambda m: "stem.conv1.weight"),
    (re.compile(r"^bn1\.(\w+)$"), lambda m: f"stem.conv1.norm.{m[1]}"),
    (re.compile(r"^layer(\d)\.(\d+)\.conv(\d)\.weight$"), lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight"),
    (re.compile(r"^layer(\d)\.(\d+)\.bn(\d)\.(\w+)$"), lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.0\.weight$"), lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.weight"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.1\.(\w+)$"), lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}"),
]
_NECK = re.compile(r"^(lateral_convs|fpn_convs)\.(\d+)\.(conv|bn)\.(\w+)$")
_HEAD = re.compile(r"^(conv|bn)([1-4])\.(\w+)$|^fc1\.(\w+)$")
_MLP = {"linear1": "0", "bn1": "1", "linear2": "3"}


def official_tensor_name(name: str, variant: str, fpn_start_level: int = 0) -> str:
    """An official state-dict name (without ``module.``) -> soco's ``SoCo`` name.

    ``encoder.layer1.0.bn1.weight`` -> ``backbone.bottom_up.res2.0.conv1.norm.weight`` (FPN) or
    ``backbone.res2.0.conv1.norm.weight`` (C4; ``layer4`` -> ``roi_heads.res5.*``);
    ``neck.lateral_convs.0.bn.weight`` -> ``backbone.fpn_lateral2.norm.weight``;
    ``head.bn1.weight`` -> ``roi_heads.box_head.conv1.norm.weight``;
    ``projector.linear2.bias`` -> ``projector.3.bias``; ``*_k`` modules -> ``target.*``.
    Raises ConversionError for a name outside that layout.
    """
    module, _, rest = name.partition(".")
    target = module.endswith("_k")
    base = module[:-2] if target else module
    prefix = "target." if target else ""
    out = None
    if base == "encoder":
        for pattern, rule in _RESNET_RULES:
            m = pattern.match(rest)
            if m:
                out = detector_name(rule(m), variant)
                break
    elif base == "neck" and variant == "fpn":
        m = _NECK.match(rest)
        if m:
            kind = "fpn_lateral" if m[1] == "lateral_convs" else "fpn_output"
            suffix = m[4] if m[3] == "conv" else f"norm.{m[4]}"
            out = f"backbone.{kind}{2 + fpn_start_level + int(m[2])}.{suffix}"
    elif base == "head" and variant == "fpn":
        m = _HEAD.match(rest)
        if m:
            out = f"roi_heads.box_head.fc1.{m[4]}" if m[4] else (
                f"roi_heads.box_head.conv{m[2]}.{m[3]}" if m[1] == "conv" else f"roi_heads.box_head.conv{m[2]}.norm.{m[3]}")
    elif base in ("projector", "predictor") and not (target and base == "predictor"):
        layer, _, param = rest.partition(".")
        if layer in _MLP and param:
            out = f"{base}.{_MLP[layer]}.{param}"
    if out is None:
        raise ConversionError(f"'{name}' is not a tensor of the official SoCo {variant.upper()} model")
    return prefix + out


def read_official_checkpoint(path: str) -> dict:
    """The file's dict (``opt``, ``model``, ...) with clear errors for missing or foreign files.

    Loaded with ``weights_only=True`` plus ``argparse.Namespace`` (the official ``opt``) allowed,
    so a downloaded file cannot run code.
    """
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ConversionError(
            f"{path}: not a readable official SoCo checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ConversionError(f"{path}: has no 'model' state dict; expected an official ckpt_epoch_*.pth")
    opt = data.get("opt")
    if not isinstance(opt, argparse.Namespace) or not hasattr(opt, "model"):
        raise ConversionError(
            f"{path}: has no 'opt' (the official run's argparse.Namespace with --model); "
            "is it a checkpoint of tools/pretrain_net.py? That one needs no import"
        )
    if opt.model not in OFFICIAL_MODELS:
        raise ConversionError(f"{path}: opt.model '{opt.model}' is not one of {sorted(OFFICIAL_MODELS)}")
    return data


@dataclass
class OfficialImport:
    """What ``import_official`` wrote: the soco state dict, its config, and what was left out."""

    state: dict
    cfg: object
    config_file: str
    ignored: list = field(default_factory=list)

    def summary(self) -> str:
        online = sum(1 for k in self.state if not k.startswith("target."))
        return (f"imported {len(self.state)} tensors ({online} online, {len(self.state) - online} target) "
                f"as MODEL.SOCO.VARIANT {self.cfg.MODEL.SOCO.VARIANT}, config {self.config_file}; "
                f"ignored: {', '.join(self.ignored) or 'nothing'}")


def _config_for(path: str, opt: argparse.Namespace):
    from soco.config.defaults import load_pretrain_config  # reading configs needs every method's keys

    variant, by_epochs = OFFICIAL_MODELS[opt.model]
    epochs = int(getattr(opt, "epochs", 0) or 0)
    name = by_epochs.get(epochs) or by_epochs[max(by_epochs)]
    depth = {"resnet50": 50, "resnet101": 101, "resnet152": 152}.get(getattr(opt, "arch", "resnet50"))
    if depth is None:
        raise ConversionError(f"{path}: opt.arch '{opt.arch}' has no Detectron2 counterpart (resnet50/101/152)")
    config_name = f"SoCo/official/{name}"
    opts = ["MODEL.RESNETS.DEPTH", str(depth)]
    if epochs:
        opts += ["PRETRAIN.EPOCHS", str(epochs)]
    return load_pretrain_config(get_config_file(config_name), opts), variant, f"configs/{config_name}"


def import_official(input_path: str, output_path: str, verify: bool = True) -> OfficialImport:
    """Read an official checkpoint, rename it for soco and write ``output_path`` atomically as a
    soco pretraining checkpoint (``{"model", "cfg", "iteration"}``, what tools/pretrain_net.py
    writes). ``verify`` checks the names and shapes against ``SoCo`` built from the config."""
    data = read_official_checkpoint(input_path)
    opt = data["opt"]
    cfg, variant, config_file = _config_for(input_path, opt)
    start = int(getattr(opt, "start_level", 0)) if variant == "fpn" else 0
    state, ignored = {}, []
    for name, tensor in data["model"].items():
        name = name[len("module."):] if name.startswith("module.") else name
        if name in IGNORED:
            ignored.append(name)
            continue
        if not torch.is_tensor(tensor):
            raise ConversionError(f"{input_path}: model entry '{name}' is not a tensor")
        state[official_tensor_name(name, variant, start)] = tensor
    result = OfficialImport(state=state, cfg=cfg, config_file=config_file, ignored=ignored)
    if verify:
        from .export import check_architecture
        from .files import PretrainCheckpoint

        ckpt = PretrainCheckpoint(path=input_path, state=state, cfg=cfg, iteration=-1)
        check_architecture(ckpt)
    payload = {"model": state, "cfg": cfg.dump(), "iteration": -1,
               "official": {"epoch": int(data.get("epoch", -1)), "model": opt.model}}
    atomic_write(output_path, lambda f: torch.save(payload, f))
    return result
