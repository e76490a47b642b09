"""Labelled image sets and frozen-feature extraction for representation evaluation.

A labelled set is a registered Detectron2 dataset whose dicts carry ``label`` (e.g. the
embedded ``fashion_mnist_train`` / ``fashion_mnist_test``) or an ImageFolder directory
(``root/<class>/<image>``, classes in sorted order, as torchvision's ImageFolder).
"""

import os
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from torchvision.transforms import v2

from ..data.image_folder import list_images
from ..data.image_io import read_image_chw

__all__ = ["labelled_dicts", "default_test_split", "subsample", "extract_features"]


def labelled_dicts(dataset: str) -> List[Dict]:
    """Dicts with ``file_name`` and ``label`` for a registered name or an ImageFolder path."""
    if os.path.isdir(dataset):
        classes = sorted(e.name for e in os.scandir(dataset) if e.is_dir())
        if not classes:
            raise ValueError(f"{dataset}: an ImageFolder needs one sub-folder per class, found none")
        index = {c: i for i, c in enumerate(classes)}
        return [
            {"file_name": os.path.join(dataset, rel), "label": index[rel.split("/")[0]]}
            for rel in list_images(dataset)
            if "/" in rel
        ]
    import soco.embedded  # noqa: F401  (registers the embedded datasets)

    if dataset not in DatasetCatalog.list():
        raise ValueError(f"--dataset {dataset!r} is neither a directory nor a registered dataset name")
    dicts = DatasetCatalog.get(dataset)
    if not dicts or "label" not in dicts[0]:
        raise ValueError(f"dataset {dataset!r} has no 'label' field; evaluation needs labelled images")
    return dicts


def default_test_split(dataset: str) -> str:
    """``X_train`` -> ``X_test``; a folder with ``train/`` -> its ``val/`` or ``test/`` sibling."""
    if dataset.endswith("_train"):
        return dataset[: -len("_train")] + "_test"
    parent, leaf = os.path.split(os.path.normpath(dataset))
    if leaf == "train":
        for name in ("val", "test"):
            if os.path.isdir(os.path.join(parent, name)):
                return os.path.join(parent, name)
    raise ValueError(f"cannot infer the test split of {dataset!r}; pass --test-dataset")


def subsample(dicts: List[Dict], limit: Optional[int]) -> List[Dict]:
    """At most ``limit`` dicts, evenly spaced (deterministic, keeps class balance of sorted sets)."""
    if not limit or limit >= len(dicts):
        return dicts
    return [dicts[i] for i in np.linspace(0, len(dicts) - 1, limit).round().astype(int)]


@torch.no_grad()
def extract_features(
    encode: Callable[[torch.Tensor], torch.Tensor], dicts: List[Dict], image_size: int, batch_size: int = 64
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Resize (shorter side) + centre crop to ``image_size``, then ``encode`` uint8 batches.

    ``encode``: (N, 3, S, S) uint8 RGB -> (N, D) features. Returns (features (M, D) float32 CPU,
    labels (M,) int64).
    """
    resize = v2.Compose([v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)])
    feats, labels = [], []
    for start in range(0, len(dicts), batch_size):
        chunk = dicts[start : start + batch_size]
        images = [resize(read_image_chw(d["file_name"])) for d in chunk]
        feats.append(encode(torch.stack(images)).float().cpu())
        labels.extend(int(d["label"]) for d in chunk)
    return torch.cat(feats), torch.tensor(labels, dtype=torch.long)
