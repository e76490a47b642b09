"""Reading images as RGB uint8 arrays, the same way for training and for proposal generation.

Orientation: the EXIF orientation tag is applied (as Detectron2's ``read_image`` does), so an
image's pixels, its ``height``/``width`` and its proposal boxes all refer to the upright image.
Colour: grayscale, palette, CMYK, YCbCr are converted to RGB by Pillow; alpha is dropped
(the stored colour is kept, no compositing); 16-bit and 32-bit integer images are scaled to 8 bit
by their bit depth (Pillow's own conversion would clip everything above 255 to white).
Speed: :func:`read_image_chw` (the training mappers' reader) decodes JPEGs with
``torchvision.io.decode_jpeg`` (libjpeg-turbo, EXIF orientation applied by torchvision): the same
pixels and orientation as the Pillow path (tests/test_image_io.py compares all eight EXIF
orientations, grayscale and CMYK files), in about 3/4 of the time; anything torchvision refuses
goes through Pillow, which decodes it or raises the error naming the file.
Pixel bombs: every reader reads the header first and refuses an image whose upright width x height
passes ``max_pixels`` (default :data:`MAX_IMAGE_PIXELS`, the config's ``PRETRAIN.MAX_IMAGE_PIXELS``
and tools/gen_proposals.py's limit) before any pixel is decoded, naming both sizes.
Zip archives: a path ``ARCHIVE.zip@/MEMBER`` is read from the archive (``soco.data.zip_source``);
a damaged member is an ``ImageReadError`` like a damaged file.
"""
from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from .zip_source import read_member, split_zip_path

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_IMAGE_PIXELS", "ImageReadError", "TooManyPixelsError", "read_image_rgb", "read_image_chw", "decode_rgb", "upright_size",
           "check_pixels"]

# Largest image (upright width x height, pixels) that is decoded: Pillow's decompression-bomb error
# threshold (2 x its default Image.MAX_IMAGE_PIXELS), e.g. 13000 x 13000; a 30000 x 30000 JPEG
# (about 2.7 GB of RGB) is refused from its header.
MAX_IMAGE_PIXELS = 178_956_970

# Orientation values 5..8 swap width and height (EXIF 2.3, tag 0x0112).
_EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


def _source(path):
    """What Pillow opens for ``path``: the path itself, or the bytes of a zip member."""
    return io.BytesIO(read_member(path)) if split_zip_path(path) else path


class ImageReadError(RuntimeError):
    """An image file could not be read; the message names the file and the reason."""

    def __init__(self, path, reason: str):
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = str(path)
        self.reason = reason


class TooManyPixelsError(ImageReadError):
    """An image above the pixel limit, refused from its header (never decoded)."""


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """PIL image of any mode -> HxWx3 uint8 RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit grayscale (and 32-bit integer) PNG/TIFF: keep the top 8 bits of a 16-bit range.
        values = np.asarray(image).astype(np.int64)
        gray = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        gray = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def decode_rgb(path, max_size: int | None = None, max_pixels: int | None = MAX_IMAGE_PIXELS
               ) -> tuple[np.ndarray, tuple[int, int]]:
    """Read ``path`` upright as RGB uint8.

    Args:
        path: image file.
        max_size: if given, JPEG decoding may use DCT scaling (Pillow's ``draft``) to a size whose
            longer side is still >= ``max_size``: a large speed-up for huge photos when the caller
            downsizes anyway. Other formats are decoded at full size.
        max_pixels: images with more upright pixels are refused from their header (see
            :func:`check_pixels`); None: no limit of the project's (Pillow's own still applies).

    Returns:
        (image HxWx3 uint8, (height, width) of the full-resolution upright image). ``image`` has
        exactly that size unless ``max_size`` allowed a reduced decode.

    Raises:
        ImageReadError: missing, truncated, corrupt or non-image file, an empty image, or one
            above ``max_pixels``.
    """
    try:
        source = _source(path)  # a zip member is read (and CRC-checked) once for header and pixels
        if max_pixels:
            check_pixels(path, max_pixels, source)
            if isinstance(source, io.BytesIO):
                source.seek(0)
        with warnings.catch_warnings():
            # Large photos (e.g. 10000x8000) trigger Pillow's decompression-bomb *warning*; the
            # hard limit (an error) still applies.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                try:
                    orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
                except Exception:  # malformed EXIF: treat as upright, like Detectron2
                    orientation = 1
                if max_size is not None and image.format == "JPEG" and max(width, height) > max_size:
                    scale = max_size / max(width, height)
                    image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
                image.load()
                if orientation != 1:
                    image = ImageOps.exif_transpose(image)
                array = _to_rgb_array(image)
    except ImageReadError:
        raise
    except FileNotFoundError as e:
        raise ImageReadError(path, "file not found") from e
    except Image.UnidentifiedImageError as e:
        raise ImageReadError(path, "not a recognised image format") from e
    except Image.DecompressionBombError as e:
        raise ImageReadError(path, f"too many pixels ({e})") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated / corrupt data
        raise ImageReadError(path, f"{type(e).__name__}: {e}") from e
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(path, f"empty image of shape {array.shape}")
    return np.ascontiguousarray(array), (height, width)


def _header_size(image: Image.Image) -> tuple[int, int]:
    """(height, width) of the upright image of an opened (not decoded) Pillow image."""
    width, height = image.size
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # malformed EXIF: treated as upright, as decode_rgb does
        orientation = 1
    return (width, height) if orientation in _TRANSPOSING_ORIENTATIONS else (height, width)


def upright_size(path, source=None) -> tuple[int, int]:
    """(height, width) of the upright image from its header only (no pixels are decoded; Pillow's
    own bomb limit is not applied here, :func:`check_pixels` applies the project's).

    ``source``: the file's bytes or a file object, when already read (default: open ``path``).

    Raises:
        ImageReadError: the header cannot be read.
    """
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # Image.open's bomb check; restored before anything else runs
        with Image.open(_source(path) if source is None else source) as image:
            Image.MAX_IMAGE_PIXELS = limit
            return _header_size(image)
    except FileNotFoundError as e:
        raise ImageReadError(path, "file not found") from e
    except Image.UnidentifiedImageError as e:
        raise ImageReadError(path, "not a recognised image format") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageReadError(path, f"{type(e).__name__}: {e}") from e
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def check_pixels(path, max_pixels: int | None = MAX_IMAGE_PIXELS, source=None) -> tuple[int, int]:
    """(height, width) from the header; raises ImageReadError naming both sizes when
    height x width > ``max_pixels`` (None or 0: no limit), so the image is never decoded."""
    height, width = upright_size(path, source)
    if max_pixels and height * width > max_pixels:
        raise TooManyPixelsError(
            path, f"{width} x {height} = {height * width} pixels > limit {max_pixels} (PRETRAIN.MAX_IMAGE_PIXELS); "
                  "not decoded"
        )
    return height, width


def read_image_rgb(path, max_pixels: int | None = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read ``path`` as an upright HxWx3 uint8 RGB array (EXIF orientation applied).

    Raises:
        ImageReadError: naming the file and the reason (above ``max_pixels``: not decoded).
    """
    return decode_rgb(path, max_pixels=max_pixels)[0]


_JPEG_MAGIC = (0xFF, 0xD8, 0xFF)


def _decode_jpeg_torchvision(path, max_pixels: int | None = MAX_IMAGE_PIXELS):
    """(3, H, W) uint8 upright RGB of a JPEG file by torchvision, or None when ``path`` is not a
    JPEG or torchvision cannot decode it (the caller then uses Pillow). The header is checked
    against ``max_pixels`` from the bytes already read, before decoding."""
    import io

    import torch
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    try:
        data = torch.frombuffer(bytearray(read_member(path)), dtype=torch.uint8) if split_zip_path(path) else \
            read_file(str(path))
    except (RuntimeError, OSError):  # missing or unreadable file: Pillow's path names the reason
        return None
    if len(data) < 3 or tuple(data[:3].tolist()) != _JPEG_MAGIC:
        return None
    try:
        if max_pixels:
            check_pixels(path, max_pixels, io.BytesIO(data.numpy().tobytes()))
    except TooManyPixelsError:
        raise
    except ImageReadError:
        return None  # an unreadable header: Pillow's path names the reason
    try:
        image = decode_jpeg(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError:  # truncated / corrupt: Pillow raises the error naming the file
        return None
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ImageReadError(path, f"empty image of shape {tuple(image.shape)}")
    return image if isinstance(image, torch.Tensor) else None


def read_image_chw(path, max_pixels: int | None = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """Read ``path`` as an upright (3, H, W) uint8 RGB tensor, the form every mapper feeds to its
    transforms. JPEGs are decoded by torchvision (same pixels as Pillow, faster), other formats
    by Pillow. Raises ``ImageReadError`` like :func:`read_image_rgb` (an image above
    ``max_pixels`` from its header, undecoded)."""
    import torch  # here, not at module level: proposal workers read images without torch

    image = _decode_jpeg_torchvision(path, max_pixels)
    if image is not None:
        return image
    # Pillow-backed arrays are read-only; np.require copies only in that case.
    return torch.from_numpy(np.require(read_image_rgb(path, max_pixels), requirements="W")).permute(2, 0, 1)
