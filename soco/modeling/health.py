"""Representation-health metrics: pure functions of tensors and modules (no training state).

They watch the failure modes of self-supervised pretraining that a loss curve hides:

* **Runaway weights.** A convolution followed by BatchNorm is scale-invariant, so plain SGD
  inflates its weights' norm step after step (the gradient is orthogonal to the weights); a
  detector fine-tuned at an ordinary lr then barely moves such a layer. ``conv_weight_norms``
  and ``stage_norm_ratios`` compare norms with the start.
* **Rank collapse of the stem.** ``effective_rank`` of the first convolution's filters: the
  exponential of the entropy of their variance shares (squared singular values, normalised;
  Roy & Vetterli's effective rank on the spectrum of W W^T); 64 random 7x7x3 filters score
  about 51, three colour filters about 3.
* **Embedding collapse.** ``embedding_std``: the mean per-dimension standard deviation of the
  L2-normalised embeddings over a batch (BYOL's collapse signal); 1/sqrt(D) for embeddings
  spread over the sphere, 0 for a constant output.
* **Cluster collapse.** ``assignment_stats``: occupied clusters (of K) and the entropy of the
  assignment histogram, for the clustering methods (CoKe's labels, SMoG's groups).
"""

import math
from typing import Dict, Tuple

import torch
from torch import nn

__all__ = [
    "effective_rank",
    "embedding_std",
    "assignment_stats",
    "conv_weight_norms",
    "stage_norm_ratios",
    "max_bn_running_var",
]


@torch.no_grad()
def effective_rank(weight: torch.Tensor) -> Tuple[float, float]:
    """(effective rank, top direction's share) of ``weight`` (out, ...) seen as an
    (out, fan_in) matrix: with singular values s and variance shares p = s^2 / sum(s^2),
    exp(-sum p log p) and max p.

    Between 1 (rank one) and min(out, fan_in) (equal singular values); an all-zero weight
    gives (0.0, 0.0)."""
    s = torch.linalg.svdvals(weight.detach().reshape(weight.shape[0], -1).double().cpu()) ** 2
    total = s.sum()
    if total <= 0:
        return 0.0, 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum())), float(p.max())


@torch.no_grad()
def embedding_std(embeddings: torch.Tensor) -> float:
    """Mean over dimensions of the standard deviation over the batch of the L2-normalised rows
    of ``embeddings`` (N, D), N >= 2. 0: every row the same direction (collapse); about
    1/sqrt(D) for rows spread over the sphere."""
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"embedding_std needs an (N, D) batch with N >= 2, got shape {tuple(embeddings.shape)}")
    z = nn.functional.normalize(embeddings.detach().float(), dim=1)
    return float(z.std(dim=0).mean())


@torch.no_grad()
def assignment_stats(labels: torch.Tensor, num_clusters: int) -> Dict[str, float]:
    """Occupancy of ``num_clusters`` clusters by ``labels`` (any shape, integers in
    [0, num_clusters); negative entries, e.g. never-assigned instances, are ignored).

    Returns {"occupied": clusters with at least one member, "occupied_frac": occupied / K,
    "entropy": entropy of the assignment histogram divided by log K (1: uniform, 0: one
    cluster; 0 too when nothing is assigned)}."""
    labels = labels.detach().reshape(-1)
    labels = labels[labels >= 0]
    if labels.numel() and int(labels.max()) >= num_clusters:
        raise ValueError(f"assignment_stats: label {int(labels.max())} >= num_clusters {num_clusters}")
    counts = torch.bincount(labels.cpu(), minlength=num_clusters).double()
    occupied = int((counts > 0).sum())
    entropy = 0.0
    if labels.numel() and num_clusters > 1:
        p = counts[counts > 0] / counts.sum()
        entropy = float(-(p * p.log()).sum()) / math.log(num_clusters)
    return {"occupied": float(occupied), "occupied_frac": occupied / num_clusters, "entropy": entropy}


@torch.no_grad()
def conv_weight_norms(module: nn.Module) -> Dict[str, float]:
    """{qualified name: L2 norm of the weight} of every convolution (``nn.Conv2d`` and
    subclasses, e.g. Detectron2's ``Conv2d``) inside ``module``."""
    return {
        name: float(torch.linalg.vector_norm(m.weight.detach().float()))
        for name, m in module.named_modules()
        if isinstance(m, nn.Conv2d)
    }


def stage_norm_ratios(norms: Dict[str, float], initial: Dict[str, float]) -> Dict[str, Tuple[float, str]]:
    """Per stage (the first component of a conv's name: "stem", "res2", ...), the largest ratio
    norms[name] / initial[name] over the stage's convolutions and the conv that has it:
    {stage: (ratio, name)}. Names missing from ``initial`` (or with norm 0 there) are skipped."""
    out: Dict[str, Tuple[float, str]] = {}
    for name, norm in norms.items():
        start = initial.get(name, 0.0)
        if start <= 0:
            continue
        stage, ratio = name.split(".")[0], norm / start
        if stage not in out or ratio > out[stage][0]:
            out[stage] = (ratio, name)
    return out


@torch.no_grad()
def max_bn_running_var(module: nn.Module) -> Dict[str, float]:
    """{qualified name: largest running variance} of every BatchNorm inside ``module`` that
    tracks running statistics (a huge value after the stem: its conv's weights ran away)."""
    return {
        name: float(m.running_var.max())
        for name, m in module.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None
    }
