"""read_image_rgb: colour modes, EXIF orientation (as Detectron2), and clear errors for bad files."""
import os

import numpy as np
import pytest
from PIL import Image

from soco.data.image_io import ImageReadError, decode_rgb, read_image_rgb

EXIF_ORIENTATION = 0x0112


def _photo(height=96, width=128):
    """A deterministic RGB test photo with structure (gradients and a bright square)."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], -1)
    image[height // 4: height // 2, width // 4: width // 2] = 250
    return image.astype(np.uint8)


def write_test_images(folder, huge=False):
    """Write one file per input case into ``folder``.

    Returns {file name: expected upright (H, W) or None for files that must fail to read}.
    """
    os.makedirs(folder, exist_ok=True)
    expected = {}

    def path(name):
        return os.path.join(folder, name)

    Image.fromarray(_photo()).save(path("rgb.jpg"), quality=90)
    expected["rgb.jpg"] = (96, 128)
    with open(path("rgb.jpg"), "rb") as f:
        data = f.read()
    with open(path("truncated.jpg"), "wb") as f:
        f.write(data[: len(data) // 2])
    expected["truncated.jpg"] = None
    with open(path("corrupt.jpg"), "wb") as f:
        f.write(data[:20] + bytes(np.random.RandomState(0).randint(0, 256, 2000, dtype=np.uint8)))
    expected["corrupt.jpg"] = None
    with open(path("not_an_image.jpg"), "w") as f:
        f.write("this is a text file with an image extension\n")
    expected["not_an_image.jpg"] = None
    Image.fromarray(_photo()[..., 0]).save(path("gray.png"))
    expected["gray.png"] = (96, 128)
    Image.fromarray(_photo()).convert("CMYK").save(path("cmyk.jpg"))
    expected["cmyk.jpg"] = (96, 128)
    gray16 = (_photo()[..., 0].astype(np.uint16) * 257)
    Image.fromarray(gray16).save(path("gray16.png"))
    expected["gray16.png"] = (96, 128)
    rgba = np.concatenate([_photo(), np.full((96, 128, 1), 7, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(path("alpha.png"))
    expected["alpha.png"] = (96, 128)
    Image.fromarray(np.full((1, 1, 3), 99, np.uint8)).save(path("one_pixel.png"))
    expected["one_pixel.png"] = (1, 1)
    Image.fromarray(_photo(10, 10)).save(path("ten_pixels.png"))
    expected["ten_pixels.png"] = (10, 10)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored landscape 128x96, shown rotated 90 degrees clockwise
    Image.fromarray(_photo()).save(path("exif_rotated.jpg"), exif=exif, quality=90)
    expected["exif_rotated.jpg"] = (128, 96)
    if huge:
        image = Image.new("RGB", (10000, 8000), (90, 120, 150))
        image.paste((240, 30, 30), (2000, 1000, 7000, 6000))
        image.save(path("huge.jpg"), quality=70)
        expected["huge.jpg"] = (8000, 10000)
    return expected


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("images"))
    return folder, write_test_images(folder)


def test_every_readable_case_gives_upright_rgb_uint8(images):
    folder, expected = images
    for name, size in expected.items():
        if size is None:
            continue
        image = read_image_rgb(os.path.join(folder, name))
        assert image.dtype == np.uint8 and image.shape == (*size, 3), name


@pytest.mark.parametrize("name", ["truncated.jpg", "corrupt.jpg", "not_an_image.jpg", "missing.jpg"])
def test_bad_files_raise_an_error_naming_the_file(images, name):
    folder, _ = images
    with pytest.raises(ImageReadError) as info:
        read_image_rgb(os.path.join(folder, name))
    assert name in str(info.value) and info.value.reason


def test_exif_orientation_matches_detectron2(images):
    from detectron2.data.detection_utils import read_image

    folder, _ = images
    path = os.path.join(folder, "exif_rotated.jpg")
    ours = read_image_rgb(path)
    theirs = read_image(path, format="RGB")
    assert ours.shape == (128, 96, 3)
    np.testing.assert_array_equal(ours, theirs)
    # Orientation 6 = rotate 90 degrees clockwise: the stored top-left corner ends up top-right.
    stored = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(ours, np.rot90(stored, k=-1))


def test_colour_conversions(images):
    folder, _ = images
    gray16 = read_image_rgb(os.path.join(folder, "gray16.png"))
    np.testing.assert_array_equal(gray16[..., 0], _photo()[..., 0])  # 16-bit v*257 -> v
    assert (gray16[..., 0] == gray16[..., 2]).all()
    alpha = read_image_rgb(os.path.join(folder, "alpha.png"))
    np.testing.assert_array_equal(alpha, _photo())  # alpha dropped, colour kept
    gray = read_image_rgb(os.path.join(folder, "gray.png"))
    np.testing.assert_array_equal(gray[..., 1], _photo()[..., 0])
    cmyk = read_image_rgb(os.path.join(folder, "cmyk.jpg"))
    assert np.abs(cmyk.astype(int) - _photo()).mean() < 10


def test_draft_decoding_reports_the_full_size(tmp_path):
    path = str(tmp_path / "big.jpg")
    Image.fromarray(np.repeat(np.repeat(_photo(), 8, 0), 8, 1)).save(path)  # 768 x 1024
    image, size = decode_rgb(path, max_size=200)
    assert size == (768, 1024)
    assert 200 <= max(image.shape[:2]) < 1024
    full, size = decode_rgb(path)
    assert full.shape == (768, 1024, 3) and size == (768, 1024)


def _write_orientations(folder):
    """JPEGs with EXIF orientation 0..9 and 65535 (0, 9, 65535: invalid, shown as stored), a
    grayscale JPEG and one whose EXIF block is zeroed out (malformed: read as upright)."""
    names = []
    for orientation in list(range(10)) + [65535]:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        name = f"orientation{orientation}.jpg"
        Image.fromarray(_photo(40, 64)).save(os.path.join(folder, name), exif=exif, quality=90)
        names.append(name)
    Image.fromarray(_photo(40, 64)[..., 1]).save(os.path.join(folder, "gray.jpg"), quality=90)
    with open(os.path.join(folder, "orientation6.jpg"), "rb") as f:
        data = bytearray(f.read())
    start = data.find(b"Exif")
    data[start + 6 : start + 14] = bytes(8)
    with open(os.path.join(folder, "bad_exif.jpg"), "wb") as f:
        f.write(bytes(data))
    return names + ["gray.jpg", "bad_exif.jpg"]


def test_torchvision_jpeg_path_equals_pillow_path_for_every_exif_case(images, tmp_path):
    """read_image_chw decodes JPEGs with torchvision: pixels and orientation must be Pillow's."""
    import torch

    from soco.data.image_io import _decode_jpeg_torchvision, read_image_chw

    folder, expected = images
    names = _write_orientations(str(tmp_path)) + ["rgb.jpg", "cmyk.jpg", "exif_rotated.jpg"]
    transposed = 0
    for name in names:
        path = os.path.join(str(tmp_path) if os.path.exists(os.path.join(str(tmp_path), name)) else folder, name)
        fast = _decode_jpeg_torchvision(path)
        assert fast is not None, name  # the fast path really ran
        pillow = torch.from_numpy(read_image_rgb(path).copy()).permute(2, 0, 1)
        assert torch.equal(read_image_chw(path), pillow), name
        assert torch.equal(fast, pillow), name
        transposed += fast.shape[1:] == (64, 40)
    assert transposed == 4  # orientations 5, 6, 7, 8
    # Not a JPEG -> Pillow's path; bad JPEGs -> Pillow's errors naming the file.
    assert _decode_jpeg_torchvision(os.path.join(folder, "gray.png")) is None
    for name in ["truncated.jpg", "corrupt.jpg", "not_an_image.jpg", "missing.jpg"]:
        with pytest.raises(ImageReadError, match=name):
            read_image_chw(os.path.join(folder, name))


def jpeg_claiming_size(path, width, height, source_size=(16, 12)):
    """A small JPEG whose header (SOF marker) claims ``width`` x ``height``: a pixel bomb's
    header without its megabytes (decoding it would fail, or allocate the claimed size)."""
    import io

    buf = io.BytesIO()
    Image.new("RGB", source_size, (200, 30, 30)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    path.write_bytes(bytes(data))
    return str(path)


def test_pixel_bombs_are_refused_from_the_header_before_decoding(tmp_path, monkeypatch):
    import torchvision.io

    from soco.data.image_io import MAX_IMAGE_PIXELS, TooManyPixelsError, read_image_chw

    bomb = jpeg_claiming_size(tmp_path / "bomb.jpg", 30000, 30000)
    small = jpeg_claiming_size(tmp_path / "small.jpg", 40, 30)
    monkeypatch.setattr(torchvision.io, "decode_jpeg", lambda *a, **k: pytest.fail("decoded"))
    monkeypatch.setattr(Image.Image, "load", lambda *a, **k: pytest.fail("decoded"))
    for read in (read_image_chw, read_image_rgb, decode_rgb):  # training and gen_proposals' readers
        with pytest.raises(TooManyPixelsError, match=f"bomb.jpg: 30000 x 30000 = 900000000 pixels > limit {MAX_IMAGE_PIXELS}"):
            read(bomb)
    with pytest.raises(TooManyPixelsError, match="40 x 30 = 1200 pixels > limit 1000"):
        read_image_chw(small, max_pixels=1000)
