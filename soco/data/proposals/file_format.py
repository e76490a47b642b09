"""Proposal files: the memory-mapped store (``store.py``, any path not ending in ``.pkl``) and
Detectron2's precomputed-proposal pickle (a path ending in ``.pkl``), and conversion both ways.

Training opens proposals with ``open_proposals`` (a ``ProposalStore``; a pickle is converted
once to a store next to it). ``read_proposal_file`` reads either format into dicts, for small
files and tools. A pickle can run code when unpickled: reading one logs, once per file, that it
must come from a trusted source; stores are read without pickle.

The pickle:
``{"ids": list[str] (image paths relative to the image root, "/"-separated, sorted),
   "boxes": list[(N_i, 4) float32] XYXY_ABS in original (EXIF-upright) image pixels,
   "objectness_logits": list[(N_i,) float32] = -0, -1, -2, ... (a rank, not a score: it only
   makes Detectron2's descending sort keep the stored order),
   "bbox_mode": int(BoxMode.XYXY_ABS) = 0,
   "image_sizes": (len(ids), 2) int32 (height, width) of each image, upright pixels,
   "failed_ids": list[str], "failure_reasons": list[str]: images that could not be read}``

``detectron2.data.load_proposals_into_dataset`` reads it directly (dataset ``image_id`` = id)
and ignores the last three keys; files written before they existed read with sizes unknown.
"""
from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass

import numpy as np

from ...utils.files import atomic_write_bytes, derived_file
from .store import ProposalStore, is_store, part_from_boxes, write_store
from .validation import ProposalFileError, ProposalFileNotFound, ProposalReport, clean_proposals, count_empty

__all__ = ["XYXY_ABS", "ProposalFile", "save_proposals", "read_proposal_file", "load_proposals", "is_pickle_path",
           "open_proposals", "pickle_to_store", "store_to_pickle", "store_path_for"]

logger = logging.getLogger(__name__)
# Images converted to store boxes at a time when a store is written from per-image arrays.
_BLOCK = 1 << 16
_WARNED_PICKLES: set = set()

XYXY_ABS = 0  # detectron2.structures.BoxMode.XYXY_ABS, without importing Detectron2 here


def is_pickle_path(path) -> bool:
    """Whether ``path`` names Detectron2's pickle format (it ends in ``.pkl``) rather than a store."""
    return os.fspath(path).endswith(".pkl")


def save_proposals(path, ids: list[str], boxes: list[np.ndarray], image_sizes=None, failures=(),
                   source=None) -> ProposalReport | None:
    """Write proposals atomically (same input -> byte-identical file): the pickle when ``path``
    ends in ``.pkl``, else a store, validated on the way (``validation.clean_proposals``:
    malformed entries and broken boxes dropped, boxes clipped, rounded to whole pixels, ids
    sorted; the report is returned, and kept in the store's header when it found anything).

    ``image_sizes``: (len(ids), 2) (height, width) or None; ``failures``: (id, reason) pairs;
    ``source``: the file the proposals were read from, named in the report (default ``path``).
    """
    if not is_pickle_path(path):
        ids, boxes, sizes, report = clean_proposals(os.fspath(source or path), ids, boxes, image_sizes)
        order = sorted(range(len(ids)), key=lambda i: ids[i])
        sorted_ids = [ids[i] for i in order]
        sizes = None if sizes is None else sizes[order]
        # Converted in blocks of images: only the integer boxes of all images are held at once.
        parts = [part_from_boxes(sorted_ids[a:a + _BLOCK], [boxes[i] for i in order[a:a + _BLOCK]],
                                 None if sizes is None else sizes[a:a + _BLOCK], failures if a == 0 else ())
                 for a in range(0, max(1, len(ids)), _BLOCK)]
        counts_before = np.array([len(boxes[i]) for i in order], np.int64)
        count_empty(report, sorted_ids, counts_before, np.concatenate([part.counts for part in parts]))
        # A clean file's store equals the generator's (same bytes); a repaired one carries its report.
        meta = {"validation": report.to_meta()} if any(report.counts.values()) else None
        write_store(path, parts, sizes_known=image_sizes is not None, meta=meta)
        return report
    if len(ids) != len(boxes):
        raise ProposalFileError(f"{path}: {len(ids)} ids but {len(boxes)} box arrays")
    boxes = [np.ascontiguousarray(b, np.float32).reshape(-1, 4) for b in boxes]
    payload = {
        "ids": list(ids),
        "boxes": boxes,
        "objectness_logits": [-np.arange(len(b), dtype=np.float32) for b in boxes],
        "bbox_mode": XYXY_ABS,
        "failed_ids": [str(i) for i, _ in failures],
        "failure_reasons": [str(r) for _, r in failures],
    }
    if image_sizes is not None:
        payload["image_sizes"] = np.asarray(image_sizes, np.int32).reshape(len(ids), 2)
    atomic_write_bytes(path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
    return None


@dataclass
class ProposalFile:
    """A read proposal file. ``boxes``: id -> (N, 4) float32 XYXY_ABS; ``sizes``: id ->
    (height, width), empty for files written before sizes were stored; ``failed``: id -> reason."""

    path: str
    boxes: dict
    sizes: dict
    failed: dict


def _read_pickle(path) -> dict:
    """The payload of a proposal pickle, checked (ValueError naming the file)."""
    if path not in _WARNED_PICKLES:
        _WARNED_PICKLES.add(path)
        logger.warning(f"{path} is a pickle: unpickling can run code, so read only files from a trusted "
                       "source (stores, written for any output not ending in .pkl, are read without pickle)")
    try:
        with open(path, "rb") as f:
            payload = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as exc:
        raise ProposalFileError(f"{path}: not a readable proposal file ({type(exc).__name__}: {exc}); make it with "
                                "tools/gen_proposals.py") from exc
    if not isinstance(payload, dict) or "ids" not in payload or "boxes" not in payload:
        raise ProposalFileError(f"{path}: not a Detectron2 proposal file (needs keys 'ids' and 'boxes'), found "
                                f"{type(payload).__name__}")
    if int(payload.get("bbox_mode", XYXY_ABS)) != XYXY_ABS:
        raise ProposalFileError(f"{path}: boxes are in BoxMode {payload['bbox_mode']}, expected XYXY_ABS (0)")
    return payload


def read_proposal_file(path) -> ProposalFile:
    """Read a proposal store or pickle into dicts (small files, tools; training uses ``open_proposals``).

    Raises:
        ValueError: naming the file, if it is neither a valid store nor a Detectron2 proposal
            pickle with XYXY_ABS boxes.
    """
    path = os.fspath(path)
    if is_store(path):
        store = ProposalStore(path)
        ids = store.ids()
        return ProposalFile(
            path=path, boxes={i: store.boxes(k) for k, i in enumerate(ids)},
            sizes={i: store.size(k) for k, i in enumerate(ids)} if store.sizes_known else {},
            failed=dict(store.failed))
    payload = _read_pickle(path)
    ids, boxes, sizes, report = clean_proposals(path, payload["ids"], payload["boxes"], payload.get("image_sizes"))
    if any(report.counts.values()):
        logger.warning(report.summary())
    return ProposalFile(
        path=str(path),
        boxes={i: b.astype(np.float32) for i, b in zip(ids, boxes)},
        sizes={} if sizes is None else {i: (int(h), int(w)) for i, (h, w) in zip(ids, sizes) if h > 0},
        failed=dict(zip(map(str, payload.get("failed_ids", [])), map(str, payload.get("failure_reasons", [])))),
    )


def load_proposals(path) -> dict[str, np.ndarray]:
    """Read a proposal file -> {image id: (N, 4) float32 XYXY_ABS boxes} (see ``read_proposal_file``)."""
    return read_proposal_file(path).boxes


def pickle_to_store(pickle_path, store_path) -> None:
    """Convert a proposal pickle into a store (ids sorted, boxes to whole pixels, failures kept)."""
    payload = _read_pickle(os.fspath(pickle_path))
    failures = zip(map(str, payload.get("failed_ids", [])), map(str, payload.get("failure_reasons", [])))
    save_proposals(store_path, payload["ids"], payload["boxes"], payload.get("image_sizes"), list(failures),
                   source=pickle_path)


def store_to_pickle(store_path, pickle_path) -> None:
    """Convert a store into Detectron2's proposal pickle (float32 boxes; sizes if the store has them)."""
    store = ProposalStore(store_path)
    save_proposals(pickle_path, store.ids(), [store.boxes(i) for i in range(len(store))],
                   np.asarray(store.sizes) if store.sizes_known else None, sorted(store.failed.items()))


def store_path_for(pickle_path) -> str:
    """Where ``open_proposals`` keeps the store converted from ``pickle_path``: ``NAME.store``
    next to ``NAME.pkl``."""
    return os.fspath(pickle_path)[:-4] + ".store"


def open_proposals(path) -> ProposalStore:
    """The proposals at ``path`` as a memory-mapped ``ProposalStore``.

    A store opens directly. A pickle (``.pkl``) is converted once to ``NAME.store`` next to it
    (again when the pickle is newer; in the temporary folder when that folder is read only,
    ``soco.utils.files.derived_file``); any number of processes may call this at once.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ProposalFileNotFound(f"proposal file not found: {path} (MODEL.SOCO.PROPOSALS); make one with "
                                   "tools/gen_proposals.py")
    if is_store(path) or not is_pickle_path(path):
        return ProposalStore(path)

    def convert(target: str) -> None:
        logger.info(f"converting the proposal pickle {path} once to the memory-mapped store {target}")
        pickle_to_store(path, target)

    return ProposalStore(derived_file(path, store_path_for(path), convert))
