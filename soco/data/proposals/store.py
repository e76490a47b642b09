"""The proposal store: every image's boxes in one flat file that each process maps, never copies.

Layout (little-endian), one file:

- 24-byte preamble: ``MAGIC`` (8 bytes), format version (uint32), 0 (uint32), header length
  (uint64);
- the header, UTF-8 JSON: ``num_images``, ``num_boxes``, ``file_bytes`` (the whole file; a
  shorter file is truncated), ``sizes_known``, ``failures`` ([id, reason] pairs: images that
  could not be read and have no entry), ``meta`` (free-form, e.g. a chunk's seconds), and
  ``sections``: ``{name: [byte offset, numpy dtype, shape]}``;
- the sections, each starting at a multiple of ``ALIGN`` bytes:

  ``offsets`` (N + 1,) int64: image i's boxes are rows offsets[i]:offsets[i+1] of ``boxes``;
  ``boxes`` (B, 4) uint16 (int32 when a coordinate exceeds 65,535): XYXY in whole pixels of
  the original (EXIF-upright) image, clipped to it, none empty;
  ``sizes`` (N, 2) int32: (height, width) of each image, 0 when unknown (old pickles);
  ``id_offsets`` (N + 1,) int64 and ``id_bytes`` (uint8): id i is
  ``id_bytes[id_offsets[i]:id_offsets[i+1] - 1]`` (UTF-8; each id ends with a newline), ids
  strictly increasing (sorted, unique) so lookups bisect;
  any further named section a writer adds (the generator's chunks carry ``levels`` (N,) int8).

At ImageNet size (55 boxes per image) that is about 0.5 KB per image. A reader (``ProposalStore``)
maps the file read-only: the pages are the page cache's, shared by every process and DataLoader
worker of a machine, and nothing is unpickled, so a file from elsewhere cannot run code.

Writing (``write_store``) goes through ``atomic_write`` section by section from ``StorePart``s,
so a merge of many chunks holds one chunk at a time, and the bytes depend only on the content:
the same images and boxes give the same file whether they come in one part or many.
Every float box that enters the format passes through ``pixel_boxes`` (rounding, clipping,
dropping empty boxes): the one place where boxes from a pickle, JSON or the generator are
made store boxes.
"""
from __future__ import annotations

import bisect
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ...utils.errors import InputError
from ...utils.files import atomic_write

__all__ = ["MAGIC", "VERSION", "StoreError", "StorePart", "ProposalStore", "pixel_boxes", "part_from_boxes",
           "write_store", "is_store"]

MAGIC = b"SOCOPRPS"
VERSION = 1
ALIGN = 64
_PREAMBLE = struct.Struct("<8sIIQ")
# Largest coordinate a uint16 box can hold; larger images store int32 boxes.
UINT16_MAX = 65535
# Ids checked for order per block when a store is opened (bounds the transient memory).
_ID_CHECK_BLOCK = 1 << 16


class StoreError(InputError):
    """A file that is not a valid proposal store; the message names it and what is wrong."""


def pixel_boxes(boxes: np.ndarray, counts: np.ndarray, sizes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Float XYXY boxes of many images -> the store's whole-pixel boxes.

    Args:
        boxes: (B, 4) float, the images' boxes concatenated, original-image pixels.
        counts: (N,) boxes per image (sums to B).
        sizes: (N, 2) (height, width) per image, or None / 0 rows when unknown (no upper clip).
    Returns:
        (boxes (B', 4) int32 rounded to the nearest pixel edge and clipped to [0, W] x [0, H],
        counts (N,) int64) with empty boxes (x2 <= x1 or y2 <= y1 after rounding) dropped.
        Computed in float32 (exact for coordinates below 2**24).
    """
    boxes = np.rint(np.asarray(boxes, np.float32).reshape(-1, 4))
    counts = np.asarray(counts, np.int64).reshape(-1)
    if counts.sum() != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but the per-image counts sum to {int(counts.sum())}")
    np.maximum(boxes, 0, out=boxes)
    if sizes is not None and len(boxes):
        per_box = np.repeat(np.asarray(sizes, np.float32).reshape(-1, 2), counts, axis=0)
        per_box[per_box <= 0] = np.inf  # unknown size: no upper clip
        np.minimum(boxes[:, 0::2], per_box[:, 1:2], out=boxes[:, 0::2])
        np.minimum(boxes[:, 1::2], per_box[:, 0:1], out=boxes[:, 1::2])
        del per_box
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    owner = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    return boxes[keep].astype(np.int32), np.bincount(owner[keep], minlength=len(counts)).astype(np.int64)


@dataclass
class StorePart:
    """A run of consecutive images for ``write_store``: ``ids`` sorted, ``counts`` (n,) boxes
    per image, ``boxes`` (sum(counts), 4) whole pixels, ``sizes`` (n, 2) (0 = unknown), optional
    ``extra`` sections with one row per image (e.g. ``levels``). Arrays may be memory-mapped."""

    ids: Sequence[str]
    counts: np.ndarray
    boxes: np.ndarray
    sizes: np.ndarray
    failures: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def part_from_boxes(ids: Sequence[str], boxes: Sequence[np.ndarray], sizes=None, failures=(),
                    extra: dict | None = None) -> StorePart:
    """A ``StorePart`` from per-image float box arrays (through ``pixel_boxes``)."""
    if len(ids) != len(boxes):
        raise ValueError(f"{len(ids)} ids but {len(boxes)} box arrays")
    arrays = [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]
    counts = np.array([len(b) for b in arrays], np.int64)
    size_array = None if sizes is None else np.asarray(sizes, np.int64).reshape(len(ids), 2)
    flat, counts = pixel_boxes(np.concatenate(arrays) if arrays else np.zeros((0, 4), np.float32), counts, size_array)
    return StorePart(list(ids), counts, flat, np.zeros((len(ids), 2), np.int32) if size_array is None else size_array,
                     [(str(i), str(r)) for i, r in failures], dict(extra or {}))


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _id_blob(ids: Sequence[str], path) -> bytes:
    for image_id in ids:
        if "\n" in image_id:
            raise ValueError(f"{path}: image id {image_id!r} contains a newline")
    return "".join(f"{i}\n" for i in ids).encode("utf-8")


def write_store(path, parts: Iterable[StorePart] | Sequence, sizes_known: bool = True, meta: dict | None = None,
                open_part=None) -> None:
    """Write the parts, in order, as one store at ``path`` (atomically; deterministic bytes).

    ``parts``: ``StorePart``s, or handles that ``open_part(handle)`` turns into one (e.g. chunk
    paths: each is then opened once per section, so only one is mapped at a time). The parts'
    ids must be sorted across parts. ``meta``: JSON-able, stored in the header.
    Raises ValueError naming ``path`` for ids out of order or inconsistent arrays.
    """
    handles = list(parts)
    load = open_part or (lambda part: part)
    num_images = num_boxes = id_len = 0
    max_coord = 0
    failures, extra_specs, last_id = [], {}, None
    for handle in handles:  # pass 1: sizes of everything (headers only for mapped parts)
        part = load(handle)
        n = len(part.ids)
        if len(part.counts) != n or len(part.sizes) != n or int(np.sum(part.counts)) != len(part.boxes):
            raise ValueError(f"{path}: a part has {n} ids, {len(part.counts)} counts, {len(part.sizes)} sizes "
                             f"and {len(part.boxes)} boxes for {int(np.sum(part.counts))} counted")
        if n:
            if last_id is not None and not part.ids[0] > last_id:
                raise ValueError(f"{path}: image ids out of order across parts ({last_id!r}, then {part.ids[0]!r})")
            last_id = part.ids[-1]
        num_images += n
        num_boxes += len(part.boxes)
        id_len += len(_id_blob(part.ids, path))
        if len(part.boxes):
            max_coord = max(max_coord, int(np.max(part.boxes)))
        failures += [[str(i), str(r)] for i, r in part.failures]
        for name, array in part.extra.items():
            spec = (np.dtype(array.dtype).str, tuple(np.shape(array)[1:]))
            if extra_specs.setdefault(name, spec) != spec:
                raise ValueError(f"{path}: section {name!r} differs in dtype or shape between parts")
        del part
    box_dtype = np.dtype("<u2") if max_coord <= UINT16_MAX else np.dtype("<i4")
    sections = {"offsets": ("<i8", (num_images + 1,)), "boxes": (box_dtype.str, (num_boxes, 4)),
                "sizes": ("<i4", (num_images, 2)), "id_offsets": ("<i8", (num_images + 1,)),
                "id_bytes": ("|u1", (id_len,))}
    for name, (dtype, tail) in sorted(extra_specs.items()):
        sections[name] = (dtype, (num_images,) + tail)
    header = {"num_images": num_images, "num_boxes": num_boxes, "sizes_known": bool(sizes_known),
              "failures": sorted(failures), "meta": meta or {}, "sections": {}}
    # Section offsets depend on the header's length, which depends on them: grow the space
    # reserved for the header until it fits (deterministic: a function of the content only).
    start = _aligned(_PREAMBLE.size + len(_header_bytes(header)))
    while True:
        cursor, table = start, {}
        for name, (dtype, shape) in sections.items():
            table[name] = [cursor, dtype, list(shape)]
            cursor = _aligned(cursor + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
        header["sections"], header["file_bytes"] = table, cursor
        encoded = _header_bytes(header)
        if _PREAMBLE.size + len(encoded) <= start:
            break
        start = _aligned(_PREAMBLE.size + len(encoded))

    def write(f):
        f.write(_PREAMBLE.pack(MAGIC, VERSION, 0, len(encoded)) + encoded)
        for name, (dtype, _) in sections.items():
            f.write(b"\0" * (header["sections"][name][0] - f.tell()))
            if name in ("offsets", "id_offsets"):
                f.write(np.zeros(1, "<i8").tobytes())
            base = 0
            for handle in handles:
                part = load(handle)
                if name == "offsets":
                    chunk = base + np.cumsum(part.counts, dtype=np.int64)
                    base += int(np.sum(part.counts))
                elif name == "id_offsets":
                    blob = _id_blob(part.ids, path)
                    lengths = np.fromiter((len(i.encode("utf-8")) + 1 for i in part.ids), np.int64, len(part.ids))
                    chunk = base + np.cumsum(lengths)
                    base += len(blob)
                elif name == "id_bytes":
                    chunk = np.frombuffer(_id_blob(part.ids, path), np.uint8)
                elif name == "boxes":
                    chunk = part.boxes
                elif name == "sizes":
                    chunk = part.sizes
                else:
                    chunk = part.extra[name]
                f.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
                del part, chunk
        f.write(b"\0" * (header["file_bytes"] - f.tell()))

    atomic_write(path, write)


def _header_bytes(header: dict) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def is_store(path) -> bool:
    """Whether ``path`` starts with the store's magic bytes (False for a pickle or a missing file)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


class ProposalStore:
    """A proposal store opened read-only and memory-mapped (see the module docstring).

    ``len(store)`` images; ``id(i)``, ``index(image_id)`` (-1 if absent), ``boxes(i)`` (n, 4)
    float32 XYXY original pixels, ``size(i)`` (height, width) or None; ``failed`` {id: reason};
    arrays ``offsets``, ``sizes``, ``counts``, and ``section(name)`` for extra sections.
    Picklable (it reopens the file), so DataLoader workers started by spawn map it too.

    Raises StoreError naming the file when it is not a store, of another version, truncated,
    or inconsistent (offsets not increasing, ids not strictly sorted).
    """

    def __init__(self, path, check_ids: bool = True):
        self.path = os.fspath(path)
        self._check_ids = check_ids
        self._open()

    def __getstate__(self):
        return {"path": self.path, "_check_ids": False}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._open()

    def _fail(self, what: str):
        raise StoreError(f"{self.path}: {what}")

    def _open(self) -> None:
        try:
            size = os.path.getsize(self.path)
            with open(self.path, "rb") as f:
                preamble = f.read(_PREAMBLE.size)
                if len(preamble) < _PREAMBLE.size or preamble[:8] != MAGIC:
                    self._fail("not a soco proposal store (wrong magic bytes); make one with tools/gen_proposals.py "
                               "or convert a proposal pickle with tools/convert_proposals.py")
                magic, version, _, header_len = _PREAMBLE.unpack(preamble)
                if version != VERSION:
                    self._fail(f"proposal store version {version}; this soco reads version {VERSION}")
                try:
                    self.header = json.loads(f.read(header_len).decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    self._fail(f"damaged header ({exc})")
        except FileNotFoundError:
            raise FileNotFoundError(f"proposal store not found: {self.path}") from None
        if size != self.header.get("file_bytes"):
            self._fail(f"truncated or extended: {size} bytes, its header says {self.header.get('file_bytes')}")
        self._sections, self._mapped = {}, {}
        for name, (offset, dtype, shape) in self.header["sections"].items():
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            if offset + nbytes > size:
                self._fail(f"section {name!r} ends past the end of the file")
            self._sections[name] = (offset, np.dtype(dtype), tuple(shape))
        self.num_images = int(self.header["num_images"])
        self.failed = dict((str(i), str(r)) for i, r in self.header["failures"])
        self.meta = self.header.get("meta", {})
        self.offsets = self.section("offsets")
        self.id_offsets = self.section("id_offsets")
        self._boxes = self.section("boxes")
        self._ids = self.section("id_bytes")
        self.sizes = self.section("sizes")
        self.sizes_known = bool(self.header.get("sizes_known", True))
        for name, offsets, total in (("offsets", self.offsets, len(self._boxes)), ("id_offsets", self.id_offsets,
                                                                                    len(self._ids))):
            if len(offsets) != self.num_images + 1 or offsets[0] != 0 or offsets[-1] != total:
                self._fail(f"section {name!r} does not span its data")
            if self.num_images and np.any(np.diff(offsets) < (1 if name == "id_offsets" else 0)):
                self._fail(f"section {name!r} is not increasing")
        if self._check_ids:
            self._check_sorted()

    def section(self, name: str) -> np.ndarray:
        """A section as a read-only memory-mapped array (KeyError naming the file if absent)."""
        if name not in self._sections:
            raise KeyError(f"{self.path}: no section {name!r} (has {sorted(self._sections)})")
        if name not in self._mapped:
            offset, dtype, shape = self._sections[name]
            self._mapped[name] = (np.zeros(shape, dtype) if int(np.prod(shape, dtype=np.int64)) == 0 else
                                  np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape))
        return self._mapped[name]

    def has_section(self, name: str) -> bool:
        return name in self._sections

    def _check_sorted(self) -> None:
        last = None
        for start in range(0, self.num_images, _ID_CHECK_BLOCK):
            stop = min(self.num_images, start + _ID_CHECK_BLOCK)
            block = bytes(self._ids[self.id_offsets[start]:self.id_offsets[stop]]).split(b"\n")[:-1]
            if len(block) != stop - start:
                self._fail("the id table does not match its offsets")
            if last is not None:
                block.insert(0, last)
            if any(a >= b for a, b in zip(block, block[1:])):
                self._fail("image ids are not strictly sorted (a damaged or hand-made file); rewrite it with "
                           "tools/convert_proposals.py")
            last = block[-1]

    def __len__(self) -> int:
        return self.num_images

    @property
    def counts(self) -> np.ndarray:
        """(N,) int64 boxes per image."""
        return np.diff(self.offsets)

    def id(self, i: int) -> str:
        return bytes(self._ids[self.id_offsets[i]:self.id_offsets[i + 1] - 1]).decode("utf-8")

    def ids(self, start: int = 0, stop: int | None = None) -> list[str]:
        """Ids of images [start, stop) as a list (for small stores, conversion and tests)."""
        stop = self.num_images if stop is None else stop
        if stop <= start:
            return []
        return bytes(self._ids[self.id_offsets[start]:self.id_offsets[stop]]).decode("utf-8").split("\n")[:-1]

    def index(self, image_id: str) -> int:
        """Position of ``image_id``, or -1 (binary search over the sorted ids: O(log N))."""
        i = bisect.bisect_left(range(self.num_images), image_id, key=self.id)
        return i if i < self.num_images and self.id(i) == image_id else -1

    def boxes(self, i: int) -> np.ndarray:
        """(n, 4) float32 XYXY boxes of image i in original pixels."""
        return np.asarray(self._boxes[self.offsets[i]:self.offsets[i + 1]], np.float32)

    def size(self, i: int):
        """(height, width) of image i, or None when the file does not know it."""
        h, w = (int(v) for v in self.sizes[i])
        return (h, w) if h > 0 else None

    def part(self, extra: Sequence[str] = ()) -> StorePart:
        """The whole store as a ``StorePart`` over its mapped arrays (for merging), with the
        extra sections named in ``extra``."""
        extra = {n: self.section(n) for n in extra}
        return StorePart(self.ids(), self.counts, self._boxes, self.sizes, sorted(self.failed.items()), extra)
