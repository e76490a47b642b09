"""Unpadded FPN, the official view mode, box-aware cutout, and the official/AMP configs."""

import os

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone

from soco.config.defaults import load_pretrain_config
from soco.data.box_cutout import box_cutout
from soco.data.method_data import build_mapper
from soco.data.soco_official_views import clip_to, jitter_corner, overlapping, select_with_padding
from soco.data.soco_views import SoCoViewBuilder, SoCoViewParams, keep_visible
from soco.modeling.fpn import build_resnet_lateral_size_fpn_backbone
from soco.modeling.meta_arch.soco import SoCo

from test_soco_model import tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------- FPN
def _fpns():
    cfg = tiny_cfg()
    cfg.MODEL.FPN.NORM = ""  # no BN: outputs compare pixel by pixel
    torch.manual_seed(0)
    ours = build_resnet_lateral_size_fpn_backbone(cfg, ShapeSpec(channels=3)).eval()
    stock = build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3)).eval()
    stock.load_state_dict(ours.state_dict())
    return ours, stock


def test_lateral_size_fpn_has_detectron2_tensors_and_outputs():
    ours, stock = _fpns()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in stock.state_dict().items()}
    x = torch.randn(2, 3, 64, 96)
    a, b = ours(x), stock(x)
    assert list(a) == list(b) == ["p2", "p3", "p4", "p5", "p6"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert ours.size_divisibility == 1 and stock.size_divisibility == 32


def test_lateral_size_fpn_runs_sizes_detectron2_cannot():
    ours, stock = _fpns()
    x = torch.randn(1, 3, 56, 56)  # 56 = 7 x 8: res5 is 2x2 (ceil), res4 4x4, res3 7x7
    with pytest.raises(RuntimeError):
        stock(x)
    out = ours(x)
    assert {k: tuple(v.shape[-2:]) for k, v in out.items()} == {
        "p2": (14, 14), "p3": (7, 7), "p4": (4, 4), "p5": (2, 2), "p6": (1, 1)}


@pytest.mark.parametrize("upsample,independent", [("lateral_size", True), ("scale2", False)])
def test_v3_features_do_not_depend_on_padding_pixels(upsample, independent):
    """Train-mode BN: only the view's own pixels may enter the statistics and the features."""
    cfg = tiny_cfg(FPN_UPSAMPLE=upsample)
    torch.manual_seed(0)
    model = SoCo(cfg).train()
    images = torch.randn(2, 3, 48, 48)  # V3-like: not a multiple of 32
    boxes = [torch.tensor([[4.0, 4, 30, 40], [10, 12, 44, 44]])] * 2
    stem = model.backbone.bottom_up.stem.conv1
    stem.norm.reset_running_stats()
    h = model.object_features(images, [boxes], target=False)[0]
    # The stem BN's running mean after one pass (momentum 0.1 from 0) against the mean of the
    # stem conv over the 48 px views alone.
    own = torch.nn.functional.conv2d(images, stem.weight, stride=2, padding=3).mean(dim=(0, 2, 3))
    assert torch.allclose(stem.norm.running_mean, 0.1 * own, atol=1e-6) == independent
    assert h.shape == (4, cfg.MODEL.ROI_BOX_HEAD.FC_DIM) and torch.isfinite(h).all()


# ------------------------------------------------------------------------- official geometry
def test_overlap_clip_jitter_and_padding_by_hand():
    boxes = torch.tensor([[0.0, 0, 10, 10], [9, 9, 20, 20], [10, 0, 20, 5]])
    assert overlapping(boxes, (9.5, 9.5, 30, 30)).tolist() == [True, True, False]
    assert clip_to(boxes[:1], (5, 5, 30, 30)).tolist() == [[5, 5, 10, 10]]
    torch.manual_seed(0)
    assert torch.equal(jitter_corner(boxes, torch.zeros(3), 0.1), boxes)
    j = jitter_corner(boxes.repeat(200, 1), torch.ones(600), 0.1)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    dx1 = (j[:, 0] - boxes.repeat(200, 1)[:, 0]) / w.repeat(200)
    sw = (j[:, 2] - j[:, 0]) / w.repeat(200)
    sh = (j[:, 3] - j[:, 1]) / h.repeat(200)
    assert dx1.abs().max() <= 0.1 and (sw - 1).abs().max() <= 0.1 + 1e-6
    assert dx1.abs().max() > 0.08 and not torch.allclose(sw, sh)  # independent r per coordinate
    index, padded = select_with_padding(1, 4)
    assert index.tolist() == [0, 0, 0, 0] and padded.tolist() == [False, True, True, True]
    index, padded = select_with_padding(6, 4)
    assert len(set(index.tolist())) == 4 and not padded.any()


def _builder(**kw):
    params = dict(num_proposals=4, view1_size=64, view2_size=64, view3_size=32, views="official",
                  photometric=False, jitter_prob=0.0, crop_scale=(0.2, 0.3))
    params.update(kw)
    return SoCoViewBuilder(SoCoViewParams(**params))


def _unflip(boxes, size):
    return torch.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], dim=1)


def _matches(got, want, size):
    return torch.allclose(got, want, atol=1e-3) or torch.allclose(_unflip(got, size), want, atol=1e-3)


def test_official_v1_boxes_are_whole_proposals_and_crop_boxes_their_visible_part():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 100, 200), dtype=torch.uint8)
    proposal = torch.tensor([[20.0, 10, 180, 90]])
    for _ in range(10):
        out = _builder()(image, proposal)
        assert set(out["boxes"]) == {"v1", "v2", "v1_v3", "v3"}
        v1_box = torch.tensor([[20 * 64 / 200, 10 * 64 / 100, 180 * 64 / 200, 90 * 64 / 100]])
        for name in ("v1", "v1_v3"):
            # Row 0 is the proposal itself (jitter_prob 0); rows 1-3 pad K = 4 with copies that
            # the official code always jitters (by at most 10 % of the size per coordinate).
            assert _matches(out["boxes"][name][:1], v1_box, 64)
            assert not _matches(out["boxes"][name][1:], v1_box.expand(3, 4), 64)
            assert (out["boxes"][name][1:] - out["boxes"][name][:1]).abs().max() < 0.21 * 51.2
        # A crop of 20-30 % of the image inside a proposal of 64 %: its box is (nearly) the view.
        for name, size in (("v2", 64), ("v3", 32)):
            b = out["boxes"][name]
            assert (b >= -1e-4).all() and (b <= size + 1e-4).all()


def test_official_v3_is_an_independent_crop_and_star_resizes_v2():
    torch.manual_seed(1)
    image = torch.arange(3 * 80 * 120, dtype=torch.int64).remainder(251).to(torch.uint8).view(3, 80, 120)
    proposals = torch.tensor([[0.0, 0, 60, 40], [40, 20, 120, 80], [10, 10, 110, 70]])
    import torch.nn.functional as F
    differs = 0
    for _ in range(5):
        out = _builder(jitter_prob=0.5)(image, proposals)
        down = F.interpolate(out["images"]["v2"][None].float(), size=(32, 32), mode="bilinear", antialias=True)
        differs += not torch.allclose(down, out["images"]["v3"][None].float(), atol=30)
    assert differs >= 4
    star = _builder(view4_size=48)(image, proposals)
    assert set(star["boxes"]) == {"v1", "v2", "v1_v3", "v3", "v1_v4", "v4"}
    assert star["images"]["v4"].shape[-1] == 48


def test_paper_mode_is_unchanged_by_the_new_options():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 80, 100), dtype=torch.uint8)
    out = _builder(views="paper")(image, torch.tensor([[5.0, 5, 60, 70]]))
    assert set(out["boxes"]) == {"v1", "v2", "v3"}


# ------------------------------------------------------------------------- cutout
def test_box_cutout_by_hand():
    image = torch.zeros(3, 40, 40, dtype=torch.uint8)
    boxes = torch.tensor([[0.0, 0, 20, 20]])
    torch.manual_seed(0)
    out = box_cutout(image, boxes, prob=1.0, scale=(0.25, 0.25), fill=(124, 116, 104))
    filled = (out[0] == 124)
    assert filled.sum() <= 100 and filled.sum() >= 50  # a 10 x 10 square, clipped at the border
    ys, xs = torch.nonzero(filled, as_tuple=True)
    assert ys.max() < 25 and xs.max() < 25  # centred inside the box
    assert (out[1][filled] == 116).all() and (out[2][filled] == 104).all()
    assert torch.equal(box_cutout(image, boxes, 0.0, (0.1, 0.3), (1, 2, 3)), image)
    # Centre at a corner: the square is clipped, not moved.
    assert (box_cutout(image, torch.tensor([[0.0, 0, 0.01, 0.01]]), 1.0, (1.0, 1.0), (9, 9, 9)) == 9).sum() <= 3


def test_cutout_hits_every_view_but_v1():
    torch.manual_seed(0)
    image = torch.zeros(3, 80, 100, dtype=torch.uint8)
    out = _builder(cutout_prob=1.0, cutout_scale=(0.3, 0.3), cutout_fill=(200, 200, 200))(
        image, torch.tensor([[0.0, 0, 100, 80]]))
    assert not (out["images"]["v1"] == 200).any()
    assert (out["images"]["v2"] == 200).any() and (out["images"]["v3"] == 200).any()


def test_bad_view_options_name_the_key():
    with pytest.raises(ValueError, match="MODEL.SOCO.CUTOUT_SCALE"):
        SoCoViewParams(cutout_scale=(0.5, 0.1))


def test_official_mode_trains_with_its_own_v1_boxes_for_v3():
    cfg = tiny_cfg(VIEWS="official", CUTOUT_PROB=0.5)
    torch.manual_seed(0)
    builder = build_mapper(cfg).build_views
    batch = []
    for _ in range(2):
        out = builder(torch.randint(0, 256, (3, 80, 100), dtype=torch.uint8), torch.tensor([[5.0, 5, 60, 70], [30, 20, 90, 75]]))
        batch.append({"image_id": "x", "views": [out["images"][v] for v in ("v1", "v2", "v3")], "boxes": out["boxes"]})
    model = SoCo(cfg)
    assert model.loss_pairs["loss_v1_v3"] == (("v1", "v1_v3"), ("v3", "v3"))
    losses = model(batch)
    assert set(losses) == {"loss_v1_v2", "loss_v1_v3"} and all(torch.isfinite(v) for v in losses.values())


# ------------------------------------------------------------------------- configs
def _cfg(name):
    return load_pretrain_config(os.path.join(REPO, "configs", "SoCo", name))


@pytest.mark.parametrize("name,cutout,jitter,crop,epochs", [
    ("official/SoCo_R50_FPN_100ep.yaml", 0.5, 0.5, 0.5, 100),
    ("official/SoCo_R50_FPN_400ep.yaml", 0.0, 0.5, 0.5, 400),
    ("official/SoCo_star_R50_FPN_400ep.yaml", 0.0, 0.5, 0.5, 400),
    ("official/SoCo_R50_C4_100ep.yaml", 0.5, 0.0, 0.6, 100),
    ("official/SoCo_R50_C4_400ep.yaml", 0.5, 0.0, 0.6, 400),
])
def test_official_configs_follow_the_official_scripts(name, cutout, jitter, crop, epochs):
    cfg = _cfg(name)
    s = cfg.MODEL.SOCO
    assert (s.VIEWS, s.CUTOUT_PROB, s.JITTER_PROB, s.CROP_SCALE[0], cfg.PRETRAIN.EPOCHS) == (
        "official", cutout, jitter, crop, epochs)
    assert cfg.SOLVER.AMP.ENABLED and cfg.SOLVER.BASE_LR == 1.0 and cfg.MODEL.EMA.MOMENTUM == 0.99


@pytest.mark.parametrize("name", ["SoCo_R50_FPN_100ep.yaml", "SoCo_R50_FPN_400ep.yaml",
                                  "SoCo_star_R50_FPN_400ep.yaml", "SoCo_R50_C4_100ep.yaml",
                                  "SoCo_R50_C4_400ep.yaml"])
def test_paper_configs_train_with_amp_and_the_paper_views(name):
    cfg = _cfg(name)
    assert cfg.SOLVER.AMP.ENABLED and cfg.MODEL.SOCO.VIEWS == "paper" and cfg.MODEL.SOCO.CUTOUT_PROB == 0
    assert cfg.MODEL.SOCO.CROP_SCALE[0] == (0.6 if "C4" in name else 0.5)
    assert not _cfg("SoCo_demo_R18_FPN_cpu.yaml").SOLVER.AMP.ENABLED


def test_official_geometry_on_a_fixed_crop_by_hand():
    """Crop = right half of a 200 x 100 image: V1 keeps the whole proposal, V2 its visible part;
    a proposal with 2 of its 42 px inside is kept (any overlap), one outside is not."""
    builder = _builder(num_proposals=2, view3_size=0)
    builder._crop_v2.make_params = lambda images: {"top": 0, "left": 100, "height": 100, "width": 100}
    image = torch.zeros(3, 100, 200, dtype=torch.uint8)
    proposals = torch.tensor([[20.0, 10, 180, 90], [60, 10, 102, 20], [0, 0, 50, 50]])
    images, boxes = builder._official_geometry(image, proposals)
    assert set(boxes) == {"v1", "v2"}
    order = boxes["v1"][:, 0].argsort()  # the two kept proposals, in a random order
    v1 = boxes["v1"][order] / torch.tensor([64 / 200, 64 / 100] * 2)
    v2 = boxes["v2"][order] / (64 / 100) + torch.tensor([100.0, 0, 100, 0])
    torch.testing.assert_close(v1, proposals[[0, 1]])  # whole proposals (jitter_prob 0)
    torch.testing.assert_close(v2, torch.tensor([[100.0, 10, 180, 90], [100, 10, 102, 20]]))
    # The paper's reading on the same crop (V1 pixels: top 0, left 32, 64 x 32) keeps only the first.
    assert len(keep_visible(proposals * torch.tensor([64 / 200, 64 / 100] * 2), (0, 32, 64, 32), 0.5)) == 1
