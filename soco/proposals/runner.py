"""Resumable, sharded, parallel proposal generation over an image folder or zip archive.

``generate`` lists the images (sorted), computes this shard's chunks in a process pool
(``pool.py``), stores each finished chunk (``chunks.py``: the work folder's layout, manifest and
chunk files) and, once every shard's chunks exist, merges them (``merging.py``) into the output:
a memory-mapped proposal store, or Detectron2's pickle for an output ending in ``.pkl``. The
output depends only on the chunk contents, so a resumed or sharded job writes a byte-identical
file. Unreadable images are listed in ``NAME.failures.json`` and in the output's failures, so
training skips them.

Memory stays flat: images are decoded one at a time in the workers, the parent holds the
results of at most two chunks, and the merge maps one chunk at a time.
"""
from __future__ import annotations

import os
import time

import numpy as np
from tqdm import tqdm

from ..data.image_folder import image_path, list_images
from ..data.image_io import ImageReadError, decode_rgb
from .chunks import (DamagedChunkError, ShardError, check_manifest, chunk_path, manifest, output_paths,
                     record_shard_count, set_aside_damaged, write_chunk)
from .filtering import PAPER_MIN_SIDE, PAPER_SCALE_RANGE, soco_filter
from .merging import merge
from .methods import DEFAULT_MAX_SIZE, DEFAULT_METHOD, METHODS, resize_longer_side, scale_boxes
from .pool import DEFAULT_IMAGE_TIMEOUT, WORKER_DIED, Workers, default_num_workers

__all__ = ["propose_file", "generate", "merge", "output_paths", "default_num_workers", "DamagedChunkError",
           "DEFAULT_IMAGE_TIMEOUT", "WORKER_DIED"]

# Worker start method: spawn, as forking a process that may hold threads (OpenCV, torch) is unsafe.
START_METHOD = "spawn"
# The searched image must allow a 32 px box; smaller images go straight to the whole-image box.
MIN_SEARCH_SIDE = 32


def propose_file(path: str, method: str, max_size: int | None,
                 box_filter: dict | None = None) -> tuple[np.ndarray, int]:
    """Proposals of one image file -> (boxes (K, 4) float32 XYXY in original upright pixels, level).

    The image is searched at ``max_size`` (longer side) and boxes are scaled back, then filtered
    with ``soco_filter`` (keyword arguments ``box_filter``, default the paper's rule) at the
    original size. Raises ``ImageReadError`` for unreadable files.
    """
    boxes, level, _ = propose_file_with_size(path, method, max_size, box_filter)
    return boxes, level


def propose_file_with_size(path: str, method: str, max_size: int | None,
                           box_filter: dict | None = None) -> tuple[np.ndarray, int, tuple[int, int]]:
    """``propose_file`` -> (boxes, level, (height, width) of the upright original image)."""
    image, original_hw = decode_rgb(path, max_size)
    work = resize_longer_side(image, max_size)
    if min(original_hw) < MIN_SEARCH_SIDE or min(work.shape[:2]) < 2:
        raw = np.zeros((0, 4), np.float32)
    else:
        raw = METHODS[method](work, work.shape[0] / original_hw[0])
    # Whole pixels before the filter, so the rule holds for the boxes the store keeps.
    boxes, level = soco_filter(np.rint(scale_boxes(raw, work.shape[:2], original_hw)), original_hw, **(box_filter or {}))
    return boxes, level, (int(original_hw[0]), int(original_hw[1]))


def _process(task):
    image_id, path, method, max_size, box_filter = task
    start = time.perf_counter()
    try:
        boxes, level, size = propose_file_with_size(path, method, max_size, box_filter)
        failure = None
    except ImageReadError as e:
        boxes, level, size, failure = None, -1, None, e.reason
    except Exception as e:  # noqa: BLE001 - a bad image must never stop a 1.28M-image run
        boxes, level, size, failure = None, -1, None, f"{type(e).__name__}: {e}"
    return image_id, boxes, level, size, failure, time.perf_counter() - start


def _parse_shard(shard) -> tuple[int, int]:
    if isinstance(shard, str):
        try:
            index, count = (int(x) for x in shard.split("/"))
        except ValueError:
            raise ShardError(f"--shard must look like i/n (e.g. 0/4), got {shard!r}") from None
    else:
        index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise ShardError(f"--shard {index}/{count}: the shard index must satisfy 0 <= i < n")
    return index, count


def generate(image_root, output, image_list=None, method=DEFAULT_METHOD, max_size="default", num_workers=None,
             shard="0/1", chunk_size=1000, progress=True, max_chunks=None,
             scale_range=PAPER_SCALE_RANGE, min_side=PAPER_MIN_SIDE,
             image_timeout: float | None = DEFAULT_IMAGE_TIMEOUT) -> dict | None:
    """Compute (or continue) this shard's chunks; merge when every shard's chunks exist.

    Args:
        image_root: folder of images (searched recursively unless ``image_list`` is given), or a
            zip archive (``train.zip``; its members, or those of ``image_list`` / ``train_map.txt``
            next to it; ids are the paths inside the archive).
        output: final proposal file: ``NAME.store`` (memory-mapped store) or ``NAME.pkl``
            (Detectron2's pickle).
        image_list: optional text file of paths relative to ``image_root``.
        method: a key of ``METHODS``. max_size: working resolution (longer side, px); "default"
            uses ``DEFAULT_MAX_SIZE[method]``, None searches at full resolution.
        num_workers: processes (default: all cores; 0 = in this process).
        shard: "i/n" or (i, n). chunk_size: images per checkpoint file.
        max_chunks: stop after writing this many chunks (to simulate an interruption in tests).
        scale_range, min_side: ``soco_filter``'s box rule (default the paper's: sqrt(wh) within
            0.3-0.8 of the image's, sides >= 32 px); a dataset of small objects may lower them.
        image_timeout: seconds an image may stay in a worker before it is recorded as a failure
            (None or 0: no limit; with ``num_workers=0`` nothing can interrupt an image).

    Returns:
        The summary dict if the final file was written, else None (other shards still missing).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    if max_size == "default":
        max_size = DEFAULT_MAX_SIZE[method]
    if not (0.0 <= scale_range[0] < scale_range[1] and min_side >= 0):
        raise ValueError(f"need 0 <= scale_range[0] < scale_range[1] and min_side >= 0, got {scale_range}, {min_side}")
    if image_timeout is not None and image_timeout < 0:
        raise ValueError(f"image_timeout must be >= 0 seconds (0: no limit), got {image_timeout}")
    box_filter = {"scale_range": [float(x) for x in scale_range], "min_side": float(min_side)}
    shard_index, shard_count = _parse_shard(shard)
    num_workers = default_num_workers() if num_workers is None else num_workers
    start = time.perf_counter()

    ids = list_images(image_root, image_list)
    if not ids:
        raise FileNotFoundError(f"no images found under {image_root}" + (f" from list {image_list}" if image_list else ""))
    shard_dir = output_paths(output)["shards"]
    os.makedirs(shard_dir, exist_ok=True)
    record_shard_count(shard_dir, shard_index, shard_count)
    check_manifest(shard_dir, manifest(ids, method, max_size, chunk_size, box_filter))

    num_chunks = (len(ids) + chunk_size - 1) // chunk_size
    mine = range(shard_index, num_chunks, shard_count)
    set_aside_damaged(shard_dir, mine)
    pending = [k for k in mine if not os.path.exists(chunk_path(shard_dir, k))]
    total = sum(len(ids[k * chunk_size:(k + 1) * chunk_size]) for k in mine)
    todo = sum(len(ids[k * chunk_size:(k + 1) * chunk_size]) for k in pending)
    if max_chunks is not None:
        pending = pending[:max_chunks]

    root = os.path.abspath(image_root)

    def tasks():
        for k in pending:
            for position, image_id in enumerate(ids[k * chunk_size:(k + 1) * chunk_size]):
                yield (k, position), (image_id, image_path(root, image_id), method, max_size, box_filter)

    bar = tqdm(total=total, initial=total - todo, unit="img", disable=not progress, smoothing=0.05,
               desc=f"proposals {method} shard {shard_index}/{shard_count}")
    processed = 0
    workers = Workers(_process, num_workers, image_timeout, START_METHOD) if num_workers > 0 else None
    results = workers.run(tasks()) if workers else ((key, _process(task)) for key, task in tasks())
    collected = {}  # chunk index -> results by position; written (and dropped) once complete
    remaining = {}  # chunk index -> results still to come
    try:
        for (k, position), result in results:
            if k not in collected:
                remaining[k] = min(chunk_size, len(ids) - k * chunk_size)
                collected[k] = [None] * remaining[k]
            collected[k][position] = result
            remaining[k] -= 1
            bar.update(1)
            if remaining[k] == 0:
                chunk = collected.pop(k)
                del remaining[k]
                write_chunk(shard_dir, k, chunk)
                processed += len(chunk)
    finally:
        if workers is not None:
            workers.close()
        bar.close()
    wall = time.perf_counter() - start

    missing = [k for k in range(num_chunks) if not os.path.exists(chunk_path(shard_dir, k))]
    if missing:
        return None
    return merge(output, run_stats={"wall_time_s": wall, "images_this_run": processed, "num_workers": num_workers})


