"""Losses: pure functions of tensors, shapes in each docstring."""

from .byol import normalized_regression_loss

__all__ = ["normalized_regression_loss"]
