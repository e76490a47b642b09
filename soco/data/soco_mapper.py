"""SoCo's dataset mapper and the attachment of precomputed proposals (the memory-mapped store) to a dataset."""

import logging
from typing import Any, Dict, Sequence

import numpy as np
import torch
from detectron2.utils import comm

from .image_folder import ImageFolderDataset
from .image_io import MAX_IMAGE_PIXELS, ImageReadError, read_image_chw, upright_size
from .indexed_datasets import ProposalDataset, take
from .proposals.file_format import open_proposals
from .proposals.validation import ProposalFileError, ProposalReport, check_usable
from .soco_views import SoCoViewBuilder, SoCoViewParams

__all__ = ["SOCO_VIEW_ORDER", "SoCoMapper", "attach_proposals", "check_proposal_sizes"]

logger = logging.getLogger(__name__)

# Order of the views in the mapper's "views" list (absent views are skipped).
SOCO_VIEW_ORDER = ("v1", "v2", "v3", "v4")


# Images whose header is read to check the proposal file's sizes when the dataset dicts carry
# no height/width (an image folder): evenly spaced, so a file made for resized copies is caught
# in well under a second on any dataset.
SIZE_CHECK_SAMPLES = 256
# Ids compared per step when matching a sorted image listing against the store.
_ID_BLOCK = 1 << 16


def _sorted_ids(index):
    """Every id of a store-like id table, in order, read block by block."""
    for start in range(0, len(index), _ID_BLOCK):
        yield from index.ids(start, min(len(index), start + _ID_BLOCK))


def _match(dicts, store):
    """(base positions, store positions, missing ids, failed ids) of the images of ``dicts`` in
    ``store``: a merge of two sorted id streams for an ``ImageFolderDataset``, a binary search
    per dict for a list (registered datasets: small, in any order)."""
    base_positions, store_positions, missing, failed = [], [], [], []
    if isinstance(dicts, ImageFolderDataset):
        stored = _sorted_ids(store)
        current, row = next(stored, None), 0
        for position, image_id in enumerate(_sorted_ids(dicts.index)):
            while current is not None and current < image_id:
                current, row = next(stored, None), row + 1
            if current == image_id:
                base_positions.append(position)
                store_positions.append(row)
            else:
                (failed if image_id in store.failed else missing).append(image_id)
    else:
        for position, d in enumerate(dicts):
            found = store.index(d["image_id"])
            if found >= 0:
                base_positions.append(position)
                store_positions.append(found)
            else:
                (failed if d["image_id"] in store.failed else missing).append(d["image_id"])
    return np.array(base_positions, np.int64), np.array(store_positions, np.int64), missing, failed


def attach_proposals(dicts: Sequence[Dict[str, Any]], proposal_file: str, max_images_without_boxes: float = 0.02
                     ) -> ProposalDataset:
    """The dataset ``dicts`` with proposals: a ``ProposalDataset`` whose items carry
    ``"proposal_boxes"`` ((N, 4) float32 XYXY, original pixels) and, when the file stores sizes,
    ``"proposal_image_size"`` ((height, width) the boxes refer to), read from the memory-mapped
    store on access (``open_proposals``: a ``.pkl`` is converted to a store once).

    An ``ImageFolderDataset`` not listed yet and without an image list takes its images from the
    store's id table (the listing made when the proposals were generated): no folder is listed.
    Otherwise proposals are looked up by ``image_id`` (the image path relative to the image root,
    as tools/gen_proposals.py writes its ids). Images the file records as failed (unreadable when
    the proposals were made) are left out, identically on every process, logged once with a
    count. Raises ValueError naming the file when an image has no entry and is not recorded as
    failed (the file was made for other images), and when image sizes differ from those the
    proposals were made for (``check_proposal_sizes``). Refuses the file (``ProposalFileError``)
    when more than ``max_images_without_boxes`` of the images have no usable box, and logs what
    validation repaired or dropped (``soco.data.proposals.validation.check_usable``).
    """
    if not proposal_file:
        raise ProposalFileError(
            "MODEL.SOCO.PROPOSALS is empty: SoCo needs a proposal file (make one with tools/gen_proposals.py)"
        )
    store = open_proposals(proposal_file)
    if isinstance(dicts, ImageFolderDataset) and not dicts.listed and dicts.image_list is None:
        dataset = ProposalDataset(ImageFolderDataset(dicts.root, index=store), store, None, None, proposal_file)
        _log_failed(sorted(store.failed), len(store) + len(store.failed), store, proposal_file)
        _check_usable(store, None, proposal_file, max_images_without_boxes)
        check_proposal_sizes(dataset)
        return dataset
    base_positions, store_positions, missing, failed = _match(dicts, store)
    if missing:
        first = next(d for d in (dicts[i] for i in range(len(dicts))) if d["image_id"] == missing[0])
        root = first["file_name"][: -len(first["image_id"])].rstrip("/@") or "."
        raise ProposalFileError(
            f"proposal file {proposal_file} lacks {len(missing)} of the {len(dicts)} images of the "
            f"dataset (e.g. {missing[:3]}) and does not record them as failed: it was made for other "
            f"images. Make one for these images: python tools/gen_proposals.py --image-root {root} "
            "--output proposals/NEW.pkl (with --image-list if the dataset uses one), then set "
            "MODEL.SOCO.PROPOSALS proposals/NEW.pkl"
        )
    _log_failed(failed, len(dicts), store, proposal_file)
    dataset = ProposalDataset(dicts, store, base_positions, store_positions, proposal_file)
    _check_usable(store, store_positions, proposal_file, max_images_without_boxes)
    check_proposal_sizes(dataset)
    return dataset


def _check_usable(store, rows, proposal_file: str, max_fraction: float) -> None:
    """``check_usable`` over the training images' rows of ``store`` (None: every row), with the
    validation report the conversion stored in the header (stores of the generator have none)."""
    counts = store.counts if rows is None else store.counts[rows]
    meta = store.header.get("meta", {}).get("validation")
    report = None if meta is None else ProposalReport.from_meta(proposal_file, meta)
    check_usable(proposal_file, counts, lambda i: store.id(i if rows is None else int(rows[i])), max_fraction, report,
                 comm.is_main_process())


def _log_failed(failed, total: int, store, proposal_file: str) -> None:
    if failed and comm.is_main_process():
        examples = ", ".join(f"{i} ({store.failed[i]})" for i in failed[:3])
        logger.warning(
            f"skipping {len(failed)} of the {total} images: {proposal_file} records them as unreadable "
            f"when the proposals were made (e.g. {examples})"
        )


def check_proposal_sizes(dataset: ProposalDataset, samples: int = SIZE_CHECK_SAMPLES) -> None:
    """Raise ValueError naming the first images whose size differs from the one stored in the
    proposal file (boxes made for other pixels: resized copies, another version of a dataset),
    or when none of the sampled images exists (the image root is not the proposals' one).

    Items of a list with ``height``/``width`` are all compared (free); of the others, ``samples``
    evenly spaced images have their header read. The mapper compares the rest as it decodes them.
    """
    store, name = dataset.store, dataset.proposal_file
    if not store.sizes_known:
        logger.warning(f"{name} stores no image sizes (made by an older soco); boxes are not checked "
                       "against the images")
        return
    n = len(dataset)
    if isinstance(dataset.base, list):
        items = [dataset.base[take(dataset.base_positions, i)] for i in range(n)]
        with_size = [i for i in range(n) if "height" in items[i] and "width" in items[i]]
        without = [i for i in range(n) if not ("height" in items[i] and "width" in items[i])]
    else:
        with_size, without = [], range(n)
    sampled = list(without[:: max(1, len(without) // samples)][:samples])
    mismatches, not_found = [], 0
    for i, from_dict in [(i, True) for i in with_size] + [(i, False) for i in sampled]:
        d = dataset.base[take(dataset.base_positions, i)]
        try:
            actual = (int(d["height"]), int(d["width"])) if from_dict else upright_size(d["file_name"])
        except ImageReadError as exc:
            not_found += "not found" in str(exc)
            continue  # the loader skips it when it meets it
        stored = store.size(take(dataset.store_positions, i))
        if stored is not None and tuple(actual) != tuple(stored):
            mismatches.append(f"{d['image_id']} is {actual[0]}x{actual[1]}, proposals made for {stored[0]}x{stored[1]}")
            if len(mismatches) == 3:
                break
    if mismatches:
        raise ProposalFileError(
            f"proposal file {name} was made for images of other sizes (height x width): "
            f"{'; '.join(mismatches)}. Its boxes would not match the pixels; make proposals for these "
            "images with tools/gen_proposals.py"
        )
    if sampled and not with_size and not_found == len(sampled):
        first = dataset.base[take(dataset.base_positions, sampled[0])]["file_name"]
        raise ProposalFileError(f"none of {len(sampled)} images of proposal file {name} exists (e.g. {first}): "
                         "PRETRAIN.IMAGE_ROOT is not the folder the proposals were made for")


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
