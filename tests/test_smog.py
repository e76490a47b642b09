"""SMoG: group assignment (closest group), momentum grouping and the group contrastive loss
against eq. 3/4 on hand-checkable tensors; beta schedule; periodic k-means + momentum reset at
the right iterations; the predictor's branch; checkpoint round trip; export names."""

import math

import pytest
import torch
from detectron2.modeling import build_model

from image_level_helpers import assert_export_matches_detectron2, assert_state_round_trip, random_batch, tiny_cfg, train_steps
from soco.config.validation import check_config
from soco.modeling.losses.smog import assign_to_groups, group_contrastive_loss, momentum_group_update, spherical_kmeans


def test_assignment_picks_the_closest_group_not_argmin():
    groups = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    feats = torch.tensor([[0.9, 0.1], [0.1, 0.9], [-2.0, 0.5]])
    assert assign_to_groups(feats, groups).tolist() == [0, 1, 2]


def test_momentum_group_update_eq4():
    groups = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    feats = torch.tensor([[0.0, 2.0], [0.0, 1.0]], requires_grad=True)  # both assigned to group 0 by hand
    new = momentum_group_update(groups, feats, torch.tensor([0, 0]), beta=0.5)
    # 0.5 * [1, 0] + 0.5 * normalise(mean of normalised features = [0, 1]) -> normalised
    s = 2 ** -0.5
    assert torch.allclose(new, torch.tensor([[s, s], [0.0, 1.0]]))
    assert torch.equal(momentum_group_update(groups, feats, torch.tensor([0, 0]), beta=1.0), groups)
    new[0, 1].backward()  # gradients reach the instance features through the group
    assert feats.grad is not None and feats.grad.abs().sum() > 0


def test_group_contrastive_loss_eq3():
    feats = torch.tensor([[1.0, 0.0]])
    groups = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = group_contrastive_loss(feats, groups, torch.tensor([1]), temperature=0.5)
    expected = -math.log(math.exp(0.0) / (math.exp(2.0) + math.exp(0.0)))
    assert torch.allclose(loss, torch.tensor([expected]))


def test_spherical_kmeans_finds_separated_groups():
    gen = torch.Generator().manual_seed(0)
    modes = torch.eye(3)
    x = torch.cat([modes[i] + 0.05 * torch.randn(20, 3, generator=gen) for i in range(3)])
    centres = spherical_kmeans(x, 3, iters=10, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(centres.norm(dim=1), torch.ones(3))
    assert sorted((centres @ modes.t()).argmax(dim=1).tolist()) == [0, 1, 2]
    assert spherical_kmeans(x[:2], 5, generator=torch.Generator().manual_seed(0)).shape == (5, 3)


def test_beta_schedule_is_linear():
    model = build_model(tiny_cfg("SMoG"))
    assert model.group_momentum(0, 100) == 1.0
    assert model.group_momentum(50, 100) == pytest.approx(0.995)
    assert model.group_momentum(100, 100) == pytest.approx(0.99)


def test_periodic_reset_and_round_trip(tmp_path):
    cfg = tiny_cfg("SMoG")  # RESET_PERIOD 3
    cfg.MODEL.EMA.MOMENTUM = 0.5
    cfg.MODEL.SMOG.PREDICTOR_BRANCH = "momentum"  # the paper's literal reading
    model = build_model(cfg)
    assert "predictor" in model.target and model.predictor is None
    frozen_predictor = {k: v.clone() for k, v in model.target["predictor"].named_parameters()}
    assert not any(p.requires_grad for p in model.target.parameters())
    batch = random_batch(cfg, 8)

    def target_equals_online():
        return all(
            torch.equal(a, b)
            for a, b in zip(model.target["backbone"].state_dict().values(), model.backbone.state_dict().values())
        )

    train_steps(model, batch, steps=1, max_iter=9)
    assert bool(model.groups_ready) and torch.allclose(model.groups.norm(dim=1), torch.ones(6))
    assert int(model.cache_filled) == 8
    assert not target_equals_online()  # iteration 0: EMA step only
    train_steps(model, batch, steps=1, start=1, max_iter=9)
    assert not target_equals_online()
    groups_before = model.groups.clone()
    train_steps(model, batch, steps=1, start=2, max_iter=9)  # iteration 2 ends period 1
    assert target_equals_online()
    assert not torch.equal(model.groups, groups_before)
    expected = spherical_kmeans(model.cache[:24], 6, 10, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(model.groups, expected)
    train_steps(model, batch, steps=1, start=3, max_iter=9)
    assert not target_equals_online()
    # the target-only predictor is neither averaged nor reset
    assert all(torch.equal(v, frozen_predictor[k]) for k, v in model.target["predictor"].named_parameters())
    assert_state_round_trip(model, lambda: build_model(cfg), tmp_path)
    assert_export_matches_detectron2(cfg, model)


def test_online_predictor_default_and_multi_crop():
    cfg = tiny_cfg("SMoG")
    assert cfg.MODEL.SMOG.PREDICTOR_BRANCH == "online"
    cfg.MODEL.SMOG.NUM_SMALL_CROPS = 2
    model = build_model(cfg)
    assert model.predictor is not None and "predictor" not in model.target
    batch = random_batch(cfg, 4)
    assert [v.shape[-1] for v in batch[0]["views"]] == [24, 24, 12, 12]
    losses = train_steps(model, batch, steps=1)
    assert torch.isfinite(losses["loss_smog"])
    cfg.MODEL.SMOG.PREDICTOR_BRANCH = "both"
    with pytest.raises(ValueError, match="PREDICTOR_BRANCH"):  # checked once, when a config is loaded
        check_config(cfg)
