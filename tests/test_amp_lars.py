"""Mixed precision with LARS and the EMA (the GPU paper configs train with SOLVER.AMP.ENABLED).

GradScaler multiplies the loss by S; LARS's trust ratio uses ||g + wd w||, which is not invariant
to S when wd > 0, so the scaler must unscale before LARS steps, and skip steps with inf/NaN
gradients. Checked on CPU with torch's GradScaler("cpu"), which runs the same unscale/skip logic
as the CUDA one.
"""

import copy

import torch

from soco.modeling.ema import ema_update_
from soco.modeling.losses.soco import object_level_loss
from soco.solver.lars import LARS


def _model_and_batch():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    return model, torch.randn(6, 8), torch.randn(6, 4)


def _lars(model):
    return LARS(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2, trust_coef=0.001)


def test_grad_scaler_unscales_before_lars():
    model, x, y = _model_and_batch()
    ref = copy.deepcopy(model)
    opt, ref_opt = _lars(model), _lars(ref)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    loss = object_level_loss(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    object_level_loss(ref(x), y).backward()
    ref_opt.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    # Without unscaling, LARS would move the weights differently (wd > 0): the check can fail.
    scaled = copy.deepcopy(ref)
    bad_opt = _lars(scaled)
    (object_level_loss(scaled(x), y) * 2.0 ** 16).backward()
    bad_opt.step()
    assert any(not torch.allclose(p, q) for p, q in zip(scaled.parameters(), ref.parameters()))


def test_inf_gradients_skip_the_lars_step_and_the_ema_stays_finite():
    model, x, y = _model_and_batch()
    target = copy.deepcopy(model).requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    opt = _lars(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    loss = object_level_loss(model(x) * float("inf"), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0 ** 15
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    ema_update_(target, model, 0.99)
    assert all(torch.isfinite(p).all() for p in target.parameters())


def test_loss_is_float32_under_autocast():
    a = torch.randn(4, 8).to(torch.bfloat16)
    b = torch.randn(4, 8).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = object_level_loss(a, b)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, object_level_loss(a.float(), b.float()))
