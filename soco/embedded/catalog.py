"""Build, cache and register the embedded datasets in Detectron2's catalogs.

Names (see ``DATASET_NAMES``):
  ``soco_demo_photos``      unlabelled photos; dicts: file_name, image_id, height, width
  ``soco_demo_det_train``   COCO instances (boxes + polygons), 10 Fashion-MNIST classes
  ``soco_demo_det_val``     same, items drawn from the Fashion-MNIST test split
  ``fashion_mnist_train``   ImageFolder of 28x28 PNGs; dicts also carry ``label``
  ``fashion_mnist_test``
  ``soco_demo_pool``        unlabelled mosaics like the detection set's, other images (few-label demo)
  ``soco_demo_det_train_few`` the first ``few_label_images`` images of ``soco_demo_det_train``

Datasets are built on first use (``DatasetCatalog.get``, :func:`image_root`) or all
at once by :func:`build_all`, into ``<root>/demo_photos``, ``<root>/demo_det`` and
``<root>/fashion_mnist`` (and ``<root>/demo_pool``, built on first use or with ``pool=True``)
with the default options, and into ``<root>/<name>-<hash of the options>`` with others (see
:func:`dataset_folder`), so building one option set never replaces another's files (e.g.
``--fashion-limit 200`` next to the full 70,000 images).
"""
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ..utils.files import atomic_write_json
from .cache import cached_build, dataset_root, options_folder
from .detection import PasteParams, build_coco_split
from .fashion_mnist import CLASS_NAMES, build_fashion_mnist_folder, class_folder_name, load_split, unpack_raw
from .photos import build_demo_photos, load_source_photos
from .pool import build_pool, first_images, pool_dicts

__all__ = [
    "DATASET_NAMES", "EmbeddedDataConfig", "register_all", "image_root", "build_all", "current_config",
    "dataset_folder",
]

PHOTOS = "soco_demo_photos"
DET_TRAIN, DET_VAL = "soco_demo_det_train", "soco_demo_det_val"
FMNIST_TRAIN, FMNIST_TEST = "fashion_mnist_train", "fashion_mnist_test"
POOL, DET_TRAIN_FEW = "soco_demo_pool", "soco_demo_det_train_few"
DATASET_NAMES = (PHOTOS, DET_TRAIN, DET_VAL, FMNIST_TRAIN, FMNIST_TEST, POOL, DET_TRAIN_FEW)


@dataclass(frozen=True)
class EmbeddedDataConfig:
    """Where the embedded datasets live and how they are generated.

    ``root`` None means env ``SOCO_DATASETS`` or :func:`.cache.default_dataset_root` (resolved
    when the config is registered). ``fashion_limit`` keeps the first N items of each
    Fashion-MNIST split (None: all 60000 / 10000). ``pool_images``: size of the unlabelled
    pool; ``few_label_images``: how many of the detection set's training images the few-label
    set keeps.
    """

    root: Optional[str] = None
    seed: int = 0
    num_photos: int = 256
    photo_long_side: Tuple[int, int] = (375, 500)
    det_train_images: int = 200
    det_val_images: int = 200
    paste: PasteParams = field(default_factory=PasteParams)
    fashion_limit: Optional[int] = None
    pool_images: int = 3000
    few_label_images: int = 64

    def resolved_root(self) -> Path:
        return dataset_root(self.root)


_config = EmbeddedDataConfig()


def current_config() -> EmbeddedDataConfig:
    """The config the registered datasets are built with."""
    return _config


# ---- builders (each returns the folder's manifest, building it when missing or stale) ----


def _params(cfg: EmbeddedDataConfig, folder: str) -> dict:
    """The options that a folder's contents depend on."""
    if folder == "demo_photos":
        return {"seed": cfg.seed, "num_images": cfg.num_photos, "long_side": cfg.photo_long_side}
    if folder == "demo_det":
        return {"seed": cfg.seed, "train_images": cfg.det_train_images, "val_images": cfg.det_val_images,
                "paste": asdict(cfg.paste)}
    if folder == "fashion_mnist":
        return {"limit": cfg.fashion_limit}
    if folder == "demo_pool":
        return {"seed": cfg.seed, "images": cfg.pool_images, "paste": asdict(cfg.paste)}
    raise KeyError(f"unknown embedded folder {folder!r}")


def dataset_folder(cfg: EmbeddedDataConfig, folder: str) -> Path:
    """Where ``folder`` ("demo_photos", "demo_det", "fashion_mnist", "demo_pool") is built for ``cfg``'s options:
    ``<root>/<folder>`` for the defaults, ``<root>/<folder>-<hash>`` for any other option set."""
    return options_folder(cfg.resolved_root(), folder, _params(cfg, folder), _params(EmbeddedDataConfig(), folder))


def _cached_folder(cfg: EmbeddedDataConfig, folder: str, build) -> dict:
    """``folder``'s manifest for ``cfg``'s options, running ``build(tmp)`` when missing or stale."""
    return cached_build(dataset_folder(cfg, folder), _params(cfg, folder), build)


def _ensure_photos(cfg: EmbeddedDataConfig) -> dict:
    return _cached_folder(
        cfg, "demo_photos", lambda tmp: build_demo_photos(tmp, cfg.num_photos, cfg.seed, cfg.photo_long_side)
    )


def _ensure_detection(cfg: EmbeddedDataConfig) -> dict:
    root = cfg.resolved_root()

    def build(tmp: Path) -> dict:
        backgrounds = list(load_source_photos().values())
        info = {}
        for split, num, fmnist_split, code in (
            ("train", cfg.det_train_images, "train", 0),
            ("val", cfg.det_val_images, "test", 1),
        ):
            items, labels = load_split(root, fmnist_split)
            coco = build_coco_split(tmp / split, num, cfg.seed, code, backgrounds, items, labels, cfg.paste)
            (tmp / "annotations").mkdir(exist_ok=True)
            atomic_write_json(tmp / "annotations" / f"instances_{split}.json", coco, indent=None)
            info[split] = {"images": len(coco["images"]), "annotations": len(coco["annotations"])}
        return info

    unpack_raw(root)  # fails early, with instructions, when Fashion-MNIST is missing
    return _cached_folder(cfg, "demo_det", build)


def _ensure_fashion_mnist(cfg: EmbeddedDataConfig) -> dict:
    root = cfg.resolved_root()
    unpack_raw(root)
    return _cached_folder(cfg, "fashion_mnist", lambda tmp: build_fashion_mnist_folder(tmp, root, cfg.fashion_limit))


def _ensure_pool(cfg: EmbeddedDataConfig) -> dict:
    root = cfg.resolved_root()
    unpack_raw(root)
    return _cached_folder(cfg, "demo_pool", lambda tmp: build_pool(tmp, root, cfg.pool_images, cfg.seed, cfg.paste))


_ENSURE = {
    PHOTOS: _ensure_photos,
    DET_TRAIN: _ensure_detection,
    DET_VAL: _ensure_detection,
    FMNIST_TRAIN: _ensure_fashion_mnist,
    FMNIST_TEST: _ensure_fashion_mnist,
    POOL: _ensure_pool,
    DET_TRAIN_FEW: _ensure_detection,
}


def _image_root(cfg: EmbeddedDataConfig, name: str) -> Path:
    return {
        PHOTOS: lambda: dataset_folder(cfg, "demo_photos"),
        DET_TRAIN: lambda: dataset_folder(cfg, "demo_det") / "train",
        DET_VAL: lambda: dataset_folder(cfg, "demo_det") / "val",
        FMNIST_TRAIN: lambda: dataset_folder(cfg, "fashion_mnist") / "train",
        FMNIST_TEST: lambda: dataset_folder(cfg, "fashion_mnist") / "test",
        POOL: lambda: dataset_folder(cfg, "demo_pool") / "images",
        DET_TRAIN_FEW: lambda: dataset_folder(cfg, "demo_det") / "train",
    }[name]()


def image_root(name: str, build: bool = True) -> str:
    """The folder that the ``image_id`` / ``file_name`` paths of dataset ``name`` are relative to.

    Builds the dataset first unless ``build`` is False.
    """
    if name not in _ENSURE:
        raise KeyError(f"{name!r} is not an embedded dataset; known: {', '.join(DATASET_NAMES)}")
    if build:
        _ENSURE[name](_config)
    return str(_image_root(_config, name))


# ---- dataset dicts ----


def _photo_dicts(cfg: EmbeddedDataConfig) -> List[dict]:
    manifest = _ensure_photos(cfg)
    folder = _image_root(cfg, PHOTOS)
    return [
        {"file_name": str(folder / rel), "image_id": rel, "height": hw[0], "width": hw[1]}
        for rel, hw in sorted(manifest["info"]["files"].items())
    ]


def _coco_dicts(cfg: EmbeddedDataConfig, name: str) -> List[dict]:
    _ensure_detection(cfg)
    meta = MetadataCatalog.get(name)
    return load_coco_json(meta.json_file, meta.image_root, name)


def _fashion_dicts(cfg: EmbeddedDataConfig, name: str) -> List[dict]:
    _ensure_fashion_mnist(cfg)
    folder = _image_root(cfg, name)
    dicts = []
    for label in range(len(CLASS_NAMES)):
        class_dir = folder / class_folder_name(label)
        for file in sorted(os.listdir(class_dir)):
            rel = f"{class_dir.name}/{file}"
            dicts.append({"file_name": str(folder / rel), "image_id": rel, "label": label, "height": 28, "width": 28})
    return dicts


def register_all(config: Optional[EmbeddedDataConfig] = None) -> EmbeddedDataConfig:
    """(Re-)register every embedded dataset under ``DATASET_NAMES`` for ``config``.

    Nothing is built here; building happens on first use. Returns the config with
    ``root`` resolved.
    """
    global _config
    config = config or EmbeddedDataConfig()
    config = replace(config, root=str(config.resolved_root()))
    _config = config
    for name in DATASET_NAMES:
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)

    DatasetCatalog.register(PHOTOS, lambda: _photo_dicts(config))
    MetadataCatalog.get(PHOTOS).set(image_root=str(_image_root(config, PHOTOS)))
    # Like detectron2's register_coco_instances, plus building the files on first use
    # (register_coco_instances' loader reads a json that must already exist).
    for name, split in ((DET_TRAIN, "train"), (DET_VAL, "val")):
        DatasetCatalog.register(name, lambda name=name: _coco_dicts(config, name))
        MetadataCatalog.get(name).set(
            json_file=str(dataset_folder(config, "demo_det") / "annotations" / f"instances_{split}.json"),
            image_root=str(_image_root(config, name)),
            evaluator_type="coco",
            thing_classes=list(CLASS_NAMES),
        )
    DatasetCatalog.register(POOL, lambda: pool_dicts(_image_root(config, POOL), _ensure_pool(config)["info"]))
    MetadataCatalog.get(POOL).set(image_root=str(_image_root(config, POOL)))
    DatasetCatalog.register(
        DET_TRAIN_FEW,
        lambda: first_images(_coco_dicts(config, DET_TRAIN), config.few_label_images, DET_TRAIN_FEW),
    )
    MetadataCatalog.get(DET_TRAIN_FEW).set(image_root=str(_image_root(config, DET_TRAIN)),
                                           thing_classes=list(CLASS_NAMES))
    for name in (FMNIST_TRAIN, FMNIST_TEST):
        DatasetCatalog.register(name, lambda name=name: _fashion_dicts(config, name))
        MetadataCatalog.get(name).set(image_root=str(_image_root(config, name)), thing_classes=list(CLASS_NAMES))
    return config


def _folder_stats(folder: Path) -> Tuple[int, int]:
    """(number of files, total bytes) under ``folder``."""
    count = size = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            count += 1
            size += os.path.getsize(os.path.join(dirpath, f))
    return count, size


def build_all(
    config: Optional[EmbeddedDataConfig] = None, fashion_mnist: bool = True, pool: bool = False
) -> Dict[str, dict]:
    """Build (or find cached) every embedded dataset and register them for ``config``.

    Args:
        fashion_mnist: False skips the Fashion-MNIST folder (the detection set still
            needs the Fashion-MNIST files).
        pool: True also builds the few-label setting's unlabelled pool (``soco_demo_pool``,
            about 40 MB per 1000 images; otherwise built on first use).
    Returns:
        Folder name -> ``{"path", "files", "bytes", "seconds", "build_seconds", "info"}``
        (``seconds``: this call, small when cached; ``build_seconds``: when built); ``info``
        holds counts (photos per file, detection images/annotations per split,
        Fashion-MNIST items per class).
    """
    config = register_all(config)
    summary = {}
    steps = [("demo_photos", _ensure_photos), ("demo_det", _ensure_detection)]
    if fashion_mnist:
        steps.append(("fashion_mnist", _ensure_fashion_mnist))
    if pool:
        steps.append(("demo_pool", _ensure_pool))
    for folder_name, ensure in steps:
        start = time.perf_counter()
        manifest = ensure(config)
        seconds = time.perf_counter() - start
        folder = dataset_folder(config, folder_name)
        files, size = _folder_stats(folder)
        summary[folder_name] = {
            "path": str(folder),
            "files": files,
            "bytes": size,
            "seconds": round(seconds, 2),
            "build_seconds": manifest["build_seconds"],
            "info": manifest["info"],
        }
    return summary
