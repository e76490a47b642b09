"""The representation-health metrics on hand-made cases, and the monitor hook's warnings,
summary and file (soco.modeling.health, soco.engine.health)."""

import json
import logging
import math
import os

import pytest
import torch
from detectron2.utils.events import EventStorage
from fvcore.nn.weight_init import c2_msra_fill

from conftest import REPO
from image_level_helpers import build_method, tiny_cfg
from soco.config import get_pretrain_cfg
from soco.config.validation import check_config
from soco.engine.health import (
    HEALTH_FILE,
    HealthMonitorHook,
    HealthThresholds,
    KNNMonitor,
    health_summary,
    online_resnet,
)
from soco.engine import build_training_model
from soco.engine.in_memory import pretrain_in_memory
from soco.modeling.health import (
    assignment_stats,
    conv_weight_norms,
    effective_rank,
    embedding_std,
    max_bn_running_var,
    stage_norm_ratios,
)
from soco.utils.errors import ConfigError


def test_effective_rank_of_a_rank_one_and_a_random_stem():
    rank_one = torch.ones(64, 1, 1, 1) * torch.randn(1, 3, 7, 7)
    assert effective_rank(rank_one) == pytest.approx((1.0, 1.0), abs=1e-6)
    conv = torch.nn.Conv2d(3, 64, 7, bias=False)
    torch.manual_seed(0)
    c2_msra_fill(conv)  # Detectron2's ResNet initialisation
    rank, top = effective_rank(conv.weight)
    assert 45 < rank < 57 and top < 0.06
    # Three equal orthogonal directions: rank 3, each a third of the variance.
    three = torch.zeros(63, 147)
    three[torch.arange(63), torch.arange(63) % 3] = 1.0
    assert effective_rank(three) == pytest.approx((3.0, 1 / 3))
    assert effective_rank(torch.zeros(4, 5)) == (0.0, 0.0)


def test_embedding_std_of_a_collapsed_and_a_spread_embedding():
    collapsed = torch.randn(1, 32).repeat(256, 1) * torch.rand(256, 1)  # one direction, any length
    assert embedding_std(collapsed) == pytest.approx(0.0, abs=1e-6)
    spread = torch.randn(8192, 64, generator=torch.Generator().manual_seed(0))
    assert embedding_std(spread) == pytest.approx(1 / math.sqrt(64), rel=0.02)
    with pytest.raises(ValueError, match="N >= 2"):
        embedding_std(torch.randn(1, 8))


def test_assignment_stats_of_one_occupied_cluster_and_a_uniform_one():
    one = assignment_stats(torch.full((100,), 3), 10)
    assert one == {"occupied": 1.0, "occupied_frac": 0.1, "entropy": 0.0}
    uniform = assignment_stats(torch.arange(40) % 8, 8)
    assert uniform["occupied_frac"] == 1.0 and uniform["entropy"] == pytest.approx(1.0)
    # Unassigned instances (-1) are ignored; two of four clusters, evenly: entropy log 2 / log 4.
    half = assignment_stats(torch.tensor([-1, -1, 0, 2, 0, 2]), 4)
    assert half["occupied"] == 2 and half["entropy"] == pytest.approx(0.5)
    assert assignment_stats(torch.full((5,), -1), 4)["entropy"] == 0.0
    with pytest.raises(ValueError, match="label 7 >= num_clusters 4"):
        assignment_stats(torch.tensor([0, 7]), 4)


def test_a_layer_scaled_ten_times_is_found_with_its_stage():
    model = build_method(tiny_cfg("BYOL"))
    resnet = online_resnet(model)
    start = conv_weight_norms(resnet)
    assert {"stem.conv1", "res2.0.conv1", "res5.1.conv2"} <= set(start)
    with torch.no_grad():
        resnet.res3[1].conv2.weight.mul_(10)
    ratios = stage_norm_ratios(conv_weight_norms(resnet), start)
    assert ratios["res3"][1] == "res3.1.conv2" and ratios["res3"][0] == pytest.approx(10.0, rel=1e-5)
    assert set(ratios) == {"stem", "res2", "res3", "res4", "res5"}
    assert all(r == pytest.approx(1.0) for stage, (r, _) in ratios.items() if stage != "res3")


def test_max_bn_running_var_per_layer():
    model = build_method(tiny_cfg("BYOL"))
    resnet = online_resnet(model)
    resnet.stem.conv1.norm.running_var[5] = 123.0
    variances = max_bn_running_var(resnet)
    assert variances["stem.conv1.norm"] == 123.0 and variances["res2.0.conv1.norm"] == 1.0


class _Trainer:
    """What the hook reads of a trainer: iter, max_iter, storage."""

    def __init__(self, storage, max_iter):
        self.storage, self.max_iter, self.iter = storage, max_iter, 0


def _run_hook(hook, model, iterations, max_iter, before=None):
    """Drive ``hook`` like the trainer for ``iterations`` steps, calling ``before(it)`` and a
    forward pass of the projector first; returns the storage."""
    with EventStorage(0) as storage:
        hook.trainer = _Trainer(storage, max_iter)
        hook.before_train()
        for it in range(iterations):
            hook.trainer.iter = storage.iter = it
            if before:
                before(it)
            hook.after_step()
        hook.after_train()
    return storage


def test_monitor_warns_once_naming_metric_layer_and_iteration(tmp_path, caplog):
    model = build_method(tiny_cfg("BYOL"))
    hook = HealthMonitorHook(model, period=2, output_dir=str(tmp_path))
    feats = torch.randn(8, model.feature_dim)

    def step(it):
        if it == 2:  # a runaway stem after the check at iteration 1
            with torch.no_grad():
                model.backbone.stem.conv1.weight.mul_(10)
        model.projector(feats)

    with caplog.at_level(logging.WARNING, logger="soco.engine.health"):
        storage = _run_hook(hook, model, 6, 6, step)
    warnings = [r.getMessage() for r in caplog.records if "norm_ratio_stem" in r.getMessage()]
    assert warnings == ["health: norm_ratio_stem of stem.conv1 is 10.00 x its start (threshold 5) at iteration 3"]
    ratios = {it: v for v, it in storage.history("health/norm_ratio_stem").values()}
    assert ratios == pytest.approx({1: 1.0, 3: 10.0, 5: 10.0})
    written = json.loads((tmp_path / HEALTH_FILE).read_text())
    assert written["iteration"] == 5 and written["metrics"]["norm_ratio_stem"] == pytest.approx(10.0)
    assert written["warnings"] == warnings and written["thresholds"]["norm_ratio_max"] == 5.0
    assert written["metrics"]["embed_std_ideal"] == pytest.approx(1 / math.sqrt(16))
    assert "stem 10.00" in health_summary(written["metrics"])


def test_monitor_flags_a_collapsed_embedding_and_one_occupied_cluster(caplog):
    cfg = tiny_cfg("CoKe", num_images=32)
    model = build_method(cfg)
    model.labels[0, :20] = 2  # every seen instance of head 0 in cluster 2 (of 4)
    model.labels[1, :30] = torch.arange(30) % 6  # evenly over the 6 clusters; 2 unseen
    # The projector's output reaches the monitor through a forward hook, as in training: a
    # constant input makes the outputs of a batch identical (eval-mode BN).
    model.eval()
    hook = HealthMonitorHook(model, period=1, thresholds=HealthThresholds(occupied_min_frac=0.3))
    with caplog.at_level(logging.WARNING, logger="soco.engine.health"):
        storage = _run_hook(hook, model, 1, 1, lambda it: model.projector(torch.ones(8, model.feature_dim)))
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "embed_std of projector is 0.0000" in messages and "at iteration 0" in messages
    assert "coke_head0_occupied_frac of coke_head0 is 25.0% of the clusters (threshold 30%)" in messages
    assert "coke_head1" not in messages
    assert storage.history("health/coke_head1_entropy").latest() == pytest.approx(1.0)
    assert storage.history("health/coke_head0_entropy").latest() == 0.0


def test_smog_reports_its_groups():
    model = build_method(tiny_cfg("SMoG"))
    assert model.health_assignments() == {}  # no groups before the first step
    model.groups.copy_(torch.eye(6, model.groups.shape[1]))
    model.groups_ready.fill_(True)
    model.cache[:3] = torch.eye(6, model.cache.shape[1])[[1, 1, 4]]
    model.cache_filled.fill_(3)
    (labels, k), = model.health_assignments().values()
    assert k == 6 and labels.tolist() == [1, 1, 4]


def test_the_start_survives_a_resume():
    model = build_method(tiny_cfg("BYOL"))
    first = HealthMonitorHook(model, period=1)
    _run_hook(first, model, 1, 1)
    with torch.no_grad():
        model.backbone.res4[0].conv1.weight.mul_(3)
    resumed = HealthMonitorHook(model, period=1)
    resumed.load_state_dict(first.state_dict())
    storage = _run_hook(resumed, model, 1, 1)
    assert storage.history("health/norm_ratio_res4").latest() == pytest.approx(3.0)


def test_knn_monitor_separates_classes_and_runs_at_its_period(tmp_path):
    gen = torch.Generator().manual_seed(0)
    patterns = torch.randint(0, 256, (3, 3, 12, 12), generator=gen)  # one random pattern per class

    def labelled(n):
        labels = torch.arange(n) % 3
        noise = torch.randint(-10, 11, (n, 3, 12, 12), generator=gen)
        return (patterns[labels] + noise).clamp(0, 255).to(torch.uint8), labels

    model = build_method(tiny_cfg("BYOL"))
    monitor = KNNMonitor(labelled(30), labelled(12), size=24, k=3)
    assert monitor(model) == 100.0 and model.training  # its mode is restored
    calls = []

    def knn(m):
        calls.append(m)
        return 42.0

    storage = _run_hook(HealthMonitorHook(model, period=10, output_dir=str(tmp_path), knn=knn, knn_period=2), model, 5, 5)
    assert [it for _, it in storage.history("health/knn_top1").values()] == [1, 3, 4] and calls[0] is model
    assert json.loads((tmp_path / HEALTH_FILE).read_text())["metrics"]["knn_top1"] == 42.0


def test_period_zero_disables_the_monitor(tmp_path):
    model = build_method(tiny_cfg("BYOL"))
    storage = _run_hook(HealthMonitorHook(model, period=0, output_dir=str(tmp_path)), model, 3, 3)
    assert not [k for k in storage.histories() if k.startswith("health/")]
    assert not (tmp_path / HEALTH_FILE).exists()


@pytest.mark.parametrize("method, path, sgd", [
    ("CoKe", "configs/CoKe/coke_R18_demo_det_cpu.yaml", False),
    ("SMoG", "configs/SMoG/smog_R18_demo_det_cpu.yaml", False),
    ("CoKe", "configs/CoKe/coke_R18_demo_det_cpu.yaml", True),  # the control: the former SGD setting
])
def test_demo_configs_keep_the_stem_bounded(method, path, sgd):
    """A few steps of the image-level demo config (batch 8, 32 px crops, random images): with
    LARS the stem keeps its norm and rank; the former SGD at lr 0.03 inflates it within the steps."""
    cfg = get_pretrain_cfg()
    cfg.merge_from_file(os.path.join(REPO, path))
    cfg.SOLVER.IMS_PER_BATCH = cfg.PRETRAIN.LR_REFERENCE_BATCH = 8
    cfg.MODEL[method.upper()].CROP_SIZE = 32
    if sgd:
        cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY = "SGD", 0.03, 1e-4
    images = torch.randint(0, 256, (32, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = build_training_model(cfg, len(images))
    start = conv_weight_norms(online_resnet(model))["stem.conv1"]
    pretrain_in_memory(cfg, images, 6, model=model, warmup_steps=1)
    ratio = conv_weight_norms(online_resnet(model))["stem.conv1"] / start
    rank, _ = effective_rank(model.backbone.stem.conv1.weight)
    if sgd:
        assert ratio > 3
    else:
        assert ratio <= 3 and rank >= 16, (ratio, rank)


@pytest.mark.parametrize("key, value, message", [
    ("PRETRAIN.HEALTH.PERIOD", -1, r"PRETRAIN\.HEALTH\.PERIOD \(-1\) and .* must be >= 0"),
    ("PRETRAIN.HEALTH.KNN_BANK", 0, r"needs PRETRAIN\.HEALTH\.KNN_BANK, KNN_QUERIES, KNN_SIZE, KNN_K >= 1"),
])
def test_bad_health_keys_are_named(key, value, message):
    cfg = tiny_cfg("BYOL")
    cfg.PRETRAIN.HEALTH.KNN_PERIOD = 10
    cfg.merge_from_list([key, value])
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)
