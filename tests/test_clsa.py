"""CLSA: MoCo v2's L_C and the distributional divergence L_D against eq. 1 and 7 on hand-checkable
tensors; queue, momentum and BETA = 0 (MoCo v2) behaviour; checkpoint round trip; export names."""

import math

import pytest
import torch
from detectron2.modeling import build_model

from image_level_helpers import assert_export_matches_detectron2, assert_state_round_trip, random_batch, tiny_cfg, train_steps
from soco.modeling.losses.clsa import contrast_logits, contrastive_loss, distributional_divergence_loss


def test_contrast_logits_positive_first_and_cosine():
    q = torch.tensor([[2.0, 0.0]])
    k = torch.tensor([[1.0, 1.0]])
    queue = torch.tensor([[0.0, 3.0], [-1.0, 0.0]])
    logits = contrast_logits(q, k, queue, temperature=0.5)
    assert torch.allclose(logits, torch.tensor([[2 ** -0.5 / 0.5, 0.0, -2.0]]))
    with pytest.raises(ValueError):
        contrast_logits(q, k, torch.zeros(3, 5), 0.2)


def test_contrastive_loss_is_eq1():
    logits = torch.tensor([[1.0, 0.0, 0.0]])
    expected = -math.log(math.e / (math.e + 2))
    assert torch.allclose(contrastive_loss(logits), torch.tensor([expected]))


def test_divergence_is_eq7_with_weak_target_without_gradient():
    weak = torch.tensor([[math.log(2.0), 0.0, 0.0]], requires_grad=True)  # p = (1/2, 1/4, 1/4)
    strong = torch.tensor([[0.0, math.log(2.0), 0.0]], requires_grad=True)  # p = (1/4, 1/2, 1/4)
    loss = distributional_divergence_loss(weak, strong)
    expected = -(0.5 * math.log(0.25) + 0.25 * math.log(0.5) + 0.25 * math.log(0.25))
    assert torch.allclose(loss, torch.tensor([expected]))
    loss.sum().backward()
    assert weak.grad is None or torch.all(weak.grad == 0)
    # d/dz_strong = softmax(strong) - target
    assert torch.allclose(strong.grad, torch.tensor([[0.25 - 0.5, 0.5 - 0.25, 0.0]]))
    # equal distributions: the divergence is the entropy of the target
    same = distributional_divergence_loss(weak.detach(), weak.detach())
    assert torch.allclose(same, torch.tensor([-(0.5 * math.log(0.5) + 0.5 * math.log(0.25))]))
    # large logits stay finite (log_softmax, not the log of a softmax)
    assert torch.isfinite(distributional_divergence_loss(torch.tensor([[1e4, 0.0]]), torch.tensor([[0.0, 1e4]]))).all()


def test_model_queue_momentum_round_trip(tmp_path):
    cfg = tiny_cfg("CLSA")
    cfg.MODEL.EMA.MOMENTUM = 0.9
    model = build_model(cfg)
    assert model.target_momentum(0, 10) == model.target_momentum(9, 10) == 0.9  # constant, as MoCo
    batch = random_batch(cfg, 8)
    assert len(batch[0]["views"]) == 2 and batch[0]["strong_views"][0].shape == (3, 12, 12)
    queue_before = model.queue.clone()
    target_before = model.target["backbone"].stem.conv1.weight.clone()
    losses = train_steps(model, batch, steps=1)
    assert set(losses) == {"loss_contrast", "loss_divergence", "clsa_positive_prob"}
    assert int(model.queue_ptr) == 8
    assert not torch.equal(model.queue[:8], queue_before[:8]) and torch.equal(model.queue[8:], queue_before[8:])
    assert torch.allclose(model.queue[:8].norm(dim=1), torch.ones(8))
    online = model.backbone.stem.conv1.weight
    assert torch.allclose(model.target["backbone"].stem.conv1.weight, 0.9 * target_before + 0.1 * online, atol=1e-6)
    assert_state_round_trip(model, lambda: build_model(cfg), tmp_path)
    assert_export_matches_detectron2(cfg, model)


def test_beta_zero_is_mocov2_without_strong_views():
    cfg = tiny_cfg("CLSA")
    cfg.MODEL.CLSA.BETA = 0.0
    model = build_model(cfg)
    batch = random_batch(cfg, 4)
    assert "strong_views" not in batch[0]
    assert set(train_steps(model, batch, steps=1)) == {"loss_contrast", "clsa_positive_prob"}


def test_clsa_star_mapper_gives_five_strong_crops():
    cfg = tiny_cfg("CLSA")
    cfg.MODEL.CLSA.STRONG_CROP_SIZES = [24, 20, 16, 12, 8]
    cfg.MODEL.CLSA.STRONG_CROP_MIN_SCALES = [0.2, 0.172, 0.143, 0.114, 0.086]
    cfg.MODEL.CLSA.STRONG_CROP_MAX_SCALES = [1.0, 0.86, 0.715, 0.571, 0.429]
    item = random_batch(cfg, 1)[0]
    assert [v.shape[-1] for v in item["strong_views"]] == [24, 20, 16, 12, 8]
    cfg.MODEL.CLSA.STRONG_CROP_MAX_SCALES = [1.0]
    with pytest.raises(ValueError, match="STRONG_CROP"):
        random_batch(cfg, 1)
