"""The Detectron2 features soco relies on work in the installed build (also the registry build
without C++ ops), and a C++-only op fails with a clear message there."""

import json
import math
import pickle

import numpy as np
import pytest
import torch
from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import ROI_HEADS_REGISTRY, build_backbone, build_model
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes

import detectron2

NO_CPP_OPS = detectron2.__version__.endswith("+nocsrc")


def _small_cfg(config_path: str):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(config_path))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    return cfg


def test_resnet_fpn_backbone_and_roi_pooler():
    cfg = _small_cfg("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml")
    backbone = build_backbone(cfg).eval()
    features = backbone(torch.rand(1, 3, 64, 96))
    assert set(features) == {"p2", "p3", "p4", "p5", "p6"}
    assert features["p2"].shape == (1, 256, 16, 24)
    pooler = ROIPooler((7, 7), scales=(1 / 4, 1 / 8, 1 / 16, 1 / 32), sampling_ratio=0, pooler_type="ROIAlignV2")
    boxes = [Boxes(torch.tensor([[0.0, 0.0, 32.0, 32.0], [10.0, 5.0, 90.0, 60.0]]))]
    pooled = pooler([features[f] for f in ("p2", "p3", "p4", "p5")], boxes)
    assert pooled.shape == (2, 256, 7, 7) and torch.isfinite(pooled).all()


@pytest.mark.parametrize(
    "config_path, heads",
    [
        ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml", "StandardROIHeads"),
        ("COCO-Detection/faster_rcnn_R_50_C4_1x.yaml", "Res5ROIHeads"),
    ],
)
def test_detectors_build_and_run_inference(config_path, heads):
    cfg = _small_cfg(config_path)
    model = build_model(cfg).eval()
    assert type(model.roi_heads).__name__ == heads and heads in ROI_HEADS_REGISTRY
    with torch.no_grad():
        (out,) = model([{"image": torch.randint(0, 255, (3, 64, 80), dtype=torch.uint8)}])
    assert "instances" in out


def test_detection_checkpointer_loads_a_pkl(tmp_path):
    cfg = _small_cfg("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml")
    model = build_model(cfg)
    state = {k: v.numpy() + 1.0 for k, v in model.state_dict().items() if k.startswith("backbone.bottom_up.")}
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps({"model": state, "__author__": "test", "matching_heuristics": False}))
    DetectionCheckpointer(model).load(str(path))
    loaded = model.state_dict()
    for name, value in state.items():
        np.testing.assert_array_equal(loaded[name].numpy(), value)


def test_coco_evaluator_with_pycocotools_fallback(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Instances

    gt = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 100, "width": 100}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 40], "area": 1200, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    name = "soco_test_d2_eval"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(json_file=str(tmp_path / "gt.json"), thing_classes=["thing"],
                                      thing_dataset_id_to_contiguous_id={1: 0})
    evaluator = COCOEvaluator(name, tasks=("bbox",), distributed=False, output_dir=str(tmp_path))
    evaluator.reset()
    instances = Instances((100, 100))
    instances.pred_boxes = Boxes(torch.tensor([[10.0, 10.0, 40.0, 50.0]]))
    instances.scores = torch.tensor([0.9])
    instances.pred_classes = torch.tensor([0])
    evaluator.process([{"image_id": 1}], [{"instances": instances}])
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0)


# The C++ ops, on either backend: the official build computes them (checked on hand-computable
# boxes), the registry build (0.6+nocsrc) refuses them with a message saying how to get them.
CPP_OP_ERROR = r"detectron2\._C\.{op} is a C\+\+ op, and this Detectron2 \(0\.6\+nocsrc\) was installed without C\+\+ ops"

# (x_centre, y_centre, width, height, angle in degrees): a 4x4 square; the same square turned by
# 45 degrees (IoU = the octagon 2a^2(sqrt2 - 1) over 2a^2 minus it = sqrt2 / 2); the square moved
# one pixel right (IoU = 12 / 20).
SQUARE = [10.0, 10.0, 4.0, 4.0, 0.0]
TURNED = [10.0, 10.0, 4.0, 4.0, 45.0]
SHIFTED = [11.0, 10.0, 4.0, 4.0, 0.0]


def test_rotated_box_iou():
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    square, others = torch.tensor([SQUARE]), torch.tensor([TURNED, SHIFTED])
    if NO_CPP_OPS:
        with pytest.raises(RuntimeError, match=CPP_OP_ERROR.format(op="box_iou_rotated")):
            pairwise_iou_rotated(square, others)
    else:
        iou = pairwise_iou_rotated(square, others)
        torch.testing.assert_close(iou, torch.tensor([[math.sqrt(0.5), 0.6]]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("threshold, kept", [(0.5, [0]), (0.65, [0, 2])])
def test_rotated_nms(threshold, kept):
    from detectron2.layers import nms_rotated

    boxes, scores = torch.tensor([SQUARE, TURNED, SHIFTED]), torch.tensor([0.9, 0.8, 0.7])
    if NO_CPP_OPS:
        with pytest.raises(RuntimeError, match=CPP_OP_ERROR.format(op="nms_rotated")):
            nms_rotated(boxes, scores, threshold)
    else:  # the turned square overlaps by 0.71, the shifted one by 0.6
        assert nms_rotated(boxes, scores, threshold).tolist() == kept


def test_roi_align_rotated_at_angle_0_is_roi_align():
    from detectron2.layers import ROIAlignRotated
    from torchvision.ops import roi_align

    image = torch.arange(64.0).reshape(1, 1, 8, 8)
    rotated = torch.tensor([[0.0, 4.0, 3.5, 4.0, 3.0, 0.0]])  # batch index, centre, size, angle
    if NO_CPP_OPS:
        with pytest.raises(RuntimeError, match=CPP_OP_ERROR.format(op="roi_align_rotated_forward")):
            ROIAlignRotated((2, 2), 1.0, 2)(image, rotated)
    else:
        pooled = ROIAlignRotated((2, 2), 1.0, 2)(image, rotated)
        expected = roi_align(image, torch.tensor([[0.0, 2.0, 2.0, 6.0, 5.0]]), (2, 2), 1.0, 2, aligned=True)
        torch.testing.assert_close(pooled, expected)
        # The image is 8 * row + column, linear in both, so each bin's mean is the value at its
        # centre; bin centres (3 | 5, 2.75 | 4.25) lie half a pixel from pixel indices (aligned).
        rows, cols = torch.tensor([2.25, 3.75]), torch.tensor([2.5, 4.5])
        torch.testing.assert_close(pooled[0, 0], 8 * rows[:, None] + cols[None, :])


def test_deform_conv_forward_on_cpu_with_zero_offsets_is_conv2d():
    """Both builds run deformable convolution's CPU forward through torchvision."""
    from detectron2.layers import DeformConv

    torch.manual_seed(0)
    conv = DeformConv(2, 3, kernel_size=3, padding=1, bias=False)
    image = torch.rand(1, 2, 6, 7)
    out = conv(image, torch.zeros(1, 2 * 3 * 3, 6, 7))
    torch.testing.assert_close(out, torch.nn.functional.conv2d(image, conv.weight, padding=1))


def test_coco_evaluation_backend_matches_pycocotools():
    """COCOEvaluator's COCOeval_opt: the C++ evaluator in the official build, pycocotools' own in
    the registry build; either gives pycocotools' 12 numbers on random detections."""
    from detectron2.evaluation import coco_evaluation
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if NO_CPP_OPS:
        assert coco_evaluation.COCOeval_opt is COCOeval
    else:
        from detectron2.evaluation.fast_eval_api import COCOeval_opt

        assert coco_evaluation.COCOeval_opt is COCOeval_opt and COCOeval_opt is not COCOeval

    rng = np.random.default_rng(0)
    images = [{"id": i, "height": 100, "width": 100} for i in range(1, 6)]
    annotations, detections = [], []
    for image in images:
        for _ in range(4):
            x, y, w, h = (float(v) for v in rng.uniform([0, 0, 5, 5], [60, 60, 40, 40]))
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "category_id": int(rng.integers(1, 3)),
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
            detections.append({"image_id": image["id"], "category_id": annotations[-1]["category_id"],
                               "bbox": [x + float(rng.normal(0, 3)), y + float(rng.normal(0, 3)), w, h],
                               "score": float(rng.uniform())})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    gt.createIndex()
    dt = gt.loadRes(detections)

    stats = []
    for evaluator in (coco_evaluation.COCOeval_opt, COCOeval):
        run = evaluator(gt, dt, "bbox")
        run.evaluate()
        run.accumulate()
        run.summarize()
        stats.append(run.stats)
    np.testing.assert_allclose(stats[0], stats[1], atol=1e-12)
    assert 0 < stats[1][0] < 1  # a non-trivial AP


def test_build_reports_its_backend():
    from detectron2.utils.collect_env import collect_env_info

    if NO_CPP_OPS:
        assert detectron2.__version__ == "0.6+nocsrc"
        assert "no C++ ops" in collect_env_info()
    else:
        from detectron2 import _C

        assert _C.__file__.endswith(".so")  # the compiled extension, not a stand-in
        assert "no C++ ops" not in collect_env_info() and _C.get_compiler_version()
