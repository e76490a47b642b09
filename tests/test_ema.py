"""EMA: BYOL's cosine momentum schedule and the update formula, on hand-checkable values."""

import math

import pytest
import torch
from torch import nn

from soco.modeling.ema import cosine_tau, ema_update_


def test_cosine_tau_values():
    # tau_k = 1 - (1 - 0.99) (cos(pi k / K) + 1) / 2
    assert cosine_tau(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_tau(50, 100, 0.99) == pytest.approx(0.995)
    assert cosine_tau(100, 100, 0.99) == pytest.approx(1.0)
    assert cosine_tau(25, 100, 0.99) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
    # Clamped outside [0, K]; a constant schedule when base == end (MoCo's 0.999).
    assert cosine_tau(150, 100, 0.99) == pytest.approx(1.0)
    assert cosine_tau(37, 100, 0.999, 0.999) == pytest.approx(0.999)
    with pytest.raises(ValueError):
        cosine_tau(0, 0, 0.99)


def test_ema_update_formula_on_parameters_only():
    online, target = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        online.weight.copy_(torch.tensor([1.0, 3.0]))
        target.weight.copy_(torch.tensor([5.0, -1.0]))
        online.running_mean.fill_(7.0)
    ema_update_(target, online, tau=0.75)
    # 0.75 * xi + 0.25 * theta
    assert torch.allclose(target.weight, torch.tensor([4.0, 0.0]))
    assert torch.allclose(target.bias, torch.zeros(2))
    assert torch.equal(target.running_mean, torch.zeros(2))  # buffers are the target's own
    assert torch.equal(online.weight, torch.tensor([1.0, 3.0]))


def test_ema_update_rejects_different_modules():
    with pytest.raises(ValueError):
        ema_update_(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)), 0.9)


def test_meta_arch_target_copy_and_update():
    from soco.modeling.meta_arch.base import PretrainMetaArch
    from soco.config import get_pretrain_cfg

    model = PretrainMetaArch(get_pretrain_cfg())
    model.head = nn.Linear(2, 1)
    model.make_target("head")
    assert not any(p.requires_grad for p in model.target.parameters())
    assert "target.head.weight" in model.state_dict()
    with torch.no_grad():
        model.head.weight.add_(1.0)
    before = model.target["head"].weight.clone()
    model.on_step_end(0, 10)  # tau = 0.99 at k = 0
    assert torch.allclose(model.target["head"].weight, 0.99 * before + 0.01 * model.head.weight)
    model.reset_target()
    assert torch.equal(model.target["head"].weight, model.head.weight)
