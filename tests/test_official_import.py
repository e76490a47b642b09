"""Official SoCo artifacts: a checkpoint in the official layout and the official proposal JSON.

The official layout is built here from hologerry/SoCo's modules by name (contrast/resnet.py:
torchvision-named ResNet; contrast/models/fpn.py: mmcv ConvModule ``lateral_convs.{i}.conv/.bn``,
``fpn_convs.{i}.conv/.bn``; fast_rcnn_conv_fc_head.py: ``conv1-4``, ``bn1-4``, ``fc1``; mlps.py:
``linear1``, ``bn1``, ``linear2``; SoCo_C4.py: ``queue``, ``queue_ptr``; main_pretrain.py:
``{"opt": Namespace, "model": DDP state dict, "optimizer", "scheduler", "epoch"}``), with shapes
from torchvision's resnet50 and the official constructors, independently of soco's mapping.
"""

import argparse
import json
import os

import numpy as np
import pytest
import torch
import torchvision

from soco.checkpoint import ConversionError, convert
from soco.checkpoint.official import import_official, official_tensor_name
from soco.data.proposals import load_proposals
from soco.proposals.official_json import import_official_proposals, iter_official_entries

from conftest import load_tool
from test_convert import finetune_model, load_converted

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bn(prefix, c):
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def _mlp(prefix, cin, hidden=4096, out=256):
    shapes = {f"{prefix}.linear1.weight": (hidden, cin), f"{prefix}.linear1.bias": (hidden,),
              f"{prefix}.linear2.weight": (out, hidden), f"{prefix}.linear2.bias": (out,)}
    shapes.update(_bn(f"{prefix}.bn1", hidden))
    return shapes


def official_shapes(model: str) -> dict:
    """Every tensor name and shape of an official SoCo model's DDP state dict."""
    resnet = {k: tuple(v.shape) for k, v in torchvision.models.resnet50().state_dict().items()
              if not k.startswith("fc.")}
    nets = ["", "_k"]
    shapes = {}
    for k in nets:
        shapes.update({f"encoder{k}.{n}": s for n, s in resnet.items()})
        if model == "SoCo_C4":
            shapes.update(_mlp(f"projector{k}", 2048))
            continue
        for i, cin in enumerate([256, 512, 1024, 2048]):
            shapes[f"neck{k}.lateral_convs.{i}.conv.weight"] = (256, cin, 1, 1)
            shapes.update(_bn(f"neck{k}.lateral_convs.{i}.bn", 256))
            shapes[f"neck{k}.fpn_convs.{i}.conv.weight"] = (256, 256, 3, 3)
            shapes.update(_bn(f"neck{k}.fpn_convs.{i}.bn", 256))
        for j in range(1, 5):
            shapes[f"head{k}.conv{j}.weight"] = (256, 256, 3, 3)
            shapes.update(_bn(f"head{k}.bn{j}", 256))
        shapes[f"head{k}.fc1.weight"] = (1024, 12544)
        shapes[f"head{k}.fc1.bias"] = (1024,)
        shapes.update(_mlp(f"projector{k}", 1024))
    shapes.update(_mlp("predictor", 256))
    if model == "SoCo_C4":
        shapes["queue"] = (128, 16)
        shapes["queue_ptr"] = (1,)
    return shapes


def write_official(path, model="SoCo_FPN", epochs=100, edit=None):
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in official_shapes(model).items():
        if name.endswith(("num_batches_tracked", "queue_ptr")):
            state["module." + name] = torch.randint(0, 1000, shape, generator=gen)
        else:
            state["module." + name] = torch.randn(shape, generator=gen)
    opt = argparse.Namespace(model=model, arch="resnet50", epochs=epochs, start_level=0, num_outs=4,
                             amp_opt_level="O1", crop=0.5, aug="ImageAsymBboxAwareMultiJitter1Cutout")
    data = {"opt": opt, "model": state, "optimizer": {"state": {}, "param_groups": []},
            "scheduler": {"last_epoch": 5}, "epoch": epochs}
    if edit:
        edit(data)
    torch.save(data, path)
    return state


@pytest.mark.parametrize("model,finetune", [
    ("SoCo_FPN", "mask_rcnn_R_50_FPN_1x_soco.yaml"),
    ("SoCo_C4", "mask_rcnn_R_50_C4_1x_soco.yaml"),
])
def test_official_checkpoint_imports_converts_and_loads(model, finetune, tmp_path):
    src = tmp_path / "ckpt_epoch_100.pth"
    official = write_official(src, model)
    result = import_official(str(src), str(tmp_path / "soco.pth"))
    assert ("queue" in result.ignored) == (model == "SoCo_C4")
    assert result.cfg.MODEL.SOCO.VIEWS == "official"
    assert result.cfg.MODEL.SOCO.VARIANT == ("C4" if model == "SoCo_C4" else "FPN")
    # Every official tensor (queues aside) arrived once, unchanged.
    assert len(result.state) == len(official) - (2 if model == "SoCo_C4" else 0)
    export = convert(str(tmp_path / "soco.pth"), str(tmp_path / "d2.pkl"))
    _, detector = finetune_model(os.path.join(REPO, "configs", "finetune", finetune))
    missing, unexpected, wrong = load_converted(detector, str(tmp_path / "d2.pkl"))
    assert not unexpected and not wrong
    loaded = detector.state_dict()
    expected_parts = {"backbone", "res5"} if model == "SoCo_C4" else {"backbone", "fpn", "head"}
    assert set(export.part.values()) == expected_parts
    online = {k[len("module."):]: v for k, v in official.items()
              if not k.startswith(("module.encoder_k", "module.neck_k", "module.head_k", "module.projector_k"))}
    sources = {official_tensor_name(k, "c4" if model == "SoCo_C4" else "fpn"): v for k, v in online.items()
               if k.startswith(("encoder.", "neck.", "head."))}
    assert set(export.source.values()) == set(sources)
    for name, source in export.source.items():
        assert torch.equal(loaded[name], sources[source]), name


def test_official_names_hand_checked():
    assert official_tensor_name("encoder.layer1.0.bn1.weight", "fpn") == "backbone.bottom_up.res2.0.conv1.norm.weight"
    assert official_tensor_name("encoder_k.layer4.2.downsample.1.running_var", "c4") == \
        "target.roi_heads.res5.2.shortcut.norm.running_var"
    assert official_tensor_name("encoder.bn1.bias", "c4") == "backbone.stem.conv1.norm.bias"
    assert official_tensor_name("neck.lateral_convs.3.conv.weight", "fpn") == "backbone.fpn_lateral5.weight"
    assert official_tensor_name("neck_k.fpn_convs.0.bn.running_mean", "fpn") == \
        "target.backbone.fpn_output2.norm.running_mean"
    assert official_tensor_name("neck.lateral_convs.0.conv.weight", "fpn", fpn_start_level=1) == \
        "backbone.fpn_lateral3.weight"
    assert official_tensor_name("head.bn4.weight", "fpn") == "roi_heads.box_head.conv4.norm.weight"
    assert official_tensor_name("head_k.fc1.bias", "fpn") == "target.roi_heads.box_head.fc1.bias"
    assert official_tensor_name("projector_k.linear2.weight", "fpn") == "target.projector.3.weight"
    assert official_tensor_name("predictor.bn1.running_mean", "c4") == "predictor.1.running_mean"
    for bad, variant in (("neck.lateral_convs.0.conv.weight", "c4"), ("encoder.fc.weight", "fpn"),
                         ("predictor_k.linear1.weight", "fpn"), ("head.conv5.weight", "fpn")):
        with pytest.raises(ConversionError, match="not a tensor of the official"):
            official_tensor_name(bad, variant)


def test_bad_official_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(ConversionError, match="no such file"):
        import_official(str(tmp_path / "none.pth"), str(tmp_path / "out.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match="junk.pth: not a readable official"):
        import_official(str(tmp_path / "junk.pth"), str(tmp_path / "out.pth"))
    torch.save({"model": {}, "cfg": "x"}, tmp_path / "soco.pth")
    with pytest.raises(ConversionError, match="has no 'opt'"):
        import_official(str(tmp_path / "soco.pth"), str(tmp_path / "out.pth"))

    def other_model(data):
        data["opt"].model = "PixPro"

    write_official(tmp_path / "pixpro.pth", edit=other_model)
    with pytest.raises(ConversionError, match="opt.model 'PixPro'"):
        import_official(str(tmp_path / "pixpro.pth"), str(tmp_path / "out.pth"))

    def drop_head(data):
        for k in [k for k in data["model"] if k.startswith("module.head.")]:
            del data["model"][k]

    write_official(tmp_path / "nohead.pth", edit=drop_head)
    with pytest.raises(ConversionError, match="architecture mismatch.*missing"):
        import_official(str(tmp_path / "nohead.pth"), str(tmp_path / "out.pth"))
    assert not (tmp_path / "out.pth").exists()


# ------------------------------------------------------------------------- proposals
def _image_root(tmp_path, names):
    root = tmp_path / "images"
    for name in names:
        (root / os.path.dirname(name)).mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


def test_official_proposal_json_round_trips(tmp_path):
    entries = {
        "n01_1": [[10, 20, 30, 40], [0, 0, 5, 6, 0.7]],
        "n02_7": [],
        "gone_3": [[1, 1, 2, 2]],
    }
    path = tmp_path / "props.json"
    path.write_text(json.dumps(entries))
    root = _image_root(tmp_path, ["n01/n01_1.JPEG", "n02/n02_7.JPEG", "n03/n03_9.JPEG"])
    # Chunks of a few characters cut keys, numbers and arrays at every place.
    for chunk in (1, 2, 5, 64):
        got = dict(iter_official_entries(str(path), chunk))
        assert list(got) == list(entries)
        np.testing.assert_array_equal(got["n01_1"], [[10, 20, 40, 60], [0, 0, 5, 6]])
        assert got["n02_7"].shape == (0, 4) and got["n02_7"].dtype == np.float32
    report = import_official_proposals(str(path), str(root), str(tmp_path / "out.pkl"))
    assert report.written == 2
    assert (report.absent_count, report.absent) == (1, ["gone_3"])
    assert (report.without_entry_count, report.without_entry) == (1, ["n03/n03_9.JPEG"])
    props = load_proposals(str(tmp_path / "out.pkl"))
    assert sorted(props) == ["n01/n01_1.JPEG", "n02/n02_7.JPEG"]
    np.testing.assert_array_equal(props["n01/n01_1.JPEG"], [[10, 20, 40, 60], [0, 0, 5, 6]])
    # Back to the official JSON: x, y, w, h again.
    back = {os.path.basename(k).split(".")[0]: [[float(v) for v in (b[0], b[1], b[2] - b[0], b[3] - b[1])]
                                                for b in boxes] for k, boxes in props.items()}
    assert back == {"n01_1": [[10, 20, 30, 40], [0, 0, 5, 6]], "n02_7": []}


@pytest.mark.parametrize("text,match", [
    ('[1, 2]', "expected one of '\\{'"),
    ('{"a": [[1, 2, 3]]}', "entry 'a' is not a list of"),
    ('{"a": [[1, 2, 3, "x"]]}', "non-numeric"),
    ('{"a": [[1, 2, 3, 4]], "b": [[1, 2', "invalid JSON at character"),
    ('{"a": [[1, 2, 3, 4]] "b": []}', "expected one of ',\\}'"),
])
def test_bad_proposal_json_fails_clearly(tmp_path, text, match):
    path = tmp_path / "bad.json"
    path.write_text(text)
    root = _image_root(tmp_path, ["a.jpg", "b.jpg"])
    with pytest.raises(ValueError, match=match):
        import_official_proposals(str(path), str(root), str(tmp_path / "out.pkl"))
    assert not (tmp_path / "out.pkl").exists()


def test_duplicate_official_keys_under_the_root_fail(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("{}")
    root = _image_root(tmp_path, ["x/a.jpg", "y/a.png"])
    with pytest.raises(ValueError, match="same official key 'a'"):
        import_official_proposals(str(path), str(root), str(tmp_path / "out.pkl"))


def test_command_line(tmp_path, capsys):
    main = load_tool("import_official_soco").main
    path = tmp_path / "p.json"
    path.write_text('{"a": [[1, 2, 3, 4]]}')
    root = _image_root(tmp_path, ["a.jpg"])
    assert main(["proposals", str(path), str(tmp_path / "o.pkl"), "--image-root", str(root)]) == 0
    assert "wrote proposals of 1 images" in capsys.readouterr().out
    assert main(["checkpoint", str(tmp_path / "missing.pth"), str(tmp_path / "o.pth")]) == 2
    assert "missing.pth: no such file" in capsys.readouterr().err


# ------------------------------------------------------------------------- mmdetection export
# mmdetection's names, from its source: mmdet/models/backbones/resnet.py (stem ``conv1`` +
# ``bn1`` = build_norm_layer(postfix=1); ``layer{1-4}``; Bottleneck ``conv{1-3}`` / ``bn{1-3}``;
# ``downsample`` = Sequential(conv, norm)); mmdet/models/necks/fpn.py (``lateral_convs`` and
# ``fpn_convs``: ModuleLists of mmcv ConvModule, whose conv is ``.conv`` and whose BN is ``.bn``);
# mmdet/models/roi_heads/bbox_heads/convfc_bbox_head.py (Shared4Conv1FCBBoxHead:
# ``shared_convs`` of 4 ConvModules, ``shared_fcs`` of 1 Linear) under ``roi_head.bbox_head``;
# and the official converter_mmdetection/convert_mmdetection_Head.py, which writes these names.
def mmdet_expected_names() -> set:
    names = {f"backbone.{n}" for n in torchvision.models.resnet50().state_dict() if not n.startswith("fc.")}
    for i in range(4):
        for kind in ("lateral_convs", "fpn_convs"):
            names.add(f"neck.{kind}.{i}.conv.weight")
            names |= {f"neck.{kind}.{i}.bn.{p}" for p in ("weight", "bias", "running_mean", "running_var",
                                                          "num_batches_tracked")}
    for j in range(4):
        names.add(f"roi_head.bbox_head.shared_convs.{j}.conv.weight")
        names |= {f"roi_head.bbox_head.shared_convs.{j}.bn.{p}" for p in ("weight", "bias", "running_mean",
                                                                          "running_var", "num_batches_tracked")}
    names |= {"roi_head.bbox_head.shared_fcs.0.weight", "roi_head.bbox_head.shared_fcs.0.bias"}
    return names


def test_mmdet_export_uses_mmdetection_names(tmp_path):
    src = tmp_path / "ckpt_epoch_100.pth"
    official = write_official(src, "SoCo_FPN")
    import_official(str(src), str(tmp_path / "soco.pth"), verify=False)
    export = convert(str(tmp_path / "soco.pth"), str(tmp_path / "mmdet.pth"), fmt="mmdet", verify=False)
    saved = torch.load(tmp_path / "mmdet.pth", weights_only=True)
    assert set(saved) == {"state_dict", "meta"}
    assert set(saved["state_dict"]) == mmdet_expected_names()
    # The official converter's own renaming of the same tensors gives the same values.
    assert torch.equal(saved["state_dict"]["backbone.layer3.5.bn2.running_var"],
                       official["module.encoder.layer3.5.bn2.running_var"])
    assert torch.equal(saved["state_dict"]["neck.fpn_convs.2.bn.weight"], official["module.neck.fpn_convs.2.bn.weight"])
    assert torch.equal(saved["state_dict"]["roi_head.bbox_head.shared_convs.3.bn.bias"], official["module.head.bn4.bias"])
    assert torch.equal(saved["state_dict"]["roi_head.bbox_head.shared_fcs.0.weight"], official["module.head.fc1.weight"])
    assert len(export.tensors) == len(saved["state_dict"])


def test_star_checkpoint_picks_the_official_star_config(tmp_path):
    src = tmp_path / "ckpt_epoch_400.pth"
    write_official(src, "SoCo_FPN_Star", epochs=400)
    result = import_official(str(src), str(tmp_path / "soco.pth"))
    assert result.config_file == "configs/SoCo/official/SoCo_star_R50_FPN_400ep.yaml"
    assert result.cfg.MODEL.SOCO.USE_VIEW4 and result.cfg.PRETRAIN.EPOCHS == 400
    saved = torch.load(tmp_path / "soco.pth", weights_only=True)
    assert saved["official"] == {"epoch": 400, "model": "SoCo_FPN_Star"} and "USE_VIEW4: true" in saved["cfg"]
