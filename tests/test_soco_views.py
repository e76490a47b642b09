"""SoCo views: boxes follow every crop/resize/flip, jitter statistics, the dropped-outside rule,
and K valid boxes in every case."""

import pytest
import torch

from soco.data.soco_views import (
    SoCoViewBuilder,
    SoCoViewParams,
    jitter_boxes,
    keep_visible,
    sample_indices,
    visible_fraction,
)

H, W = 90, 150
# Painted rectangle in original pixels; not centred, so a flip moves it.
RECT = (20.0, 15.0, 95.0, 70.0)


def _painted_image():
    image = torch.zeros(3, H, W, dtype=torch.uint8)
    x0, y0, x1, y1 = (int(v) for v in RECT)
    image[:, y0:y1, x0:x1] = 255
    return image


def _geometry_params(**kw):
    base = dict(
        num_proposals=2, view1_size=64, view2_size=64, view3_size=32, view4_size=48,
        jitter_prob=0.0, photometric=False,
    )
    base.update(kw)
    return SoCoViewParams(**base)


def _check_box_covers_paint(image, box, whole_paint_visible):
    """Pixels well inside the box are painted; with ``whole_paint_visible`` no paint lies outside."""
    mask = image[0].float() / 255.0
    x0, y0, x1, y1 = box.tolist()
    assert x1 - x0 > 2 and y1 - y0 > 2
    inner = mask[int(y0) + 1 : int(y1) - 1, int(x0) + 1 : int(x1) - 1]
    assert inner.mean() > 0.97, f"box {box.tolist()} is not on the painted pixels"
    if whole_paint_visible:
        outside = mask.clone()
        outside[max(int(y0) - 1, 0) : int(y1) + 2, max(int(x0) - 1, 0) : int(x1) + 2] = 0
        assert outside.sum() < 0.02 * mask.sum(), f"paint outside box {box.tolist()}"


def test_boxes_cover_the_same_painted_pixels_in_every_view():
    builder = SoCoViewBuilder(_geometry_params())
    image = _painted_image()
    s1 = builder.params.view1_size
    rect_v1 = torch.tensor(RECT) * torch.tensor([s1 / W, s1 / H, s1 / W, s1 / H])
    flipped_v1 = torch.tensor([s1 - rect_v1[2], rect_v1[1], s1 - rect_v1[0], rect_v1[3]])
    v1_flip_seen = set()
    for seed in range(24):
        torch.manual_seed(seed)
        out = builder(image, torch.tensor([RECT]))
        imgs, boxes = out["images"], out["boxes"]
        assert set(imgs) == {"v1", "v2", "v3", "v4"}
        assert set(boxes) == {"v1", "v2", "v3", "v1_v4", "v4"}
        for view, sets in {"v1": ["v1", "v1_v4"], "v2": ["v2"], "v3": ["v3"], "v4": ["v4"]}.items():
            assert imgs[view].shape[-1] == {"v1": 64, "v2": 64, "v3": 32, "v4": 48}[view]
            for s in sets:
                assert boxes[s].shape == (2, 4)
                # In V1 the box is the part of the rectangle visible in the crop: paint may lie
                # outside it; in the crop views the whole visible paint is that part.
                for box in boxes[s]:
                    _check_box_covers_paint(imgs[view], box, whole_paint_visible=view != "v1")
        # V1's boxes lie inside the (possibly flipped) rectangle: record which path was taken.
        b = boxes["v1"][0]
        for name, ref in (("plain", rect_v1), ("flipped", flipped_v1)):
            if (b[:2] >= ref[:2] - 0.5).all() and (b[2:] <= ref[2:] + 0.5).all():
                v1_flip_seen.add(name)
        # V3 is V2 downsampled: same boxes at half the scale unless one of them was flipped.
        v2_box, v3_box = boxes["v2"][0], boxes["v3"][0] * 2
        mirrored = torch.stack([64 - v3_box[2], v3_box[1], 64 - v3_box[0], v3_box[3]])
        assert torch.allclose(v2_box, v3_box, atol=1e-3) or torch.allclose(v2_box, mirrored, atol=1e-3)
    assert v1_flip_seen == {"plain", "flipped"}


def test_photometric_pipeline_keeps_shapes_and_dtype():
    torch.manual_seed(0)
    builder = SoCoViewBuilder(SoCoViewParams(view1_size=64, view2_size=64, view3_size=32))
    out = builder(_painted_image(), torch.tensor([RECT]))
    assert {k: tuple(v.shape) for k, v in out["images"].items()} == {
        "v1": (3, 64, 64), "v2": (3, 64, 64), "v3": (3, 32, 32)
    }
    assert all(v.dtype == torch.uint8 for v in out["images"].values())
    assert all(b.shape == (4, 4) and b.dtype == torch.float32 for b in out["boxes"].values())


def test_jitter_statistics_follow_the_paper():
    torch.manual_seed(0)
    n = 20000
    boxes = torch.tensor([[400.0, 300.0, 600.0, 400.0]]).repeat(n, 1)  # w 200, h 100, far from edges
    out = jitter_boxes(boxes, prob=0.5, ratio=0.1, view_size=1000)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    w2, h2 = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    dcx = (out[:, 0] + out[:, 2] - boxes[:, 0] - boxes[:, 2]) / 2
    dcy = (out[:, 1] + out[:, 3] - boxes[:, 1] - boxes[:, 3]) / 2
    r = (w2 - w) / w
    moved = (out - boxes).abs().sum(1) > 1e-4
    assert abs(moved.float().mean().item() - 0.5) < 0.02
    # Paper: one r per box for centre and size: x' = x + r w, y' = y + r h, w' = w + r w, h' = h + r h.
    assert torch.allclose((h2 - h) / h, r, atol=1e-4)
    assert torch.allclose(dcx / w, r, atol=1e-4) and torch.allclose(dcy / h, r, atol=1e-4)
    rm = r[moved]
    assert rm.min() >= -0.1 - 1e-6 and rm.max() <= 0.1 + 1e-6
    assert abs(rm.mean().item()) < 0.004
    assert abs(rm.var().item() - 0.01 / 3) < 0.0003  # U[-0.1, 0.1] has variance 0.2^2 / 12

    torch.manual_seed(1)
    out = jitter_boxes(boxes, prob=1.0, ratio=0.1, view_size=1000, per_coordinate=True)
    rx = ((out[:, 0] + out[:, 2]) / 2 - 500) / 200
    rw = (out[:, 2] - out[:, 0] - 200) / 200
    assert abs(torch.corrcoef(torch.stack([rx, rw]))[0, 1].item()) < 0.05


def test_jitter_clips_to_the_view():
    torch.manual_seed(0)
    boxes = torch.tensor([[0.0, 0.0, 64.0, 64.0]]).repeat(200, 1)
    out = jitter_boxes(boxes, prob=1.0, ratio=0.1, view_size=64)
    assert out.min() >= 0 and out.max() <= 64


def test_visible_fraction_and_dropped_outside_rule():
    crop = (10, 20, 40, 50)  # top, left, height, width: x in [20, 70], y in [10, 50]
    boxes = torch.tensor(
        [
            [30.0, 20.0, 40.0, 30.0],  # inside
            [60.0, 20.0, 80.0, 30.0],  # half inside
            [62.0, 20.0, 82.0, 30.0],  # 40% inside
            [100.0, 100.0, 110.0, 110.0],  # outside
        ]
    )
    frac = visible_fraction(boxes, crop)
    assert torch.allclose(frac, torch.tensor([1.0, 0.5, 0.4, 0.0]))
    kept = keep_visible(boxes, crop, 0.5)
    assert torch.allclose(kept, torch.tensor([[30.0, 20.0, 40.0, 30.0], [60.0, 20.0, 70.0, 30.0]]))


def test_sample_indices_distinct_or_all_with_repeats():
    torch.manual_seed(0)
    idx = sample_indices(10, 4)
    assert len(set(idx.tolist())) == 4
    idx = sample_indices(3, 4)
    assert len(idx) == 4 and set(idx.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError):
        sample_indices(0, 4)


@pytest.mark.parametrize(
    "proposals",
    [
        torch.zeros(0, 4),  # no proposals: the whole image is the proposal
        torch.tensor([[0.0, 0.0, 6.0, 5.0]]),  # one tiny corner box that most crops drop
        torch.tensor([[10.0, 10.0, 60.0, 60.0], [80.0, 20.0, 140.0, 80.0]]),  # fewer than K
    ],
)
def test_k_valid_boxes_are_always_returned(proposals):
    builder = SoCoViewBuilder(_geometry_params(num_proposals=4, jitter_prob=0.5))
    for seed in range(10):
        torch.manual_seed(seed)
        out = builder(_painted_image(), proposals)
        for name, b in out["boxes"].items():
            size = out["images"]["v1" if name.startswith("v1") else name].shape[-1]
            assert b.shape == (4, 4)
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
            assert b.min() >= 0 and b.max() <= size


def test_fallback_to_the_crop_when_no_proposal_survives():
    # Every crop covers at most 60% of V1, so the whole-image proposal is never 100% visible:
    # after the attempts the crop itself (all of V2) is the proposal.
    params = _geometry_params(crop_scale=(0.5, 0.6), min_visible_fraction=1.0, max_crop_attempts=3)
    torch.manual_seed(0)
    out = SoCoViewBuilder(params)(_painted_image(), torch.tensor([[0.0, 0.0, W, H]]))
    assert torch.allclose(out["boxes"]["v2"], torch.tensor([[0.0, 0.0, 64.0, 64.0]]).repeat(2, 1))
    assert torch.allclose(out["boxes"]["v3"], torch.tensor([[0.0, 0.0, 32.0, 32.0]]).repeat(2, 1))


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="MIN_VISIBLE_FRACTION"):
        SoCoViewParams(min_visible_fraction=0.0)
    with pytest.raises(ValueError, match="CROP_SCALE"):
        SoCoViewParams(crop_scale=(0.6, 0.5))
    with pytest.raises(ValueError, match="uint8"):
        SoCoViewBuilder(SoCoViewParams())(torch.zeros(3, 10, 10), torch.zeros(0, 4))
