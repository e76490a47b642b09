"""The proposal file: Detectron2's precomputed-proposal pickle, plus soco's checks.

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

import pickle
from dataclasses import dataclass

import numpy as np

from ...utils.files import atomic_write_bytes

__all__ = ["XYXY_ABS", "ProposalFile", "save_proposals", "read_proposal_file", "load_proposals"]

XYXY_ABS = 0  # detectron2.structures.BoxMode.XYXY_ABS, without importing Detectron2 here


def save_proposals(path, ids: list[str], boxes: list[np.ndarray], image_sizes=None, failures=()) -> None:
    """Write the proposal pickle atomically (same input -> byte-identical file).

    ``image_sizes``: (len(ids), 2) (height, width) or None; ``failures``: (id, reason) pairs.
    """
    if len(ids) != len(boxes):
        raise ValueError(f"{path}: {len(ids)} ids but {len(boxes)} box arrays")
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


@dataclass
class ProposalFile:
    """A read proposal file. ``boxes``: id -> (N, 4) float32 XYXY_ABS; ``sizes``: id ->
    (height, width), empty for files written before sizes were stored; ``failed``: id -> reason."""

    path: str
    boxes: dict
    sizes: dict
    failed: dict


def read_proposal_file(path) -> ProposalFile:
    """Read a proposal file.

    Raises:
        ValueError: naming the file, if it cannot be unpickled, is not a Detectron2 proposal
            pickle, or its boxes are not XYXY_ABS.
    """
    try:
        with open(path, "rb") as f:
            payload = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as exc:
        raise ValueError(f"{path}: not a readable proposal file ({type(exc).__name__}: {exc}); make it with "
                         "tools/gen_proposals.py") from exc
    if not isinstance(payload, dict) or "ids" not in payload or "boxes" not in payload:
        raise ValueError(f"{path}: not a Detectron2 proposal file (needs keys 'ids' and 'boxes')")
    if int(payload.get("bbox_mode", XYXY_ABS)) != XYXY_ABS:
        raise ValueError(f"{path}: boxes are in BoxMode {payload['bbox_mode']}, expected XYXY_ABS (0)")
    ids = [str(i) for i in payload["ids"]]
    sizes = payload.get("image_sizes")
    return ProposalFile(
        path=str(path),
        boxes={i: np.asarray(b, np.float32).reshape(-1, 4) for i, b in zip(ids, payload["boxes"])},
        sizes={} if sizes is None else {i: (int(h), int(w)) for i, (h, w) in zip(ids, sizes)},
        failed=dict(zip(map(str, payload.get("failed_ids", [])), map(str, payload.get("failure_reasons", [])))),
    )


def load_proposals(path) -> dict[str, np.ndarray]:
    """Read a proposal file -> {image id: (N, 4) float32 XYXY_ABS boxes} (see ``read_proposal_file``)."""
    return read_proposal_file(path).boxes
