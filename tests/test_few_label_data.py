"""The few-label setting's data: the unlabelled pool (soco_demo_pool) and the few labelled images
(soco_demo_det_train_few)."""
import hashlib
import json
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from soco import embedded
from soco.embedded import EmbeddedDataConfig, cache, pool

SMALL = dict(num_photos=4, det_train_images=5, det_val_images=2, pool_images=6, few_label_images=3)


def _digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != cache.MANIFEST_NAME}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    config = EmbeddedDataConfig(root=str(tmp_path_factory.mktemp("datasets")), **SMALL)
    summary = embedded.build_all(config, fashion_mnist=False, pool=True)
    yield embedded.current_config(), summary
    embedded.register_all()


def test_names_registered():
    for name in ("soco_demo_pool", "soco_demo_det_train_few"):
        assert name in DatasetCatalog and name in embedded.DATASET_NAMES
    assert MetadataCatalog.get("soco_demo_det_train_few").thing_classes == list(embedded.CLASS_NAMES)


def test_pool_is_unlabelled_and_other_images(built):
    config, summary = built
    assert summary["demo_pool"]["info"]["images"] == 6
    dicts = DatasetCatalog.get("soco_demo_pool")
    assert [d["image_id"] for d in dicts] == [f"{i:06d}.jpg" for i in range(6)]
    assert all("annotations" not in d for d in dicts)
    assert all(Path(d["file_name"]).parent == Path(embedded.image_root("soco_demo_pool")) for d in dicts)
    pool_dir = embedded.dataset_folder(config, "demo_pool")
    # The boxes are kept for inspection, one file, not in the image folder.
    coco = json.loads((pool_dir / "instances_pool.json").read_text())
    assert len(coco["images"]) == 6 and coco["annotations"]
    # Same renderer, other split code: no pool image is a training or validation image.
    pool_files = set(_digests(pool_dir / "images").values())
    det_files = set(_digests(embedded.dataset_folder(config, "demo_det")).values())
    assert len(pool_files) == 6 and not pool_files & det_files


def test_pool_deterministic_and_cached(built, tmp_path):
    config, _ = built
    other = EmbeddedDataConfig(root=str(tmp_path / "again"), **SMALL)
    try:
        embedded.build_all(other, fashion_mnist=False, pool=True)
        manifest = embedded.dataset_folder(other, "demo_pool") / cache.MANIFEST_NAME
        first = manifest.stat().st_mtime_ns
        embedded.image_root("soco_demo_pool")  # cached: not rebuilt
        assert manifest.stat().st_mtime_ns == first
    finally:
        embedded.register_all(config)
    assert _digests(embedded.dataset_folder(other, "demo_pool")) == _digests(embedded.dataset_folder(config, "demo_pool"))


def test_few_labels_are_the_first_training_images(built):
    few = DatasetCatalog.get("soco_demo_det_train_few")
    train = DatasetCatalog.get("soco_demo_det_train")
    assert [d["image_id"] for d in few] == [1, 2, 3]
    assert few == sorted(train, key=lambda d: d["image_id"])[:3]
    assert all(d["annotations"] for d in few)


def test_more_labels_than_images_is_a_clear_error():
    dicts = [{"image_id": i} for i in (3, 1, 2)]
    assert pool.first_images(dicts, 2, "x") == [{"image_id": 1}, {"image_id": 2}]
    with pytest.raises(ValueError, match="soco_demo_det_train_few: asked for 4 labelled images, the training set has 3"):
        pool.first_images(dicts, 4, "soco_demo_det_train_few")
    with pytest.raises(ValueError, match="asked for 0"):
        pool.first_images(dicts, 0, "x")
