"""Evaluate a pretrained network's representation on a labelled image set: weighted kNN, linear
probe on frozen features and, for CoKe, each clustering head's ACC/NMI/ARI (what
``tools/eval_representation.py`` prints).

The network is the method itself (``build_pretrain_model``), so images are normalised and pooled
by the model's own ``image_features``; the checkpoint is read by ``soco.checkpoint`` (tensors
only, ``weights_only=True``) and its ResNet chosen by the method's own export prefixes (``select``).
"""

from typing import Dict, List, Optional

import torch
from detectron2.config import CfgNode

from ..checkpoint import ConversionError, PretrainCheckpoint, check_resnet_fits, load_pretrain_checkpoint, select
from ..modeling.meta_arch import PretrainMetaArch, build_pretrain_model
from .clustering import clustering_metrics
from .features import extract_features
from .knn import knn_accuracy
from .linear_probe import linear_probe_accuracy

__all__ = ["method_crop_size", "read_checkpoint", "check_fits", "build_eval_model", "cluster_metrics", "evaluate_representation",
           "format_table"]

# A random-init model reads no per-image state; one instance is enough to size CoKe's buffers.
_RANDOM_INIT_IMAGES = 1


def method_crop_size(cfg: CfgNode) -> int:
    """The method's training crop (``MODEL.<METHOD>.CROP_SIZE``), else 224."""
    section = cfg.MODEL.get(cfg.MODEL.META_ARCHITECTURE.upper(), None)
    return int(section.CROP_SIZE) if section is not None and "CROP_SIZE" in section else 224


def read_checkpoint(path: str) -> Optional[PretrainCheckpoint]:
    """The pretraining checkpoint at ``path`` (None for ""), read with the converter's checks
    (``ConversionError`` naming the file: missing, not a checkpoint, truncated)."""
    if not path:
        return None
    return load_pretrain_checkpoint(path)


def check_fits(ckpt: PretrainCheckpoint, cfg: CfgNode) -> None:
    """ConversionError naming both when the checkpoint's method or ResNet (depth, width) is not
    ``cfg``'s ("BYOL weights, CoKe config"; "R18 weights ..., R50 config ...")."""
    if ckpt.method != cfg.MODEL.META_ARCHITECTURE:
        raise ConversionError(
            f"--weights {ckpt.path}: {ckpt.method} weights, {cfg.MODEL.META_ARCHITECTURE} config; give the config the "
            f"checkpoint was trained with (a {ckpt.method} config)")
    check_resnet_fits(ckpt.path, {k: tuple(v.shape) for k, v in ckpt.state.items()}, cfg, "--weights")


def build_eval_model(cfg: CfgNode, ckpt: Optional[PretrainCheckpoint], full_state: bool = False) -> PretrainMetaArch:
    """``cfg``'s method in eval mode on ``MODEL.DEVICE`` with the checkpoint's online ResNet.

    The ResNet's tensors are those the method exports (``select``; the converter's selection),
    loaded back under their checkpoint names. ``full_state``: load every tensor instead (CoKe's
    centres for :func:`cluster_metrics`). No checkpoint: random initialisation (the baseline).
    """
    num_images = int(ckpt.cfg.PRETRAIN.NUM_IMAGES) if ckpt is not None else _RANDOM_INIT_IMAGES
    model = build_pretrain_model(cfg, num_images)
    if ckpt is not None:
        if full_state:
            model.load_state_dict(ckpt.state)
        else:
            export = select(ckpt, "online", include=[])
            weights = {export.source[name]: tensor for name, tensor in export.tensors.items()}
            unexpected = model.load_state_dict(weights, strict=False).unexpected_keys
            if unexpected:
                raise KeyError(f"{ckpt.path}: tensors the model built from the config lacks: {unexpected[:5]}")
    return model.to(torch.device(cfg.MODEL.DEVICE)).eval()


@torch.no_grad()
def cluster_metrics(model, dicts: List[Dict], image_size: int, batch_size: int) -> Dict[str, Dict[str, float]]:
    """ACC/NMI/ARI of each head of a CoKe ``model``: ``cluster_assignments`` vs the labels."""
    heads: List[List[torch.Tensor]] = [[] for _ in model.num_clusters]

    def encode(images):
        for h, assigned in enumerate(model.cluster_assignments(images)):
            heads[h].append(assigned.cpu())
        return torch.zeros(images.shape[0], 1)

    _, labels = extract_features(encode, dicts, image_size, batch_size)
    return {
        f"head{h} (K={k})": clustering_metrics(labels.numpy(), torch.cat(assigned).numpy())
        for h, (k, assigned) in enumerate(zip(model.num_clusters, heads))
    }


@torch.no_grad()
def evaluate_representation(cfg: CfgNode, weights: str, train: List[Dict], test: List[Dict], image_size: int,
                            knn_k: int = 200, knn_t: float = 0.07, linear: bool = True,
                            batch_size: int = 64) -> Dict[str, object]:
    """kNN (and linear probe) top-1 of the frozen ``image_features`` of ``weights`` ("" = random
    init) on labelled ``train`` / ``test`` dicts resized to ``image_size``; for a CoKe checkpoint
    also each head's clustering metrics on ``test``. Returns an ordered {name: value} table."""
    ckpt = read_checkpoint(weights)
    if ckpt is not None:
        check_fits(ckpt, cfg)
    model = build_eval_model(cfg, ckpt)
    train_x, train_y = extract_features(model.image_features, train, image_size, batch_size)
    test_x, test_y = extract_features(model.image_features, test, image_size, batch_size)
    results: Dict[str, object] = {
        "method": cfg.MODEL.META_ARCHITECTURE,
        "weights": weights or "random init",
        "train/test images": f"{len(train)}/{len(test)}",
        f"knn top1 (k={knn_k}, T={knn_t})": knn_accuracy(train_x, train_y, test_x, test_y, knn_k, knn_t),
    }
    if linear:
        results["linear probe top1"] = linear_probe_accuracy(train_x, train_y, test_x, test_y)
    if ckpt is not None and hasattr(model, "cluster_assignments"):
        clusters = build_eval_model(cfg, ckpt, full_state=True)
        for head, metrics in cluster_metrics(clusters, test, image_size, batch_size).items():
            for name, value in metrics.items():
                results[f"{head} {name}"] = value
    return results


def format_table(results: Dict[str, object]) -> str:
    """One line per entry: fractions as percentages, the rest as text."""
    width = max(len(k) for k in results)
    return "\n".join(
        f"{key:<{width}}  {f'{100 * value:.2f}%' if isinstance(value, float) else value}" for key, value in results.items()
    )
