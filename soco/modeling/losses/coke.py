"""CoKe: online constrained k-means (Qian et al., CVPR 2022, and its supplementary).

Pure functions of tensors. Notation: N instances in a batch, K clusters, D feature size.
Features and centres are L2-normalised, so ``s_ik = x_i^T c_k`` is a cosine similarity.
"""

import torch
import torch.nn.functional as F

__all__ = [
    "constrained_assignment",
    "dual_update",
    "running_center_update",
    "two_view_soft_targets",
    "soft_cross_entropy",
    "moving_average_label_update",
    "sparse_label_targets",
]


def constrained_assignment(similarity: torch.Tensor, duals: torch.Tensor) -> torch.Tensor:
    """Supplementary eq. 1: y_i = argmax_k (s_ik + rho_k).

    similarity: (N, K) cosine similarities to the centres; duals: (K,) dual variables rho.
    Returns (N,) int64 cluster indices.
    """
    if similarity.dim() != 2 or duals.shape != similarity.shape[1:]:
        raise ValueError(
            f"constrained_assignment expects (N, K) similarities and (K,) duals, "
            f"got {tuple(similarity.shape)} and {tuple(duals.shape)}"
        )
    return (similarity + duals).argmax(dim=1)


def dual_update(
    duals: torch.Tensor, labels: torch.Tensor, lower_bound: torch.Tensor, lr: float, project: bool = True
) -> torch.Tensor:
    """One projected-gradient step on the duals of the Lagrangian
    L_i = sum_k s_ik mu_ik + sum_k rho_k (mu_ik - gamma_k / N) (supplementary, proof of Thm. 1).

    The Lagrangian is minimised over rho >= 0, its gradient is the batch's cluster fraction
    minus the bound, so ``rho_k <- max(0, rho_k - lr * (n_k / B - gamma_k / N))``: a cluster
    that receives fewer than its lower bound sees its rho grow and attracts instances.
    Mini-batch form as in the official code (``update_center_mini_batch``), which projects
    only when the bound is a true lower bound (ratio < 1; ratio 1 is an equality constraint).

    duals: (K,); labels: (B,) int64 assignments of the batch; lower_bound: (K,) gamma_k / N as a
    fraction of the data (official: ratio / K). Returns the new (K,) duals (input untouched).
    """
    if lower_bound.shape != duals.shape:
        raise ValueError(f"dual_update: lower_bound {tuple(lower_bound.shape)} != duals {tuple(duals.shape)}")
    counts = torch.bincount(labels, minlength=duals.numel()).to(duals.dtype)
    new = duals - lr * (counts / max(labels.numel(), 1) - lower_bound)
    return new.clamp_min(0.0) if project else new


def running_center_update(
    centers: torch.Tensor, counts: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, normalize: bool = True
):
    """Online k-means centre step: each touched centre becomes the running mean of the
    instances assigned to it since ``counts`` was last reset (once per epoch in CoKe),
    re-normalised to the unit sphere (``normalize``; CoKe's second stage keeps the plain mean).

    c_k <- normalise((n_k c_k + sum_{i: y_i = k} x_i) / (n_k + m_k)), n_k <- n_k + m_k.
    centers: (K, D) unit rows; counts: (K,) instances seen this epoch; feats: (B, D) unit rows;
    labels: (B,) int64. Returns (new centres (K, D), new counts (K,)); untouched centres stay.
    """
    k = centers.shape[0]
    batch_counts = torch.bincount(labels, minlength=k).to(counts.dtype)
    sums = torch.zeros_like(centers).index_add_(0, labels, feats.to(centers.dtype))
    new_counts = counts + batch_counts
    touched = batch_counts > 0
    merged = (centers * counts[:, None] + sums) / new_counts.clamp_min(1)[:, None]
    new_centers = torch.where(touched[:, None], F.normalize(merged, dim=1) if normalize else merged, centers)
    return new_centers, new_counts


def two_view_soft_targets(prev_targets: torch.Tensor, other_view_probs: torch.Tensor, alpha: float) -> torch.Tensor:
    """Supplementary sec. 2.2.3: y_hat_{i:1} = alpha * y_tilde_i + (1 - alpha) * p_{i:2}.

    prev_targets: (N, K) last epoch's labels y_tilde as distributions (one-hot rows);
    other_view_probs: (N, K) the other view's p = softmax(x^T c_k / lambda) (treated as a
    constant). Returns (N, K) rows summing to 1.
    """
    if prev_targets.shape != other_view_probs.shape:
        raise ValueError(
            f"two_view_soft_targets: targets {tuple(prev_targets.shape)} vs probabilities {tuple(other_view_probs.shape)}"
        )
    return alpha * prev_targets + (1.0 - alpha) * other_view_probs.detach()


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-sum_k t_ik log softmax(logits)_ik per row, computed with log_softmax.

    logits: (N, K) x^T c / lambda; targets: (N, K) rows summing to 1 (one-hot for the single-
    view loss). Returns (N,).
    """
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)


def moving_average_label_update(ids: torch.Tensor, values: torch.Tensor, labels: torch.Tensor, factor: float):
    """Second stage (supplementary 2.3): each instance's label becomes the moving average of its
    one-hot labels over the second-stage epochs, kept sparse with its L largest entries.

    Slot s of instance i holds cluster ``ids[i, s]`` with weight ``values[i, s]``. The new label
    y_i goes to the slot already holding it, else replaces the smallest entry (its weight is
    dropped and the others renormalised); then every weight is scaled by (1 - factor) and y_i's
    gains ``factor`` (official ``update_label``; factor = 1 / (epochs into the second stage + 1)).

    ids: (M, L) int64; values: (M, L) weights summing to 1; labels: (M,) int64. Returns the new
    (ids, values) (inputs untouched).
    """
    if ids.shape != values.shape or labels.shape != ids.shape[:1] or not 0.0 < factor <= 1.0:
        raise ValueError(
            f"moving_average_label_update: ids {tuple(ids.shape)}, values {tuple(values.shape)}, "
            f"labels {tuple(labels.shape)}, factor {factor}"
        )
    same = ids == labels[:, None]
    matched = same.any(dim=1)
    slot = torch.where(matched, same.to(torch.uint8).argmax(dim=1), values.argmin(dim=1))[:, None]
    dropped = torch.where(matched[:, None], torch.zeros_like(values[:, :1]), values.gather(1, slot))
    values = values.scatter(1, slot, values.gather(1, slot) - dropped) * (1.0 - factor) / (1.0 - dropped)
    values = values.scatter_add(1, slot, torch.full_like(dropped, factor))
    return ids.scatter(1, slot, labels[:, None]), values


def sparse_label_targets(ids: torch.Tensor, values: torch.Tensor, num_clusters: int, temperature: float) -> torch.Tensor:
    """Soft targets of the second stage: softmax(values / t) over each instance's non-zero
    entries, 0 elsewhere (official ``get_label``, t = 0.5).

    ids, values: (M, L) as in :func:`moving_average_label_update`. Returns (M, K) rows summing to 1.
    """
    weights = torch.where(values > 0, (values / temperature).exp(), torch.zeros_like(values))
    dense = torch.zeros(ids.shape[0], num_clusters, dtype=values.dtype, device=values.device)
    dense.scatter_add_(1, ids, weights)
    return dense / dense.sum(dim=1, keepdim=True)
