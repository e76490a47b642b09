"""The proposal generator's work folder: manifest and chunks.

Layout next to the output ``NAME.store`` (or ``NAME.pkl``):

- ``NAME.store.shards/manifest.json``: the settings and a hash of the sorted image list; a rerun
  with different settings stops with an error instead of mixing results.
- ``NAME.store.shards/chunk_000123.store``: the results of images [123*C, 124*C) of the sorted
  list, a proposal store (``store.py``: read without pickle) with a ``levels`` section (the
  filter's fallback level per image) and the images' worker seconds in its header, written
  atomically once complete. Chunk k belongs to shard k mod n. A rerun skips existing chunks after
  checking their headers; a chunk that no longer reads (damaged while copied between machines)
  is renamed ``chunk_*.store.damaged`` and recomputed by its shard's rerun; the merge names it.
- ``NAME.summary.json`` and ``NAME.failures.json`` (one ``{"id", "reason"}`` per unreadable image).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np

from ..data.proposals.store import ProposalStore, StoreError, part_from_boxes, write_store
from ..utils.errors import InputError
from ..utils.files import atomic_write_bytes
from .methods import method_settings

__all__ = ["MANIFEST_VERSION", "DamagedChunkError", "output_paths", "manifest", "check_manifest", "read_manifest",
           "chunk_path", "write_chunk", "read_chunk", "set_aside_damaged"]

logger = logging.getLogger(__name__)

# 4: chunks are proposal stores (whole-pixel boxes, no pickle).
MANIFEST_VERSION = 4


def output_paths(output: str) -> dict[str, str]:
    """Paths of the work folder, summary and failures file belonging to ``output`` (``NAME.store``
    or ``NAME.pkl``)."""
    stem = os.path.splitext(output)[0] if output.endswith((".pkl", ".store")) else output
    return {"shards": output + ".shards", "summary": stem + ".summary.json", "failures": stem + ".failures.json"}


def manifest(ids, method, max_size, chunk_size, box_filter) -> dict:
    """The settings a work folder is bound to, with a hash of the sorted image ids."""
    digest = hashlib.sha1("\n".join(ids).encode("utf-8")).hexdigest()
    return {"version": MANIFEST_VERSION, "method": method, "settings": method_settings(method),
            "max_size": max_size, "filter": box_filter, "chunk_size": chunk_size, "num_images": len(ids),
            "images_sha1": digest}


def check_manifest(shard_dir: str, manifest: dict) -> None:
    """Write ``manifest`` into a new work folder; RuntimeError naming the differences if the
    folder holds work made with other settings or images."""
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


class ShardError(InputError):
    """``--shard`` arguments that do not fit the work folder; the message names both and the fix."""


def record_shard_count(shard_dir: str, index: int, count: int) -> None:
    """The work folder's shard count: written by the first run (``shards.json``); a later run with
    another count is refused (its chunks k mod n would not match the others'), naming both."""
    path = os.path.join(shard_dir, "shards.json")
    if not os.path.exists(path):
        atomic_write_bytes(path, json.dumps({"count": count}).encode())
        return
    stored = shard_count(shard_dir)
    if stored != count:
        raise ShardError(
            f"--shard {index}/{count}: {shard_dir} was started with {stored} shards (--shard i/{stored}); "
            f"run every shard with n = {stored}, or delete the folder to start over with {count}")


def shard_count(shard_dir: str) -> int:
    """The number of shards the work folder was started with (1 when none was recorded)."""
    path = os.path.join(shard_dir, "shards.json")
    if not os.path.exists(path):
        return 1
    with open(path) as f:
        return int(json.load(f)["count"])


def shards_to_rerun(shard_dir: str, chunks) -> str:
    """``--shard i/n`` of every shard owning one of ``chunks`` (chunk k belongs to shard k mod n)."""
    count = shard_count(shard_dir)
    return " and ".join(f"--shard {i}/{count}" for i in sorted({k % count for k in chunks}))


def read_manifest(shard_dir: str) -> dict:
    """The manifest of a work folder (FileNotFoundError naming it if there is none)."""
    path = os.path.join(shard_dir, "manifest.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"nothing to merge: {path} does not exist")
    with open(path) as f:
        return json.load(f)


def chunk_path(shard_dir: str, index: int) -> str:
    """The file of chunk ``index`` (images [index * C, (index + 1) * C) of the sorted list)."""
    return os.path.join(shard_dir, f"chunk_{index:06d}.store")


def write_chunk(shard_dir, index, results) -> None:
    """Write chunk ``index`` from its images' results ``(id, boxes, level, size, failure, seconds)``."""
    done = [r for r in results if r[4] is None]
    part = part_from_boxes([r[0] for r in done], [r[1] for r in done], [r[3] for r in done] or None,
                           [(r[0], r[4]) for r in results if r[4] is not None],
                           {"levels": np.array([r[2] for r in done], np.int8)})
    write_store(chunk_path(shard_dir, index), [part], meta={"seconds": float(sum(r[5] for r in results))})


class DamagedChunkError(InputError, RuntimeError):
    """A chunk file that cannot be read back; the message names it and the shard to rerun (an
    input error: the tools print its one line and exit 2)."""


def read_chunk(path: str) -> ProposalStore:
    """A chunk, opened (header, offsets and ids checked; boxes stay on disk)."""
    try:
        chunk = ProposalStore(path)
    except (StoreError, OSError) as exc:
        raise DamagedChunkError(f"{path}: cannot be read ({exc})") from exc
    if not chunk.has_section("levels") or "seconds" not in chunk.meta:
        raise DamagedChunkError(f"{path}: not a proposal chunk of this version")
    return chunk


def set_aside_damaged(shard_dir: str, chunks) -> list[int]:
    """Rename the unreadable ones of ``chunks`` to ``*.damaged`` (so they are recomputed)."""
    damaged = []
    for k in chunks:
        path = chunk_path(shard_dir, k)
        if not os.path.exists(path):
            continue
        try:
            read_chunk(path)
        except DamagedChunkError as exc:
            logger.warning(f"{exc}; recomputing it (the file is kept as {os.path.basename(path)}.damaged)")
            os.replace(path, path + ".damaged")
            damaged.append(k)
    return damaged


