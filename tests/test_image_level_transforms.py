"""Multi-view, MoCo v2 and CLSA strong augmentations: view counts and sizes, Table 1's 14
operations and ranges, the 5 x p=0.5 sequence, determinism under a seed, the mapper."""

import numpy as np
import pytest
import torch
from PIL import Image

from soco.data.image_io import ImageReadError
from soco.data.image_level_mapper import ImageLevelMapper, build_byol_multi_crop
from soco.data.indexed_datasets import IndexedDataset
from soco.data.transforms.clsa_strong import (
    CLSA_MULTI_CROPS,
    CLSA_OPERATIONS,
    CLSA_SINGLE_CROPS,
    CLSAStrongAugment,
    build_clsa_strong_views,
)
from soco.data.transforms.mocov2 import build_mocov2_transform
from soco.data.transforms.multiview import CropSpec, MultiViewTransform, build_multi_crop


def _image(h=40, w=48):
    return torch.from_numpy((np.random.RandomState(0).rand(h, w, 3) * 255).astype(np.uint8)).permute(2, 0, 1)


def test_table1_operations_and_ranges():
    expected = {
        "ShearX": (-0.3, 0.3), "ShearY": (-0.3, 0.3), "TranslateX": (-0.3, 0.3), "TranslateY": (-0.3, 0.3),
        "Rotate": (-30, 30), "AutoContrast": (0, 0), "Invert": (0, 0), "Equalize": (0, 0),
        "Solarize": (0, 256), "Posterize": (4, 8), "Contrast": (0.05, 0.95), "Color": (0.05, 0.95),
        "Brightness": (0.05, 0.95), "Sharpness": (0.05, 0.95),
    }
    assert {name: (op.low, op.high) for name, op in CLSA_OPERATIONS.items()} == expected
    image = _image()
    for name, op in CLSA_OPERATIONS.items():
        out = op.fn(image, op.low if name != "Solarize" else 128)
        assert out.shape == image.shape and out.dtype == torch.uint8, name
    assert torch.equal(CLSA_OPERATIONS["Invert"].fn(image, 0), 255 - image)
    assert torch.equal(CLSA_OPERATIONS["Solarize"].fn(image, 256), image)


def test_strong_sequence_probability_and_count(monkeypatch):
    calls = []
    op = CLSA_OPERATIONS["Invert"]
    monkeypatch.setitem(CLSA_OPERATIONS, "Invert", op._replace(fn=lambda im, v: calls.append(v) or op.fn(im, v)))
    torch.manual_seed(0)
    aug = CLSAStrongAugment(num_ops=5, p=0.5, ops=["Invert"])
    for _ in range(200):
        aug(_image(8, 8))
    assert 400 < len(calls) < 600  # 1000 draws at p = 0.5
    assert torch.equal(CLSAStrongAugment(5, p=0.0)(_image()), _image())
    with pytest.raises(ValueError):
        CLSAStrongAugment(ops=["Cutout"])


def test_magnitudes_cover_table1_ranges_uniformly():
    """2000 draws per operation: integer magnitudes reach both ends of Table 1's range (inclusive),
    real ones fill it uniformly (mean at the midpoint, extremes near both ends), operations
    without a magnitude get 0."""
    torch.manual_seed(0)
    for name, op in CLSA_OPERATIONS.items():
        values = np.array([CLSAStrongAugment.sample_magnitude(op) for _ in range(2000)], dtype=np.float64)
        span = op.high - op.low
        assert values.min() >= op.low and values.max() <= op.high, name
        if span == 0:
            assert (values == 0).all(), name
        elif op.integer:
            assert (values == np.round(values)).all(), name
            assert values.min() == op.low and values.max() == op.high, name
        else:
            assert abs(values.mean() - (op.low + op.high) / 2) < 0.03 * span, name
            assert values.min() < op.low + 0.01 * span and values.max() > op.high - 0.01 * span, name


def test_clsa_crops_and_determinism():
    assert [(s.size, s.scale) for s in CLSA_SINGLE_CROPS] == [(96, (0.086, 0.429))]
    assert [s.size for s in CLSA_MULTI_CROPS] == [224, 192, 160, 128, 96]
    views = build_clsa_strong_views(CLSA_MULTI_CROPS)
    torch.manual_seed(1)
    a = views(_image(64, 64))
    torch.manual_seed(1)
    b = views(_image(64, 64))
    assert [v.shape[-1] for v in a] == [224, 192, 160, 128, 96]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_multi_crop_and_two_view():
    t = build_byol_multi_crop(32, (0.2, 1.0), num_small=4, small_size=16, small_scale=(0.05, 0.2))
    views = t(_image())
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 4
    assert all(type(v) is torch.Tensor and v.dtype == torch.uint8 for v in views)
    seen = []
    build_multi_crop([CropSpec(8, (0.5, 1.0), 2), CropSpec(4, (0.1, 0.2), 1)], lambda i, s: seen.append((i, s)) or (lambda x: x))
    assert seen == [(0, 8), (1, 8), (2, 4)]
    with pytest.raises(ValueError):
        CropSpec(8, (0.5, 1.5))
    with pytest.raises(ValueError):
        MultiViewTransform([])
    assert build_mocov2_transform(24)(_image()).shape == (3, 24, 24)


def test_mapper_reads_file_and_keeps_index(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray((np.random.RandomState(0).rand(30, 40, 3) * 255).astype(np.uint8)).save(path)
    mapper = ImageLevelMapper({"views": build_byol_multi_crop(16, (0.5, 1.0)), "strong_views": build_clsa_strong_views([CropSpec(8, (0.5, 1.0))])})
    d = IndexedDataset([{"file_name": str(path), "image_id": "a.png"}])[0]
    out = mapper(d)
    assert out["instance_index"] == 0 and out["image_id"] == "a.png"
    assert [v.shape[-1] for v in out["views"]] == [16, 16] and out["strong_views"][0].shape == (3, 8, 8)
    with pytest.raises(ImageReadError, match="missing.png"):
        mapper({"file_name": str(tmp_path / "missing.png"), "image_id": "x"})
    with pytest.raises(ValueError):
        ImageLevelMapper({"strong_views": build_byol_multi_crop(16, (0.5, 1.0))})
