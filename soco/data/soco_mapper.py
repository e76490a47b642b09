"""SoCo's dataset mapper and the attachment of precomputed proposals to dataset dicts."""

import logging
from typing import Any, Dict, List

import numpy as np
import torch
from detectron2.utils import comm

from .image_io import MAX_IMAGE_PIXELS, ImageReadError, read_image_chw, upright_size
from .proposals.file_format import read_proposal_file
from .soco_views import SoCoViewBuilder, SoCoViewParams

__all__ = ["SOCO_VIEW_ORDER", "SoCoMapper", "attach_proposals", "check_proposal_sizes"]

logger = logging.getLogger(__name__)

# Order of the views in the mapper's "views" list (absent views are skipped).
SOCO_VIEW_ORDER = ("v1", "v2", "v3", "v4")


# Images whose header is read to check the proposal file's sizes when the dataset dicts carry
# no height/width (an image folder): evenly spaced, so a file made for resized copies is caught
# in well under a second on any dataset.
SIZE_CHECK_SAMPLES = 256


def attach_proposals(dicts: List[Dict[str, Any]], proposal_file: str) -> List[Dict[str, Any]]:
    """Copies of ``dicts`` with ``"proposal_boxes"`` ((N, 4) float32 XYXY, original pixels) and,
    when the file stores sizes, ``"proposal_image_size"`` ((height, width) the boxes refer to).

    Proposals are looked up by ``image_id`` (the image path relative to the image root, as
    tools/gen_proposals.py writes its ids). Images the file records as failed (unreadable when
    the proposals were made) are left out, identically on every process, logged once with a
    count. Raises ValueError naming the file when an image has no entry and is not recorded as
    failed (the file was made for other images), and when image sizes differ from those the
    proposals were made for (``check_proposal_sizes``).
    """
    if not proposal_file:
        raise ValueError(
            "MODEL.SOCO.PROPOSALS is empty: SoCo needs a proposal file (make one with tools/gen_proposals.py)"
        )
    proposals = read_proposal_file(proposal_file)
    failed = [d["image_id"] for d in dicts if d["image_id"] not in proposals.boxes and d["image_id"] in proposals.failed]
    missing = [d["image_id"] for d in dicts if d["image_id"] not in proposals.boxes and d["image_id"] not in proposals.failed]
    if missing:
        first = next(d for d in dicts if d["image_id"] == missing[0])
        root = first["file_name"][: -len(first["image_id"])].rstrip("/") or "."
        raise ValueError(
            f"proposal file {proposal_file} lacks {len(missing)} of the {len(dicts)} images of the "
            f"dataset (e.g. {missing[:3]}) and does not record them as failed: it was made for other "
            f"images. Make one for these images: python tools/gen_proposals.py --image-root {root} "
            "--output proposals/NEW.pkl (with --image-list if the dataset uses one), then set "
            "MODEL.SOCO.PROPOSALS proposals/NEW.pkl"
        )
    if failed and comm.is_main_process():
        examples = ", ".join(f"{i} ({proposals.failed[i]})" for i in failed[:3])
        logger.warning(
            f"skipping {len(failed)} of the {len(dicts)} images: {proposal_file} records them as unreadable "
            f"when the proposals were made (e.g. {examples})"
        )
    kept = [d for d in dicts if d["image_id"] in proposals.boxes]
    check_proposal_sizes(kept, proposals)
    return [
        dict(d, proposal_boxes=np.asarray(proposals.boxes[d["image_id"]], dtype=np.float32),
             **({"proposal_image_size": proposals.sizes[d["image_id"]]} if d["image_id"] in proposals.sizes else {}))
        for d in kept
    ]


def check_proposal_sizes(dicts: List[Dict[str, Any]], proposals, samples: int = SIZE_CHECK_SAMPLES) -> None:
    """Raise ValueError naming the first images whose size differs from the one stored in the
    proposal file (boxes made for other pixels: resized copies, another version of a dataset).

    Every dict with ``height``/``width`` is compared (free); of the others, ``samples`` evenly
    spaced images have their header read. The mapper compares the rest as it decodes them.
    """
    if not proposals.sizes:
        logger.warning(f"{proposals.path} stores no image sizes (made by an older soco); boxes are not checked "
                       "against the images")
        return
    with_size = [d for d in dicts if "height" in d and "width" in d]
    without = [d for d in dicts if not ("height" in d and "width" in d)]
    sampled = without[:: max(1, len(without) // samples)][:samples]
    mismatches = []
    for d, from_dict in [(d, True) for d in with_size] + [(d, False) for d in sampled]:
        try:
            actual = (int(d["height"]), int(d["width"])) if from_dict else upright_size(d["file_name"])
        except ImageReadError:
            continue  # the loader skips it when it meets it
        stored = proposals.sizes[d["image_id"]]
        if tuple(actual) != tuple(stored):
            mismatches.append(f"{d['image_id']} is {actual[0]}x{actual[1]}, proposals made for {stored[0]}x{stored[1]}")
            if len(mismatches) == 3:
                break
    if mismatches:
        raise ValueError(
            f"proposal file {proposals.path} was made for images of other sizes (height x width): "
            f"{'; '.join(mismatches)}. Its boxes would not match the pixels; make proposals for these "
            "images with tools/gen_proposals.py"
        )


class SoCoMapper:
    """dataset dict (with ``proposal_boxes``) -> SoCo's views of one image.

    Returns ``{"views": [v1, v2, (v3), (v4)] uint8 (3, S, S), "boxes": {name: (K, 4) float32},
    "image_id"}`` with box names as ``SoCoViewBuilder`` documents. Raises ``ImageReadError`` when
    the image cannot be read or is above ``max_pixels`` (not decoded); the loader takes the next one. With ``augment_on="device"`` the views are
    cropped and flipped only and ``"photometric": {"views": (V, NUM_PARAMS) float32}`` carries
    their colour parameters for the trainer (``soco.data.transforms.device``).
    """

    max_pixels = MAX_IMAGE_PIXELS  # PRETRAIN.MAX_IMAGE_PIXELS, set by soco.data.method_data.build_mapper

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
        """``impl`` "fast" | "reference" (CPU kernels); ``on`` "cpu" | "device" (PRETRAIN.AUGMENT_*,
        checked with the config by ``soco.config.validation``)."""
        self.build_views.configure_augmentation(impl, defer=on == "device")

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        file_name = dataset_dict["file_name"]
        if "proposal_boxes" not in dataset_dict:
            raise KeyError(
                f"dataset dict of {file_name} has no 'proposal_boxes'; soco.data.method_data."
                "prepare_dataset_dicts attaches them from MODEL.SOCO.PROPOSALS"
            )
        image = read_image_chw(file_name, self.max_pixels)
        expected = (dataset_dict.get("height"), dataset_dict.get("width"))
        if None not in expected and tuple(image.shape[1:]) != expected:
            raise ValueError(
                f"{file_name} is {image.shape[1]}x{image.shape[2]} but its dataset entry says "
                f"{expected[0]}x{expected[1]}: proposals would not match the pixels"
            )
        stored = dataset_dict.get("proposal_image_size")
        if stored is not None and tuple(image.shape[1:]) != tuple(stored):
            raise ValueError(
                f"{file_name} is {image.shape[1]}x{image.shape[2]} but its proposals were made for "
                f"{stored[0]}x{stored[1]} (MODEL.SOCO.PROPOSALS belongs to other images); make proposals "
                "for these images with tools/gen_proposals.py"
            )
        out = self.build_views(image, torch.from_numpy(np.asarray(dataset_dict["proposal_boxes"])))
        names = [n for n in SOCO_VIEW_ORDER if n in out["images"]]
        mapped = {"views": [out["images"][n] for n in names], "boxes": out["boxes"], "image_id": dataset_dict["image_id"]}
        if "params" in out:
            mapped["photometric"] = {"views": torch.stack([out["params"][n] for n in names])}
        return mapped
