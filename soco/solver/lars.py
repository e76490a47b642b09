"""LARS, the variant of self-supervised codebases (SimCLR, BYOL, Barlow Twins), not You et al.'s.

Written here because neither torch nor Detectron2/fvcore ships a LARS optimiser. For a
parameter w with gradient g, in a group with ``lars_adaptation=True``:

    u = g + wd * w
    q = trust_coef * ||w|| / ||u||      (q = 1 when ||w|| = 0 or ||u|| = 0)
    buf = momentum * buf + q * u
    w = w - lr * buf

You et al. (2017) divide by ||g|| + wd * ||w|| instead of ||g + wd * w||. Groups with
``lars_adaptation=False`` (biases and normalisation parameters, see ``soco.solver.build``) take
plain SGD-with-momentum steps with their own ``weight_decay`` (0 for those groups).
"""

from typing import Iterable

import torch

__all__ = ["LARS"]


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling with heavy-ball momentum; state: ``momentum_buffer``."""

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coef: float = 0.001,
        lars_adaptation: bool = True,
    ):
        if lr < 0 or momentum < 0 or weight_decay < 0 or trust_coef <= 0:
            raise ValueError(
                f"LARS: invalid lr={lr}, momentum={momentum}, weight_decay={weight_decay} "
                f"or trust_coef={trust_coef}"
            )
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coef=trust_coef,
            lars_adaptation=lars_adaptation,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if group["weight_decay"] != 0:
                    update = update.add(p, alpha=group["weight_decay"])
                if group["lars_adaptation"]:
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    one = torch.ones_like(w_norm)
                    trust = torch.where(
                        (w_norm > 0) & (u_norm > 0), group["trust_coef"] * w_norm / u_norm, one
                    )
                    update = update.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(update)
                p.add_(buf, alpha=-group["lr"])
        return loss
