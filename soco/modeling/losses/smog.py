"""SMoG (Pang et al., ECCV 2022): group-level contrast with synchronous momentum grouping.

Pure functions of tensors. N instances, L groups, D feature size; group features are unit rows.
"""

import torch
import torch.nn.functional as F

__all__ = [
    "assign_to_groups",
    "momentum_group_update",
    "group_contrastive_loss",
    "nearest_centre",
    "spherical_kmeans",
]


def assign_to_groups(features: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Eq. 4, first line: the group whose feature is the closest (highest cosine similarity).

    Eq. 4 prints an argmin of the similarity; the text ("assigns the new instance to the closest
    group") and any working grouping need the argmax, which is what this returns.
    features: (N, D); groups: (L, D). Returns (N,) int64.
    """
    return (F.normalize(features.detach(), dim=1) @ F.normalize(groups.detach(), dim=1).t()).argmax(dim=1)


def momentum_group_update(
    groups: torch.Tensor, features: torch.Tensor, assignment: torch.Tensor, beta: float
) -> torch.Tensor:
    """Eq. 4, second line: g_k <- beta g_k + (1 - beta) mean_{c_t = g_k} f(x_t), re-normalised.

    "We omit the normalization" (paper): the mean of the assigned (normalised) features is
    normalised, and so is the result, so groups stay on the unit sphere. Groups without an
    assigned instance are unchanged. The result stays differentiable in ``features`` (SMoG's
    point: gradients flow through the group features); ``groups`` is treated as a constant.
    groups: (L, D) unit rows; features: (N, D); assignment: (N,) int64. Returns (L, D).
    """
    feats = F.normalize(features, dim=1)
    num = groups.shape[0]
    sums = torch.zeros(num, feats.shape[1], dtype=feats.dtype, device=feats.device).index_add(0, assignment, feats)
    counts = torch.bincount(assignment, minlength=num)
    means = F.normalize(sums, dim=1)
    updated = F.normalize(beta * groups.detach() + (1.0 - beta) * means, dim=1)
    return torch.where((counts > 0)[:, None], updated, groups.detach())


def group_contrastive_loss(
    features: torch.Tensor, groups: torch.Tensor, target_groups: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Eq. 3: -log exp(sim(f(x^a), c^b)/tau) / sum_j exp(sim(f(x^a), g_j)/tau).

    features: (N, D) online features f(x^a); groups: (L, D) group features G (may carry
    gradients); target_groups: (N,) int64 index of c^b, the group of the other view. Returns (N,).
    """
    logits = F.normalize(features, dim=1) @ F.normalize(groups, dim=1).t() / temperature
    return F.cross_entropy(logits, target_groups, reduction="none")


def nearest_centre(x: torch.Tensor, centres: torch.Tensor, chunk_bytes: int = 0) -> torch.Tensor:
    """argmax_k <x_i, c_k> for every row of ``x`` (M, D) against ``centres`` (L, D): (M,) int64.

    ``chunk_bytes`` > 0 scores at most chunk_bytes / (4 L) rows at a time, so the float32
    similarity block stays under it instead of the full M x L matrix; every row's scores are
    the same dot products either way, so the labels do not depend on the chunk size."""
    if chunk_bytes <= 0:
        return (x @ centres.t()).argmax(dim=1)
    rows = max(1, chunk_bytes // (4 * centres.shape[0]))
    return torch.cat([(part @ centres.t()).argmax(dim=1) for part in x.split(rows)])


@torch.no_grad()
def spherical_kmeans(
    features: torch.Tensor, num_clusters: int, iters: int = 10, generator: torch.Generator = None,
    chunk_bytes: int = 0,
) -> torch.Tensor:
    """k-means on the unit sphere (cosine similarity), for SMoG's group initialisation and its
    periodic re-grouping. Written here because it must run on the GPU over up to millions of
    cached features (scikit-learn's KMeans is CPU-only).

    Centres start as distinct random features (features repeat, with a tiny perturbation, when
    there are fewer features than clusters); an empty cluster keeps its previous centre.
    ``chunk_bytes``: memory bound of the assignment step (:func:`nearest_centre`); 0 = one block.
    features: (M, D). Returns (num_clusters, D) unit rows.
    """
    x = F.normalize(features.float(), dim=1)
    m = x.shape[0]
    if m == 0:
        raise ValueError("spherical_kmeans needs at least one feature")
    if m >= num_clusters:
        idx = torch.randperm(m, generator=generator)[:num_clusters].to(x.device)
        centres = x[idx].clone()
    else:
        idx = torch.randint(m, (num_clusters,), generator=generator).to(x.device)
        noise = torch.randn(num_clusters, x.shape[1], generator=generator).to(x.device)
        centres = F.normalize(x[idx] + 1e-3 * noise, dim=1)
    for _ in range(iters):
        labels = nearest_centre(x, centres, chunk_bytes)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=num_clusters)
        centres = torch.where((counts > 0)[:, None], F.normalize(sums, dim=1), centres)
    return centres
