"""SoCo's dataset mapper and the attachment of precomputed proposals to dataset dicts."""

import logging
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .image_io import ImageReadError, read_image_chw
from .proposals.file_format import load_proposals
from .soco_views import SoCoViewBuilder, SoCoViewParams

__all__ = ["SOCO_VIEW_ORDER", "SoCoMapper", "attach_proposals"]

logger = logging.getLogger(__name__)

# Order of the views in the mapper's "views" list (absent views are skipped).
SOCO_VIEW_ORDER = ("v1", "v2", "v3", "v4")


def attach_proposals(dicts: List[Dict[str, Any]], proposal_file: str) -> List[Dict[str, Any]]:
    """Copies of ``dicts`` with ``"proposal_boxes"`` ((N, 4) float32 XYXY, original pixels).

    Proposals are looked up by ``image_id`` (the image path relative to the image root, as
    tools/gen_proposals.py writes its ids). Raises ValueError naming the file when any image of
    the dataset has no entry, so a proposal file made for other images fails before training.
    """
    if not proposal_file:
        raise ValueError(
            "MODEL.SOCO.PROPOSALS is empty: SoCo needs a proposal file (make one with tools/gen_proposals.py)"
        )
    proposals = load_proposals(proposal_file)
    missing = [d["image_id"] for d in dicts if d["image_id"] not in proposals]
    if missing:
        raise ValueError(
            f"proposal file {proposal_file} lacks {len(missing)} of the {len(dicts)} images of the "
            f"dataset (e.g. {missing[:3]}); generate proposals for the same image root and list "
            "(tools/gen_proposals.py), or point MODEL.SOCO.PROPOSALS at the matching file"
        )
    return [dict(d, proposal_boxes=np.asarray(proposals[d["image_id"]], dtype=np.float32)) for d in dicts]


class SoCoMapper:
    """dataset dict (with ``proposal_boxes``) -> SoCo's views of one image.

    Returns ``{"views": [v1, v2, (v3), (v4)] uint8 (3, S, S), "boxes": {name: (K, 4) float32},
    "image_id"}`` with box names as ``SoCoViewBuilder`` documents, or ``None`` when the image
    cannot be read (the loader takes the next one). With ``augment_on="device"`` the views are
    cropped and flipped only and ``"photometric": {"views": (V, NUM_PARAMS) float32}`` carries
    their colour parameters for the trainer (``soco.data.transforms.device``).
    """

    def __init__(self, params: SoCoViewParams, augment_impl: str = "fast", augment_on: str = "cpu"):
        self.build_views = SoCoViewBuilder(params)
        self.configure_augmentation(augment_impl, augment_on)

    @classmethod
    def from_config(cls, cfg) -> "SoCoMapper":
        """Complete views on the CPU; the pretraining loader applies ``PRETRAIN.AUGMENT_ON`` /
        ``AUGMENT_IMPL`` (``soco.data.build.build_pretrain_loader``), so a mapper used outside
        the trainer never returns views whose colour operations are still due."""
        return cls(SoCoViewParams.from_config(cfg))

    def configure_augmentation(self, impl: str = "fast", on: str = "cpu") -> None:
        """``impl`` "fast" | "reference" (CPU kernels); ``on`` "cpu" | "device" (PRETRAIN.AUGMENT_*)."""
        if on not in ("cpu", "device"):
            raise ValueError(f"PRETRAIN.AUGMENT_ON must be 'cpu' or 'device', got {on!r}")
        if on == "device" and impl != "fast":
            raise ValueError("PRETRAIN.AUGMENT_IMPL 'reference' runs on the CPU only; use AUGMENT_ON 'cpu' with it")
        self.build_views.configure_augmentation(impl, defer=on == "device")

    def __call__(self, dataset_dict: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        file_name = dataset_dict["file_name"]
        if "proposal_boxes" not in dataset_dict:
            raise KeyError(
                f"dataset dict of {file_name} has no 'proposal_boxes'; soco.data.method_data."
                "prepare_dataset_dicts attaches them from MODEL.SOCO.PROPOSALS"
            )
        try:
            image = read_image_chw(file_name)
        except ImageReadError as e:
            logger.warning("skipping image: %s", e)
            return None
        expected = (dataset_dict.get("height"), dataset_dict.get("width"))
        if None not in expected and tuple(image.shape[1:]) != expected:
            raise ValueError(
                f"{file_name} is {image.shape[1]}x{image.shape[2]} but its dataset entry says "
                f"{expected[0]}x{expected[1]}: proposals would not match the pixels"
            )
        out = self.build_views(image, torch.from_numpy(np.asarray(dataset_dict["proposal_boxes"])))
        names = [n for n in SOCO_VIEW_ORDER if n in out["images"]]
        mapped = {"views": [out["images"][n] for n in names], "boxes": out["boxes"], "image_id": dataset_dict["image_id"]}
        if "params" in out:
            mapped["photometric"] = {"views": torch.stack([out["params"][n] for n in names])}
        return mapped
