"""Pretraining data: dataset dicts, and a loader that can restart at any iteration exactly.

Exact resume: the sampler walks a fixed stream of global sample *positions* (epoch e is a
permutation seeded by (seed, e)), so the images of iteration k are known without replaying
iterations 0..k-1; each sample's augmentations are drawn from RNGs seeded by (seed, position),
so they do not depend on which worker maps it, nor on how many iterations ran before a restart.
Detectron2's TrainingSampler + worker seeding cannot do this (worker RNG streams restart), hence
the small sampler and dataset wrapper here.
"""

import gc
import logging
import random
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.data.build import trivial_batch_collator
from torch.utils.data import DataLoader, Dataset, Sampler

from ..utils.errors import ConfigError, ConfigKeyError
from .image_io import ImageReadError

__all__ = [
    "get_pretrain_dataset_dicts",
    "PositionSampler",
    "SeededMapDataset",
    "ResumableLoader",
    "build_pretrain_loader",
]

logger = logging.getLogger(__name__)

Mapper = Callable[[Dict[str, Any]], Optional[Dict[str, Any]]]

# Epoch e of seed s shuffles with the generator seeded s * EPOCH_SEED_STRIDE + e: a prime larger
# than any number of epochs, so that (seed, epoch) pairs never share a permutation seed.
EPOCH_SEED_STRIDE = 1_000_003


def get_pretrain_dataset_dicts(cfg: CfgNode) -> Sequence[Dict[str, Any]]:
    """Images of ``PRETRAIN.IMAGE_ROOT`` (a folder or a ``.zip`` archive; + optional
    ``PRETRAIN.IMAGE_LIST``) if set, as an ``ImageFolderDataset`` (an index listed at most once
    per machine, into ``OUTPUT_DIR/image_lists``, and only if the method needs the listing: SoCo
    takes its images from the proposal store), else the concatenated ``DATASETS.TRAIN`` from
    Detectron2's DatasetCatalog (embedded sets included) as a list."""
    if cfg.PRETRAIN.IMAGE_ROOT:
        from .image_folder import ImageFolderDataset

        root = cfg.PRETRAIN.IMAGE_ROOT
        dataset = ImageFolderDataset(root, cfg.PRETRAIN.IMAGE_LIST or None, cache_dir=cfg.OUTPUT_DIR)
        logger.info(f"training images from PRETRAIN.IMAGE_ROOT={root}"
                    + (f" (list {dataset.image_list})" if dataset.image_list else ""))
        return dataset
    else:
        if not cfg.DATASETS.TRAIN:
            raise ConfigError("no training data: set DATASETS.TRAIN or PRETRAIN.IMAGE_ROOT")
        from .. import embedded  # noqa: F401  (registers the embedded demo datasets)

        dicts = []
        for name in cfg.DATASETS.TRAIN:
            if name not in DatasetCatalog.list():
                raise ConfigKeyError(f"DATASETS.TRAIN: dataset {name!r} is not registered")
            dicts.extend(DatasetCatalog.get(name))
        source = f"DATASETS.TRAIN={list(cfg.DATASETS.TRAIN)}"
    if not dicts:
        raise ConfigError(f"no training images found in {source}")
    logger.info(f"{len(dicts)} training images from {source}")
    return dicts


class PositionSampler(Sampler):
    """Infinite stream of ``(position, index)`` pairs for this process.

    Global positions p = start, start+1, ... are dealt to the ``world_size`` processes in
    blocks of ``block`` (the per-process micro-batch): process r gets start + r*block + j for
    j < block, then the next W*block positions' r-th block, and so on. So the micro-batches of
    all processes, concatenated rank-major (as ``all_gather`` does), are the global positions
    in order: the same images in the same order as one process with the whole batch, which
    is what makes world size W reproduce world size 1. Position p maps to ``perm_e[p % size]``
    with ``perm_e`` the permutation of epoch e = p // size, seeded by (seed, e) (identity when
    ``shuffle`` is False); every epoch is the dataset exactly once across processes.
    """

    def __init__(self, size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 block: int = 1):
        if size <= 0:
            raise ValueError("PositionSampler needs a non-empty dataset")
        if block < 1:
            raise ValueError(f"PositionSampler block must be >= 1, got {block}")
        self.size, self.seed, self.start = size, seed, start
        self.rank, self.world_size, self.shuffle, self.block = rank, world_size, shuffle, block

    def _permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        g = torch.Generator()
        g.manual_seed(self.seed * EPOCH_SEED_STRIDE + epoch)
        return torch.randperm(self.size, generator=g)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        epoch, perm = -1, None
        step = 0
        while True:
            position = self.start + (step // self.block) * self.world_size * self.block + self.rank * self.block
            position += step % self.block
            if position // self.size != epoch:
                epoch = position // self.size
                perm = self._permutation(epoch)
            yield position, int(perm[position % self.size])
            step += 1


class SeededMapDataset(Dataset):
    """``dataset[(position, index)] = mapper(dicts[index])`` (``dicts``: a list, or an index that
    makes each dict on access) with Python/NumPy/torch RNGs seeded
    from (seed, position) during the call (and restored after it, so a main-process loader
    leaves the training RNGs alone). An image the mapper cannot read (``ImageReadError``: broken,
    or above the pixel limit) is logged once with the reason and remembered (``skipped``, the
    indices this process met), so it is not read again in later epochs; the next images are
    taken instead, deterministically (a mapper returning ``None`` is skipped the same way)."""

    MAX_RETRIES = 20

    def __init__(self, dicts: Sequence[Dict[str, Any]], mapper: Mapper, seed: int):
        self.dicts, self.mapper, self.seed = dicts, mapper, seed
        self.skipped: Set[int] = set()

    def _map(self, index: int) -> Optional[Dict[str, Any]]:
        """The mapped dict of ``dicts[index]``, or None (logged once) for an image to skip."""
        if index in self.skipped:
            return None
        dataset_dict = self.dicts[index]
        try:
            out = self.mapper(dataset_dict)
        except ImageReadError as e:
            out, why = None, f"{e.path}: {e.reason}"
        else:
            why = f"{dataset_dict.get('file_name')}: unreadable"
        if out is None:
            self.skipped.add(index)
            logger.warning(f"skipping image {why} (not read again by this process)")
        return out

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, key: Tuple[int, int]) -> Dict[str, Any]:
        position, index = key
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            for attempt in range(self.MAX_RETRIES):
                sample_seed = np.random.SeedSequence([self.seed, position, attempt]).generate_state(1)[0]
                random.seed(int(sample_seed))
                np.random.seed(int(sample_seed))
                torch.manual_seed(int(sample_seed))
                out = self._map((index + attempt) % len(self.dicts))
                if out is not None:
                    return out
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])
        raise RuntimeError(
            f"{self.MAX_RETRIES} consecutive images could not be mapped, starting at "
            f"{self.dicts[index].get('file_name')}"
        )


class ResumableLoader:
    """Iterable of per-process micro-batches (lists of mapped dicts) that starts at
    ``start_iter``, read when iteration begins (the trainer sets it after resuming).

    One iteration consumes ``samples_per_iter`` global positions (= SOLVER.IMS_PER_BATCH over
    all processes and accumulation steps), so iteration k starts at position k * samples_per_iter.
    """

    def __init__(
        self,
        dataset: SeededMapDataset,
        batch_size: int,
        samples_per_iter: int,
        num_workers: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: bool = False,
    ):
        self.dataset, self.batch_size, self.samples_per_iter = dataset, batch_size, samples_per_iter
        self.num_workers, self.seed, self.pin_memory = num_workers, seed, pin_memory
        self.rank, self.world_size = rank, world_size
        self.start_iter = 0

    def __iter__(self):
        # A generator: nothing (no worker process) starts until the first batch is requested.
        if self.num_workers > 0:
            # Python objects made so far (modules, config, model wrappers, small dataset lists)
            # move to a permanent generation: the collector no longer writes to their headers, so
            # forked workers keep sharing those pages instead of copying them.
            gc.collect()
            gc.freeze()
        sampler = PositionSampler(
            len(self.dataset), self.seed, self.start_iter * self.samples_per_iter, self.rank, self.world_size,
            block=self.batch_size,
        )
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=trivial_batch_collator,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )
        yield from loader


def build_pretrain_loader(
    cfg: CfgNode, dicts: Sequence[Dict[str, Any]], mapper: Mapper, seed: int, rank: int = 0, world_size: int = 1
) -> ResumableLoader:
    """Loader of micro-batches of IMS_PER_BATCH / (world_size * ACCUM_STEPS) images per process.

    The mapper's augmentation is set from ``PRETRAIN.AUGMENT_ON`` / ``AUGMENT_IMPL`` here (where the
    loader's share of the work is decided); with "device" the trainer finishes the views on its
    device (``soco.data.transforms.device.apply_deferred_photometric``), so only a loader built
    here, for the trainer, ever returns views whose colour operations are still due.
    """
    mapper.configure_augmentation(cfg.PRETRAIN.AUGMENT_IMPL, cfg.PRETRAIN.AUGMENT_ON)
    per_process = cfg.SOLVER.IMS_PER_BATCH // (world_size * cfg.PRETRAIN.ACCUM_STEPS)
    return ResumableLoader(
        SeededMapDataset(dicts, mapper, seed),
        batch_size=per_process,
        samples_per_iter=cfg.SOLVER.IMS_PER_BATCH,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        seed=seed,
        rank=rank,
        world_size=world_size,
        pin_memory=cfg.MODEL.DEVICE.startswith("cuda"),
    )
