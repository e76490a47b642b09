"""Conversion of pretraining checkpoints to Detectron2 and torchvision formats.

Round trips: every stock Detectron2 config in configs/finetune/ is built on CPU and loads the
converted file with DetectionCheckpointer with no unexpected keys, none of the transferred parts
missing, and every loaded tensor equal to the chosen network's. Checkpoints come from the
project's registered methods (BYOL, and SoCo, FPN and C4 variants), built from the
repository's pretraining configs.
"""

import glob
import os
import pickle

import pytest
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from torch import nn

from conftest import load_tool
from soco.modeling.meta_arch import build_pretrain_model  # (importing registers the project's methods)
import soco.modeling.roi_heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from soco.checkpoint import ConversionError, convert, load_pretrain_checkpoint
from soco.config.defaults import load_pretrain_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FINETUNE_CONFIGS = sorted(
    p for p in glob.glob(os.path.join(REPO, "configs", "finetune", "*.yaml"))
    if not os.path.basename(p).startswith("Base-")
)


def _distinct_detectors(paths):
    """Configs as pytest params; one that builds the same detector as an earlier one (a longer
    schedule) only differs in its SOLVER section, so its round trip runs with the slow tests."""
    seen, params = set(), []
    for path in paths:
        cfg = get_cfg()
        cfg.merge_from_file(path)
        model = cfg.MODEL.dump()
        marks = [pytest.mark.slow] if model in seen else []
        seen.add(model)
        params.append(pytest.param(path, marks=marks, id=os.path.basename(path)))
    return params


# ------------------------------------------------------------------------- checkpoints
PRETRAIN_CONFIGS = {
    "soco_fpn": "configs/SoCo/Base-SoCo-FPN.yaml",
    "soco_c4": "configs/SoCo/SoCo_R50_C4_100ep.yaml",
    "soco_demo": "configs/SoCo/SoCo_demo_R18_FPN_cpu.yaml",
    "byol": "configs/BYOL/byol_R18_cpu_demo.yaml",
}


def pretrain_cfg(name: str, depth: int = None, small_heads: bool = False, **resnets):
    """A pretraining config of the repository on CPU, with small projector/predictor (they are
    never exported) and, for tests that load into no detector, small FPN and box head."""
    cfg = load_pretrain_config(os.path.join(REPO, PRETRAIN_CONFIGS[name]))
    cfg.MODEL.DEVICE = "cpu"
    if depth is not None:
        cfg.MODEL.RESNETS.DEPTH = depth
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth < 50 else 256
    cfg.MODEL.PROJECTOR.HIDDEN_DIM = 32
    cfg.MODEL.PREDICTOR.HIDDEN_DIM = 32
    if small_heads:
        cfg.MODEL.FPN.OUT_CHANNELS = 16
        cfg.MODEL.ROI_BOX_HEAD.CONV_DIM = 16
        cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 32
    for key, value in resnets.items():
        setattr(cfg.MODEL.RESNETS, key, value)
    return cfg


def write_checkpoint(path, cfg, model=None):
    """Save ``model`` (built from ``cfg``) as DetectionCheckpointer does, with distinct online,
    target and BN statistics so that equality checks mean something."""
    model = model if model is not None else build_pretrain_model(cfg, cfg.PRETRAIN.NUM_IMAGES)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.add_(0.01 * torch.randn(t.shape, generator=gen))
                if name.endswith("running_var"):
                    t.abs_()
    torch.save({"model": model.state_dict(), "cfg": cfg.dump(), "iteration": 7}, path)
    return model


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Lazily written checkpoints, one per (config name, depth, small heads)."""
    folder = tmp_path_factory.mktemp("ckpts")
    cache = {}

    def get(name, depth=None, small_heads=False):
        key = (name, depth, small_heads)
        if key not in cache:
            path = str(folder / f"{len(cache)}.pth")
            write_checkpoint(path, pretrain_cfg(name, depth, small_heads))
            cache[key] = path
        return cache[key]

    return get


@pytest.fixture(scope="module")
def converted(ckpts, tmp_path_factory):
    """Lazily converted checkpoints: (source path, output path, Export) per set of options.
    The architecture check (building the method once more) is tested on its own below."""
    folder = tmp_path_factory.mktemp("converted")
    cache = {}

    def get(name, depth=None, **options):
        key = (name, depth, tuple(sorted(options.items())))
        if key not in cache:
            src = ckpts(name, depth)
            out = str(folder / f"{len(cache)}.pkl")
            cache[key] = src, out, convert(src, out, verify=False, **options)
        return cache[key]

    return get


def finetune_model(config_file, depth=None):
    """A stock Detectron2 detector from ``config_file`` on CPU (SyncBN -> BN for one process)."""
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.MODEL.DEVICE = "cpu"
    for node in (cfg.MODEL.RESNETS, cfg.MODEL.FPN, cfg.MODEL.ROI_BOX_HEAD, cfg.MODEL.ROI_MASK_HEAD):
        if node.NORM == "SyncBN":
            node.NORM = "BN"
    if depth is not None:
        cfg.MODEL.RESNETS.DEPTH = depth
    return cfg, build_model(cfg)


def load_converted(model, path):
    """DetectionCheckpointer's own loading path; returns (missing, unexpected, wrong shapes)."""
    checkpointer = DetectionCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(path))
    return incompatible.missing_keys, incompatible.unexpected_keys, incompatible.incorrect_shapes


def layout_of_config(cfg):
    return "c4" if cfg.MODEL.ROI_HEADS.NAME.startswith("Res5") else "fpn"


def soco_config_for(cfg):
    """The SoCo pretraining config whose network a fine-tune config is built to receive."""
    if layout_of_config(cfg) == "c4":
        return "soco_c4"
    return "soco_demo" if cfg.MODEL.RESNETS.DEPTH == 18 else "soco_fpn"


# ------------------------------------------------------------------------- round trips
def assert_loaded(model, src, out, export, transferred, network="online"):
    """DetectionCheckpointer loads ``out`` into ``model`` with no unexpected keys and no wrong
    shapes, none of the ``transferred`` prefixes missing (the extra norm after res5 is new in
    the detector), and every loaded tensor equal to the checkpoint's ``network``."""
    missing, unexpected, wrong = load_converted(model, out)
    assert not unexpected and not wrong
    assert [k for k in missing if k.startswith(transferred)
            and not k.startswith("roi_heads.res5.norm.")] == []
    state, ckpt = model.state_dict(), torch.load(src, weights_only=True)["model"]
    assert set(export.tensors) <= set(state)
    for name, source in export.source.items():
        assert source.startswith("target.") == (network == "target")
        torch.testing.assert_close(state[name], ckpt[source], rtol=0, atol=0)


@pytest.mark.parametrize("config_file", _distinct_detectors(FINETUNE_CONFIGS))
def test_converted_weights_load_into_finetune_config(config_file, converted):
    cfg, model = finetune_model(config_file)
    layout, depth = layout_of_config(cfg), cfg.MODEL.RESNETS.DEPTH
    resnet = ("backbone.bottom_up.",) if layout == "fpn" else ("backbone.", "roi_heads.res5.")
    parts = ("backbone.fpn_", "roi_heads.box_head.") if layout == "fpn" else ()

    # SoCo: the ResNet and, for FPN detectors, the FPN and the 4conv1fc box head.
    src, out, export = converted(soco_config_for(cfg))
    assert_loaded(model, src, out, export, resnet + parts)

    # An image-level method: its ResNet placed for this detector's layout, EMA network chosen.
    src, out, export = converted("byol", depth, network="target", layout=layout)
    assert {n.split(".")[0] for n in export.source.values()} == {"target"}
    assert_loaded(model, src, out, export, resnet, network="target")


def test_output_format_and_parts(ckpts, tmp_path):
    src = ckpts("soco_demo", small_heads=True)
    out = str(tmp_path / "d2.pkl")
    export = convert(src, out, include=["fpn"])
    with open(out, "rb") as f:
        data = pickle.load(f)
    assert data["__author__"] == "soco" and data["matching_heuristics"] is False
    names = set(data["model"])
    assert all(type(v).__module__ == "numpy" for v in data["model"].values())
    assert any(n.startswith("backbone.fpn_") for n in names)
    assert not any(n.startswith(("roi_heads.", "target.", "projector", "predictor")) for n in names)
    summary = export.summary()
    assert "part 'head' (not in --include)" in summary
    assert "target (EMA) network" in summary and "projector.*" in summary and "predictor.*" in summary
    # Without the FPN and head, only the ResNet remains; a C4 layout refuses explicit FPN parts.
    assert set(convert(src, out, include=[]).part.values()) == {"backbone"}
    with pytest.raises(ConversionError, match="no place in a c4"):
        convert(src, out, include=["fpn"], layout="c4")
    with pytest.raises(ConversionError, match="--include mask"):
        convert(src, out, include=["mask"])


def test_online_and_target_differ(ckpts, tmp_path):
    src = ckpts("soco_demo", small_heads=True)
    online = convert(src, str(tmp_path / "o.pkl"))
    target = convert(src, str(tmp_path / "t.pkl"), network="target")
    name = "backbone.bottom_up.stem.conv1.weight"
    ckpt = torch.load(src, weights_only=True)["model"]
    assert torch.equal(online.tensors[name], ckpt[name])
    assert torch.equal(target.tensors[name], ckpt["target." + name])
    assert not torch.equal(online.tensors[name], target.tensors[name])


# ------------------------------------------------------------------------- torchvision
@pytest.mark.parametrize("depth", [18, pytest.param(50, marks=pytest.mark.slow)])
def test_torchvision_round_trip(depth, ckpts, tmp_path):
    src = ckpts("byol", depth)
    out = str(tmp_path / "tv.pth")
    convert(src, out, fmt="torchvision")
    tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    tv.fc = nn.Identity()
    tv.load_state_dict(torch.load(out, weights_only=True), strict=True)
    ckpt = load_pretrain_checkpoint(src)
    d2 = META_ARCH_REGISTRY.get("BYOL")(ckpt.cfg)
    d2.load_state_dict(ckpt.state)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = d2.backbone.eval()(x)["res5"].mean(dim=(2, 3))
        torch.testing.assert_close(tv.eval()(x), expected, rtol=1e-4, atol=1e-5)


def test_torchvision_refuses_msra_stride(ckpts, tmp_path):
    def msra(data):
        cfg = load_pretrain_checkpoint(ckpts("byol", 50)).cfg
        cfg.MODEL.RESNETS.STRIDE_IN_1X1 = True  # same tensors, other computation
        data["cfg"] = cfg.dump()
    path = _rewrite(ckpts("byol", 50), str(tmp_path / "msra.pth"), msra)
    with pytest.raises(ConversionError, match="STRIDE_IN_1X1"):
        convert(path, str(tmp_path / "tv.pth"), fmt="torchvision", verify=False)


# ------------------------------------------------------------------------- bad inputs
def _rewrite(src, dst, edit):
    data = torch.load(src, weights_only=True)
    edit(data)
    torch.save(data, dst)
    return dst


def test_bad_inputs_fail_clearly(ckpts, tmp_path):
    src = ckpts("soco_demo", small_heads=True)
    out = str(tmp_path / "out.pkl")

    truncated = str(tmp_path / "truncated.pth")
    with open(src, "rb") as f, open(truncated, "wb") as g:
        g.write(f.read()[: os.path.getsize(src) // 2])
    with pytest.raises(ConversionError, match="truncated.pth: cannot be read, the file is truncated"):
        convert(truncated, out)

    with pytest.raises(ConversionError, match="no such file"):
        convert(str(tmp_path / "absent.pth"), out)

    def set_method(name):
        def edit(data):
            cfg = load_pretrain_checkpoint(src).cfg
            cfg.MODEL.META_ARCHITECTURE = name
            data["cfg"] = cfg.dump()
        return edit

    unknown = _rewrite(src, str(tmp_path / "unknown.pth"), set_method("NoSuchMethod"))
    with pytest.raises(ConversionError, match="'NoSuchMethod' is not a registered method"):
        convert(unknown, out)
    detector = _rewrite(src, str(tmp_path / "rcnn.pth"), set_method("GeneralizedRCNN"))
    with pytest.raises(ConversionError, match="not a pretraining method"):
        convert(detector, out)

    no_cfg = _rewrite(src, str(tmp_path / "nocfg.pth"), lambda d: d.pop("cfg"))
    with pytest.raises(ConversionError, match="has no 'cfg' entry"):
        convert(no_cfg, out)

    def deeper(data):
        cfg = load_pretrain_checkpoint(src).cfg
        cfg.MODEL.RESNETS.DEPTH = 34
        data["cfg"] = cfg.dump()
    mismatched = _rewrite(src, str(tmp_path / "r34.pth"), deeper)
    with pytest.raises(ConversionError, match="architecture mismatch.*DEPTH=34.*missing"):
        convert(mismatched, out)

    def drop_fpn(data):
        data["model"] = {k: v for k, v in data["model"].items() if "fpn_" not in k}
    no_fpn = _rewrite(src, str(tmp_path / "nofpn.pth"), drop_fpn)
    with pytest.raises(ConversionError, match="architecture mismatch.*'backbone.fpn_"):
        convert(no_fpn, out, verify=False)

    def drop_target(data):
        data["model"] = {k: v for k, v in data["model"].items() if not k.startswith("target.")}
    no_target = _rewrite(src, str(tmp_path / "notarget.pth"), drop_target)
    with pytest.raises(ConversionError, match="no 'target.\\*' tensors"):
        convert(no_target, out, network="target", verify=False)

    assert not os.path.exists(out)
    assert not glob.glob(str(tmp_path / "*.tmp"))


# ------------------------------------------------------------------------- every method
IMAGE_LEVEL_DEMOS = sorted(
    p for p in glob.glob(os.path.join(REPO, "configs", "*", "*_cpu_demo.yaml"))
    if os.sep + "SoCo" + os.sep not in p
)


@pytest.fixture(scope="module")
def demo_detector():
    return finetune_model(os.path.join(REPO, "configs/finetune/faster_rcnn_R18_FPN_demo_cpu.yaml"))[1]


@pytest.mark.parametrize("pretrain_file", IMAGE_LEVEL_DEMOS, ids=os.path.basename)
def test_each_image_level_method_converts(pretrain_file, demo_detector, tmp_path):
    """Each method's own demo checkpoint (architecture check included) loads into the demo
    detector's ResNet and into torchvision's resnet18."""
    cfg = load_pretrain_config(pretrain_file)
    cfg.MODEL.DEVICE = "cpu"
    cfg.PRETRAIN.NUM_IMAGES = 16  # the trainer sets it from the dataset (CoKe sizes buffers by it)
    src, out, tv = (str(tmp_path / n) for n in ("ckpt.pth", "d2.pkl", "tv.pth"))
    write_checkpoint(src, cfg)
    export = convert(src, out)
    assert set(export.part.values()) == {"backbone"}
    assert_loaded(demo_detector, src, out, export, ("backbone.bottom_up.",))
    convert(src, tv, fmt="torchvision", verify=False)
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Identity()
    model.load_state_dict(torch.load(tv, weights_only=True), strict=True)


def test_command_line(ckpts, tmp_path, capsys):
    tool = load_tool("convert_to_d2")
    out = str(tmp_path / "d2.pkl")
    assert tool.main([ckpts("soco_demo", small_heads=True), out, "--include", "fpn",
                      "--network", "target", "--no-verify"]) == 0
    printed = capsys.readouterr().out
    assert "backbone" in printed and "fpn" in printed and "part 'head' (not in --include)" in printed
    assert os.path.exists(out)
    assert tool.main([str(tmp_path / "absent.pth"), out]) == 2
    assert "error: " in capsys.readouterr().err
