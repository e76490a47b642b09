"""SoCo's object-level loss (Wei et al. 2021, eq. 5-6, symmetrised)."""

import torch

from .byol import normalized_regression_loss

__all__ = ["object_level_loss", "soco_pair_loss"]


def object_level_loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over proposals and images of -2 cos(v_i, v'_i): one term of eq. 5, averaged as eq. 6.

    predictions: (M, D) online predictions v_i; targets: (M, D) target projections v'_i (no
    gradient is wanted through them; the caller computes them under no_grad), M = images x K.
    Every image has K proposals, so the mean over all M rows equals the batch mean of eq. 6.
    """
    # -2 cos = ||a/|a| - b/|b|||^2 - 2: BYOL's normalised regression minus its constant.
    # In float32 under mixed precision: F.normalize's eps (1e-12) is 0 in float16.
    return (normalized_regression_loss(predictions.float(), targets.float()) - 2.0).mean()


def soco_pair_loss(
    online_a: torch.Tensor, target_b: torch.Tensor, online_b: torch.Tensor, target_a: torch.Tensor
) -> torch.Tensor:
    """One view pair's term of L^SoCo = L + L~: view a's predictions against view b's target
    projections, plus the symmetric order. All (M, D), row i = proposal i in both views.
    L^SoCo is the sum of this over the pairs (V1, V2), (V1, V3) (and (V1, V4) for SoCo*).
    """
    return object_level_loss(online_a, target_b) + object_level_loss(online_b, target_a)
