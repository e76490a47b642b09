"""Embedded demo data, generated from files shipped in installed packages.

Importing this module registers (without building) in Detectron2's ``DatasetCatalog``
and ``MetadataCatalog``:

- ``soco_demo_photos``: a few hundred real photos (scikit-image and scikit-learn's
  sample photos, randomly cropped, scaled and flipped), one sub-folder per source photo.
- ``soco_demo_det_train`` / ``soco_demo_det_val``: COCO instances (boxes and polygon
  masks) of Fashion-MNIST items pasted on real-photo backgrounds; 10 classes.
- ``fashion_mnist_train`` / ``fashion_mnist_test``: Fashion-MNIST as an ImageFolder of PNGs.

Each is built on first use, deterministically from a seed, under env ``SOCO_DATASETS``
or ``<checkout>/datasets`` (``./datasets`` for an installed wheel); :func:`build_all` (and
``tools/build_embedded_data.py``) builds everything at once. :func:`register_all` re-registers them for other parameters.
"""
from .cache import dataset_root
from .catalog import (DATASET_NAMES, EmbeddedDataConfig, build_all, current_config, dataset_folder, image_root,
                      register_all)
from .detection import PasteParams
from .fashion_mnist import CLASS_NAMES, FashionMNISTNotFoundError

__all__ = [
    "CLASS_NAMES", "DATASET_NAMES", "EmbeddedDataConfig", "FashionMNISTNotFoundError", "PasteParams",
    "build_all", "current_config", "dataset_folder", "dataset_root", "image_root", "register_all",
]

register_all()
