"""SoCo model: scale-aware levels, eq. 5-6, Detectron2 names, a few training steps, bad inputs."""

import math
import os

import numpy as np
import pytest
import torch
from detectron2 import model_zoo
from detectron2.modeling import build_model
from detectron2.modeling.poolers import ROIPooler

from soco.config import get_pretrain_cfg
from soco.engine.step import training_step
from soco.modeling.level_assignment import assign_levels_by_size, scale_aware_roi_pool
from soco.modeling.losses.soco import object_level_loss, soco_pair_loss
from soco.config.method_soco import check_soco_config
from soco.data.method_data import build_mapper, prepare_dataset_dicts
from soco.modeling.meta_arch.soco import SoCo

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs", "SoCo")


def tiny_cfg(name="SoCo_demo_R18_FPN_cpu.yaml", **soco):
    """The CPU demo config shrunk further for tests (R18, 32-channel FPN/head, 64 px views)."""
    cfg = get_pretrain_cfg()
    cfg.merge_from_file(os.path.join(CONFIG_DIR, name))
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = cfg.MODEL.FPN.NORM = cfg.MODEL.ROI_BOX_HEAD.NORM = "BN"
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.ROI_BOX_HEAD.CONV_DIM = 32
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.PROJECTOR.HIDDEN_DIM = cfg.MODEL.PREDICTOR.HIDDEN_DIM = 64
    cfg.MODEL.PROJECTOR.OUT_DIM = 32
    s = cfg.MODEL.SOCO
    s.VIEW1_SIZE = s.VIEW2_SIZE = 64
    s.VIEW3_SIZE, s.VIEW4_SIZE = 32, 48
    s.NUM_PROPOSALS = 2
    s.LEVEL_THRESHOLDS = (12, 24, 48)
    for k, v in soco.items():
        s[k] = v
    return cfg


# --------------------------------------------------------------------------- level assignment
@pytest.mark.parametrize(
    "side,level", [(1, 0), (48, 0), (49, 1), (96, 1), (97, 2), (192, 2), (193, 3), (224, 3)]
)
def test_level_boundaries(side, level):
    boxes = torch.tensor([[10.0, 20.0, 10.0 + side, 20.0 + side]])
    assert assign_levels_by_size(boxes).tolist() == [level]


def test_level_uses_sqrt_area_of_non_square_boxes():
    # 24 x 96 has sqrt(area) 48 -> P2; 25 x 96 -> 48.99 -> P3.
    boxes = torch.tensor([[0.0, 0.0, 24.0, 96.0], [0.0, 0.0, 25.0, 96.0]])
    assert assign_levels_by_size(boxes).tolist() == [0, 1]


def test_scale_aware_pooling_reads_the_assigned_level():
    # Level l is filled with the constant l: the pooled value says which level a box used.
    pooler = ROIPooler(7, scales=(1 / 4, 1 / 8, 1 / 16, 1 / 32), sampling_ratio=0, pooler_type="ROIAlignV2")
    features = [torch.full((2, 3, 256 // s, 256 // s), float(l)) for l, s in enumerate((4, 8, 16, 32))]
    boxes = [
        torch.tensor([[0.0, 0.0, 40.0, 40.0], [0.0, 0.0, 200.0, 200.0]]),
        torch.tensor([[10.0, 10.0, 90.0, 90.0], [5.0, 5.0, 150.0, 150.0], [0.0, 0.0, 48.0, 48.0]]),
    ]
    out = scale_aware_roi_pool(pooler, features, boxes, (48, 96, 192))
    assert out.shape == (5, 3, 7, 7)
    assert out.mean(dim=(1, 2, 3)).round().tolist() == [0, 3, 1, 2, 0]


# --------------------------------------------------------------------------- loss, eq. 5-6
def test_loss_matches_equations_5_and_6_on_hand_made_vectors():
    # One image, K = 2 proposals, 2-d embeddings with known angles.
    v1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # online predictions of V1
    v2_t = torch.tensor([[1.0, 1.0], [0.0, -3.0]])  # target projections of V2: 45 deg, 180 deg
    v3_t = torch.tensor([[5.0, 0.0], [3.0, 0.0]])  # target projections of V3: 0 deg, 90 deg
    c = math.cos(math.pi / 4)
    # eq. 5: L_i = -2 cos(v_i, v'_i) - 2 cos(v_i, v''_i); eq. 6: mean over i.
    expected = ((-2 * c - 2 * 1.0) + (-2 * -1.0 - 2 * 0.0)) / 2
    loss = object_level_loss(v1, v2_t) + object_level_loss(v1, v3_t)
    assert loss.item() == pytest.approx(expected, abs=1e-6)

    # Symmetrised: L + L~, with V2/V3 through the online network and V1 through the target.
    v2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    v1_t = torch.tensor([[0.0, 4.0], [-1.0, 0.0]])
    expected_tilde = ((-2 * 1.0) + (-2 * -1.0)) / 2
    pair = soco_pair_loss(v1, v2_t, v2, v1_t)
    assert pair.item() == pytest.approx(
        ((-2 * c) + (-2 * -1.0)) / 2 + expected_tilde, abs=1e-6
    )


def test_loss_is_a_batch_mean_over_images_and_proposals():
    torch.manual_seed(0)
    p, z = torch.randn(8, 5), torch.randn(8, 5)  # 2 images x K = 4
    per_image = [object_level_loss(p[i : i + 4], z[i : i + 4]) for i in (0, 4)]
    assert object_level_loss(p, z).item() == pytest.approx(sum(per_image).item() / 2, abs=1e-6)


# --------------------------------------------------------------------------- names, export
def _stock_detector_cfg(zoo_name, cfg):
    d2 = get_pretrain_cfg()
    d2.merge_from_file(model_zoo.get_config_file(zoo_name))
    for key in ("DEPTH", "RES2_OUT_CHANNELS", "NORM", "STRIDE_IN_1X1"):
        d2.MODEL.RESNETS[key] = cfg.MODEL.RESNETS[key]
    d2.MODEL.FPN.OUT_CHANNELS, d2.MODEL.FPN.NORM = cfg.MODEL.FPN.OUT_CHANNELS, cfg.MODEL.FPN.NORM
    for key in ("NAME", "NUM_CONV", "NUM_FC", "CONV_DIM", "FC_DIM", "NORM"):
        d2.MODEL.ROI_BOX_HEAD[key] = cfg.MODEL.ROI_BOX_HEAD[key]
    d2.MODEL.MASK_ON = False
    d2.MODEL.DEVICE = "cpu"
    return d2


@pytest.mark.parametrize(
    "variant,zoo_name",
    [
        ("FPN", "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"),
        ("C4", "COCO-Detection/faster_rcnn_R_50_C4_1x.yaml"),
    ],
)
def test_module_names_match_a_stock_detectron2_detector(variant, zoo_name):
    if variant == "C4":
        cfg = tiny_cfg(VARIANT="C4", USE_VIEW3=False)
        cfg.MODEL.RESNETS.OUT_FEATURES = ["res4"]
        cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
    else:
        cfg = tiny_cfg()
    ours = SoCo(cfg).state_dict()
    stock = build_model(_stock_detector_cfg(zoo_name, cfg)).state_dict()
    spec = SoCo.export_spec(cfg)
    assert set(spec) == ({"backbone", "res5"} if variant == "C4" else {"backbone", "fpn", "head"})
    for part, prefixes in spec.items():
        for src, dst in prefixes:
            mine = {k[len(src):]: v.shape for k, v in ours.items() if k.startswith(src)}
            theirs = {k[len(dst):]: v.shape for k, v in stock.items() if k.startswith(dst)}
            assert mine and mine == theirs, f"{part}: {src} vs {dst}"
    # The target network carries the same names under target.
    online = {k for k in ours if not k.startswith("target.")}
    for k in ours:
        if k.startswith("target."):
            assert k[len("target."):] in online


def test_inconsistent_config_names_the_key():
    cfg = tiny_cfg(VARIANT="C4", USE_VIEW3=True)
    with pytest.raises(ValueError, match="USE_VIEW3"):
        check_soco_config(cfg)
    with pytest.raises(ValueError, match="VARIANT"):
        check_soco_config(tiny_cfg(VARIANT="C5"))
    with pytest.raises(ValueError, match="LEVEL_THRESHOLDS"):
        check_soco_config(tiny_cfg(LEVEL_THRESHOLDS=(96, 48, 192)))


# --------------------------------------------------------------------------- data + training
def _write_proposals(path, ids, boxes):
    from soco.data.proposals import save_proposals

    save_proposals(str(path), list(ids), [np.asarray(b, dtype=np.float32) for b in boxes])


def _photo_dicts(n):
    import soco.embedded  # noqa: F401  (registers the demo data sets)
    from detectron2.data import DatasetCatalog

    return DatasetCatalog.get("soco_demo_photos")[:n]


def test_missing_images_in_the_proposal_file_fail_clearly(tmp_path):
    dicts = [{"file_name": "a.jpg", "image_id": "a.jpg"}, {"file_name": "b.jpg", "image_id": "sub/b.jpg"}]
    path = tmp_path / "props.pkl"
    _write_proposals(path, ["a.jpg"], [[[0, 0, 10, 10]]])
    cfg = tiny_cfg(PROPOSALS=str(path))
    with pytest.raises(ValueError, match=r"props.pkl lacks 1 of the 2 images.*sub/b.jpg"):
        prepare_dataset_dicts(cfg, dicts)
    with pytest.raises(ValueError, match="MODEL.SOCO.PROPOSALS is empty"):
        prepare_dataset_dicts(tiny_cfg(PROPOSALS=""), dicts)
    with pytest.raises(KeyError, match="proposal_boxes"):
        build_mapper(cfg)(dicts[0])


def _proposals_for(dicts):
    """Selective-search proposals from the project's generator (SoCo's filter applied)."""
    from soco.proposals.runner import propose_file

    return [propose_file(d["file_name"], "vectorized", 160)[0] for d in dicts]



def test_a_few_cpu_iterations_lower_the_loss(tmp_path):
    dicts = _photo_dicts(2)
    path = tmp_path / "props.pkl"
    _write_proposals(path, [d["image_id"] for d in dicts], _proposals_for(dicts))
    cfg = tiny_cfg(PROPOSALS=str(path), USE_VIEW4=True)
    mapper = build_mapper(cfg)
    batch = [mapper(d) for d in prepare_dataset_dicts(cfg, dicts)]
    assert [tuple(v.shape) for v in batch[0]["views"]] == [(3, 64, 64), (3, 64, 64), (3, 32, 32), (3, 48, 48)]
    model = SoCo(cfg)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    totals = []
    for it in range(6):
        losses, _ = training_step(model, lambda: batch, optimizer, it, 6)
        assert set(losses) == {"loss_v1_v2", "loss_v1_v3", "loss_v1_v4"}
        totals.append(float(sum(losses.values())))
    assert all(math.isfinite(t) for t in totals)
    assert totals[-1] < totals[0] - 0.1, totals
    # The target moved towards the online network (EMA), but is not a copy of it.
    p_online = model.projector[0].weight
    p_target = model.target["projector"][0].weight
    assert not torch.equal(p_online, p_target)


def test_c4_variant_trains_on_v1_and_v2_only():
    cfg = tiny_cfg(VARIANT="C4", USE_VIEW3=False)
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res4"]
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
    mapper = build_mapper(cfg)
    image = {"file_name": "unused", "image_id": "x"}
    views = mapper.build_views(torch.randint(0, 256, (3, 80, 100), dtype=torch.uint8), torch.tensor([[5.0, 5, 60, 70]]))
    batch = [dict(image, views=[views["images"]["v1"], views["images"]["v2"]], boxes=views["boxes"])] * 2
    model = SoCo(cfg)
    losses = model(batch)
    assert set(losses) == {"loss_v1_v2"} and torch.isfinite(losses["loss_v1_v2"])
    losses["loss_v1_v2"].backward()
    assert model.roi_heads["res5"][0].conv1.weight.grad is not None


def test_every_online_parameter_gets_a_gradient_when_levels_are_empty():
    # All boxes fall on P2, yet P3-P5's convs must receive (zero) gradients: DistributedDataParallel
    # without find_unused_parameters requires a gradient for every parameter in every step.
    cfg = tiny_cfg()
    model = SoCo(cfg)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]])
    views = [torch.randint(0, 256, (3, s, s), dtype=torch.uint8) for s in (64, 64, 32)]
    item = {"views": views, "boxes": {"v1": boxes, "v2": boxes, "v3": boxes / 2}, "image_id": "x"}
    sum(model([item, item]).values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert all(not p.requires_grad for p in model.target.parameters())


def test_resume_reproduces_the_losses_of_an_uninterrupted_soco_run(tmp_path):
    """Through the real trainer: 4 steps straight vs 2 steps, restart from the iteration-1
    checkpoint, 2 more steps: same losses (views, proposal sampling, jitter) and same weights."""
    import shutil

    from soco.embedded import image_root as embedded_image_root
    from soco.engine import run_pretraining

    dicts = _photo_dicts(4)
    image_root = embedded_image_root("soco_demo_photos")
    props = tmp_path / "props.pkl"
    _write_proposals(props, [d["image_id"] for d in dicts], _proposals_for(dicts))
    (tmp_path / "list.txt").write_text("".join(d["image_id"] + "\n" for d in dicts))

    def run(out, resume=False):
        cfg = tiny_cfg(PROPOSALS=str(props))
        cfg.merge_from_list([
            "MODEL.DEVICE", "cpu", "PRETRAIN.IMAGE_ROOT", image_root,
            "PRETRAIN.IMAGE_LIST", str(tmp_path / "list.txt"), "DATASETS.TRAIN", "()",
            "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 2,
            "DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", str(out), "SEED", 3, "PRETRAIN.LOG_PERIOD", 1,
        ])
        cfg.freeze()
        trainer = run_pretraining(cfg, resume=resume)
        return {it: v for v, it in trainer.storage.history("loss_v1_v2").values()}

    straight = run(tmp_path / "a")
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "model_0000001.pth", tmp_path / "b")
    (tmp_path / "b" / "last_checkpoint").write_text("model_0000001.pth")
    resumed = run(tmp_path / "b", resume=True)
    # 0-1 are restored from the checkpoint (smoothed metrics continue), 2-3 recomputed.
    assert sorted(resumed) == [0, 1, 2, 3] and resumed == straight, (straight, resumed)
    final_a = torch.load(tmp_path / "a" / "model_final.pth")["model"]
    final_b = torch.load(tmp_path / "b" / "model_final.pth")["model"]
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def _backbone_drift(cfg, batch, steps: int) -> float:
    """Relative change ||w - w0|| / ||w0|| of the ResNet's conv weights after ``steps`` optimiser
    steps with the config's own optimiser and lr schedule (warm-up included)."""
    from soco.solver.build import build_lr_scheduler, build_optimizer, resolve_schedule

    cfg = resolve_schedule(cfg, num_images=len(batch))
    torch.manual_seed(0)
    model = SoCo(cfg)
    model.train()
    convs = [m.weight for n, m in model.backbone.bottom_up.named_modules() if isinstance(m, torch.nn.Conv2d)]
    start = [w.detach().clone() for w in convs]
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    for it in range(steps):
        training_step(model, lambda: batch, optimizer, it, cfg.SOLVER.MAX_ITER, scheduler=scheduler)
    moved = torch.stack([(w.detach() - w0).norm() for w, w0 in zip(convs, start)]).norm()
    return float(moved / torch.stack([w0.norm() for w0 in start]).norm())


def test_demo_config_lr_moves_the_backbone_at_its_batch(tmp_path):
    """The CPU demo's LARS lr is not scaled down to its batch of 4: LARS moves a weight by about
    lr x TRUST_COEF of its norm per step, and the linearly scaled lr (1.0 x 4 / 256) moved the
    ResNet so little that 300 demo steps left it at its random init. The first 4 steps of a
    12-step run (the demo's schedule shape: warm-up over the first 1/6) must move it by 0.2 % or
    more, and far more than the scaled lr does (64x smaller lr)."""
    dicts = _photo_dicts(4)
    path = tmp_path / "props.pkl"
    _write_proposals(path, [d["image_id"] for d in dicts], _proposals_for(dicts))
    cfg = tiny_cfg(PROPOSALS=str(path))
    cfg.SOLVER.MAX_ITER = 12
    # The demo config's optimiser and schedule, unchanged by tiny_cfg.
    assert (cfg.SOLVER.OPTIMIZER, cfg.SOLVER.IMS_PER_BATCH, cfg.PRETRAIN.LR_REFERENCE_BATCH) == ("LARS", 4, 4)
    mapper = build_mapper(cfg)
    batch = [mapper(d) for d in prepare_dataset_dicts(cfg, dicts)]
    drift = _backbone_drift(cfg, batch, steps=4)
    scaled = cfg.clone()
    scaled.PRETRAIN.LR_REFERENCE_BATCH = 256
    drift_scaled = _backbone_drift(scaled, batch, steps=4)
    assert drift > 2e-3, drift
    assert drift > 30 * drift_scaled, (drift, drift_scaled)
