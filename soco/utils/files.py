"""One way to write a file so that readers never see half of it and nothing old is lost.

``atomic_write`` writes into a temporary file in the target's folder, flushes it to disk and
renames it over the target (``os.replace`` is atomic on POSIX within one file system). If
anything fails (a full disk, Ctrl-C, a bad value in the writer) the temporary file is removed
and the previous file, if any, stays as it was.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from typing import IO, Any, Callable

__all__ = ["DiskFullError", "atomic_write", "atomic_write_bytes", "atomic_write_json"]


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
