"""Datasets that are indexes, not lists of dicts: each item's dict is made when it is accessed.

At ImageNet size a list of 1.28M dataset dicts costs about 3 GB per process, and every
DataLoader worker that touches them copies their pages (reference counts are writes). These
sequences keep only arrays (memory-mapped or NumPy) and small objects; ``len`` and ``[i]`` are
all the loader, the sampler and the engine use.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Dict, Optional

import numpy as np

__all__ = ["ProposalDataset", "IndexedDataset", "take"]


def take(positions: Optional[np.ndarray], i: int) -> int:
    """``positions[i]``, or ``i`` when ``positions`` is None (the identity)."""
    return i if positions is None else int(positions[i])


class ProposalDataset(Sequence):
    """Item i = ``base[take(base_positions, i)]`` plus its proposals from ``store`` row
    ``take(store_positions, i)``: ``proposal_boxes`` (n, 4) float32 XYXY original pixels and,
    when the store knows it, ``proposal_image_size`` (height, width).

    ``base``: any sequence of dataset dicts (a list, an ``ImageFolderDataset``); positions:
    (len,) int64 arrays or None. ``proposal_file``: the name to report in errors.
    """

    def __init__(self, base, store, base_positions: Optional[np.ndarray], store_positions: Optional[np.ndarray],
                 proposal_file: str):
        self.base, self.store, self.proposal_file = base, store, proposal_file
        self.base_positions, self.store_positions = base_positions, store_positions
        self._len = len(base) if base_positions is None else len(base_positions)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> Dict[str, Any]:
        i = range(self._len)[i]
        out = dict(self.base[take(self.base_positions, i)])
        row = take(self.store_positions, i)
        out["proposal_boxes"] = self.store.boxes(row)
        size = self.store.size(row) if self.store.sizes_known else None
        if size is not None:
            out["proposal_image_size"] = size
        return out


class IndexedDataset(Sequence):
    """Item i = ``base[i]`` plus ``"instance_index": i`` (CoKe's per-image label slot), made on
    access: no copy of the dicts."""

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        i = range(len(self.base))[i]
        return dict(self.base[i], instance_index=i)
