"""Names of ResNet tensors in a Detectron2 detector and in torchvision.

Detectron2's ResNet (``build_resnet_backbone``) names tensors ``stem.conv1.*``, ``res2.0.conv1.*``,
``res2.0.conv1.norm.*``, ``res2.0.shortcut.*`` ...; a detector places that ResNet either

- whole under ``backbone.bottom_up.`` (FPN detectors: layout ``"fpn"``), or
- stages stem..res4 under ``backbone.`` and res5 under ``roi_heads.res5.`` (C4 detectors with
  ``Res5ROIHeads``: layout ``"c4"``).

torchvision's ``resnet*`` names the same tensors ``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.bn1``, ``layer1.0.downsample.{0,1}``. The mapping is one regular expression per kind of
tensor (written here because neither library ships it); the converter checks the result by
loading it into torchvision with ``strict=True``.
"""

import re

LAYOUTS = ("fpn", "c4")

_FPN_RESNET = "backbone.bottom_up."
_C4_RESNET = "backbone."
_C4_RES5 = "roi_heads.res5."


class NameMappingError(ValueError):
    """A tensor name that has no counterpart in the requested format."""


def resnet_name(detector_name: str) -> str:
    """``backbone.bottom_up.res2.0.conv1.weight`` / ``roi_heads.res5.0.conv1.weight`` /
    ``backbone.res2.0.conv1.weight`` -> the ResNet's own name (``res2.0.conv1.weight``)."""
    for prefix, replacement in ((_FPN_RESNET, ""), (_C4_RES5, "res5."), (_C4_RESNET, "")):
        if detector_name.startswith(prefix):
            return replacement + detector_name[len(prefix):]
    raise NameMappingError(f"'{detector_name}' is not a ResNet tensor of a Detectron2 detector")


def detector_name(name: str, layout: str) -> str:
    """A ResNet tensor name (``res5.0.conv1.weight``) -> its name in a detector of ``layout``."""
    if layout == "fpn":
        return _FPN_RESNET + name
    if layout == "c4":
        return (_C4_RES5 + name[len("res5."):]) if name.startswith("res5.") else _C4_RESNET + name
    raise NameMappingError(f"unknown layout '{layout}' (choose from {', '.join(LAYOUTS)})")


def layout_of(detector_names) -> str:
    """The layout that a set of detector ResNet names follows ("fpn" or "c4")."""
    names = list(detector_names)
    if names and all(n.startswith(_FPN_RESNET) for n in names):
        return "fpn"
    if names and all(n.startswith((_C4_RESNET, _C4_RES5)) and not n.startswith(_FPN_RESNET)
                     for n in names):
        return "c4"
    raise NameMappingError(
        "cannot tell the detector layout of the ResNet names "
        f"{names[:3]}...: expected all under '{_FPN_RESNET}' (fpn) or under "
        f"'{_C4_RESNET}' and '{_C4_RES5}' (c4)"
    )


_TORCHVISION_RULES = [
    (re.compile(r"^stem\.conv1\.weight$"), r"conv1.weight"),
    (re.compile(r"^stem\.conv1\.norm\.(\w+)$"), r"bn1.\1"),
    (re.compile(r"^res(\d)\.(\d+)\.conv(\d)\.weight$"), r"layer{stage}.\2.conv\3.weight"),
    (re.compile(r"^res(\d)\.(\d+)\.conv(\d)\.norm\.(\w+)$"), r"layer{stage}.\2.bn\3.\4"),
    (re.compile(r"^res(\d)\.(\d+)\.shortcut\.weight$"), r"layer{stage}.\2.downsample.0.weight"),
    (re.compile(r"^res(\d)\.(\d+)\.shortcut\.norm\.(\w+)$"), r"layer{stage}.\2.downsample.1.\3"),
]


def torchvision_name(name: str) -> str:
    """A Detectron2 ResNet tensor name -> torchvision's (``res2.0.conv1.norm.weight`` ->
    ``layer1.0.bn1.weight``)."""
    for pattern, template in _TORCHVISION_RULES:
        match = pattern.match(name)
        if match:
            if name.startswith("res"):
                template = template.replace("{stage}", str(int(match.group(1)) - 1))
            return match.expand(template)
    raise NameMappingError(f"Detectron2 ResNet tensor '{name}' has no torchvision counterpart")


# Blocks per stage (res2..res5) of Detectron2's ResNets; 18/34 use basic blocks, the rest bottlenecks.
_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_BLOCK = re.compile(r"^res([2-5])\.(\d+)\.")


def resnet_geometry(shapes: dict):
    """(depth or None, RES2_OUT_CHANNELS or None) of the ResNet among detector or pretraining
    tensor names -> shapes (``backbone.bottom_up.*``, or ``backbone.*`` + ``roi_heads.res5.*``);
    (None, None) when there is no ResNet."""
    blocks = {stage: set() for stage in "2345"}
    names = {}
    for name, shape in shapes.items():
        try:
            own = resnet_name(name)
        except NameMappingError:
            continue
        match = _BLOCK.match(own)
        if match:
            blocks[match.group(1)].add(int(match.group(2)))
            names[own] = tuple(shape)
    counts = tuple(len(blocks[s]) for s in "2345")
    if not any(counts):
        return None, None
    bottleneck = "res2.0.conv3.weight" in names
    last = names.get("res2.0.conv3.weight" if bottleneck else "res2.0.conv2.weight")
    depths = [d for d, b in _BLOCKS.items() if b == counts and (d >= 50) == bottleneck]
    return (depths[0] if depths else None), (last[0] if last else None)


def geometry_mismatch(shapes: dict, depth: int, res2_out_channels: int):
    """"R18 weights (RES2_OUT_CHANNELS 64), R50 config (...)" when the ResNet in ``shapes`` is not
    the one ``depth`` / ``res2_out_channels`` build; None when it is, or cannot be told."""
    found_depth, found_width = resnet_geometry(shapes)
    if found_depth is None and found_width is None:
        return None
    if (found_depth in (None, depth)) and (found_width in (None, res2_out_channels)):
        return None
    return (f"R{found_depth or '?'} weights (RES2_OUT_CHANNELS {found_width}), R{depth} config "
            f"(MODEL.RESNETS.DEPTH {depth}, RES2_OUT_CHANNELS {res2_out_channels})")
