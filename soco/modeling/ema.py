"""Exponential moving average (EMA) of the online network and BYOL's cosine momentum schedule."""

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["MomentumSchedule", "cosine_tau", "ema_update_"]


def cosine_tau(iteration: int, max_iter: int, tau_base: float, tau_end: float = 1.0) -> float:
    """BYOL's schedule: tau_k = tau_end - (tau_end - tau_base) * (cos(pi k / K) + 1) / 2.

    With tau_end = 1 this is BYOL's 1 - (1 - tau_base)(cos(pi k/K) + 1)/2: tau_base at k = 0,
    tau_end at k = K. ``iteration`` is clamped to [0, max_iter].
    """
    if max_iter <= 0:
        raise ValueError(f"cosine_tau needs max_iter > 0, got {max_iter}")
    k = min(max(iteration, 0), max_iter)
    return tau_end - (tau_end - tau_base) * (math.cos(math.pi * k / max_iter) + 1.0) / 2.0


@dataclass(frozen=True)
class MomentumSchedule:
    """tau of the EMA target after step ``iteration`` of ``max_iter``: BYOL's cosine from
    ``start`` to ``end`` (:func:`cosine_tau`), or ``start`` at every step when ``constant``
    (MoCo's key encoder, SMoG's momentum network). Built once from ``MODEL.EMA``."""

    start: float
    end: float = 1.0
    constant: bool = False

    @classmethod
    def from_config(cls, cfg, constant: bool = False) -> "MomentumSchedule":
        """``MODEL.EMA.MOMENTUM`` -> ``MOMENTUM_END`` (cosine), or ``MOMENTUM`` throughout."""
        return cls(float(cfg.MODEL.EMA.MOMENTUM), float(cfg.MODEL.EMA.MOMENTUM_END), constant)

    def __call__(self, iteration: int, max_iter: int) -> float:
        if self.constant:
            return self.start
        return cosine_tau(iteration, max_iter, self.start, self.end)


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, tau: float) -> None:
    """In place: every target parameter  xi <- tau * xi + (1 - tau) * theta.

    Only parameters are averaged (BYOL). Buffers (BN running statistics) of the target are its
    own: the target runs in train mode and keeps its statistics, as BYOL's reference does.
    Both modules must have the same parameter names in the same order.
    """
    target_params = list(target.named_parameters())
    online_params = list(online.named_parameters())
    if [n for n, _ in target_params] != [n for n, _ in online_params]:
        raise ValueError("ema_update_: target and online modules have different parameters")
    t = [p for _, p in target_params]
    o = [p.detach() for _, p in online_params]
    # lerp: t + (1 - tau) * (o - t) = tau * t + (1 - tau) * o, one fused kernel per tensor list.
    torch._foreach_lerp_(t, o, 1.0 - tau)
