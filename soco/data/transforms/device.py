"""The device path's second half: photometric operations deferred by the loader, run batched.

With ``PRETRAIN.AUGMENT_ON: device`` a mapper returns its views cropped and flipped only, plus
``"photometric": {key: (V, NUM_PARAMS) float32}`` (parameters drawn in the loader from the
sample's seed). :func:`apply_deferred_photometric` moves those views to the training device and
applies :func:`~.photometric_batch.apply_photometric_batch` to all views of one size at once.
"""

from typing import Any, Dict, List, Tuple

import torch

from .photometric_batch import apply_photometric_batch

__all__ = ["apply_deferred_photometric"]


def apply_deferred_photometric(batch: List[Dict[str, Any]], device) -> List[Dict[str, Any]]:
    """Micro-batch (list of mapped dicts) -> the same with deferred views augmented on ``device``.

    Dicts without ``"photometric"`` (the CPU path) are returned as they are, at no cost. The views
    of a deferred key become uint8 tensors on ``device``; the ``"photometric"`` entry is dropped.
    Every dict of a batch must defer the same keys with the same number of views.
    """
    if not batch or not isinstance(batch[0], dict) or "photometric" not in batch[0]:
        return batch
    keys = list(batch[0]["photometric"])
    if any(list(d.get("photometric", {})) != keys for d in batch):
        raise ValueError(f"every sample of a batch must defer the same view sets {keys}")
    # Views of one size (across keys and view indices) form one batch: one call per size.
    groups: Dict[Tuple[int, ...], List[Tuple[str, int]]] = {}
    for key in keys:
        for v, view in enumerate(batch[0][key]):
            groups.setdefault(tuple(view.shape), []).append((key, v))
    out = [{k: (list(val) if k in keys else val) for k, val in d.items() if k != "photometric"} for d in batch]
    for slots in groups.values():
        images = torch.stack([d[key][v] for key, v in slots for d in batch])
        params = torch.stack([d["photometric"][key][v] for key, v in slots for d in batch])
        augmented = apply_photometric_batch(images.to(device, non_blocking=True), params)
        for i, image in enumerate(augmented.unbind(0)):
            key, v = slots[i // len(batch)]
            out[i % len(batch)][key][v] = image
    return out
