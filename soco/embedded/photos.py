"""Real photos shipped inside installed packages, and a folder of augmented copies.

The sources are the colour and grey photos of ``skimage.data`` and scikit-learn's
sample images; no download is needed. ``build_demo_photos`` turns them into an
ImageNet-like folder (one sub-folder per source photo, JPEGs with a longer side of a
few hundred pixels) by seeded random crops, scales and flips.
"""
import functools
from pathlib import Path
from typing import Dict, Tuple

import cv2
import numpy as np
from tqdm import tqdm

__all__ = ["SOURCE_PHOTOS", "load_source_photos", "random_crop", "write_jpeg", "build_demo_photos"]

# skimage.data names (functions returning one photo), in a fixed order so seeds are stable.
# ``cat`` is the same photo as ``chelsea`` and is left out; textures and microscopy
# stills other than immunohistochemistry are left out as not photo-like.
_SKIMAGE_PHOTOS = (
    "astronaut", "camera", "chelsea", "coffee", "coins", "hubble_deep_field",
    "immunohistochemistry", "retina", "rocket",
)
_SKLEARN_PHOTOS = ("china", "flower")
SOURCE_PHOTOS = _SKIMAGE_PHOTOS + ("motorcycle_left",) + _SKLEARN_PHOTOS


def _to_rgb_uint8(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"source photo {name!r}: expected uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"source photo {name!r}: expected HxW or HxWx3, got {image.shape}")
    return np.ascontiguousarray(image)


@functools.lru_cache(maxsize=1)
def load_source_photos() -> Dict[str, np.ndarray]:
    """Name -> RGB uint8 HxWx3 array for every photo in ``SOURCE_PHOTOS`` (cached)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = {name: getattr(skimage.data, name)() for name in _SKIMAGE_PHOTOS}
    photos["motorcycle_left"] = skimage.data.stereo_motorcycle()[0]
    sample = load_sample_images()
    by_stem = {Path(f).stem: img for f, img in zip(sample.filenames, sample.images)}
    for name in _SKLEARN_PHOTOS:
        photos[name] = by_stem[name]
    return {name: _to_rgb_uint8(photos[name], name) for name in SOURCE_PHOTOS}


def random_crop(
    rng: np.random.Generator,
    image: np.ndarray,
    area_range: Tuple[float, float],
    aspect_range: Tuple[float, float],
) -> np.ndarray:
    """A random crop covering ``area_range`` of the image area with w/h in ``aspect_range``.

    Args:
        image: HxWxC array.
        area_range: (min, max) fraction of the image area the crop covers.
        aspect_range: (min, max) crop width / height; sampled log-uniformly.
    Returns:
        The crop (a view of ``image``); clipped to the image when the sampled shape
        does not fit.
    """
    h, w = image.shape[:2]
    area = rng.uniform(*area_range) * h * w
    aspect = np.exp(rng.uniform(np.log(aspect_range[0]), np.log(aspect_range[1])))
    cw = int(round(min(w, np.sqrt(area * aspect))))
    ch = int(round(min(h, np.sqrt(area / aspect))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    return image[y0 : y0 + ch, x0 : x0 + cw]


def _augment(rng: np.random.Generator, photo: np.ndarray, long_side_range: Tuple[int, int]) -> np.ndarray:
    crop = random_crop(rng, photo, area_range=(0.3, 1.0), aspect_range=(3 / 4, 4 / 3))
    long_side = int(rng.integers(long_side_range[0], long_side_range[1] + 1))
    h, w = crop.shape[:2]
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = cv2.resize(crop, size, interpolation=interp)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def write_jpeg(path: Path, rgb: np.ndarray, quality: int = 90) -> None:
    """Write an RGB uint8 HxWx3 array as JPEG (raises naming the file on failure)."""
    if not cv2.imwrite(str(path), rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise OSError(f"could not write {path}")


def build_demo_photos(
    out_dir: Path, num_images: int, seed: int, long_side_range: Tuple[int, int] = (375, 500)
) -> dict:
    """Write ``num_images`` augmented photos as ``out_dir/<source>/<source>_<k>.jpg``.

    Sources are used round-robin; image ``i`` depends only on ``(seed, i)``.
    Returns ``{"files": {relative_path: [height, width]}}``.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    photos = load_source_photos()
    names = list(photos)
    files = {}
    for i in tqdm(range(num_images), desc="demo photos", disable=None):
        name = names[i % len(names)]
        rng = np.random.default_rng([seed, i])
        image = _augment(rng, photos[name], long_side_range)
        rel = f"{name}/{name}_{i // len(names):04d}.jpg"
        (out_dir / name).mkdir(exist_ok=True)
        write_jpeg(out_dir / rel, image)
        files[rel] = [int(image.shape[0]), int(image.shape[1])]
    return {"files": files}
