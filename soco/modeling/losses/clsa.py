"""CLSA (Wang & Qi, TPAMI 2022): MoCo v2's contrastive loss and the distributional divergence.

Pure functions of tensors. N queries, D feature size, K queue entries.
"""

import torch
import torch.nn.functional as F

__all__ = ["contrast_logits", "contrastive_loss", "distributional_divergence_loss"]


def contrast_logits(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """sim(z', z)/tau over [positive key, queue] (eq. 2, and the denominators of eq. 3/4/6).

    query: (N, D); key: (N, D) positives from the key encoder; queue: (K, D) negatives. Rows are
    L2-normalised here (cosine similarity). Returns (N, 1 + K): column 0 is the positive.
    """
    if query.shape != key.shape or queue.dim() != 2 or queue.shape[1] != query.shape[1]:
        raise ValueError(
            f"contrast_logits expects query/key (N, D) and queue (K, D), got {tuple(query.shape)}, "
            f"{tuple(key.shape)}, {tuple(queue.shape)}"
        )
    q = F.normalize(query, dim=1)
    pos = (q * F.normalize(key, dim=1)).sum(dim=1, keepdim=True)
    neg = q @ F.normalize(queue, dim=1).t()
    return torch.cat([pos, neg], dim=1) / temperature


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """L_C (eq. 1): -log p(z_i | z'_i), the positive being column 0. logits: (N, 1 + K). Returns (N,)."""
    return -F.log_softmax(logits, dim=1)[:, 0]


def distributional_divergence_loss(weak_logits: torch.Tensor, strong_logits: torch.Tensor) -> torch.Tensor:
    """L_D (eq. 7): -sum_j p(j | z'_i) log p(j | z''_i) over j in {positive key, queue}.

    The weak query's distribution is the target (no gradient); both are softmaxes over the same
    (1 + K) candidates with the same temperature (the paper's choice), and the log is taken with
    log_softmax. weak_logits, strong_logits: (N, 1 + K). Returns (N,).
    """
    if weak_logits.shape != strong_logits.shape:
        raise ValueError(
            f"distributional_divergence_loss: shapes differ {tuple(weak_logits.shape)} vs {tuple(strong_logits.shape)}"
        )
    target = F.softmax(weak_logits.detach(), dim=1)
    return -(target * F.log_softmax(strong_logits, dim=1)).sum(dim=1)
