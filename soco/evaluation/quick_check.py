"""The measuring half of a small, in-memory CPU check that a method learns: a Fashion-MNIST subset
held in memory and the weighted-kNN accuracy of a backbone on it, compared before and after
:func:`soco.engine.in_memory.pretrain_in_memory` (the training half, the engine's). Used by the
slow tests and the benchmark; real runs use ``tools/pretrain_net.py`` and
``tools/eval_representation.py``.
"""

import torch
from fvcore.nn.precise_bn import update_bn_stats
from torchvision.transforms import v2

from ..embedded.fashion_mnist import fashion_mnist_subset
from .knn import knn_accuracy

__all__ = ["fashion_mnist_subset", "backbone_features", "knn_of"]


@torch.no_grad()
def backbone_features(model, images: torch.Tensor, size: int, batch: int = 256, precise_bn: bool = True) -> torch.Tensor:
    """Pooled res5 features (N, C) of the online backbone, images resized to ``size`` px.

    ``precise_bn``: first re-estimate the backbone's BN statistics on these images (fvcore's
    ``update_bn_stats``), so that short training runs, whose running statistics still mix
    augmented crops and initial values, are compared with random init on equal terms.
    """
    was_training = model.training
    resize = v2.Resize(size, antialias=True)
    inputs = [(resize(chunk).float() - model.pixel_mean) / model.pixel_std for chunk in images.split(batch)]
    if precise_bn:
        update_bn_stats(model.backbone, inputs, num_iters=len(inputs))
    model.eval()
    out = [model.pooled_features(x) for x in inputs]
    model.train(was_training)
    return torch.cat(out)


def knn_of(model, train, test, size: int, k: int = 200, temperature: float = 0.07) -> float:
    """Weighted-kNN top-1 of the backbone: ``train``/``test`` are (images, labels) pairs."""
    return knn_accuracy(
        backbone_features(model, train[0], size), train[1], backbone_features(model, test[0], size), test[1], k, temperature
    )
