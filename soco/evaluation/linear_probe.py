"""Linear probe on cached frozen features: multinomial logistic regression trained full-batch
with L-BFGS (deterministic, no learning-rate tuning; features are standardised first)."""

import torch
import torch.nn.functional as F

__all__ = ["train_linear_probe", "linear_probe_accuracy"]


def train_linear_probe(
    feats: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float = 1e-4, max_iter: int = 200
):
    """feats: (N, D); labels: (N,) int64. Returns (mean (D,), std (D,), linear layer D -> classes)."""
    mean, std = feats.mean(dim=0), feats.std(dim=0).clamp_min(1e-6)
    x = (feats - mean) / std
    layer = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    opt = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(layer(x), labels) + 0.5 * weight_decay * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return mean, std, layer


def linear_probe_accuracy(
    train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, test_labels: torch.Tensor,
    weight_decay: float = 1e-4, max_iter: int = 200,
) -> float:
    """Top-1 accuracy (fraction) of a probe trained on the train features, on the test features."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    mean, std, layer = train_linear_probe(train_feats.float(), train_labels, num_classes, weight_decay, max_iter)
    with torch.no_grad():
        pred = layer((test_feats.float() - mean) / std).argmax(dim=1)
    return float((pred == test_labels).float().mean())
