"""Cached, atomic builds of generated data folders.

A folder is built once into a temporary sibling and renamed into place, so readers
never see a half-written folder. Its ``.manifest.json`` records the parameters it was
built with; a call with other parameters rebuilds it (callers give each option set its own
folder with ``options_folder``, so this only happens when a builder's format changes). A lock file serialises builders
(e.g. several training processes starting at once).
"""
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from ..utils.files import atomic_write_json
from ..utils.paths import PACKAGE_PARENT

__all__ = ["MANIFEST_NAME", "dataset_root", "default_dataset_root", "options_folder", "cached_build", "read_manifest"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".manifest.json"
# Bump when a builder's output changes for the same parameters, so old caches rebuild.
FORMAT_VERSION = 1


def dataset_root(root: Optional[str] = None) -> Path:
    """The folder generated datasets live in.

    ``root`` if given, else env ``SOCO_DATASETS``, else :func:`default_dataset_root`.
    """
    if root is None:
        root = os.environ.get("SOCO_DATASETS") or default_dataset_root(Path(PACKAGE_PARENT).resolve())
    return Path(root).expanduser().resolve()


def default_dataset_root(package_parent: Path) -> Path:
    """``<checkout>/datasets`` when the package runs from a source checkout (``package_parent``,
    the folder holding ``soco/``, has ``setup.py``), else ``./datasets`` in the working folder
    (an installed wheel: never inside site-packages), where the configs' relative
    ``datasets/...`` paths point as well."""
    if (package_parent / "setup.py").is_file():
        return package_parent / "datasets"
    return Path("datasets")


def options_folder(parent: Path, name: str, params: dict, default_params: dict) -> Path:
    """``parent/name`` for the default parameters, ``parent/name-<8 hex digits of a hash of
    params>`` for others: one folder per option set, so no build replaces another's files."""
    wanted = json.dumps(params, sort_keys=True)
    if wanted == json.dumps(default_params, sort_keys=True):
        return Path(parent) / name
    return Path(parent) / f"{name}-{hashlib.sha1(wanted.encode()).hexdigest()[:8]}"


def read_manifest(folder: Path) -> Optional[dict]:
    """The manifest of a built folder, or None when the folder is missing or incomplete."""
    try:
        with open(Path(folder) / MANIFEST_NAME) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@contextlib.contextmanager
def _locked(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_build(target: Path, params: dict, build: Callable[[Path], dict]) -> dict:
    """Return the manifest of ``target``, building it first if missing or stale.

    Args:
        target: the folder to produce.
        params: JSON-serialisable parameters; a folder built with other ones is rebuilt.
        build: ``build(tmp_dir) -> info`` writes the folder's contents into ``tmp_dir``
            and returns JSON-serialisable facts stored in the manifest under ``"info"``.
    Returns:
        The manifest: ``{"format": int, "params": dict, "info": dict, "build_seconds": float}``.
    """
    target = Path(target)
    wanted = json.loads(json.dumps(params))  # normalise (tuples -> lists) for comparison
    manifest = read_manifest(target)
    if manifest and manifest.get("params") == wanted and manifest.get("format") == FORMAT_VERSION:
        return manifest
    with _locked(target.parent / f".{target.name}.lock"):
        manifest = read_manifest(target)  # another process may have built it meanwhile
        if manifest and manifest.get("params") == wanted and manifest.get("format") == FORMAT_VERSION:
            return manifest
        if target.exists():
            logger.info("Rebuilding %s: its parameters changed", target)
        logger.info("Building %s ...", target)
        start = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        try:
            info = build(tmp)
            manifest = {
                "format": FORMAT_VERSION,
                "params": wanted,
                "info": info,
                "build_seconds": round(time.perf_counter() - start, 2),
            }
            atomic_write_json(tmp / MANIFEST_NAME, manifest, indent=None)
            stale = None
            if target.exists():
                stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
                os.replace(target, stale)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
        logger.info("Built %s in %.1f s", target, manifest["build_seconds"])
        return manifest
