"""Images read straight from a zip archive: the official SoCo/Swin ImageNet layout
(``train.zip`` plus ``train_map.txt``), random access, nothing extracted.

An image inside a zip is named ``ARCHIVE.zip@/MEMBER`` (Swin's convention), e.g.
``/data/imagenet/train.zip@/n01440764/n01440764_10026.JPEG``; its id (proposal id, dataset
``image_id``) is ``MEMBER``. ``soco.data.image_io`` reads such names through ``read_member``.

Python's ``zipfile`` keeps one object per member for every open archive (about 0.5 GB at 1.28M
members, in every process and DataLoader worker). Instead the central directory is read once
into a member index: a store file (``soco.data.proposals.store``, no boxes) with the sorted
member names and per-member sections ``member_offset`` (local header, bytes), ``member_size``
(compressed bytes), ``member_method`` (0 stored, 8 deflated) and ``member_crc``, kept as
``ARCHIVE.zip.index`` next to the archive (or in the temporary folder when that folder is read
only) and memory-mapped by every reader. A member is read with one ``os.pread`` (safe to share
across forked workers), decompressed if deflated and checked against its CRC-32: a damaged
member raises ``ZipMemberError`` naming it, which readers report like any unreadable image.
"""
from __future__ import annotations

import os
import struct
import zipfile
import zlib

import numpy as np

from ..utils.files import derived_file

__all__ = ["IMAGE_EXTENSIONS", "ZIP_SEPARATOR", "ZipMemberError", "is_zip_root", "zip_member_path", "split_zip_path",
           "zip_index", "read_member"]

ZIP_SEPARATOR = "@/"
_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
_LOCAL_SIGNATURE = 0x04034B50
# The image files a folder or an archive lists, compared case-insensitively (ImageNet uses ".JPEG").
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_INDEX_SECTIONS = ("member_offset", "member_size", "member_method", "member_crc")
_open: dict = {}  # (pid, archive) -> (index, file descriptor)


class ZipMemberError(OSError):
    """A zip member that is missing or damaged; the message names ``ARCHIVE.zip@/MEMBER``."""


def is_zip_root(root) -> bool:
    """Whether an image root names a zip archive rather than a folder."""
    return str(root).lower().endswith(".zip")


def zip_member_path(archive: str, member: str) -> str:
    return f"{archive}{ZIP_SEPARATOR}{member}"


def split_zip_path(path) -> tuple[str, str] | None:
    """``ARCHIVE.zip@/MEMBER`` -> (archive, member); None for an ordinary path."""
    path = str(path)
    at = path.lower().find(".zip" + ZIP_SEPARATOR)
    if at < 0:
        return None
    return path[:at + 4], path[at + 4 + len(ZIP_SEPARATOR):]


def _build_index(archive: str, target: str, extensions) -> None:
    from .proposals.store import StorePart, write_store

    with zipfile.ZipFile(archive) as z:
        infos = sorted((i for i in z.infolist() if not i.is_dir() and i.filename.lower().endswith(extensions)),
                       key=lambda i: i.filename)
    n = len(infos)
    extra = {
        "member_offset": np.array([i.header_offset for i in infos], np.int64),
        "member_size": np.array([i.compress_size for i in infos], np.int64),
        "member_method": np.array([i.compress_type for i in infos], np.int16),
        "member_crc": np.array([i.CRC for i in infos], np.uint32),
    }
    write_store(target, [StorePart([i.filename for i in infos], np.zeros(n, np.int64), np.zeros((0, 4), np.int64),
                                   np.zeros((n, 2), np.int32), [], extra)], sizes_known=False,
                meta={"archive": os.path.basename(archive), "archive_bytes": os.path.getsize(archive)})


def zip_index(archive: str):
    """The member index of ``archive`` (a ``ProposalStore`` with the member sections), built on
    first use and rebuilt when the archive is newer than it."""
    from .proposals.store import ProposalStore

    if not os.path.isfile(archive):
        raise FileNotFoundError(f"zip archive not found: {archive}")
    path = derived_file(archive, archive + ".index", lambda target: _build_index(archive, target, IMAGE_EXTENSIONS))
    index = ProposalStore(path)
    if not all(index.has_section(s) for s in _INDEX_SECTIONS):
        raise ValueError(f"{path}: not a zip member index; delete it so that it is rebuilt")
    return index


def _archive(archive: str):
    key = (os.getpid(), archive)
    if key not in _open:
        _open[key] = (zip_index(archive), os.open(archive, os.O_RDONLY))
    return _open[key]


def read_member(path) -> bytes:
    """The bytes of the image ``ARCHIVE.zip@/MEMBER``.

    Raises:
        FileNotFoundError: no such member (or archive). ZipMemberError: the member is damaged
            (bad local header, decompression error, CRC mismatch) or compressed by an unsupported method.
    """
    archive, member = split_zip_path(path)
    index, fd = _archive(archive)
    i = index.index(member)
    if i < 0:
        raise FileNotFoundError(f"{path}: no such member in the archive")
    offset = int(index.section("member_offset")[i])
    size = int(index.section("member_size")[i])
    method = int(index.section("member_method")[i])
    header = os.pread(fd, _LOCAL_HEADER.size, offset)
    if len(header) < _LOCAL_HEADER.size or _LOCAL_HEADER.unpack(header)[0] != _LOCAL_SIGNATURE:
        raise ZipMemberError(f"{path}: damaged zip member (bad local header)")
    name_len, extra_len = _LOCAL_HEADER.unpack(header)[-2:]
    data = os.pread(fd, size, offset + _LOCAL_HEADER.size + name_len + extra_len)
    if len(data) != size:
        raise ZipMemberError(f"{path}: damaged zip member (archive truncated)")
    try:
        if method == zipfile.ZIP_DEFLATED:
            data = zlib.decompress(data, -15)
        elif method != zipfile.ZIP_STORED:
            raise ZipMemberError(f"{path}: zip compression method {method} is not supported (store or deflate)")
    except zlib.error as exc:
        raise ZipMemberError(f"{path}: damaged zip member ({exc})") from exc
    if zlib.crc32(data) != int(index.section("member_crc")[i]):
        raise ZipMemberError(f"{path}: damaged zip member (CRC mismatch)")
    return data
