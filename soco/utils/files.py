"""One way to write a file so that readers never see half of it and nothing old is lost.

``atomic_write`` writes into a temporary file in the target's folder, flushes it to disk and
renames it over the target (``os.replace`` is atomic on POSIX within one file system). If
anything fails (a full disk, Ctrl-C, a bad value in the writer) the temporary file is removed
and the previous file, if any, stays as it was.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import json
import os
import tempfile
from typing import IO, Any, Callable

__all__ = ["DiskFullError", "atomic_write", "atomic_write_bytes", "atomic_write_json", "derived_file"]


class DiskFullError(OSError):
    """A write failed for lack of space; the message names the file and the free space left."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _free_bytes(directory: str) -> str:
    try:
        stat = os.statvfs(directory)
        return f"{stat.f_bavail * stat.f_frsize / 2**20:.1f} MiB free"
    except OSError:
        return "free space unknown"


def atomic_write(path, write_fn: Callable[[IO], Any], mode: str = "wb") -> None:
    """Create or replace ``path`` with what ``write_fn(file_object)`` writes, atomically.

    The file gets the usual permissions (0666 less the umask), not ``mkstemp``'s 0600, and is
    fsync'ed before the rename, so a crash right after leaves either the old or the new file.

    Raises:
        DiskFullError: (errno ENOSPC/EDQUOT) naming ``path`` and saying "no space left"; the
            temporary file is removed, so the disk is as full as before the attempt.
        Whatever ``write_fn`` raises, after removing the temporary file.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if _is_disk_full(exc):
            raise DiskFullError(
                errno.ENOSPC,
                f"cannot write {path}: no space left on device ({_free_bytes(directory)}); "
                "the temporary file was removed and any previous version is unchanged",
            ) from exc
        raise


def _is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT, also when wrapped (torch.save reports a full disk as a RuntimeError
    "unexpected pos" from its zip writer, chaining nothing, so the message is checked too)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, RuntimeError) and "unexpected pos" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def atomic_write_bytes(path, data: bytes) -> None:
    """``atomic_write`` of a bytes object."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path, obj: Any, indent: int | None = 1, **dump_kwargs: Any) -> None:
    """``atomic_write`` of ``obj`` as JSON text (UTF-8)."""
    atomic_write(path, lambda f: json.dump(obj, f, indent=indent, **dump_kwargs), mode="w")


def derived_file(source, target, build: Callable[[str], Any]) -> str:
    """The path of a file made from ``source`` once and reused: ``target`` (usually next to
    ``source``), built by ``build(path)`` (which must write atomically) when it is absent or older
    than ``source``. Where ``target``'s folder is not writable, a file in the temporary folder
    keyed by ``source``'s path, size and modification time is used instead. Concurrent callers
    build identical bytes, so any number of processes may call this at once."""
    source, target = os.fspath(source), os.fspath(target)

    def fresh(path: str) -> bool:
        return os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(source)

    if fresh(target):
        return target
    try:
        build(target)
        return target
    except PermissionError:
        stat = os.stat(source)
        key = hashlib.sha1(f"{os.path.abspath(source)}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        fallback = os.path.join(tempfile.gettempdir(), f"soco-{key}-{os.path.basename(target)}")
        logging.getLogger(__name__).warning(f"cannot write {target}; using {fallback} instead")
        if not fresh(fallback):
            build(fallback)
        return fallback
