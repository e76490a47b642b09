"""Proposal methods, SoCo's filter, coordinate mapping and the file format (incl. Detectron2's loader)."""
import numpy as np
import pytest
from PIL import Image

from soco.data.proposals import load_proposals, save_proposals
from soco.proposals import METHODS, propose_file, soco_filter
from soco.proposals.grouping import region_neighbours, selective_search_boxes
from soco.proposals.methods import resize_longer_side, scale_boxes, segmentation_params


def _satisfies_soco_rule(boxes, height, width):
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    scale = np.sqrt(w * h) / np.sqrt(width * height)
    return (w >= 32) & (h >= 32) & (w / h >= 1 / 3) & (w / h <= 3) & (scale >= 0.3) & (scale <= 0.8)


def test_every_kept_box_satisfies_the_soco_rule():
    rng = np.random.RandomState(0)
    height, width = 375, 500
    xy = rng.uniform(0, [width, height], size=(2000, 2, 2))
    boxes = np.concatenate([xy.min(1), xy.max(1)], axis=1).astype(np.float32)
    kept, level = soco_filter(boxes, (height, width))
    assert level == 0 and 0 < len(kept) < len(boxes)
    assert _satisfies_soco_rule(kept, height, width).all()
    # Every box that satisfies the rule is kept (once).
    assert len(kept) == len(np.unique(boxes[_satisfies_soco_rule(boxes, height, width)], axis=0))


def test_boundaries_are_inclusive_and_duplicates_are_dropped():
    height, width = 300, 300  # sqrt(WH) = 300: scale 0.3 -> 90 px square, 0.8 -> 240 px square
    boxes = np.array([[0, 0, 90, 90], [0, 0, 240, 240], [0, 0, 240, 240], [0, 0, 89, 89], [0, 0, 241, 241],
                      [0, 0, 96, 288], [0, 0, 96, 289]], np.float32)  # the last two: aspect 1/3 and below
    kept, level = soco_filter(boxes, (height, width))
    assert level == 0
    np.testing.assert_array_equal(kept, boxes[[0, 1, 5]])


@pytest.mark.parametrize("boxes, level, expected", [
    # within aspect 3 but too large for the size rule -> relax to aspect ratio + 32 px
    ([[0, 0, 280, 280], [0, 0, 10, 10]], 1, [[0, 0, 280, 280]]),
    # nothing within aspect 3 -> keep boxes of at least 32 px
    ([[0, 0, 40, 200], [0, 0, 10, 10]], 2, [[0, 0, 40, 200]]),
    # nothing usable -> the whole image
    ([[0, 0, 10, 10]], 3, [[0, 0, 300, 200]]),
    ([], 3, [[0, 0, 300, 200]]),
])
def test_fallback_levels(boxes, level, expected):
    # Image 200 x 300: sqrt(WH) ~ 245, so a 280 x 280 box has scale 1.14 > 0.8.
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    kept, got = soco_filter(boxes, (200, 300))
    assert got == level
    np.testing.assert_array_equal(kept, np.array(expected, np.float32))


def test_scale_boxes_maps_pixel_edges_exactly():
    boxes = np.array([[0, 0, 160, 120], [10, 20, 30, 40]], np.float32)
    mapped = scale_boxes(boxes, (120, 160), (750, 1000))
    np.testing.assert_allclose(mapped, [[0, 0, 1000, 750], [62.5, 125, 187.5, 250]])
    assert scale_boxes(np.array([[-5, -5, 200, 200]], np.float32), (120, 160), (120, 160)).tolist() == [[0, 0, 160, 120]]


def test_working_resolution_and_parameter_scaling():
    image = np.zeros((1000, 400, 3), np.uint8)
    assert resize_longer_side(image, 250).shape == (250, 100, 3)
    assert resize_longer_side(image, 2000) is image  # never upscale
    assert segmentation_params(0.5) == {"scale": 75.0, "sigma": 0.9, "min_size": 25}


def _scene(height, width, rect):
    """Textured background with one flat red rectangle ``rect`` = (x1, y1, x2, y2)."""
    rng = np.random.RandomState(0)
    image = (rng.normal(0, 12, (height, width, 3)) + [70, 110, 160]).clip(0, 255).astype(np.uint8)
    x1, y1, x2, y2 = rect
    image[y1:y2, x1:x2] = (230, 30, 30)
    return image


def _best_iou(boxes, target):
    target = np.asarray(target, np.float32)
    lt = np.maximum(boxes[:, :2], target[:2])
    rb = np.minimum(boxes[:, 2:], target[2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    union = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) + np.prod(target[2:] - target[:2]) - inter
    return float((inter / union).max())


def test_boxes_come_back_in_original_pixels(tmp_path):
    rect = (400, 300, 1000, 800)  # 600 x 500 object in a 1500 x 1100 photo
    path = str(tmp_path / "big.png")
    Image.fromarray(_scene(1100, 1500, rect)).save(path)
    boxes, level = propose_file(path, "vectorized", max_size=200)
    assert level == 0 and _satisfies_soco_rule(boxes, 1100, 1500).all()
    assert _best_iou(boxes, rect) > 0.95
    assert boxes[:, 2].max() <= 1500 and boxes[:, 3].max() <= 1100


def test_exif_rotated_proposals_are_in_upright_pixels(tmp_path):
    rect = (40, 100, 200, 180)  # in the stored (sideways) 320 x 240 image
    exif = Image.Exif()
    exif[0x0112] = 8  # shown rotated 90 degrees counter-clockwise: stored (x, y) -> upright (y, W - x)
    path = str(tmp_path / "rotated.jpg")
    Image.fromarray(_scene(240, 320, rect)).save(path, exif=exif, quality=95)
    boxes, _ = propose_file(path, "vectorized", max_size=None)
    x1, y1, x2, y2 = rect
    upright = (y1, 320 - x2, y2, 320 - x1)
    assert boxes[:, 2].max() <= 240 and boxes[:, 3].max() <= 320
    assert _best_iou(boxes, upright) > 0.9


def test_region_neighbours_are_touching_pairs():
    labels = np.array([[0, 0, 1], [2, 2, 1], [3, 3, 3]])
    assert region_neighbours(labels).tolist() == [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]


def test_hierarchy_covers_the_image_and_is_deterministic():
    image = _scene(120, 160, (30, 20, 110, 90))
    boxes = selective_search_boxes(image, k=100, min_size=20)
    assert boxes.dtype == np.float32 and boxes.shape[1] == 4
    np.testing.assert_array_equal(boxes[-1], [0, 0, 160, 120])  # the root region is the image
    np.testing.assert_array_equal(boxes, selective_search_boxes(image, k=100, min_size=20))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_finds_the_object(method):
    rect = (30, 20, 110, 90)
    image = _scene(120, 160, rect)
    boxes = METHODS[method](image, 1.0)
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes)
    assert _best_iou(boxes, rect) > 0.8


def test_file_round_trip_and_detectron2_loader(tmp_path):
    from detectron2.data import load_proposals_into_dataset
    from detectron2.structures import BoxMode

    path = str(tmp_path / "p.pkl")
    boxes = [np.array([[0, 0, 10, 10], [1, 2, 30, 40]], np.float32), np.array([[5, 5, 50, 60]], np.float32)]
    save_proposals(path, ["n01/a.JPEG", "n02/b.JPEG"], boxes)
    loaded = load_proposals(path)
    assert list(loaded) == ["n01/a.JPEG", "n02/b.JPEG"]
    np.testing.assert_array_equal(loaded["n01/a.JPEG"], boxes[0])

    dicts = [{"file_name": "/x/n02/b.JPEG", "image_id": "n02/b.JPEG"}, {"file_name": "/x/n01/a.JPEG", "image_id": "n01/a.JPEG"}]
    out = load_proposals_into_dataset(dicts, path)
    np.testing.assert_array_equal(out[1]["proposal_boxes"], boxes[0])  # stored order kept
    np.testing.assert_array_equal(out[0]["proposal_boxes"], boxes[1])
    assert out[0]["proposal_bbox_mode"] == BoxMode.XYXY_ABS


def test_load_rejects_other_files_naming_them(tmp_path):
    import pickle

    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps({"something": 1}))
    with pytest.raises(ValueError, match="other.pkl"):
        load_proposals(str(path))
