"""Merging the generator's chunks into the proposal file, streaming.

A store output is written by ``write_store`` from the chunks themselves, one chunk mapped at a
time per section: peak memory is one chunk plus the per-image summary arrays (counts, levels:
9 bytes per image; no box of another chunk), and the bytes equal a one-shot write of the same
content. A ``.pkl`` output (Detectron2's format) holds every box in memory, as pickling
needs.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..data.proposals.file_format import is_pickle_path, save_proposals
from ..data.proposals.store import ProposalStore, write_store
from ..utils.files import atomic_write_bytes
from .chunks import DamagedChunkError, ShardError, chunk_path, output_paths, read_chunk, read_manifest, shards_to_rerun
from .filtering import FALLBACK_LEVELS

__all__ = ["merge"]


def merge(output, run_stats: dict | None = None) -> dict:
    """Merge all chunks of ``output``'s work folder into ``output``; write summary and failures.

    Raises:
        ShardError: naming the missing chunks and the shards to (re)run if some have not finished.
    """
    paths = output_paths(output)
    shard_dir = paths["shards"]
    manifest = read_manifest(shard_dir)
    num_chunks = (manifest["num_images"] + manifest["chunk_size"] - 1) // manifest["chunk_size"]
    chunk_paths = [chunk_path(shard_dir, k) for k in range(num_chunks)]
    missing = [k for k, path in enumerate(chunk_paths) if not os.path.exists(path)]
    if missing:
        raise ShardError(f"cannot merge {output}: {len(missing)} of {num_chunks} chunks missing (first: "
                         f"{chunk_paths[missing[0]]}); rerun tools/gen_proposals.py with "
                         f"{shards_to_rerun(shard_dir, missing)} (the same other arguments)")

    def open_chunk(path: str):
        try:
            return read_chunk(path)
        except DamagedChunkError as exc:
            k = chunk_paths.index(path)
            raise DamagedChunkError(
                f"cannot merge {output}: {exc}. Rerun tools/gen_proposals.py with {shards_to_rerun(shard_dir, [k])} "
                "(the same other arguments); it recomputes the chunk") from exc

    # Per-image summary arrays and failures: from each chunk's header, offsets and levels.
    counts, levels, failures, seconds = [], [], [], 0.0
    for path in chunk_paths:
        chunk = open_chunk(path)
        counts.append(np.asarray(chunk.counts))
        levels.append(np.asarray(chunk.section("levels")))
        failures += sorted(chunk.failed.items())
        seconds += float(chunk.meta["seconds"])
        del chunk
    if is_pickle_path(output):
        parts = [open_chunk(path) for path in chunk_paths]
        save_proposals(output, [i for c in parts for i in c.ids()], [c.boxes(i) for c in parts for i in range(len(c))],
                       np.concatenate([np.asarray(c.sizes) for c in parts]), failures)
        del parts
    else:
        # Every chunk was checked above; write_store reopens each once per section, unchecked.
        write_store(output, chunk_paths, open_part=lambda path: ProposalStore(path, check_ids=False).part())
    failures = sorted(failures)
    counts = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    levels = np.concatenate(levels) if levels else np.zeros(0, np.int8)
    summary = {
        "output": os.path.basename(output),
        "method": manifest["method"],
        "max_size": manifest["max_size"],
        "filter": manifest["filter"],
        "images": len(counts),
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
        "bytes_per_image": round(os.path.getsize(output) / max(1, len(counts)), 1),
        "core_seconds_per_image": round(seconds / max(1, len(counts) + len(failures)), 4),
    }
    if run_stats:
        summary.update({k: (round(v, 2) if isinstance(v, float) else v) for k, v in run_stats.items()})
        if run_stats.get("wall_time_s"):
            summary["images_per_s_this_run"] = round(run_stats["images_this_run"] / run_stats["wall_time_s"], 2)
    atomic_write_bytes(paths["failures"], ("[\n" + ",\n".join(
        json.dumps({"id": i, "reason": r}) for i, r in failures) + "\n]\n").encode())
    atomic_write_bytes(paths["summary"], json.dumps(summary, indent=1).encode())
    return summary
