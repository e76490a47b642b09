"""Arbitrary image folders (ImageNet train layout or flat) as Detectron2-style dataset dicts."""
from __future__ import annotations

import os

__all__ = ["IMAGE_EXTENSIONS", "list_images", "read_image_list", "image_folder_dicts"]

# Compared case-insensitively (ImageNet uses ".JPEG").
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


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


def list_images(root, image_list=None) -> list[str]:
    """Sorted image paths relative to ``root`` ("/"-separated).

    Without ``image_list``: every file under ``root`` (recursively, following symlinks) whose
    extension is in ``IMAGE_EXTENSIONS``. A linked folder is entered once: a link back to a
    folder above it (a loop) or a second link to the same folder is skipped, so each real
    folder's files are listed once, under the first path in sorted order that reaches them. With ``image_list`` (see ``read_image_list``): exactly
    those paths, sorted and deduplicated; their existence is checked when they are read.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
    """
    if not os.path.isdir(root):
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
    return [
        {"file_name": os.path.join(root, *rel.split("/")), "image_id": rel}
        for rel in list_images(root, image_list)
    ]
