"""Fashion-MNIST (Xiao et al. 2017, MIT licence): locating, unpacking, reading, materialising.

The IDX files come from Debian's ``dataset-fashion-mnist`` package or from a folder the
user names in env ``SOCO_FASHION_MNIST`` (gzipped or raw IDX files). They are unpacked
into ``<root>/FashionMNIST/raw/`` and read with ``torchvision.datasets.FashionMNIST``.
"""
import gzip
import logging
import os
import shutil
from pathlib import Path
from typing import Dict, Optional, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from ..utils.files import atomic_write

__all__ = [
    "CLASS_NAMES", "DEBIAN_DIR", "FashionMNISTNotFoundError", "class_folder_name",
    "find_fashion_mnist_files", "unpack_raw", "load_split", "fashion_mnist_subset", "build_fashion_mnist_folder",
]

logger = logging.getLogger(__name__)

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# Where Debian's package ``dataset-fashion-mnist`` installs the files (``dpkg -L`` lists them).
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "SOCO_FASHION_MNIST"
RAW_NAMES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)
SPLITS = ("train", "test")


class FashionMNISTNotFoundError(FileNotFoundError):
    """Raised when no Fashion-MNIST IDX files can be found."""


def class_folder_name(label: int) -> str:
    """Folder name of class ``label``: ``"<label>_<name>"`` with ``/`` and spaces replaced.

    The label prefix makes the alphabetical order of the folders (which
    ``torchvision.datasets.ImageFolder`` uses) equal to the label order.
    """
    return f"{label}_{CLASS_NAMES[label].replace('/', '_').replace(' ', '_')}"


def _files_in(folder: Path) -> Optional[Dict[str, Path]]:
    """Raw name -> file (``.gz`` or not) when ``folder`` or ``folder/FashionMNIST/raw`` has all four."""
    for base in (folder, folder / "FashionMNIST" / "raw"):
        found = {}
        for name in RAW_NAMES:
            for candidate in (base / name, base / f"{name}.gz"):
                if candidate.is_file():
                    found[name] = candidate
                    break
        if len(found) == len(RAW_NAMES):
            return found
    return None


def find_fashion_mnist_files() -> Dict[str, Path]:
    """Locate the four Fashion-MNIST IDX files.

    Looks in env ``SOCO_FASHION_MNIST`` when set (and only there), else in Debian's
    ``/usr/share/datasets/fashion-mnist``.
    Returns:
        Raw file name (e.g. ``"train-images-idx3-ubyte"``) -> path, gzipped or not.
    Raises:
        FashionMNISTNotFoundError: saying how to provide the files.
    """
    names = ", ".join(f"{n}[.gz]" for n in RAW_NAMES)
    user = os.environ.get(ENV_VAR)
    if user:
        found = _files_in(Path(user).expanduser())
        if found is None:
            raise FashionMNISTNotFoundError(
                f"{ENV_VAR}={user!r} does not contain the Fashion-MNIST files {names}. "
                f"Point {ENV_VAR} at a folder holding them (gzipped or not)."
            )
        return found
    found = _files_in(DEBIAN_DIR)
    if found is None:
        raise FashionMNISTNotFoundError(
            f"Fashion-MNIST not found: {DEBIAN_DIR} does not hold {names}. "
            "Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
            f"or download the four files from https://github.com/zalandoresearch/fashion-mnist "
            f"and set {ENV_VAR} to the folder holding them."
        )
    return found


def unpack_raw(root: Path) -> Path:
    """Copy (gunzipping) the IDX files into ``root/FashionMNIST/raw/``; returns ``root``.

    Existing files of the right size are kept; each file is written atomically.
    """
    raw_dir = Path(root) / "FashionMNIST" / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name, src in find_fashion_mnist_files().items():
        dst = raw_dir / name
        if src.suffix == ".gz":
            with gzip.open(src, "rb") as f:
                f.seek(0, os.SEEK_END)  # uncompressed size, to skip files already unpacked
                size = f.tell()
        else:
            size = src.stat().st_size
        if dst.is_file() and dst.stat().st_size == size:
            continue
        logger.info("Unpacking %s -> %s", src, dst)
        opener = gzip.open if src.suffix == ".gz" else open
        with opener(src, "rb") as fin:
            atomic_write(dst, lambda fout: shutil.copyfileobj(fin, fout))
    return Path(root)


def load_split(root: Path, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """Read one split with torchvision (after :func:`unpack_raw`).

    Returns:
        images: uint8 (N, 28, 28), item bright on a black background.
        labels: int64 (N,) in [0, 10).
    """
    if split not in SPLITS:
        raise ValueError(f"Fashion-MNIST split must be one of {SPLITS}, got {split!r}")
    from torchvision.datasets import FashionMNIST

    ds = FashionMNIST(str(unpack_raw(root)), train=split == "train", download=False)
    return ds.data.numpy(), ds.targets.numpy().astype(np.int64)


def fashion_mnist_subset(split: str, limit: int, root: Optional[Path] = None) -> Tuple["torch.Tensor", "torch.Tensor"]:
    """``limit`` evenly spaced images of a split as uint8 (N, 3, 28, 28) RGB and labels (N,)
    (``root``: the datasets folder, default ``dataset_root()``)."""
    import torch

    from .cache import dataset_root

    images, labels = load_split(dataset_root(root), split)
    idx = np.linspace(0, len(images) - 1, limit).round().astype(int)
    x = torch.from_numpy(images[idx]).unsqueeze(1).repeat(1, 3, 1, 1)
    return x, torch.from_numpy(labels[idx])


def build_fashion_mnist_folder(out_dir: Path, raw_root: Path, limit: Optional[int] = None) -> dict:
    """Write ``out_dir/{train,test}/<class_folder>/<index>.png`` (28x28 grey PNGs).

    Args:
        raw_root: folder holding ``FashionMNIST/raw`` (see :func:`unpack_raw`).
        limit: keep only the first ``limit`` items of each split (None: all).
    Returns:
        ``{"counts": {split: {class_folder: n}}}``.
    """
    counts = {}
    for split in SPLITS:
        images, labels = load_split(raw_root, split)
        n = len(images) if limit is None else min(limit, len(images))
        folders = [class_folder_name(k) for k in range(len(CLASS_NAMES))]
        for folder in folders:
            (out_dir / split / folder).mkdir(parents=True)
        for i in tqdm(range(n), desc=f"fashion-mnist {split}", disable=None):
            path = out_dir / split / folders[labels[i]] / f"{i:05d}.png"
            if not cv2.imwrite(str(path), images[i]):
                raise OSError(f"could not write {path}")
        counts[split] = {f: int(c) for f, c in zip(folders, np.bincount(labels[:n], minlength=10))}
    return {"counts": counts}
