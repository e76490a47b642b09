"""Image folders (ImageNet train layout or flat) and zip archives (the official ``train.zip`` +
``train_map.txt`` layout) as Detectron2-style dataset dicts.

For pretraining at ImageNet size, ``ImageFolderDataset`` is the dataset without per-image Python
objects: the sorted ids live in one memory-mapped id table (a ``soco.data.proposals.store``
file with no boxes) written once per machine into a cache folder and mapped by every process
and DataLoader worker; a dict is made when an item is accessed.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from .zip_source import IMAGE_EXTENSIONS, is_zip_root, zip_index, zip_member_path

__all__ = ["IMAGE_EXTENSIONS", "list_images", "read_image_list", "image_folder_dicts", "image_path",
           "default_image_list", "ImageFolderDataset"]

def read_image_list(image_list) -> list[str]:
    """Relative image paths from a text file, one per line, in file order.

    A line may carry a trailing integer label after whitespace (``n01440764/x.JPEG 0``, the
    common ImageNet list format); it is ignored. Blank lines and lines starting with ``#`` are
    skipped. Raises ``ValueError`` naming the file for absolute paths.
    """
    paths = []
    with open(image_list, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(None, 1)
            path = parts[0] if len(parts) == 2 and parts[1].lstrip("-").isdigit() else line
            if os.path.isabs(path):
                raise ValueError(f"{image_list}:{line_number}: paths must be relative to the image root: {path!r}")
            paths.append(os.path.normpath(path).replace(os.sep, "/"))
    return paths


def image_path(root: str, image_id: str) -> str:
    """The path of image ``image_id`` under ``root`` (a folder, or ``ARCHIVE.zip@/MEMBER`` for a zip)."""
    return zip_member_path(root, image_id) if is_zip_root(root) else os.path.join(root, *image_id.split("/"))


def default_image_list(root) -> str | None:
    """The image list to use when none is given: ``NAME_map.txt`` next to an archive ``NAME.zip``
    (the official layout) if it exists, else None (every image)."""
    if is_zip_root(root):
        candidate = str(root)[:-4] + "_map.txt"
        if os.path.isfile(candidate):
            return candidate
    return None


def list_images(root, image_list=None) -> list[str]:
    """Sorted image paths relative to ``root`` ("/"-separated); for a zip archive, member names.

    A zip archive lists the members of ``image_list``, else of ``default_image_list(root)``, else
    every member with an image extension (``soco.data.zip_source.zip_index``).

    Without ``image_list``: every file under ``root`` (recursively, following symlinks) whose
    extension is in ``IMAGE_EXTENSIONS``. A linked folder is entered once: a link back to a
    folder above it (a loop) or a second link to the same folder is skipped, so each real
    folder's files are listed once, under the first path in sorted order that reaches them. With ``image_list`` (see ``read_image_list``): exactly
    those paths, sorted and deduplicated; their existence is checked when they are read.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
    """
    if is_zip_root(root):
        image_list = image_list or default_image_list(root)
        if image_list is None:
            return zip_index(str(root)).ids()
    elif not os.path.isdir(root):
        raise FileNotFoundError(f"image root is not a directory: {root}")
    if image_list is not None:
        return sorted(set(read_image_list(image_list)))
    found = []
    visited = {os.path.realpath(root)}
    for directory, subdirs, files in os.walk(root, followlinks=True):
        subdirs.sort()
        # os.walk's followlinks does not detect cycles; prune folders already entered.
        fresh = []
        for name in subdirs:
            real = os.path.realpath(os.path.join(directory, name))
            if real not in visited:
                visited.add(real)
                fresh.append(name)
        subdirs[:] = fresh
        rel_dir = os.path.relpath(directory, root)
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                rel = name if rel_dir == "." else os.path.join(rel_dir, name)
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def image_folder_dicts(root, image_list=None) -> list[dict]:
    """Dataset dicts ``{"file_name": absolute path, "image_id": path relative to root}``.

    Image sizes are not read here (that would open every file of a 1.28M-image folder); the
    mapper learns them when it decodes the image. ``image_id`` matches the ``ids`` of a proposal
    file made by ``tools/gen_proposals.py`` on the same root.
    """
    root = os.path.abspath(root)
    return [{"file_name": image_path(root, rel), "image_id": rel} for rel in list_images(root, image_list)]


class ImageFolderDataset(Sequence):
    """The images of a folder or zip archive as a sequence of dataset dicts made on access,
    ``{"file_name": image_path(root, id), "image_id": id}``, ids sorted.

    ``index``: an id table to use (e.g. a proposal store, whose ids are the images with
    proposals), or None: the folder is listed once (``list_images``) into
    ``cache_dir/image_lists/<hash of root and list>.store``, by the first process of each
    machine, while the others wait at a barrier and map the same file. A cached listing is reused
    (so a resumed run sees the same images in the same order); delete it to list again.
    """

    def __init__(self, root, image_list=None, cache_dir=None, index=None):
        self.root = os.path.abspath(root)
        self.image_list = image_list or default_image_list(root)
        self.cache_dir = cache_dir
        self._index = index

    @property
    def index(self):
        if self._index is None:
            self._index = _cached_listing(self.root, self.image_list, self.cache_dir)
        return self._index

    @property
    def listed(self) -> bool:
        """Whether the id table is already known (listing or given), i.e. accessing it is free."""
        return self._index is not None

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        image_id = self.index.id(range(len(self.index))[i])
        return {"file_name": image_path(self.root, image_id), "image_id": image_id}


def _cached_listing(root: str, image_list, cache_dir):
    import numpy as np
    from detectron2.utils import comm

    from .proposals.store import ProposalStore, StorePart, write_store

    key = hashlib.sha1(f"{root}|{os.path.abspath(image_list) if image_list else ''}".encode()).hexdigest()[:16]
    folder = os.path.join(cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "soco"), "image_lists")
    target = os.path.join(folder, f"{key}.store")
    if comm.get_local_rank() == 0 and not os.path.exists(target):
        ids = list_images(root, image_list)
        if not ids:
            raise ValueError(f"no training images found under {root}" + (f" from list {image_list}" if image_list else ""))
        n = len(ids)
        write_store(target, [StorePart(ids, np.zeros(n, np.int64), np.zeros((0, 4), np.int64), np.zeros((n, 2), np.int32))],
                    sizes_known=False, meta={"root": root, "image_list": image_list})
    comm.synchronize()
    # Every process must see the file its machine's first process wrote; otherwise all stop with
    # the same reason instead of one dying and the others hanging in the next collective.
    missing = [rank for rank, seen in enumerate(comm.all_gather(os.path.exists(target))) if not seen]
    if missing:
        raise RuntimeError(
            f"the image listing {target} written by the first process of each machine is missing on "
            f"rank(s) {missing}: OUTPUT_DIR must be one folder shared by every process of the job"
        )
    return ProposalStore(target)
