"""BYOL's normalised regression loss ||q/|q| - z/|z|||^2 = 2 - 2 cos, on hand-made vectors."""

import pytest
import torch

from soco.modeling.heads import MLPHead
from soco.modeling.losses import normalized_regression_loss


def test_values_against_cosine():
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    z = torch.tensor([[2.0, 0.0], [0.0, 5.0], [-3.0, -4.0], [1.0, 0.0]])
    expected = torch.tensor([0.0, 2.0, 4.0, 2.0 - 2.0 / 2**0.5])
    assert torch.allclose(normalized_regression_loss(q, z), expected, atol=1e-6)
    # Equals the squared distance of the normalised vectors (BYOL eq. 2).
    qn, zn = q / q.norm(dim=1, keepdim=True), z / z.norm(dim=1, keepdim=True)
    assert torch.allclose(normalized_regression_loss(q, z), ((qn - zn) ** 2).sum(1), atol=1e-6)


def test_scale_invariance_and_gradient_only_to_prediction():
    q = torch.randn(5, 8, requires_grad=True)
    z = torch.randn(5, 8)
    loss = normalized_regression_loss(q, z)
    assert torch.allclose(loss, normalized_regression_loss(3.0 * q, 0.5 * z), atol=1e-6)
    loss.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_shape_errors():
    with pytest.raises(ValueError):
        normalized_regression_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        normalized_regression_loss(torch.zeros(3), torch.zeros(3))


def test_mlp_head_layout():
    head = MLPHead(8, 16, 4, num_layers=2, norm="BN")
    assert [type(m).__name__ for m in head] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head(torch.randn(3, 8)).shape == (3, 4)
    plain = MLPHead(8, 16, 4, num_layers=3, norm="")
    assert [type(m).__name__ for m in plain] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    with pytest.raises(ValueError):
        MLPHead(8, 16, 4, norm="GN")
