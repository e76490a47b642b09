"""Resumable, sharded, parallel proposal generation over an image folder.

Layout next to the output ``NAME.pkl``:

- ``NAME.pkl.shards/manifest.json``: the settings and a hash of the sorted image list; a rerun with
  different settings stops with an error instead of mixing results.
- ``NAME.pkl.shards/chunk_000123.pkl``: the results of images [123*C, 124*C) of the sorted list,
  written atomically once complete. Chunk k belongs to shard k mod n. A rerun skips existing
  chunks, so an interrupted job (Ctrl-C, kill -9, a lost machine) continues where it stopped.
  A chunk that no longer reads (damaged while copied between machines) is renamed
  ``chunk_*.pkl.damaged`` and recomputed by its shard's rerun; ``merge`` names it.
- ``NAME.pkl``: merged from all chunks in order once every chunk exists (automatically at the end
  of a run, or with ``merge``); it depends only on the chunk contents, so a resumed or sharded job
  writes a byte-identical file.
- ``NAME.summary.json`` and ``NAME.failures.json`` (one ``{"id", "reason"}`` per unreadable image;
  such images have no boxes in ``NAME.pkl``, which lists them under ``failed_ids`` so training
  skips them).

Workers are a ``concurrent.futures.ProcessPoolExecutor``. A worker that dies (the OOM killer on
a huge image, a crash in a decoder) breaks the pool; the images that were in flight are then
rerun one at a time in a separate worker, the one whose worker dies again is recorded as a
failure ("worker died") and the run goes on, so a rerun never meets it again. An image still in
flight ``image_timeout`` seconds after it was handed to the pool (a decoder stuck in a loop, a
search that never ends) is treated the same way: the pool's workers are stopped, the images in
flight are rerun one at a time under the same limit, and the one that exceeds it again is recorded
as a failure ("timed out ...").

Memory stays flat: images are decoded one at a time in the workers and the parent holds the
results of at most two chunks.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import pickle
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from tqdm import tqdm

from ..image_folder import list_images
from ..image_io import ImageReadError, decode_rgb
from ...utils.files import atomic_write_bytes
from .file_format import save_proposals
from .filtering import FALLBACK_LEVELS, PAPER_MIN_SIDE, PAPER_SCALE_RANGE, soco_filter
from .methods import DEFAULT_MAX_SIZE, DEFAULT_METHOD, METHODS, method_settings, resize_longer_side, scale_boxes

__all__ = ["propose_file", "generate", "merge", "output_paths", "default_num_workers"]

logger = logging.getLogger(__name__)

# 3: chunks hold each image's size (for the proposal file's ``image_sizes``).
MANIFEST_VERSION = 3
# Worker start method: spawn, as forking a process that may hold threads (OpenCV, torch) is unsafe.
START_METHOD = "spawn"
WORKER_DIED = "worker died while processing this image (killed, e.g. by the out-of-memory killer, or crashed)"
# Seconds an image may stay in flight (about 1 s is typical at the default working size).
DEFAULT_IMAGE_TIMEOUT = 600.0
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


def _worker_init() -> None:
    import signal

    import cv2

    cv2.setNumThreads(1)  # one core per worker: the pool provides the parallelism
    # Ctrl-C reaches the whole process group: the parent alone handles it (keeps finished
    # chunks, stops the pool); a worker interrupted mid-image would only look like a death.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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


def _timed_out(seconds: float) -> str:
    return f"timed out: still in flight after {seconds:g} s (a hung decoder or search); skipped"


class _Workers:
    """A process pool that survives the death and the hang of its workers.

    ``run(items)`` maps ``_process`` over ``(key, task)`` pairs and yields ``(key, result)`` in
    completion order, keeping at most ``2 * num_workers + 2`` tasks submitted. When a worker
    dies, every task in flight fails with ``BrokenProcessPool`` and nothing says which one
    killed it: those tasks are rerun one by one in a one-worker pool, where a death names its
    image, which gets the result "worker died"; then a fresh pool continues. A task in flight
    longer than ``image_timeout`` seconds (None: no limit; counted from its submission, which
    precedes its start by at most two tasks' time) is handled the same way, its rerun limited
    to ``image_timeout`` too.
    """

    def __init__(self, num_workers: int, image_timeout: float | None = DEFAULT_IMAGE_TIMEOUT):
        self.num_workers = num_workers
        self.image_timeout = image_timeout
        self.window = 2 * num_workers + 2
        self.pool = self._new_pool(num_workers)
        self.single = None

    @staticmethod
    def _new_pool(n: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(n, mp_context=multiprocessing.get_context(START_METHOD), initializer=_worker_init)

    @staticmethod
    def _stop(pool: ProcessPoolExecutor) -> None:
        """Kill the pool's workers, then shut it down. concurrent.futures cannot cancel a running
        task; its worker processes (the private ``_processes``) are the only handle on a hung one."""
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.kill()
        pool.shutdown(wait=True, cancel_futures=True)

    def run(self, items):
        items = iter(items)
        in_flight, deadline = {}, {}
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < self.window:
                item = next(items, None)
                if item is None:
                    exhausted = True
                else:
                    future = self.pool.submit(_process, item[1])
                    in_flight[future] = item
                    if self.image_timeout:
                        deadline[future] = time.monotonic() + self.image_timeout
            if not in_flight:
                return
            timeout = max(0.0, min(deadline[f] for f in in_flight) - time.monotonic()) if self.image_timeout else None
            done, _ = wait(in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
            if not done:  # the oldest task passed its deadline
                hung = [in_flight[f][1][0] for f in in_flight if deadline[f] <= time.monotonic()]
                logger.warning(f"{', '.join(hung)}: in flight for over {self.image_timeout:g} s; stopping the "
                               f"workers and rerunning the {len(in_flight)} images in flight one at a time")
                suspects = list(in_flight.values())
                in_flight.clear()
                deadline.clear()
                self._stop(self.pool)
                yield from self._isolate(suspects)
                self.pool = self._new_pool(self.num_workers)
                continue
            suspects = []
            for future in done:
                key, task = in_flight.pop(future)
                deadline.pop(future, None)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    suspects.append((key, task))
                    continue
                yield key, result
            if suspects:
                suspects += in_flight.values()
                in_flight.clear()
                deadline.clear()
                self.pool.shutdown(wait=True, cancel_futures=True)
                logger.warning(f"a proposal worker died; rerunning the {len(suspects)} images it may have "
                               "been processing one at a time")
                yield from self._isolate(suspects)
                self.pool = self._new_pool(self.num_workers)

    def _isolate(self, items):
        for key, task in items:
            if self.single is None:
                self.single = self._new_pool(1)
            try:
                result = self.single.submit(_process, task).result(timeout=self.image_timeout or None)
            except (BrokenProcessPool, FutureTimeout) as exc:
                self._stop(self.single)
                self.single = None
                reason = WORKER_DIED if isinstance(exc, BrokenProcessPool) else _timed_out(self.image_timeout)
                logger.error(f"{task[1]}: {reason}; recorded as a failure")
                result = (task[0], None, -1, None, reason, 0.0)
            yield key, result

    def close(self):
        for pool in (self.pool, self.single):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)


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
    chunk = {"ids": [], "boxes": [], "levels": [], "sizes": [], "failures": [], "seconds": 0.0}
    for image_id, boxes, level, size, failure, seconds in results:
        chunk["seconds"] += seconds
        if failure is not None:
            chunk["failures"].append((image_id, failure))
            continue
        chunk["ids"].append(image_id)
        chunk["boxes"].append(boxes)
        chunk["levels"].append(level)
        chunk["sizes"].append(size)
    chunk["levels"] = np.asarray(chunk["levels"], np.int8)
    chunk["sizes"] = np.asarray(chunk["sizes"], np.int32).reshape(-1, 2)
    atomic_write_bytes(_chunk_path(shard_dir, index), pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL))


class DamagedChunkError(RuntimeError):
    """A chunk file that cannot be read back; the message names it."""


def _read_chunk(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            chunk = pickle.load(f)
    except Exception as exc:  # noqa: BLE001 - truncated, overwritten, foreign: all unusable
        raise DamagedChunkError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(chunk, dict) or not {"ids", "boxes", "levels", "sizes", "failures"} <= set(chunk):
        raise DamagedChunkError(f"{path}: not a proposal chunk of this version")
    return chunk


def _set_aside_damaged(shard_dir: str, chunks) -> list[int]:
    """Rename the unreadable ones of ``chunks`` to ``*.damaged`` (so they are recomputed)."""
    damaged = []
    for k in chunks:
        path = _chunk_path(shard_dir, k)
        if not os.path.exists(path):
            continue
        try:
            _read_chunk(path)
        except DamagedChunkError as exc:
            logger.warning(f"{exc}; recomputing it (the file is kept as {os.path.basename(path)}.damaged)")
            os.replace(path, path + ".damaged")
            damaged.append(k)
    return damaged


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
             scale_range=PAPER_SCALE_RANGE, min_side=PAPER_MIN_SIDE,
             image_timeout: float | None = DEFAULT_IMAGE_TIMEOUT) -> dict | None:
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
    _set_aside_damaged(shard_dir, mine)
    pending = [k for k in mine if not os.path.exists(_chunk_path(shard_dir, k))]
    total = sum(len(ids[k * chunk_size:(k + 1) * chunk_size]) for k in mine)
    todo = sum(len(ids[k * chunk_size:(k + 1) * chunk_size]) for k in pending)
    if max_chunks is not None:
        pending = pending[:max_chunks]

    root = os.path.abspath(image_root)

    def tasks():
        for k in pending:
            for position, image_id in enumerate(ids[k * chunk_size:(k + 1) * chunk_size]):
                yield (k, position), (image_id, os.path.join(root, *image_id.split("/")), method, max_size, box_filter)

    bar = tqdm(total=total, initial=total - todo, unit="img", disable=not progress, smoothing=0.05,
               desc=f"proposals {method} shard {shard_index}/{shard_count}")
    processed = 0
    if image_timeout is not None and image_timeout < 0:
        raise ValueError(f"image_timeout must be >= 0 seconds (0: no limit), got {image_timeout}")
    workers = _Workers(num_workers, image_timeout) if num_workers > 0 else None
    results = workers.run(tasks()) if workers else ((key, _process(task)) for key, task in tasks())
    collected = {}  # chunk index -> results by position; written (and dropped) once complete
    try:
        for (k, position), result in results:
            size = len(ids[k * chunk_size:(k + 1) * chunk_size])
            collected.setdefault(k, [None] * size)[position] = result
            bar.update(1)
            if all(r is not None for r in collected[k]):
                _write_chunk(shard_dir, k, collected.pop(k))
                processed += size
    finally:
        if workers is not None:
            workers.close()
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

    ids, boxes, levels, sizes, failures, seconds = [], [], [], [], [], 0.0
    for k in range(num_chunks):
        try:
            chunk = _read_chunk(_chunk_path(shard_dir, k))
        except DamagedChunkError as exc:
            raise DamagedChunkError(
                f"cannot merge {output}: {exc}. Rerun tools/gen_proposals.py with the arguments of the "
                f"shard that owns chunk {k} (shard {k} mod n of --shard i/n); it recomputes the chunk") from exc
        ids += chunk["ids"]
        boxes += chunk["boxes"]
        levels.append(chunk["levels"])
        sizes.append(chunk["sizes"])
        failures += chunk["failures"]
        seconds += chunk["seconds"]
    save_proposals(output, ids, boxes, image_sizes=np.concatenate(sizes) if sizes else None,
                   failures=failures)

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
