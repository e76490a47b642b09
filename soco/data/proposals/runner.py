"""Resumable, sharded, parallel proposal generation over an image folder.

Layout next to the output ``NAME.pkl``:

- ``NAME.pkl.shards/manifest.json``: the settings and a hash of the sorted image list; a rerun with
  different settings stops with an error instead of mixing results.
- ``NAME.pkl.shards/chunk_000123.pkl``: the results of images [123*C, 124*C) of the sorted list,
  written atomically once complete. Chunk k belongs to shard k mod n. A rerun skips existing
  chunks, so an interrupted job (Ctrl-C, kill -9, a lost machine) continues where it stopped.
- ``NAME.pkl``: merged from all chunks in order once every chunk exists (automatically at the end
  of a run, or with ``merge``); it depends only on the chunk contents, so a resumed or sharded job
  writes a byte-identical file.
- ``NAME.summary.json`` and ``NAME.failures.json`` (one ``{"id", "reason"}`` per unreadable image;
  such images are left out of ``NAME.pkl``).

Memory stays flat: images are decoded one at a time in the workers and at most two chunks of
results are held by the parent.
"""
from __future__ import annotations

import collections
import hashlib
import json
import multiprocessing
import os
import pickle
import time

import numpy as np
from tqdm import tqdm

from ..image_folder import list_images
from ..image_io import ImageReadError, decode_rgb
from .file_format import atomic_write_bytes, save_proposals
from .filtering import FALLBACK_LEVELS, PAPER_MIN_SIDE, PAPER_SCALE_RANGE, soco_filter
from .methods import DEFAULT_MAX_SIZE, DEFAULT_METHOD, METHODS, method_settings, resize_longer_side, scale_boxes

__all__ = ["propose_file", "generate", "merge", "output_paths", "default_num_workers"]

MANIFEST_VERSION = 2
# The searched image must allow a 32 px box; smaller images go straight to the whole-image box.
MIN_SEARCH_SIDE = 32


def default_num_workers() -> int:
    """Cores available to this process (respects CPU affinity / cgroup pinning)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def output_paths(output: str) -> dict[str, str]:
    """Paths of the work folder, summary and failures file belonging to ``output`` (``NAME.pkl``)."""
    stem = output[:-4] if output.endswith(".pkl") else output
    return {"shards": output + ".shards", "summary": stem + ".summary.json", "failures": stem + ".failures.json"}


def propose_file(path: str, method: str, max_size: int | None,
                 box_filter: dict | None = None) -> tuple[np.ndarray, int]:
    """Proposals of one image file -> (boxes (K, 4) float32 XYXY in original upright pixels, level).

    The image is searched at ``max_size`` (longer side) and boxes are scaled back, then filtered
    with ``soco_filter`` (keyword arguments ``box_filter``, default the paper's rule) at the
    original size. Raises ``ImageReadError`` for unreadable files.
    """
    image, original_hw = decode_rgb(path, max_size)
    work = resize_longer_side(image, max_size)
    if min(original_hw) < MIN_SEARCH_SIDE or min(work.shape[:2]) < 2:
        raw = np.zeros((0, 4), np.float32)
    else:
        raw = METHODS[method](work, work.shape[0] / original_hw[0])
    return soco_filter(scale_boxes(raw, work.shape[:2], original_hw), original_hw, **(box_filter or {}))


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # one core per worker: the pool provides the parallelism


def _process(task):
    image_id, path, method, max_size, box_filter = task
    start = time.perf_counter()
    try:
        boxes, level = propose_file(path, method, max_size, box_filter)
        failure = None
    except ImageReadError as e:
        boxes, level, failure = None, -1, e.reason
    except Exception as e:  # noqa: BLE001 - a bad image must never stop a 1.28M-image run
        boxes, level, failure = None, -1, f"{type(e).__name__}: {e}"
    return image_id, boxes, level, failure, time.perf_counter() - start


def _manifest(ids, method, max_size, chunk_size, box_filter) -> dict:
    digest = hashlib.sha1("\n".join(ids).encode("utf-8")).hexdigest()
    return {"version": MANIFEST_VERSION, "method": method, "settings": method_settings(method),
            "max_size": max_size, "filter": box_filter, "chunk_size": chunk_size, "num_images": len(ids),
            "images_sha1": digest}


def _check_manifest(shard_dir: str, manifest: dict) -> None:
    path = os.path.join(shard_dir, "manifest.json")
    if os.path.exists(path):
        with open(path) as f:
            existing = json.load(f)
        if existing != manifest:
            diff = {k: (existing.get(k), manifest.get(k)) for k in manifest if existing.get(k) != manifest.get(k)}
            raise RuntimeError(
                f"{shard_dir} holds work made with other settings or images (stored, requested): {diff}. "
                "Rerun with the same arguments, or delete that folder to start over.")
    else:
        atomic_write_bytes(path, json.dumps(manifest, indent=1, sort_keys=True).encode())


def _chunk_path(shard_dir: str, index: int) -> str:
    return os.path.join(shard_dir, f"chunk_{index:06d}.pkl")


def _write_chunk(shard_dir, index, results) -> None:
    chunk = {"ids": [], "boxes": [], "levels": [], "failures": [], "seconds": 0.0}
    for image_id, boxes, level, failure, seconds in results:
        chunk["seconds"] += seconds
        if failure is not None:
            chunk["failures"].append((image_id, failure))
            continue
        chunk["ids"].append(image_id)
        chunk["boxes"].append(boxes)
        chunk["levels"].append(level)
    chunk["levels"] = np.asarray(chunk["levels"], np.int8)
    atomic_write_bytes(_chunk_path(shard_dir, index), pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL))


def _parse_shard(shard) -> tuple[int, int]:
    if isinstance(shard, str):
        try:
            index, count = (int(x) for x in shard.split("/"))
        except ValueError:
            raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {shard!r}") from None
    else:
        index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"shard index must satisfy 0 <= i < n, got {index}/{count}")
    return index, count


def generate(image_root, output, image_list=None, method=DEFAULT_METHOD, max_size="default", num_workers=None,
             shard="0/1", chunk_size=1000, progress=True, max_chunks=None,
             scale_range=PAPER_SCALE_RANGE, min_side=PAPER_MIN_SIDE) -> dict | None:
    """Compute (or continue) this shard's chunks; merge when every shard's chunks exist.

    Args:
        image_root: folder of images (searched recursively unless ``image_list`` is given).
        output: final proposal file ``NAME.pkl``.
        image_list: optional text file of paths relative to ``image_root``.
        method: a key of ``METHODS``. max_size: working resolution (longer side, px); "default"
            uses ``DEFAULT_MAX_SIZE[method]``, None searches at full resolution.
        num_workers: processes (default: all cores; 0 = in this process).
        shard: "i/n" or (i, n). chunk_size: images per checkpoint file.
        max_chunks: stop after writing this many chunks (to simulate an interruption in tests).
        scale_range, min_side: ``soco_filter``'s box rule (default the paper's: sqrt(wh) within
            0.3-0.8 of the image's, sides >= 32 px); a dataset of small objects may lower them.

    Returns:
        The summary dict if the final file was written, else None (other shards still missing).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    if max_size == "default":
        max_size = DEFAULT_MAX_SIZE[method]
    if not (0.0 <= scale_range[0] < scale_range[1] and min_side >= 0):
        raise ValueError(f"need 0 <= scale_range[0] < scale_range[1] and min_side >= 0, got {scale_range}, {min_side}")
    box_filter = {"scale_range": [float(x) for x in scale_range], "min_side": float(min_side)}
    shard_index, shard_count = _parse_shard(shard)
    num_workers = default_num_workers() if num_workers is None else num_workers
    start = time.perf_counter()

    ids = list_images(image_root, image_list)
    if not ids:
        raise FileNotFoundError(f"no images found under {image_root}" + (f" from list {image_list}" if image_list else ""))
    shard_dir = output_paths(output)["shards"]
    os.makedirs(shard_dir, exist_ok=True)
    _check_manifest(shard_dir, _manifest(ids, method, max_size, chunk_size, box_filter))

    num_chunks = (len(ids) + chunk_size - 1) // chunk_size
    mine = range(shard_index, num_chunks, shard_count)
    pending = [k for k in mine if not os.path.exists(_chunk_path(shard_dir, k))]
    total = sum(len(ids[k * chunk_size:(k + 1) * chunk_size]) for k in mine)
    todo = sum(len(ids[k * chunk_size:(k + 1) * chunk_size]) for k in pending)
    if max_chunks is not None:
        pending = pending[:max_chunks]

    def tasks(k):
        root = os.path.abspath(image_root)
        return [(i, os.path.join(root, *i.split("/")), method, max_size, box_filter)
                for i in ids[k * chunk_size:(k + 1) * chunk_size]]

    bar = tqdm(total=total, initial=total - todo, unit="img", disable=not progress, smoothing=0.05,
               desc=f"proposals {method} shard {shard_index}/{shard_count}")
    processed = 0
    pool = multiprocessing.get_context("spawn").Pool(num_workers, _worker_init) if num_workers > 0 else None
    try:
        # Keep the next chunk queued while the current one is collected, so workers never idle at
        # a chunk boundary; at most two chunks of results are in memory.
        in_flight = collections.deque()
        queue = iter(pending)

        def submit():
            k = next(queue, None)
            if k is not None:
                work = tasks(k)
                results = pool.imap(_process, work, chunksize=2) if pool else map(_process, work)
                in_flight.append((k, results))

        submit()
        submit()
        while in_flight:
            k, results = in_flight.popleft()
            collected = []
            for result in results:
                collected.append(result)
                bar.update(1)
            _write_chunk(shard_dir, k, collected)
            processed += len(collected)
            submit()
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        bar.close()
    wall = time.perf_counter() - start

    missing = [k for k in range(num_chunks) if not os.path.exists(_chunk_path(shard_dir, k))]
    if missing:
        return None
    return merge(output, run_stats={"wall_time_s": wall, "images_this_run": processed, "num_workers": num_workers})


def merge(output, run_stats: dict | None = None) -> dict:
    """Merge all chunks of ``output``'s work folder into ``output``; write summary and failures.

    Raises:
        RuntimeError: naming the missing chunks if some shard has not finished.
    """
    paths = output_paths(output)
    shard_dir = paths["shards"]
    manifest_path = os.path.join(shard_dir, "manifest.json")
    if not os.path.exists(manifest_path):
        raise FileNotFoundError(f"nothing to merge: {manifest_path} does not exist")
    with open(manifest_path) as f:
        manifest = json.load(f)
    num_chunks = (manifest["num_images"] + manifest["chunk_size"] - 1) // manifest["chunk_size"]
    missing = [k for k in range(num_chunks) if not os.path.exists(_chunk_path(shard_dir, k))]
    if missing:
        raise RuntimeError(f"cannot merge {output}: {len(missing)} of {num_chunks} chunks missing "
                           f"(first: {_chunk_path(shard_dir, missing[0])}); finish every shard first")

    ids, boxes, levels, failures, seconds = [], [], [], [], 0.0
    for k in range(num_chunks):
        with open(_chunk_path(shard_dir, k), "rb") as f:
            chunk = pickle.load(f)
        ids += chunk["ids"]
        boxes += chunk["boxes"]
        levels.append(chunk["levels"])
        failures += chunk["failures"]
        seconds += chunk["seconds"]
    save_proposals(output, ids, boxes)

    counts = np.array([len(b) for b in boxes], np.int64)
    levels = np.concatenate(levels) if levels else np.zeros(0, np.int8)
    summary = {
        "output": os.path.basename(output),
        "method": manifest["method"],
        "max_size": manifest["max_size"],
        "filter": manifest["filter"],
        "images": len(ids),
        "failures": len(failures),
        "boxes_total": int(counts.sum()),
        "boxes_per_image": {
            "min": int(counts.min()) if len(counts) else 0,
            "median": float(np.median(counts)) if len(counts) else 0.0,
            "mean": round(float(counts.mean()), 2) if len(counts) else 0.0,
            "max": int(counts.max()) if len(counts) else 0,
        },
        "fallbacks": {name: int((levels == i).sum()) for i, name in enumerate(FALLBACK_LEVELS)},
        "file_bytes": os.path.getsize(output),
        "bytes_per_image": round(os.path.getsize(output) / max(1, len(ids)), 1),
        "core_seconds_per_image": round(seconds / max(1, len(ids) + len(failures)), 4),
    }
    if run_stats:
        summary.update({k: (round(v, 2) if isinstance(v, float) else v) for k, v in run_stats.items()})
        if run_stats.get("wall_time_s"):
            summary["images_per_s_this_run"] = round(run_stats["images_this_run"] / run_stats["wall_time_s"], 2)
    atomic_write_bytes(paths["failures"], ("[\n" + ",\n".join(
        json.dumps({"id": i, "reason": r}) for i, r in failures) + "\n]\n").encode())
    atomic_write_bytes(paths["summary"], json.dumps(summary, indent=1).encode())
    return summary
