"""Fine-tune configs agree with pretraining, follow the paper's schedules, and a short fine-tune
from converted SoCo weights runs and evaluates on CPU."""

import glob
import json
import os
import pickle
from fractions import Fraction

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.modeling import META_ARCH_REGISTRY

from conftest import load_tool
import soco.embedded  # noqa: F401  (registers the embedded datasets)
import soco.modeling.meta_arch  # noqa: F401  (registers SoCo)
from soco.checkpoint import convert
from soco.config.defaults import load_pretrain_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FINETUNE_CONFIGS = sorted(
    p for p in glob.glob(os.path.join(REPO, "configs", "finetune", "*.yaml"))
    if not os.path.basename(p).startswith("Base-")
)
PRETRAIN_CONFIGS = sorted(
    p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    if os.sep + "finetune" + os.sep not in p
)


def finetune_cfg(path):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    return cfg


# ------------------------------------------------------------------------- configs
@pytest.mark.parametrize("pretrain_file", PRETRAIN_CONFIGS,
                         ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs")))
def test_finetune_configs_feed_pixels_as_pretraining(pretrain_file):
    """Pixel format, normalisation and stride placement: a mismatch loads fine and silently
    costs AP, so every fine-tune config must equal every pretraining config here."""
    pre = load_pretrain_config(pretrain_file)
    for path in FINETUNE_CONFIGS:
        ft = finetune_cfg(path)
        name = os.path.basename(path)
        assert ft.INPUT.FORMAT == pre.INPUT.FORMAT == "RGB", name
        assert list(ft.MODEL.PIXEL_MEAN) == list(pre.MODEL.PIXEL_MEAN), name
        assert list(ft.MODEL.PIXEL_STD) == list(pre.MODEL.PIXEL_STD), name
        assert ft.MODEL.RESNETS.STRIDE_IN_1X1 == pre.MODEL.RESNETS.STRIDE_IN_1X1, name


def _fractions(cfg):
    return [Fraction(s, cfg.SOLVER.MAX_ITER) for s in cfg.SOLVER.STEPS]


@pytest.mark.parametrize("path", [p for p in FINETUNE_CONFIGS if "demo" not in p],
                         ids=os.path.basename)
def test_paper_transfer_settings(path):
    """SoCo section 4.2: batch 16, lr 0.02; COCO: wd 2.5e-5, 1000-iteration linear warm-up, steps at
    2/3 and 8/9; VOC: wd 1e-4, steps at 3/4 and 11/12; SyncBN everywhere, nothing frozen."""
    cfg = finetune_cfg(path)
    assert cfg.SOLVER.IMS_PER_BATCH == 16 and cfg.SOLVER.BASE_LR == 0.02
    assert cfg.SOLVER.WARMUP_METHOD == "linear" and cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert cfg.MODEL.RESNETS.NORM == "SyncBN"
    if "voc" in path:
        assert cfg.SOLVER.WEIGHT_DECAY == 1e-4
        assert _fractions(cfg) == [Fraction(3, 4), Fraction(11, 12)]
        assert cfg.DATASETS.TRAIN == ("voc_2007_trainval", "voc_2012_trainval")
    else:
        assert cfg.SOLVER.WEIGHT_DECAY == 2.5e-5 and cfg.SOLVER.WARMUP_ITERS == 1000
        assert _fractions(cfg) == [Fraction(2, 3), Fraction(8, 9)]
        assert cfg.MODEL.MASK_ON
    if "FPN" in path:
        assert cfg.MODEL.FPN.NORM == cfg.MODEL.ROI_BOX_HEAD.NORM == cfg.MODEL.ROI_MASK_HEAD.NORM == "SyncBN"
        assert (cfg.MODEL.ROI_BOX_HEAD.NUM_CONV, cfg.MODEL.ROI_BOX_HEAD.NUM_FC) == (4, 1)
    else:
        assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm"


# ------------------------------------------------------------------------- short fine-tune
def _register_subset(name, source, count):
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: DatasetCatalog.get(source)[:count])
        MetadataCatalog.get(name).set(
            thing_classes=MetadataCatalog.get(source).thing_classes, evaluator_type="coco")


def write_demo_soco_checkpoint(path: str) -> None:
    """A pretraining checkpoint of SoCo's CPU demo config at its random initialisation."""
    cfg = load_pretrain_config(os.path.join(REPO, "configs/SoCo/SoCo_demo_R18_FPN_cpu.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = META_ARCH_REGISTRY.get("SoCo")(cfg)
    torch.save({"model": model.state_dict(), "cfg": cfg.dump(), "iteration": 0}, path)


def test_short_finetune_from_converted_soco_weights(tmp_path):
    pth, pkl = str(tmp_path / "soco.pth"), str(tmp_path / "soco_d2.pkl")
    write_demo_soco_checkpoint(pth)
    convert(pth, pkl, verify=False)

    _register_subset("soco_demo_det_train_4", "soco_demo_det_train", 4)
    _register_subset("soco_demo_det_val_4", "soco_demo_det_val", 4)
    out = str(tmp_path / "finetune")
    args = default_argument_parser().parse_args([
        "--config-file", os.path.join(REPO, "configs/finetune/faster_rcnn_R18_FPN_demo_cpu.yaml"),
        "MODEL.WEIGHTS", pkl, "OUTPUT_DIR", out,
        "DATASETS.TRAIN", "('soco_demo_det_train_4',)", "DATASETS.TEST", "('soco_demo_det_val_4',)",
        "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
        # lr 0: the fine-tuned weights must still be the converted ones (BN statistics aside).
        "SOLVER.BASE_LR", "0.0", "SOLVER.STEPS", "()",
        "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128",
        "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128", "DATALOADER.NUM_WORKERS", "0",
    ])
    results = load_tool("finetune_net").main(args)

    assert 0.0 <= results["bbox"]["AP"] <= 100.0
    with open(os.path.join(out, "eval_results.json")) as f:
        assert json.load(f)["bbox"]["AP"] == results["bbox"]["AP"]
    final = torch.load(os.path.join(out, "model_final.pth"), weights_only=False)["model"]
    with open(pkl, "rb") as f:
        converted = pickle.load(f)["model"]
    for name in ("backbone.bottom_up.res2.0.conv1.weight", "backbone.fpn_lateral3.weight",
                 "roi_heads.box_head.fc1.weight"):
        assert torch.equal(final[name], torch.from_numpy(converted[name])), name
