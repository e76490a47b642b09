"""The proposal file: Detectron2's precomputed-proposal pickle.

``{"ids": list[str] (image paths relative to the image root, "/"-separated, sorted),
   "boxes": list[(N_i, 4) float32] XYXY_ABS in original (EXIF-upright) image pixels,
   "objectness_logits": list[(N_i,) float32] = -0, -1, -2, ... (a rank, not a score: it only
   makes Detectron2's descending sort keep the stored order),
   "bbox_mode": int(BoxMode.XYXY_ABS) = 0}``

``detectron2.data.load_proposals_into_dataset`` reads it directly (dataset ``image_id`` = id).
"""
from __future__ import annotations

import os
import pickle
import tempfile

import numpy as np

__all__ = ["XYXY_ABS", "atomic_write_bytes", "save_proposals", "load_proposals"]

XYXY_ABS = 0  # detectron2.structures.BoxMode.XYXY_ABS, without importing Detectron2 here


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_proposals(path, ids: list[str], boxes: list[np.ndarray]) -> None:
    """Write the Detectron2 proposal pickle atomically (same input -> byte-identical file)."""
    if len(ids) != len(boxes):
        raise ValueError(f"{path}: {len(ids)} ids but {len(boxes)} box arrays")
    boxes = [np.ascontiguousarray(b, np.float32).reshape(-1, 4) for b in boxes]
    payload = {
        "ids": list(ids),
        "boxes": boxes,
        "objectness_logits": [-np.arange(len(b), dtype=np.float32) for b in boxes],
        "bbox_mode": XYXY_ABS,
    }
    atomic_write_bytes(path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))


def load_proposals(path) -> dict[str, np.ndarray]:
    """Read a proposal file -> {image id: (N, 4) float32 XYXY_ABS boxes}.

    Raises:
        ValueError: naming the file, if it is not a Detectron2 proposal pickle or not XYXY_ABS.
    """
    with open(path, "rb") as f:
        payload = pickle.load(f, encoding="latin1")
    if not isinstance(payload, dict) or "ids" not in payload or "boxes" not in payload:
        raise ValueError(f"{path}: not a Detectron2 proposal file (needs keys 'ids' and 'boxes')")
    if int(payload.get("bbox_mode", XYXY_ABS)) != XYXY_ABS:
        raise ValueError(f"{path}: boxes are in BoxMode {payload['bbox_mode']}, expected XYXY_ABS (0)")
    return {str(i): np.asarray(b, np.float32).reshape(-1, 4) for i, b in zip(payload["ids"], payload["boxes"])}
