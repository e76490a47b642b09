"""The Detectron2 features soco relies on work in the installed build (also the registry build
without C++ ops), and a C++-only op fails with a clear message there."""

import json
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


@pytest.mark.skipif(not NO_CPP_OPS, reason="official Detectron2 build with C++ ops")
def test_cpp_only_op_fails_clearly():
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    boxes = torch.tensor([[10.0, 10.0, 4.0, 4.0, 0.0]])
    with pytest.raises(RuntimeError, match="without C\\+\\+ ops.*box_iou_rotated|box_iou_rotated.*without C\\+\\+ ops"):
        pairwise_iou_rotated(boxes, boxes)


@pytest.mark.skipif(not NO_CPP_OPS, reason="official Detectron2 build with C++ ops")
def test_build_reports_its_local_version():
    from detectron2.utils.collect_env import collect_env_info

    assert detectron2.__version__ == "0.6+nocsrc"
    assert "no C++ ops" in collect_env_info()
