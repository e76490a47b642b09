"""Proposals validated where they enter the store, with a report, and refused when too many
images are left without a usable box.

Every foreign box file (a Detectron2 pickle, the official JSON) reaches the store through
``file_format.save_proposals``, which calls :func:`clean_proposals` before ``store.pixel_boxes``
rounds the boxes to whole pixels. What it finds, per kind (:data:`KINDS`):

=================  ==========================================================  =============
kind               what                                                        done
=================  ==========================================================  =============
wrong_shape        an image's boxes are not an (N, 4) array of numbers          image dropped
                   (a score column (N, 5), (N, 3), None, a dict, strings)
duplicate_ids      a later entry of an id already seen                         entry dropped
missing_sizes      no (height, width) > 0 for the image (short ``image_sizes``)  not clipped
non_finite         a NaN or +-inf coordinate                                   box dropped
inverted           x2 < x1 or y2 < y1                                          box dropped
outside            less than half of the box's area inside [0, W] x [0, H]      box dropped
                   (e.g. +-1e6: clipping would invent a whole-image box)
clipped            the box reaches outside the image, at least half inside      clipped
empty_after_clip   no whole pixel left after clipping and rounding             box dropped
=================  ==========================================================  =============

The counts and the first ids of each kind are stored in the store's header (``meta``) and
logged when training reads the file. :func:`check_usable` then refuses (naming the file, the
first ids and the counts) a file that leaves more than ``MODEL.SOCO.MAX_IMAGES_WITHOUT_BOXES``
of the training images without a box: SoCo would silently train on whole crops, as an
image-level method.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ...utils.errors import InputError

__all__ = ["KINDS", "ProposalFileError", "ProposalFileNotFound", "ProposalReport", "clean_proposals", "count_empty", "check_usable"]

logger = logging.getLogger(__name__)

KINDS = ("wrong_shape", "duplicate_ids", "missing_sizes", "non_finite", "inverted", "outside", "clipped",
         "empty_after_clip")
# A box is repaired by clipping when at least this fraction of its area lies inside the image.
MIN_INSIDE_FRACTION = 0.5
_EXAMPLES = 3  # ids kept per kind


class ProposalFileError(InputError):
    """A proposal file that cannot be used; the message names it, the first ids and the counts."""


class ProposalFileNotFound(ProposalFileError, FileNotFoundError):
    """MODEL.SOCO.PROPOSALS names no file (also a ``FileNotFoundError``)."""


@dataclass
class ProposalReport:
    """What validation found in one file: ``counts[kind]`` (boxes for box kinds, entries or
    images for the others) and the first ids of each kind."""

    path: str
    images: int = 0
    boxes_in: int = 0
    boxes_kept: int = 0
    counts: dict = field(default_factory=dict)
    examples: dict = field(default_factory=dict)

    def add(self, kind: str, count: int, ids: Sequence[str]) -> None:
        if count:
            self.counts[kind] = self.counts.get(kind, 0) + int(count)
            self.examples.setdefault(kind, [])
            self.examples[kind] += [str(i) for i in ids[: _EXAMPLES - len(self.examples[kind])]]

    def to_meta(self) -> dict:
        return {"images": self.images, "boxes_in": self.boxes_in, "boxes_kept": self.boxes_kept,
                "counts": dict(self.counts), "examples": {k: list(v) for k, v in self.examples.items()}}

    @classmethod
    def from_meta(cls, path: str, meta: dict) -> "ProposalReport":
        return cls(path, int(meta["images"]), int(meta["boxes_in"]), int(meta["boxes_kept"]),
                   dict(meta["counts"]), {k: list(v) for k, v in meta["examples"].items()})

    def summary(self) -> str:
        """One line: totals, then each kind found with its count and first ids."""
        found = "; ".join(
            f"{kind.replace('_', ' ')}: {self.counts[kind]} (e.g. {', '.join(self.examples.get(kind, []))})"
            for kind in KINDS if self.counts.get(kind)
        )
        return (f"proposal file {self.path}: {self.images} images, {self.boxes_in} boxes read, "
                f"{self.boxes_kept} kept" + (f"; {found}" if found else "; no problems found"))


def _as_boxes(value) -> np.ndarray | None:
    """(N, 4) float64 of one image's entry, or None when it is not an (N, 4) array of numbers."""
    if isinstance(value, (dict, str, bytes)) or value is None:
        return None
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if array.size == 0:
        return np.zeros((0, 4))
    return array if array.ndim == 2 and array.shape[1] == 4 else None


def _sizes(path: str, sizes, n: int) -> np.ndarray | None:
    """(n, 2) int64 (height, width), 0 rows where unknown; None when the file has no sizes."""
    if sizes is None:
        return None
    try:
        array = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise ProposalFileError(f"{path}: image_sizes is not a list of (height, width) pairs") from None
    out = np.zeros((n, 2), np.int64)
    rows = min(n, len(array))
    good = np.isfinite(array[:rows]).all(axis=1) & (array[:rows] > 0).all(axis=1)
    out[:rows][good] = array[:rows][good]
    return out


def clean_proposals(path: str, ids: Sequence[str], boxes: Sequence, sizes=None
                    ) -> tuple[list[str], list[np.ndarray], np.ndarray | None, ProposalReport]:
    """Validate one file's entries; returns (ids, (N_i, 4) float64 boxes, (N, 2) sizes or None,
    report) with duplicates and malformed entries removed, broken boxes dropped and boxes clipped
    to known sizes (not yet rounded: ``store.pixel_boxes`` does that and drops what becomes empty;
    :func:`count_empty` counts those).

    Raises:
        ProposalFileError: ids and box lists of different lengths, or sizes that are not pairs.
    """
    if isinstance(boxes, dict) or isinstance(ids, dict):
        raise ProposalFileError(f"{path}: 'ids' and 'boxes' must be lists in the same order (one (N, 4) array "
                                f"per id), found {type(ids).__name__} and {type(boxes).__name__}")
    ids, boxes = [str(i) for i in ids], list(boxes)
    if len(ids) != len(boxes):
        raise ProposalFileError(f"{path}: {len(ids)} ids but {len(boxes)} box entries; the file is damaged, make it "
                                "again with tools/gen_proposals.py")
    report = ProposalReport(path)
    _, first = np.unique(np.array(ids, dtype=object), return_index=True)
    keep = np.zeros(len(ids), bool)
    keep[first] = True
    duplicates = np.flatnonzero(~keep)
    report.add("duplicate_ids", len(duplicates), [ids[i] for i in duplicates])
    size_array = _sizes(path, sizes, len(ids))
    arrays = [_as_boxes(b) for b in boxes]
    wrong = [i for i, a in enumerate(arrays) if a is None and keep[i]]
    report.add("wrong_shape", len(wrong), [ids[i] for i in wrong])
    kept = np.flatnonzero(keep)
    ids = [ids[i] for i in kept]
    arrays = [np.zeros((0, 4)) if arrays[i] is None else arrays[i] for i in kept]
    if size_array is not None:
        size_array = size_array[kept]
        missing = np.flatnonzero(size_array[:, 0] <= 0)
        report.add("missing_sizes", len(missing), [ids[i] for i in missing])
    report.images = len(ids)

    counts = np.array([len(a) for a in arrays], np.int64)
    flat = np.concatenate(arrays) if arrays else np.zeros((0, 4))
    owner = np.repeat(np.arange(len(ids)), counts)
    report.boxes_in = len(flat)

    def drop(kind: str, bad: np.ndarray) -> None:
        nonlocal flat, owner
        report.add(kind, int(bad.sum()), [ids[i] for i in np.unique(owner[bad])[:_EXAMPLES]])
        flat, owner = flat[~bad], owner[~bad]

    drop("non_finite", ~np.isfinite(flat).all(axis=1))
    drop("inverted", (flat[:, 2] < flat[:, 0]) | (flat[:, 3] < flat[:, 1]))
    high = np.full((len(flat), 2), np.inf)
    if size_array is not None:
        per_box = size_array[owner].astype(np.float64)
        known = per_box[:, 0] > 0
        high[known] = per_box[known][:, ::-1]  # (width, height)

    def area(b: np.ndarray) -> np.ndarray:
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    clipped = np.clip(flat, 0.0, np.tile(high, 2))
    reaching = (clipped != flat).any(axis=1)
    mostly_outside = reaching & ~(area(clipped) >= MIN_INSIDE_FRACTION * area(flat))
    drop("outside", mostly_outside)
    clipped, reaching = clipped[~mostly_outside], reaching[~mostly_outside]
    report.add("clipped", int(reaching.sum()), [ids[i] for i in np.unique(owner[reaching])[:_EXAMPLES]])
    counts = np.bincount(owner, minlength=len(ids))
    return ids, np.split(clipped, np.cumsum(counts)[:-1]), size_array, report


def count_empty(report: ProposalReport, ids: Sequence[str], counts_before: np.ndarray, counts_after: np.ndarray
                ) -> None:
    """Record in ``report`` the boxes ``store.pixel_boxes`` dropped as empty after rounding."""
    lost = np.asarray(counts_before) - np.asarray(counts_after)
    images = np.flatnonzero(lost)
    report.add("empty_after_clip", int(lost.sum()), [ids[i] for i in images[:_EXAMPLES]])
    report.boxes_kept = int(np.sum(counts_after))


def check_usable(path: str, counts: np.ndarray, id_of, max_fraction: float, report: ProposalReport | None,
                 main_process: bool = True) -> None:
    """Refuse the file when more than ``max_fraction`` of the training images have no box.

    Args:
        counts: (N,) boxes per training image (the store's counts at the dataset's rows).
        id_of: position in ``counts`` -> image id (for the message).
        max_fraction: ``MODEL.SOCO.MAX_IMAGES_WITHOUT_BOXES``.
        report: the file's validation report (None for a store made by tools/gen_proposals.py).
    Raises:
        ProposalFileError: naming the file, the share, the first ids and the report's counts.
    """
    empty = np.flatnonzero(np.asarray(counts) == 0)
    share = len(empty) / max(len(counts), 1)
    details = report.summary() if report is not None else f"proposal file {path}"
    if share > max_fraction:
        first = ", ".join(id_of(int(i)) for i in empty[:_EXAMPLES])
        raise ProposalFileError(
            f"{details}. {len(empty)} of the {len(counts)} training images ({share:.1%}) have no usable box "
            f"(e.g. {first}), more than MODEL.SOCO.MAX_IMAGES_WITHOUT_BOXES={max_fraction:g}: SoCo would train "
            "on whole crops, as an image-level method. Fix or regenerate the file (tools/gen_proposals.py), or "
            "raise the key"
        )
    if not main_process:
        return
    if report is not None and any(report.counts.get(k) for k in KINDS):
        logger.warning(f"{details}; {len(empty)} training images left without a box")
    elif len(empty):
        logger.warning(f"{details}: {len(empty)} of the {len(counts)} training images have no box "
                       f"(e.g. {id_of(int(empty[0]))}); SoCo uses the whole crop for them")
