"""Select the transferable tensors of a pretraining checkpoint and name them for Detectron2 or
torchvision.

Every method declares what it exports (``export_spec(cfg)`` on its meta-architecture class:
part -> [(prefix in the online state dict, prefix in a stock Detectron2 detector)]), so this
module has no branch per method. Parts ``backbone`` and ``res5`` hold the ResNet; their tensors
can be re-placed for another detector layout (``fpn``/``c4``) or renamed for torchvision. Other
parts (``fpn``, ``head``) only exist in the layout the method was pretrained with.
"""

import re
from collections import Counter
from dataclasses import dataclass, field

import torch
from detectron2.modeling import META_ARCH_REGISTRY

from ..modeling.meta_arch import build_pretrain_model
from .files import ConversionError, PretrainCheckpoint
from .resnet_names import (
    LAYOUTS,
    NameMappingError,
    detector_name,
    layout_of,
    resnet_name,
    torchvision_name,
)

NETWORKS = ("online", "target")
TARGET_PREFIX = "target."
RESNET_PARTS = ("backbone", "res5")


@dataclass
class Export:
    """Converted tensors (output name -> tensor) and what happened to the rest."""

    tensors: dict
    source: dict  # output name -> key in the checkpoint
    part: dict  # output name -> part ("backbone", "res5", "fpn", "head", ...)
    left_out: Counter = field(default_factory=Counter)  # reason -> number of tensors
    notes: list = field(default_factory=list)

    def summary(self) -> str:
        """Human-readable lines: exported tensors per part, then what was left out and why."""
        values = sum(t.numel() for t in self.tensors.values())
        lines = [f"exported {len(self.tensors)} tensors ({values / 1e6:.2f} M values):"]
        lines += [f"  {part:<10} {n:>5}" for part, n in sorted(Counter(self.part.values()).items())]
        if self.left_out:
            lines.append(f"left out {sum(self.left_out.values())} tensors:")
            lines += [f"  {n:>5}  {reason}" for reason, n in sorted(self.left_out.items())]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def method_class(ckpt: PretrainCheckpoint):
    """The registered meta-architecture class of the checkpoint's method."""
    name = ckpt.method
    try:
        cls = META_ARCH_REGISTRY.get(name)
    except KeyError:
        raise ConversionError(
            f"{ckpt.path}: MODEL.META_ARCHITECTURE '{name}' is not a registered method "
            f"(registered: {', '.join(sorted(n for n, _ in META_ARCH_REGISTRY))})"
        ) from None
    if not hasattr(cls, "export_spec"):
        raise ConversionError(
            f"{ckpt.path}: '{name}' is not a pretraining method (it has no export_spec); "
            "a detector checkpoint needs no conversion"
        )
    return cls


def check_architecture(ckpt: PretrainCheckpoint) -> None:
    """Fail if the checkpoint's tensors are not those of its method built from the checkpoint's own
    config (another depth or width, a file of another model, an edited config)."""
    cfg = ckpt.cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    try:
        with torch.no_grad():
            # The run's dataset size is recorded in its resolved config (CoKe sizes buffers by it).
            model = build_pretrain_model(cfg, cfg.PRETRAIN.NUM_IMAGES)
            expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    except (ValueError, KeyError, AssertionError) as exc:
        raise ConversionError(
            f"{ckpt.path}: cannot build {ckpt.method} from the checkpoint's own cfg to check its "
            f"tensors ({type(exc).__name__}: {exc}); --no-verify skips the check"
        ) from exc
    found = {k: tuple(v.shape) for k, v in ckpt.state.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if not (missing or unexpected or wrong):
        return
    problems = []
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} shapes differ (e.g. {k}: {found[k]} in the file, "
                        f"{expected[k]} from the config)")
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
    resnets = ckpt.cfg.MODEL.RESNETS
    raise ConversionError(
        f"{ckpt.path}: architecture mismatch: its tensors are not those of a {ckpt.method} "
        f"built from its own cfg (MODEL.RESNETS.DEPTH={resnets.DEPTH}, "
        f"RES2_OUT_CHANNELS={resnets.RES2_OUT_CHANNELS}): " + "; ".join(problems)
    )


def network_state(ckpt: PretrainCheckpoint, network: str) -> tuple:
    """(the chosen network's tensors under online names, count of the other network's)."""
    if network not in NETWORKS:
        raise ConversionError(f"unknown network '{network}' (choose from {', '.join(NETWORKS)})")
    target = {k[len(TARGET_PREFIX):]: v for k, v in ckpt.state.items()
              if k.startswith(TARGET_PREFIX)}
    online = {k: v for k, v in ckpt.state.items() if not k.startswith(TARGET_PREFIX)}
    if network == "online":
        return online, len(target)
    if not target:
        raise ConversionError(
            f"{ckpt.path}: --network target asked, but the checkpoint has no "
            f"'{TARGET_PREFIX}*' tensors ({ckpt.method} keeps no EMA network here)"
        )
    return target, len(online)


def _match(name: str, spec: dict):
    """(part, online prefix, detector prefix) of the longest declared prefix of ``name``."""
    best = None
    for part, pairs in spec.items():
        for src, dst in pairs:
            if name.startswith(src) and (best is None or len(src) > len(best[1])):
                best = (part, src, dst)
    return best


def _parts_to_export(include, declared: list, path: str) -> list:
    if include is None:
        return declared
    wanted = [p for p in include if p not in ("", "none")]
    optional = [p for p in declared if p not in RESNET_PARTS]
    unknown = [p for p in wanted if p not in optional]
    if unknown:
        raise ConversionError(
            f"{path}: --include {','.join(unknown)}: not an optional part of this method "
            f"(optional parts: {', '.join(optional) or 'none'}; the ResNet is always exported)"
        )
    return [p for p in declared if p in RESNET_PARTS or p in wanted]


def select(ckpt: PretrainCheckpoint, network: str = "online", include=None,
           verify: bool = True) -> Export:
    """The chosen network's declared parts, named as in the method's own detector layout.

    ``include``: optional parts to keep besides the ResNet (``["fpn", "head"]``; ``None``: all
    the method declares). ``verify``: check the tensors against the method built from its cfg.
    """
    cls = method_class(ckpt)
    if verify:
        check_architecture(ckpt)
    spec = cls.export_spec(ckpt.cfg)
    if "backbone" not in spec:
        raise ConversionError(f"{ckpt.method}.export_spec declares no 'backbone' part: {spec}")
    parts = _parts_to_export(include, list(spec), ckpt.path)
    state, other_count = network_state(ckpt, network)
    export = Export(tensors={}, source={}, part={})
    if other_count:
        other = "target (EMA) network 'target.*'" if network == "online" else "online network"
        export.left_out[other] = other_count

    matched = set()
    for name, tensor in state.items():
        hit = _match(name, spec)
        if hit is None:
            # Projector, predictor and method state (queues, centres, counters): grouped by
            # their top-level name, which is what a reader recognises.
            export.left_out[f"{name.split('.')[0]}{'.*' if '.' in name else ''}"] += 1
            continue
        part, src, dst = hit
        matched.add(src)
        if part not in parts:
            export.left_out[f"part '{part}' (not in --include)"] += 1
            continue
        out = dst + name[len(src):]
        export.tensors[out] = tensor
        export.source[out] = (TARGET_PREFIX if network == "target" else "") + name
        export.part[out] = part
    absent = sorted({src for part in parts for src, _ in spec[part]} - matched)
    if absent:
        raise ConversionError(
            f"{ckpt.path}: architecture mismatch: {ckpt.method} exports '{absent[0]}*' but the "
            f"{network} network of the checkpoint has no such tensors"
        )
    return export


def relayout(export: Export, layout: str, explicit_parts: bool = False) -> Export:
    """Re-place the ResNet for a detector of ``layout`` ("fpn" or "c4").

    Parts that only exist in the method's own layout (an FPN, a 4conv1fc head) are dropped with a
    note, or refused when they were asked for explicitly (``explicit_parts``).
    """
    if layout not in LAYOUTS:
        raise ConversionError(f"unknown layout '{layout}' (choose from {', '.join(LAYOUTS)})")
    try:
        own = layout_of(n for n, p in export.part.items() if p in RESNET_PARTS)
    except NameMappingError as exc:
        raise ConversionError(f"--layout {layout}: {exc}") from None
    if own == layout:
        return export
    others = sorted({p for p in export.part.values() if p not in RESNET_PARTS})
    if others and explicit_parts:
        raise ConversionError(
            f"--layout {layout}: the parts {', '.join(others)} belong to a {own} detector and "
            f"have no place in a {layout} one; drop them from --include"
        )
    def place(name):
        new = detector_name(resnet_name(name), layout)
        return new, "res5" if new.startswith("roi_heads.res5.") else "backbone"

    moved = _renamed_resnet(export, place, f"no place in a {layout} detector")
    moved.notes.append(f"ResNet re-placed from the method's {own} layout to {layout}")
    return moved


def to_torchvision(export: Export, cfg) -> Export:
    """Rename the ResNet for torchvision's ``resnet<depth>``; other parts are left out.

    torchvision puts the stride of a bottleneck on its 3x3 conv and has no dilated res5, so a
    ResNet built otherwise would load but compute something else: refused.
    """
    resnets = cfg.MODEL.RESNETS
    if resnets.DEPTH >= 50 and resnets.STRIDE_IN_1X1:
        raise ConversionError(
            "torchvision format: the network was built with MODEL.RESNETS.STRIDE_IN_1X1=True "
            "(stride on the 1x1 conv, MSRA style); torchvision strides the 3x3 conv"
        )
    if resnets.RES5_DILATION != 1 or resnets.NUM_GROUPS != 1 or resnets.WIDTH_PER_GROUP != 64:
        raise ConversionError(
            "torchvision format: only plain ResNets convert (RES5_DILATION 1, NUM_GROUPS 1, "
            f"WIDTH_PER_GROUP 64; got {resnets.RES5_DILATION}, {resnets.NUM_GROUPS}, "
            f"{resnets.WIDTH_PER_GROUP})"
        )
    def rename(name):
        try:
            return torchvision_name(resnet_name(name)), "backbone"
        except NameMappingError as exc:
            raise ConversionError(f"torchvision format: {exc}") from None

    out = _renamed_resnet(export, rename, "not in a torchvision ResNet")
    _fit_torchvision(out.tensors, resnets.DEPTH)
    out.notes.append(f"torchvision resnet{resnets.DEPTH} without its classifier: load with "
                     "strict=False (missing: fc.weight, fc.bias) or after model.fc = Identity()")
    return out


# mmdetection's names (mmdet/models/backbones/resnet.py: ``conv1``, ``bn1``, ``layer{1-4}.{i}.
# conv{1-3}`` / ``bn{1-3}`` / ``downsample.{0,1}``, i.e. torchvision's; mmdet/models/necks/fpn.py:
# ``lateral_convs.{i}`` / ``fpn_convs.{i}``, i = level - 2 for P2..P5; mmdet/models/roi_heads/
# bbox_heads/convfc_bbox_head.py: ``shared_convs.{j}``, ``shared_fcs.{j}``; mmcv's ConvModule:
# ``.conv`` and the norm named by build_norm_layer, "bn" for BN/SyncBN, "gn" for GN), as the
# official convert_mmdetection_Backbone/Head scripts write them.
_MMDET_FPN = re.compile(r"^backbone\.fpn_(lateral|output)(\d)\.(norm\.)?(\w+)$")
_MMDET_HEAD = re.compile(r"^roi_heads\.box_head\.(conv|fc)(\d+)\.(norm\.)?(\w+)$")
_MMDET_NORM = {"BN": "bn", "SyncBN": "bn", "GN": "gn"}


def mmdet_name(name: str, part: str, fpn_norm: str = "bn", head_norm: str = "bn") -> str:
    """A Detectron2 detector name (``export.tensors`` key) -> mmdetection's name."""
    if part in RESNET_PARTS:
        return "backbone." + torchvision_name(resnet_name(name))
    match = _MMDET_FPN.match(name) if part == "fpn" else _MMDET_HEAD.match(name) if part == "head" else None
    if match is None:
        raise NameMappingError(f"'{name}' (part '{part}') has no mmdetection counterpart")
    kind, index, norm, param = match.groups()
    if part == "fpn":
        module = f"neck.{'lateral_convs' if kind == 'lateral' else 'fpn_convs'}.{int(index) - 2}"
        return f"{module}.{fpn_norm if norm else 'conv'}.{param}"
    if kind == "fc":
        return f"roi_head.bbox_head.shared_fcs.{int(index) - 1}.{param}"
    return f"roi_head.bbox_head.shared_convs.{int(index) - 1}.{head_norm if norm else 'conv'}.{param}"


def to_mmdet(export: Export, cfg) -> Export:
    """Rename every exported tensor for mmdetection (ResNet ``backbone.*``, FPN ``neck.*``, the
    4conv1fc head ``roi_head.bbox_head.shared_convs/shared_fcs.*``). A C4 ResNet's res5 goes to
    ``backbone.layer4`` as the official converter puts it (an mmdet C4 detector's
    ``roi_head.shared_head.layer4`` loads it with its own init_cfg mapping)."""
    norms = {}
    for key, part, norm in (("fpn_norm", "fpn", cfg.MODEL.FPN.NORM), ("head_norm", "head", cfg.MODEL.ROI_BOX_HEAD.NORM)):
        if part in export.part.values() and norm and norm not in _MMDET_NORM:
            raise ConversionError(f"mmdet format: the {part}'s norm '{norm}' has no mmdetection name "
                                  f"(supported: {', '.join(_MMDET_NORM)})")
        norms[key] = _MMDET_NORM.get(norm, "bn")
    out = Export(tensors={}, source={}, part={}, left_out=Counter(export.left_out), notes=list(export.notes))
    for name, tensor in export.tensors.items():
        part = export.part[name]
        try:
            new = mmdet_name(name, part, **norms)
        except NameMappingError as exc:
            raise ConversionError(f"mmdet format: {exc}") from None
        out.tensors[new] = tensor
        out.source[new] = export.source[name]
        out.part[new] = part
    out.notes.append("mmdetection names (load with init_cfg=dict(type='Pretrained', checkpoint=...) "
                     "or load_from)")
    return out


def _renamed_resnet(export: Export, rename, elsewhere: str) -> Export:
    """A copy of ``export`` whose ResNet tensors are renamed by ``rename(name) -> (new name,
    part)``; tensors of other parts are left out, counted under the reason ``elsewhere``."""
    out = Export(tensors={}, source={}, part={}, left_out=Counter(export.left_out),
                 notes=list(export.notes))
    for name, tensor in export.tensors.items():
        part = export.part[name]
        if part not in RESNET_PARTS:
            out.left_out[f"part '{part}' ({elsewhere})"] += 1
            continue
        new, new_part = rename(name)
        out.tensors[new] = tensor
        out.source[new] = export.source[name]
        out.part[new] = new_part
    return out


def _fit_torchvision(tensors: dict, depth: int) -> None:
    """Check ``tensors`` against torchvision's resnet<depth> (classifier aside), adding the BN
    step counters that a frozen BN does not keep."""
    import torchvision

    builder = getattr(torchvision.models, f"resnet{depth}", None)
    if builder is None:
        raise ConversionError(f"torchvision format: torchvision has no resnet{depth}")
    model = builder(weights=None)
    model.fc = torch.nn.Identity()
    wanted = model.state_dict()
    for name in wanted:
        if name.endswith(".num_batches_tracked") and name not in tensors:
            tensors[name] = torch.zeros((), dtype=torch.long)
    missing = sorted(set(wanted) - set(tensors))
    unexpected = sorted(set(tensors) - set(wanted))
    wrong = sorted(k for k in set(wanted) & set(tensors) if wanted[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        raise ConversionError(
            f"torchvision format: the ResNet does not fit torchvision's resnet{depth}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, shapes differ {wrong[:3]}"
        )
