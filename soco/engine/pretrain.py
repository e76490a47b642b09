"""Assemble and run a pretraining job from a config (what tools/pretrain_net.py calls per process)."""

import logging
import os
import weakref
from typing import Optional, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.engine import hooks
from detectron2.engine.defaults import create_ddp_model, default_writers
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.utils import comm

from ..data.build import build_pretrain_loader, get_pretrain_dataset_dicts
from ..modeling.meta_arch import PretrainMetaArch
from ..solver import build_lr_multiplier, build_optimizer, resolve_schedule
from .checkpoint import PretrainCheckpointer
from .hooks import MethodStepHook, RNGStateHook
from .run_guard import MetricsHistoryHook, StopOnSignalHook, truncate_metrics
from .trainer import PretrainTrainer

__all__ = ["meta_arch_class", "saved_config", "check_resumed_config", "build_pretrain_trainer", "run_pretraining"]

logger = logging.getLogger(__name__)


def meta_arch_class(cfg: CfgNode) -> type:
    """The registered class of ``MODEL.META_ARCHITECTURE``; it must be a PretrainMetaArch."""
    name = cfg.MODEL.META_ARCHITECTURE
    try:
        cls = META_ARCH_REGISTRY.get(name)
    except KeyError:
        raise KeyError(f"MODEL.META_ARCHITECTURE={name!r} is not registered") from None
    if not (isinstance(cls, type) and issubclass(cls, PretrainMetaArch)):
        raise TypeError(f"MODEL.META_ARCHITECTURE={name!r} is not a pretraining method (PretrainMetaArch)")
    return cls


def _data_seed(cfg: CfgNode) -> int:
    if cfg.SEED >= 0:
        return cfg.SEED
    logger.warning("SEED < 0: the data order is random, so --resume will not replay it exactly")
    return comm.shared_random_seed()


def _check_device(cfg: CfgNode) -> None:
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"MODEL.DEVICE={cfg.MODEL.DEVICE} but no GPU is available; set MODEL.DEVICE cpu")


# Keys that must not change when a run is resumed (the model, its data stream or its schedule
# would no longer be the checkpoint's); SOLVER.MAX_ITER may change, to extend a run.
_RESUME_INVARIANT_KEYS = (
    "MODEL.META_ARCHITECTURE",
    "SOLVER.IMS_PER_BATCH",
    "SOLVER.OPTIMIZER",
    "PRETRAIN.NUM_IMAGES",
    "SEED",
)


def saved_config(path: str) -> Optional[CfgNode]:
    """The config stored in a checkpoint (memory-mapped: the weights are not read)."""
    saved = torch.load(path, map_location="cpu", mmap=True, weights_only=True).get("cfg")
    return CfgNode.load_cfg(saved) if saved else None


def check_resumed_config(saved: Optional[CfgNode], cfg: CfgNode) -> None:
    """Raise ValueError naming the keys where the checkpoint's config and ``cfg`` disagree."""
    if saved is None:
        logger.warning("the checkpoint has no 'cfg' entry; cannot check it matches this run")
        return

    def get(c, key):
        for part in key.split("."):
            c = c[part]
        return c

    diffs = [
        f"{k}: checkpoint {get(saved, k)!r} vs now {get(cfg, k)!r}"
        for k in _RESUME_INVARIANT_KEYS
        if get(saved, k) != get(cfg, k)
    ]
    if diffs:
        raise ValueError("--resume with a different config than the checkpoint's: " + "; ".join(diffs))
    if saved.SOLVER.MAX_ITER != cfg.SOLVER.MAX_ITER:
        logger.warning(
            f"SOLVER.MAX_ITER changed from {saved.SOLVER.MAX_ITER} to {cfg.SOLVER.MAX_ITER}: "
            "schedules follow the new length"
        )


def build_pretrain_trainer(cfg: CfgNode, resume: bool = False) -> Tuple[PretrainTrainer, int, CfgNode]:
    """Data -> resolved schedule -> model -> optimiser -> trainer with hooks -> (resumed) state.

    Returns (trainer, start_iter, resolved cfg). ``cfg`` must be the merged, frozen config of
    this process (after ``default_setup``).
    """
    _check_device(cfg)
    method = meta_arch_class(cfg)
    world_size = comm.get_world_size()
    dicts = method.prepare_dataset_dicts(cfg, get_pretrain_dataset_dicts(cfg))
    cfg = resolve_schedule(cfg, len(dicts), world_size)
    logger.info(
        f"{method.__name__}: {cfg.PRETRAIN.NUM_IMAGES} images, batch {cfg.SOLVER.IMS_PER_BATCH}, "
        f"{cfg.SOLVER.MAX_ITER} iterations ({cfg.SOLVER.WARMUP_ITERS} warm-up)"
    )

    model = build_model(cfg)  # on MODEL.DEVICE
    on_gpu_ddp = world_size > 1 and cfg.MODEL.DEVICE.startswith("cuda")
    if cfg.PRETRAIN.SYNC_BN and on_gpu_ddp:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cfg.PRETRAIN.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)
    train_model = create_ddp_model(model, broadcast_buffers=False)
    if cfg.PRETRAIN.COMPILE:
        train_model = torch.compile(train_model)

    loader = build_pretrain_loader(
        cfg, dicts, method.build_mapper(cfg), _data_seed(cfg), comm.get_rank(), world_size
    )
    trainer = PretrainTrainer(
        train_model, loader, optimizer, cfg.PRETRAIN.ACCUM_STEPS, cfg.SOLVER.AMP.ENABLED, cfg.MODEL.DEVICE
    )
    # The unwrapped model is saved, so names never carry "module." or "_orig_mod.".
    checkpointer = PretrainCheckpointer(model, cfg.OUTPUT_DIR, cfg.dump(), trainer=weakref.proxy(trainer))
    trainer.register_hooks(
        [
            MethodStepHook(model),
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=build_lr_multiplier(cfg, method.zero_lr_iterations(cfg))),
            RNGStateHook(),
            hooks.PeriodicCheckpointer(checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD) if comm.is_main_process() else None,
            MetricsHistoryHook(),
            StopOnSignalHook(checkpointer),  # after every hook that updates state; the writer logs its iteration
            hooks.PeriodicWriter(default_writers(cfg.OUTPUT_DIR, cfg.SOLVER.MAX_ITER), period=cfg.PRETRAIN.LOG_PERIOD)
            if comm.is_main_process()
            else None,
        ]
    )
    start_iter = 0
    if resume and checkpointer.has_checkpoint():
        path = checkpointer.get_checkpoint_file()  # the newest readable one
        check_resumed_config(saved_config(path), cfg)
        checkpointer.load(path)
        start_iter = trainer.iter + 1
        logger.info(f"Resuming from {path} at iteration {start_iter}")
    elif cfg.MODEL.WEIGHTS:
        checkpointer.load(cfg.MODEL.WEIGHTS, checkpointables=[])
    if comm.is_main_process():
        truncate_metrics(os.path.join(cfg.OUTPUT_DIR, "metrics.json"), start_iter)
    return trainer, start_iter, cfg


def run_pretraining(cfg: CfgNode, resume: bool = False) -> PretrainTrainer:
    """Build everything and train from the start (or the last checkpoint with ``resume``)."""
    trainer, start_iter, cfg = build_pretrain_trainer(cfg, resume)
    if start_iter >= cfg.SOLVER.MAX_ITER:
        logger.info(f"Nothing to do: the last checkpoint is at the end ({cfg.SOLVER.MAX_ITER} iterations)")
        return trainer
    trainer.train(start_iter, cfg.SOLVER.MAX_ITER)
    return trainer
