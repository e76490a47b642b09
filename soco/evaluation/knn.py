"""Weighted k-nearest-neighbour classifier on frozen features (Wu et al. 2018, as used by
InstDisc / MoCo / DINO): cosine similarity, the k most similar bank features vote for their
class with weight exp(s / T); k = 200, T = 0.07 by default."""

import torch
import torch.nn.functional as F

__all__ = ["knn_predict", "knn_accuracy"]


@torch.no_grad()
def knn_predict(
    query: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int,
    k: int = 200, temperature: float = 0.07, chunk_size: int = 1024,
) -> torch.Tensor:
    """query: (Q, D); bank: (N, D); bank_labels: (N,) int64 in [0, num_classes).

    Returns (Q, num_classes) class scores sum_{j in top-k} exp(s_qj / T) [y_j = c]; argmax is the
    prediction. k is clipped to N. Queries are processed in chunks (memory Q_chunk x N).
    """
    if query.shape[1] != bank.shape[1] or bank.shape[0] != bank_labels.shape[0]:
        raise ValueError(
            f"knn_predict: query {tuple(query.shape)}, bank {tuple(bank.shape)}, labels {tuple(bank_labels.shape)} disagree"
        )
    k = min(k, bank.shape[0])
    bank = F.normalize(bank.float(), dim=1)
    scores = []
    for q in F.normalize(query.float(), dim=1).split(chunk_size):
        sim, idx = (q @ bank.t()).topk(k, dim=1)
        weights = (sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
        scores.append(votes.scatter_add_(1, bank_labels[idx], weights))
    return torch.cat(scores)


def knn_accuracy(
    train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, test_labels: torch.Tensor,
    k: int = 200, temperature: float = 0.07,
) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of :func:`knn_predict` on the test set."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    pred = knn_predict(test_feats, train_feats, train_labels, num_classes, k, temperature).argmax(dim=1)
    return float((pred == test_labels).float().mean())
