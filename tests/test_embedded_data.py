"""Embedded datasets: photo folder, Fashion-MNIST-on-photos detection set, Fashion-MNIST folder."""
import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools.coco import COCO

from soco import embedded
from soco.embedded import CLASS_NAMES, DATASET_NAMES, EmbeddedDataConfig, FashionMNISTNotFoundError
from soco.embedded import cache, detection, fashion_mnist, photos

# pycocotools' mask decoding warns under NumPy 2; harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SMALL = dict(num_photos=14, det_train_images=6, det_val_images=3, fashion_limit=40)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small build of everything; the catalogs point at it during this module."""
    config = EmbeddedDataConfig(root=str(tmp_path_factory.mktemp("datasets")), **SMALL)
    summary = embedded.build_all(config)
    yield embedded.current_config(), summary
    embedded.register_all()  # back to the default root for other test modules


def _file_digests(folder: Path) -> dict:
    """Relative path -> sha1 of every file except the manifest (it records build times)."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != cache.MANIFEST_NAME
    }


# ---- registration ----


def test_names_registered_on_import_without_building():
    for name in DATASET_NAMES:
        assert name in DatasetCatalog
    assert MetadataCatalog.get("soco_demo_det_train").thing_classes == list(CLASS_NAMES)
    assert MetadataCatalog.get("soco_demo_det_val").evaluator_type == "coco"


def test_image_root_unknown_name():
    with pytest.raises(KeyError, match="not an embedded dataset"):
        embedded.image_root("coco_2017_train")


# ---- demo photos ----


def test_photo_folder(built):
    config, summary = built
    root = Path(embedded.image_root("soco_demo_photos"))
    assert root == embedded.dataset_folder(config, "demo_photos")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.jpg"))
    assert len(files) == SMALL["num_photos"]
    # One sub-folder per source photo, so walking the folder must recurse.
    assert {f.split("/")[0] for f in files} == set(photos.SOURCE_PHOTOS)
    dicts = DatasetCatalog.get("soco_demo_photos")
    assert [d["image_id"] for d in dicts] == files
    for d in dicts:
        image = cv2.imread(d["file_name"])
        assert image.shape == (d["height"], d["width"], 3)
        assert config.photo_long_side[0] <= max(image.shape[:2]) <= config.photo_long_side[1]
        assert os.path.join(root, d["image_id"]) == d["file_name"]


def test_source_photos_are_rgb_uint8():
    sources = photos.load_source_photos()
    assert list(sources) == list(photos.SOURCE_PHOTOS)
    for name, image in sources.items():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name


# ---- detection set ----


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_json_valid(built, split):
    config, _ = built
    det = embedded.dataset_folder(config, "demo_det")
    coco = COCO(str(det / "annotations" / f"instances_{split}.json"))
    assert len(coco.getImgIds()) == SMALL[f"det_{split}_images"]
    assert sorted(coco.getCatIds()) == list(range(1, 11))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASS_NAMES)
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        h, w = info["height"], info["width"]
        assert cv2.imread(str(det / split / info["file_name"])).shape[:2] == (h, w)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert 1 <= len(anns) <= config.paste.objects_per_image[1]
        for ann in anns:
            x, y, bw, bh = ann["bbox"]
            assert 0 <= x and 0 <= y and bw > 0 and bh > 0 and x + bw <= w and y + bh <= h
            assert 1 <= ann["category_id"] <= 10 and ann["iscrowd"] == 0
            assert ann["segmentation"] and all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])
            # The rasterised polygons stay inside the box and fill a good part of it.
            mask = coco.annToMask(ann)
            ys, xs = np.nonzero(mask)
            assert xs.min() >= x and xs.max() < x + bw and ys.min() >= y and ys.max() < y + bh
            assert 0 < ann["area"] <= bw * bh and abs(mask.sum() - ann["area"]) <= 0.35 * ann["area"]


def test_detection_catalog(built):
    config, _ = built
    dicts = DatasetCatalog.get("soco_demo_det_train")
    assert len(dicts) == SMALL["det_train_images"]
    meta = MetadataCatalog.get("soco_demo_det_train")
    assert Path(meta.json_file).is_file() and meta.image_root == embedded.image_root("soco_demo_det_train")
    for d in dicts:
        assert os.path.isfile(d["file_name"])
        assert all(0 <= a["category_id"] < 10 for a in d["annotations"])  # contiguous ids


def test_boxes_are_tight_around_item_pixels():
    # One bright item on a black photo: the box must be the bounding box of the lit pixels,
    # not the pasted 28x28 square (the item fills only rows 5..20, columns 8..17).
    item = np.zeros((1, 28, 28), np.uint8)
    item[0, 5:21, 8:18] = 200
    params = detection.PasteParams(image_size=(100, 100), objects_per_image=(1, 1), object_size=(56, 56))
    image, objects = detection.render_image(
        np.random.default_rng(0), np.zeros((200, 200, 3), np.uint8), item, np.array([3]), params
    )
    (obj,) = objects
    ys, xs = np.nonzero(image.max(axis=2) > 0)
    assert obj["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
    assert obj["bbox"][2:] == [20, 32]  # 10x16 item pixels scaled by 2
    assert obj["label"] == 3 and obj["area"] == 20 * 32


def test_occluded_item_keeps_only_visible_pixels():
    # Two 4x4 squares pasted as masks: the box of the first shrinks to what the second leaves.
    first = np.zeros((10, 10), bool)
    first[2:6, 2:6] = True
    second = np.zeros((10, 10), bool)
    second[2:6, 4:8] = True
    visible = first & ~second
    assert detection.mask_to_box(visible) == [2.0, 2.0, 2.0, 4.0]
    (polygon,) = detection.mask_to_polygons(visible)
    xs, ys = polygon[0::2], polygon[1::2]
    assert min(xs) >= 2 and max(xs) <= 4 and min(ys) >= 2 and max(ys) <= 6


def test_item_silhouette_fills_dark_holes():
    item = np.zeros((28, 28), np.uint8)
    item[4:24, 4:24] = 255
    item[10:18, 10:18] = 0  # a dark print inside the item
    assert detection.item_silhouette(item, 28)[4:24, 4:24].all()
    assert detection.item_silhouette(item, 56).sum() == 40 * 40


# ---- determinism and caching ----


def test_same_seed_same_files_other_seed_different(built, tmp_path):
    config, _ = built
    kwargs = dict(num_photos=4, det_train_images=3, det_val_images=2)
    a = EmbeddedDataConfig(root=str(tmp_path / "a"), seed=7, **kwargs)
    b = EmbeddedDataConfig(root=str(tmp_path / "b"), seed=7, **kwargs)
    c = EmbeddedDataConfig(root=str(tmp_path / "c"), seed=8, **kwargs)
    try:
        for cfg in (a, b, c):
            embedded.build_all(cfg, fashion_mnist=False)
    finally:
        embedded.register_all(config)
    for folder in ("demo_photos", "demo_det"):
        da, db, dc = (_file_digests(embedded.dataset_folder(cfg, folder)) for cfg in (a, b, c))
        assert da == db
        assert da != dc

    def ann(cfg):
        return json.loads((embedded.dataset_folder(cfg, "demo_det") / "annotations/instances_train.json").read_text())

    assert ann(a) == ann(b)
    assert ann(a)["annotations"] != ann(c)["annotations"]


def test_cached_build_rebuilds_only_on_new_params(tmp_path):
    calls = []

    def build(tmp):
        calls.append(tmp)
        (tmp / "x.txt").write_text(str(len(calls)))
        return {"n": len(calls)}

    target = tmp_path / "thing"
    assert cache.cached_build(target, {"k": 1}, build)["info"] == {"n": 1}
    assert cache.cached_build(target, {"k": 1}, build)["info"] == {"n": 1}
    assert len(calls) == 1
    assert cache.cached_build(target, {"k": 2}, build)["info"] == {"n": 2}
    assert (target / "x.txt").read_text() == "2"

    def failing(tmp):
        (tmp / "partial").write_text("")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cache.cached_build(target, {"k": 3}, failing)
    # The failed build left the old folder intact and no temporary folders behind.
    assert (target / "x.txt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["thing"]


# ---- Fashion-MNIST ----


def test_fashion_mnist_folder(built):
    config, summary = built
    from torchvision.datasets import FashionMNIST, ImageFolder

    for split in ("train", "test"):
        name = f"fashion_mnist_{split}"
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == SMALL["fashion_limit"]
        reference = FashionMNIST(config.root, train=split == "train", download=False)
        for d in dicts:
            index = int(Path(d["image_id"]).stem)
            assert d["label"] == int(reference.targets[index])
            assert d["image_id"].split("/")[0] == fashion_mnist.class_folder_name(d["label"])
            pixels = cv2.imread(d["file_name"], cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(pixels, reference.data[index].numpy())
        # torchvision's ImageFolder assigns the same labels (folders sort in label order).
        folder = ImageFolder(embedded.image_root(name))
        assert sorted((Path(p).stem, y) for p, y in folder.samples) == sorted(
            (Path(d["image_id"]).stem, d["label"]) for d in dicts
        )
        assert sum(summary["fashion_mnist"]["info"]["counts"][split].values()) == SMALL["fashion_limit"]


def test_missing_fashion_mnist_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("SOCO_FASHION_MNIST", raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "absent")
    with pytest.raises(FashionMNISTNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.find_fashion_mnist_files()
    monkeypatch.setenv("SOCO_FASHION_MNIST", str(tmp_path))
    with pytest.raises(FashionMNISTNotFoundError, match="SOCO_FASHION_MNIST"):
        fashion_mnist.unpack_raw(tmp_path / "root")


def test_missing_fashion_mnist_stops_detection_build(built, tmp_path, monkeypatch):
    config, _ = built
    monkeypatch.setenv("SOCO_FASHION_MNIST", str(tmp_path / "empty"))
    root = tmp_path / "datasets"
    try:
        embedded.register_all(EmbeddedDataConfig(root=str(root), **SMALL))
        with pytest.raises(FashionMNISTNotFoundError):
            DatasetCatalog.get("soco_demo_det_train")
    finally:
        embedded.register_all(config)
    assert not embedded.dataset_folder(EmbeddedDataConfig(root=str(root), **SMALL), "demo_det").exists()


def test_user_folder_with_raw_idx_files(built, monkeypatch):
    config, _ = built
    # A torchvision-style root (raw, not gzipped, files under FashionMNIST/raw) is accepted.
    monkeypatch.setenv("SOCO_FASHION_MNIST", config.root)
    found = fashion_mnist.find_fashion_mnist_files()
    assert set(found) == set(fashion_mnist.RAW_NAMES)
    assert all(p.suffix != ".gz" for p in found.values())


# ---- CLI ----


def test_cli_prints_what_it_wrote(built, capsys):
    config, _ = built
    from conftest import load_tool

    cli = load_tool("build_embedded_data")
    args = ["--root", config.root, "--num-photos", "14", "--det-train", "6", "--det-val", "3", "--fashion-limit", "40"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "soco_demo_photos: 14 JPEGs" in out
    assert "soco_demo_det_train: 6 images" in out and "instances_val.json" in out
    assert "fashion_mnist_test: 40 PNGs" in out


def test_the_default_root_is_the_checkouts_or_the_working_folders_datasets_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("SOCO_DATASETS", raising=False)
    assert cache.dataset_root() == Path(__file__).resolve().parents[1] / "datasets"
    monkeypatch.setenv("SOCO_DATASETS", str(tmp_path))
    assert cache.dataset_root() == tmp_path.resolve()
    # An installed wheel (no setup.py beside the package): the working folder's datasets/.
    site = tmp_path / "site-packages"
    (site / "soco").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert cache.dataset_root(str(cache.default_dataset_root(site))) == tmp_path.resolve() / "datasets"
    (site / "setup.py").write_text("")
    assert cache.default_dataset_root(site) == site / "datasets"
