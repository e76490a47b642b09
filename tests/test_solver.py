"""LARS against its formula, lr schedule values, epochs -> iterations, MAX_ITER override."""

import math

import pytest
import torch
from torch import nn

from soco.config import get_pretrain_cfg
from soco.solver import (
    LARS,
    build_lr_multiplier,
    build_lr_scheduler,
    build_optimizer,
    lars_param_groups,
    resolve_schedule,
    scaled_lr,
)


def test_lars_step_matches_formula():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    b = nn.Parameter(torch.tensor([1.0]))
    opt = LARS(
        [
            {"params": [w], "weight_decay": 0.1, "lars_adaptation": True},
            {"params": [b], "weight_decay": 0.0, "lars_adaptation": False},
        ],
        lr=2.0, momentum=0.9, trust_coef=0.001,
    )
    w.grad, b.grad = torch.tensor([0.3, 0.4]), torch.tensor([0.5])
    opt.step()
    # u = g + 0.1 w = [0.6, 0.8], ||u|| = 1, q = 0.001 * 5 / 1; buf = q u; w -= lr * buf
    assert torch.allclose(w, torch.tensor([3.0 - 2 * 0.003, 4.0 - 2 * 0.004]))
    assert torch.allclose(b, torch.tensor([1.0 - 2 * 0.5]))  # plain momentum SGD, no decay
    # Second step: momentum accumulates the trust-scaled update of the new weights.
    w_prev = w.detach().clone()
    w.grad, b.grad = torch.tensor([1.0, 0.0]), torch.tensor([0.5])
    u = torch.tensor([1.0, 0.0]) + 0.1 * w_prev
    q = 0.001 * w_prev.norm() / u.norm()
    buf = 0.9 * torch.tensor([0.003, 0.004]) + q * u
    opt.step()
    assert torch.allclose(w, w_prev - 2 * buf, atol=1e-7)
    assert torch.allclose(b, torch.tensor([0.0 - 2 * (0.9 * 0.5 + 0.5)]))


def test_lars_zero_weight_uses_trust_one():
    w = nn.Parameter(torch.zeros(2))
    opt = LARS([w], lr=1.0, momentum=0.0, weight_decay=0.0)
    w.grad = torch.tensor([1.0, -2.0])
    opt.step()
    assert torch.allclose(w, torch.tensor([-1.0, 2.0]))


def test_param_groups_exclude_bias_and_norm():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    model[2].weight.requires_grad_(False)
    regular, excluded = lars_param_groups(model, 1e-5)
    assert regular["params"] == [model[0].weight] and regular["lars_adaptation"]
    assert {id(p) for p in excluded["params"]} == {
        id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[2].bias)
    }
    assert excluded["weight_decay"] == 0.0 and not excluded["lars_adaptation"]
    assert len(lars_param_groups(model, 1e-5, exclude_bias_and_norm=False)) == 1


def _cfg(**solver):
    cfg = get_pretrain_cfg()
    cfg.SOLVER.IMS_PER_BATCH = 32
    cfg.PRETRAIN.EPOCHS, cfg.PRETRAIN.WARMUP_EPOCHS = 10, 2
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def test_epochs_to_iterations_and_override():
    cfg = _cfg(MAX_ITER=-1)
    out = resolve_schedule(cfg, num_images=1000)  # 1000 // 32 = 31 iterations per epoch
    assert (out.SOLVER.MAX_ITER, out.SOLVER.WARMUP_ITERS, out.PRETRAIN.NUM_IMAGES) == (310, 62, 1000)
    out = resolve_schedule(_cfg(MAX_ITER=50), num_images=1000)
    assert (out.SOLVER.MAX_ITER, out.SOLVER.WARMUP_ITERS) == (50, 10)  # warm-up keeps its share
    assert cfg.SOLVER.MAX_ITER == -1  # the input is not modified


@pytest.mark.parametrize(
    "change, message",
    [
        ({"IMS_PER_BATCH": 30}, "ACCUM_STEPS"),
        ({"EPOCHS": 0}, "EPOCHS"),
        ({"WARMUP_EPOCHS": 11}, "WARMUP_EPOCHS"),
    ],
)
def test_inconsistent_configs_fail_clearly(change, message):
    cfg = _cfg()
    cfg.PRETRAIN.ACCUM_STEPS = 4
    for k, v in change.items():
        setattr(cfg.SOLVER if k == "IMS_PER_BATCH" else cfg.PRETRAIN, k, v)
    with pytest.raises(ValueError, match=message):
        resolve_schedule(cfg, 1000, world_size=2)


def test_too_small_dataset_fails_clearly():
    with pytest.raises(ValueError, match="fewer than one batch"):
        resolve_schedule(_cfg(), num_images=10)
    with pytest.raises(ValueError, match="empty"):
        resolve_schedule(_cfg(MAX_ITER=5), num_images=0)


def test_warmup_cosine_values():
    cfg = resolve_schedule(_cfg(MAX_ITER=100, WARMUP_FACTOR=0.001), num_images=1000)  # warm-up 20
    f = build_lr_multiplier(cfg)
    assert f(0.0) == pytest.approx(0.001)
    assert f(10 / 100) == pytest.approx(0.001 + 0.999 * 0.5)
    assert f(20 / 100) == pytest.approx(1.0)
    assert f(60 / 100) == pytest.approx(0.5)
    assert f(40 / 100) == pytest.approx((1 + math.cos(math.pi * 20 / 80)) / 2)
    assert f(99.999 / 100) == pytest.approx(0.0, abs=1e-6)


def test_zero_lr_iterations_precede_the_unchanged_schedule():
    cfg = resolve_schedule(_cfg(MAX_ITER=100, WARMUP_FACTOR=0.001), num_images=1000)
    plain, zeroed = build_lr_multiplier(cfg), build_lr_multiplier(cfg, zero_lr_iters=10)
    assert zeroed(0.0) == 0.0 and zeroed(9.5 / 100) == 0.0
    for t in (10 / 100, 15 / 100, 0.5, 0.99):
        assert zeroed(t) == pytest.approx(plain(t))
    with pytest.raises(ValueError, match="lr 0"):
        build_lr_multiplier(cfg, zero_lr_iters=100)


def test_scheduler_drives_optimizer_lr_with_linear_scaling():
    cfg = _cfg(MAX_ITER=100, BASE_LR=1.0, WARMUP_FACTOR=0.0)
    cfg.SOLVER.IMS_PER_BATCH = 512
    cfg = resolve_schedule(cfg, num_images=10000)
    assert scaled_lr(cfg) == pytest.approx(2.0)
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, LARS)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.0) and lrs[10] == pytest.approx(1.0)
    assert lrs[20] == pytest.approx(2.0) and lrs[60] == pytest.approx(1.0)
    assert all(g["lr"] == opt.param_groups[0]["lr"] for g in opt.param_groups)


def test_sgd_option_and_bad_name():
    cfg = resolve_schedule(_cfg(MAX_ITER=10, OPTIMIZER="SGD", BASE_LR=0.03), num_images=100)
    opt = build_optimizer(cfg, nn.Linear(2, 2))
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["lr"] == pytest.approx(0.03 * 32 / 256)
    cfg.defrost()
    cfg.SOLVER.OPTIMIZER = "Adam"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(cfg, nn.Linear(2, 2))
