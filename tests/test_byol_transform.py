"""BYOL's augmentation pipeline: the two asymmetric views, the OpenCV blur, boxes under flips."""

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from soco.data.image_io import ImageReadError
from soco.data.transforms.byol import blur_kernel_size, build_byol_transform
from soco.data.transforms.photometric_reference import GaussianBlurCV2


def test_kernel_size_is_about_a_tenth_of_the_side_and_odd():
    assert blur_kernel_size(224) == 23
    assert all(blur_kernel_size(s) % 2 == 1 for s in (32, 64, 112, 192))


@pytest.mark.parametrize("sigma", [0.1, 0.8, 2.0])
def test_opencv_blur_matches_torchvision(sigma):
    image = torch.randint(0, 256, (3, 70, 90), dtype=torch.uint8)
    ours = GaussianBlurCV2(23).transform(image, {"sigma": sigma})
    ref = F.gaussian_blur(image, [23, 23], [sigma, sigma])
    assert ours.dtype == torch.uint8 and ours.shape == image.shape
    assert (ours.int() - ref.int()).abs().max() <= 2


def _probabilities(augment):
    """(blur p, solarize p) found in a built augmentation's reference pipeline, checked against
    the parameters its fast path samples from."""
    blur = solarize = 0.0
    for t in augment.reference.transforms:
        if isinstance(t, v2.RandomApply) and isinstance(t.transforms[0], GaussianBlurCV2):
            blur = t.p
        if isinstance(t, v2.RandomSolarize):
            solarize = t.p
    assert (augment.spec.blur_p, augment.spec.solarize_p) == (blur, solarize)
    return blur, solarize


def test_asymmetric_views_follow_byol():
    assert _probabilities(build_byol_transform(0, 224)) == (1.0, 0.0)
    assert _probabilities(build_byol_transform(1, 224)) == (0.1, 0.2)
    with pytest.raises(ValueError):
        build_byol_transform(2, 224)


def test_boxes_follow_the_flip_and_ignore_colour():
    torch.manual_seed(0)
    image = torch.zeros(3, 40, 60, dtype=torch.uint8)
    image[:, 10:20, 5:25] = 255
    box = tv_tensors.BoundingBoxes([[5.0, 10.0, 25.0, 20.0]], format="XYXY", canvas_size=(40, 60))
    pipeline = build_byol_transform(1, 60)
    seen = set()
    for _ in range(20):
        out, out_box = pipeline(image, box)
        assert out.dtype == torch.uint8 and out.shape == image.shape
        seen.add(tuple(out_box[0].tolist()))
    assert seen == {(5.0, 10.0, 25.0, 20.0), (35.0, 10.0, 55.0, 20.0)}


def test_byol_mapper_crops_then_applies_t_and_t_prime(tmp_path):
    import numpy as np
    from PIL import Image

    from soco.config import get_pretrain_cfg
    from soco.data.method_data import build_mapper

    cfg = get_pretrain_cfg()
    cfg.MODEL.META_ARCHITECTURE = "BYOL"
    cfg.MODEL.BYOL.CROP_SIZE, cfg.MODEL.BYOL.CROP_SCALE = 48, (0.3, 0.9)
    mapper = build_mapper(cfg)
    crops = [view.transforms[0] for view in mapper.view_sets["views"].views]
    assert [(c.size, c.scale) for c in crops] == [((48, 48), (0.3, 0.9))] * 2
    augments = [view.transforms[1] for view in mapper.view_sets["views"].views]
    assert [_probabilities(a) for a in augments] == [(1.0, 0.0), (0.1, 0.2)]
    path = tmp_path / "a.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (80, 100, 3), dtype=np.uint8)).save(path)
    out = mapper({"file_name": str(path), "image_id": "a"})
    assert [tuple(v.shape) for v in out["views"]] == [(3, 48, 48)] * 2 and out["image_id"] == "a"
    with pytest.raises(ImageReadError, match="missing.png"):
        mapper({"file_name": str(tmp_path / "missing.png"), "image_id": "b"})
