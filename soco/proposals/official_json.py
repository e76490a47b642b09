"""Import the official SoCo proposal file: JSON ``{basename: [[x, y, w, h, ...], ...], ...}``.

The official code (hologerry/SoCo ``make_props_dataset_with_ann``) keys images by their file name
without folder and extension (``os.path.basename(path).split('.')[0]``) and reads boxes as
x, y, w, h with inclusive pixel ends (x2 = x + w - 1), extra columns ignored. In continuous
coordinates that is the box [x, x + w] x [y, y + h], which is written here as XYXY_ABS.

The shared file is 1.1 GB. ``json.load`` would hold it as Python lists of floats (about ten
times its size), so it is streamed: ``iter_official_entries`` reads chunks and decodes one
``"key": [...]`` entry at a time with the standard library's ``JSONDecoder.raw_decode``. Written
here because no streaming JSON parser (ijson) is installed with soco, and one entry at a time
needs no more than raw_decode; each image's boxes become a float32 array (16 bytes per box).
"""

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Tuple

import numpy as np

from ..data.image_folder import list_images
from ..data.proposals.file_format import save_proposals

__all__ = ["iter_official_entries", "official_stem", "import_official_proposals", "OfficialProposalImport"]

logger = logging.getLogger(__name__)
_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"


def official_stem(relative_path: str) -> str:
    """The official key of an image path: basename up to its first dot."""
    return os.path.basename(relative_path).split(".")[0]


class _Stream:
    """A text buffer over a file that grows on demand (chunks of ``chunk_chars``)."""

    def __init__(self, f, path: str, chunk_chars: int):
        self.f, self.path, self.chunk = f, path, chunk_chars
        self.buf, self.pos, self.consumed, self.eof = "", 0, 0, False

    def more(self) -> bool:
        if self.eof:
            return False
        data = self.f.read(self.chunk)
        if not data:
            self.eof = True
            return False
        self.consumed += self.pos
        self.buf = self.buf[self.pos:] + data
        self.pos = 0
        return True

    def skip_ws(self) -> None:
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buf) or not self.more():
                return

    def expect(self, chars: str) -> str:
        self.skip_ws()
        if self.pos >= len(self.buf) or self.buf[self.pos] not in chars:
            found = repr(self.buf[self.pos]) if self.pos < len(self.buf) else "end of file"
            raise ValueError(f"{self.path}: expected one of {chars!r} at character "
                             f"{self.consumed + self.pos}, found {found}")
        self.pos += 1
        return self.buf[self.pos - 1]

    def value(self):
        """Decode one JSON value, reading more text while it is cut off at the buffer's end."""
        self.skip_ws()
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                # A value cut by the chunk boundary fails at (or near) the end of the buffer.
                if self.more():
                    continue
                raise ValueError(f"{self.path}: invalid JSON at character {self.consumed + exc.pos}: "
                                 f"{exc.msg}") from None
            if end == len(self.buf) and self.more():
                continue  # a number could go on in the next chunk
            self.pos = end
            return obj


def iter_official_entries(path: str, chunk_chars: int = 1 << 20) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield (key, (N, 4) float32 XYXY_ABS boxes) per entry of an official proposal JSON.

    Raises ValueError naming the file and the character offset for invalid JSON, a top level
    that is not an object, or an entry that is not a list of [x, y, w, h, ...] rows.
    """
    with open(path, "r", encoding="utf-8") as f:
        s = _Stream(f, path, chunk_chars)
        s.expect("{")
        s.skip_ws()
        if s.pos < len(s.buf) and s.buf[s.pos] == "}":
            return
        while True:
            key = s.value()
            if not isinstance(key, str):
                raise ValueError(f"{path}: an object key is not a string near character {s.consumed + s.pos}")
            s.expect(":")
            rows = s.value()
            yield key, _xywh_rows_to_xyxy(path, key, rows)
            if s.expect(",}") == "}":
                return


def _xywh_rows_to_xyxy(path: str, key: str, rows) -> np.ndarray:
    if not isinstance(rows, list) or any(not isinstance(r, list) or len(r) < 4 for r in rows):
        raise ValueError(f"{path}: entry '{key}' is not a list of [x, y, w, h, ...] boxes")
    try:
        boxes = np.asarray([r[:4] for r in rows], dtype=np.float32).reshape(-1, 4)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: entry '{key}' has non-numeric box values") from None
    boxes[:, 2:] += boxes[:, :2]
    return boxes


@dataclass
class OfficialProposalImport:
    """Counts of an import; ``absent`` / ``without_entry`` hold a few examples each."""

    written: int = 0
    absent_count: int = 0
    absent: List[str] = field(default_factory=list)  # JSON keys with no image under the root
    without_entry_count: int = 0
    without_entry: List[str] = field(default_factory=list)  # images under the root not in the JSON

    def summary(self) -> str:
        lines = [f"wrote proposals of {self.written} images"]
        if self.absent_count:
            lines.append(f"{self.absent_count} JSON entries have no image under the root (skipped), "
                         f"e.g. {self.absent}")
        if self.without_entry_count:
            lines.append(f"{self.without_entry_count} images under the root have no entry (SoCo will "
                         f"refuse them; pass --image-list to train on the others), e.g. {self.without_entry}")
        return "\n".join(lines)


def import_official_proposals(json_path: str, image_root: str, output_path: str, image_list=None,
                              examples: int = 5, log_every: int = 100000) -> OfficialProposalImport:
    """Write a soco proposal file (ids = image paths relative to ``image_root``) from the JSON.

    Raises ValueError when two images under the root share an official key (their proposals
    could not be told apart), naming both.
    """
    if not os.path.isfile(json_path):
        raise FileNotFoundError(f"{json_path}: no such file")
    images = list_images(image_root, image_list)
    by_stem: Dict[str, str] = {}
    for rel in images:
        stem = official_stem(rel)
        if stem in by_stem:
            raise ValueError(f"{image_root}: '{by_stem[stem]}' and '{rel}' have the same official key "
                             f"'{stem}' (the JSON is keyed by file name without folder)")
        by_stem[stem] = rel
    report = OfficialProposalImport()
    found: Dict[str, np.ndarray] = {}
    for n, (key, boxes) in enumerate(iter_official_entries(json_path), 1):
        rel = by_stem.get(key)
        if rel is None:
            report.absent_count += 1
            if len(report.absent) < examples:
                report.absent.append(key)
        else:
            found[rel] = boxes
        if n % log_every == 0:
            logger.info("read %d entries of %s (%d matched)", n, json_path, len(found))
    missing = [rel for rel in images if rel not in found]
    report.without_entry_count = len(missing)
    report.without_entry = missing[:examples]
    ids = sorted(found)
    save_proposals(output_path, ids, [found[i] for i in ids])
    report.written = len(ids)
    return report
