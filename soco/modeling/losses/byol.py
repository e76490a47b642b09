"""BYOL's normalised regression loss (Grill et al. 2020, eq. 2)."""

import torch
import torch.nn.functional as F

__all__ = ["normalized_regression_loss"]


def normalized_regression_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|| q/||q|| - z/||z|| ||^2 = 2 - 2 cos(q, z), per row, without reduction.

    prediction: (N, D) online predictions q; target: (N, D) target projections z (the caller
    detaches them). Returns (N,) values in [0, 4]. Vectors are L2-normalised with eps 1e-12
    (F.normalize), so an all-zero row gives 2.
    """
    if prediction.shape != target.shape or prediction.dim() != 2:
        raise ValueError(
            f"normalized_regression_loss expects two (N, D) tensors of the same shape, "
            f"got {tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    cos = (F.normalize(prediction, dim=1) * F.normalize(target, dim=1)).sum(dim=1)
    return 2.0 - 2.0 * cos
