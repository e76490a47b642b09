"""soco.evaluation.item_probe: crops of labelled items, the detector's starting ResNet, kNN and
linear probe."""
import os

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from PIL import Image

from soco.evaluation import item_probe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "finetune", "faster_rcnn_R18_FPN_demo_cpu.yaml")


def demo_cfg():
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    return cfg


def test_item_boxes_are_squares_on_the_box_centre():
    boxes, labels = item_probe.item_boxes([{"bbox": [10, 20, 30, 10], "category_id": 4},
                                           {"bbox": [0, 0, 4, 8], "category_id": 0}])
    assert boxes.tolist() == [[10, 10, 40, 40], [-2, 0, 6, 8]]
    assert labels == [4, 0]


def test_item_crops_cut_and_resize_the_items(tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    image[10:20, 30:40] = (200, 0, 0)  # a red 10 x 10 item
    image[0:8, 0:4] = (0, 0, 120)  # a blue 4 x 8 item at the corner
    Image.fromarray(image).save(tmp_path / "a.png")
    dicts = [{"file_name": str(tmp_path / "a.png"), "annotations": [
        {"bbox": [30, 10, 10, 10], "category_id": 2}, {"bbox": [0, 0, 4, 8], "category_id": 7}]},
        {"file_name": str(tmp_path / "missing.png"), "annotations": []}]  # no items: not read
    crops, labels = item_probe.item_crops(dicts, 8)
    assert crops.shape == (2, 3, 8, 8) and crops.dtype == torch.uint8
    assert labels.tolist() == [2, 7]
    # Bilinear resampling: the border samples blend with the pixels just outside the box.
    assert (crops[0, 0, 1:-1, 1:-1] == 200).all() and (crops[0, 0] > 150).all() and (crops[0, 1:] == 0).all()
    # The square around the 4 x 8 item spans x in [-2, 6): outside the image is zero, the item
    # fills the middle half of the crop's columns.
    assert (crops[1, 2, :-1, 3:5] == 120).all() and (crops[1, :2] == 0).all()
    assert (crops[1, 2, :, 0] == 0).all() and (crops[1, 2, :, 7] == 0).all()
    with pytest.raises(ValueError, match="no annotated items"):
        item_probe.item_crops(dicts[1:], 8)


def test_detector_resnet_loads_the_start(tmp_path):
    cfg = demo_cfg()
    torch.manual_seed(5)
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("start")
    loaded, mean, std = item_probe.detector_resnet(cfg, str(tmp_path / "start.pth"), seed=1)
    random, _, _ = item_probe.detector_resnet(cfg, "", seed=1)
    again, _, _ = item_probe.detector_resnet(cfg, "", seed=1)
    key = "res5.0.conv1.weight"
    expected = model.backbone.bottom_up.state_dict()[key]
    assert torch.equal(loaded.state_dict()[key], expected)
    assert not torch.equal(random.state_dict()[key], expected)
    assert torch.equal(random.state_dict()[key], again.state_dict()[key])  # the seed decides random init
    assert mean.flatten().tolist() == pytest.approx(list(cfg.MODEL.PIXEL_MEAN))
    with pytest.raises(FileNotFoundError, match="nowhere.pkl does not exist"):
        item_probe.detector_resnet(cfg, str(tmp_path / "nowhere.pkl"), seed=1)


def _coloured_crops(values, size=32):
    """Solid crops, one per (R, G, B) value, with a little seeded noise."""
    gen = torch.Generator().manual_seed(0)
    crops = torch.stack([torch.tensor(v, dtype=torch.float32).view(3, 1, 1).expand(3, size, size) for v in values])
    return (crops + torch.randint(-8, 9, crops.shape, generator=gen)).clamp(0, 255).to(torch.uint8)


def test_item_probe_separates_separable_items():
    # Two classes a random ResNet tells apart: dark red items and bright green ones.
    bank_values = [(60 + i, 10, 10) for i in range(8)] + [(10, 200 + i, 30) for i in range(8)]
    query_values = [(64, 12, 8), (12, 205, 33), (58, 9, 12)]
    bank = (_coloured_crops(bank_values), torch.tensor([0] * 8 + [1] * 8))
    queries = (_coloured_crops(query_values), torch.tensor([0, 1, 0]))
    result = item_probe.item_probe(demo_cfg(), "", 1, bank, queries, k=5)
    assert result["knn_top1"] == 100.0 and result["linear_top1"] == 100.0
    assert result["bank_items"] == 16 and result["query_items"] == 3 and result["feature_dim"] == 512
    assert result["k"] == 5 and result["seconds"] > 0
    assert "linear_top1" not in item_probe.item_probe(demo_cfg(), "", 1, bank, queries, k=5, linear=False)
