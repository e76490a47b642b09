"""Assemble and run a pretraining job from a config (what tools/pretrain_net.py calls per process)."""

import logging
import os
import weakref
from typing import Optional, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.engine import hooks
from detectron2.engine.defaults import default_writers
from detectron2.utils import comm

from ..config.defaults import load_pretrain_config
from ..config.validation import check_dataset_size, config_value
from ..utils.errors import ConfigError
from ..data.build import build_pretrain_loader, get_pretrain_dataset_dicts
from ..data.method_data import build_mapper, prepare_dataset_dicts
from ..modeling.distributed import broadcast_module_state
from ..modeling.meta_arch import build_pretrain_model, pretrain_method_class
from ..solver import build_lr_multiplier, build_optimizer, iterations_per_epoch, resolve_schedule
from .checkpoint import PretrainCheckpointer
from .health import HealthMonitorHook, HealthThresholds, KNNMonitor
from .hooks import GlobalStateCheckHook, RNGStateHook
from .launch import rendezvous_address
from .run_guard import MetricsHistoryHook, StopOnSignalHook, claim_output_dir_on_all_ranks, truncate_metrics
from .setup import setup_run
from .trainer import PretrainTrainer
from .watchdog import StepWatchdogHook

__all__ = [
    "saved_config",
    "check_resumed_config",
    "agreed_checkpoint",
    "wrap_ddp",
    "prepare_for_training",
    "build_training_model",
    "build_pretrain_trainer",
    "run_pretraining",
    "setup_pretraining",
    "pretrain_main",
]

logger = logging.getLogger(__name__)


def _data_seed(cfg: CfgNode) -> int:
    if cfg.SEED >= 0:
        return cfg.SEED
    logger.warning("SEED < 0: the data order is random, so --resume will not replay it exactly")
    return comm.shared_random_seed()


def _check_device(cfg: CfgNode) -> None:
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"MODEL.DEVICE={cfg.MODEL.DEVICE} but no GPU is available; set MODEL.DEVICE cpu")


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

    diffs = [
        f"{k}: checkpoint {config_value(saved, k)!r} vs now {config_value(cfg, k)!r}"
        for k in _RESUME_INVARIANT_KEYS
        if config_value(saved, k) != config_value(cfg, k)
    ]
    if diffs:
        raise ConfigError("--resume with a different config than the checkpoint's: " + "; ".join(diffs))
    if saved.SOLVER.MAX_ITER != cfg.SOLVER.MAX_ITER:
        logger.warning(
            f"SOLVER.MAX_ITER changed from {saved.SOLVER.MAX_ITER} to {cfg.SOLVER.MAX_ITER}: "
            "schedules follow the new length"
        )


def agreed_checkpoint(checkpointer: PretrainCheckpointer) -> Optional[str]:
    """The checkpoint every process resumes from (None: start from scratch).

    Each process reads ``OUTPUT_DIR/last_checkpoint`` itself; if the processes do not all see
    the same file (name and size), e.g. because OUTPUT_DIR is not a folder shared by every
    machine, every process raises the same error instead of resuming at different iterations
    and hanging in the first collective."""
    path = checkpointer.get_checkpoint_file() if checkpointer.has_checkpoint() else None
    size = os.path.getsize(path) if path and os.path.exists(path) else None
    everyone = comm.all_gather((path, size))
    if any(seen != everyone[0] for seen in everyone):
        found = "; ".join(f"rank {r}: {p or 'no checkpoint'} ({s} bytes)" for r, (p, s) in enumerate(everyone))
        raise RuntimeError(
            "--resume: the processes found different checkpoints in OUTPUT_DIR (" + found + "). "
            "OUTPUT_DIR must be one folder shared by every machine of the job."
        )
    if path is not None and size is None:
        raise FileNotFoundError(f"--resume: {checkpointer.save_dir}/last_checkpoint names {path}, which does not exist")
    return path


def wrap_ddp(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """DistributedDataParallel over ``model`` when there are several processes.

    Detectron2's ``create_ddp_model`` always passes ``device_ids=[local_rank]``, which DDP
    refuses for a CPU module, hence this wrapper. Buffers are not broadcast every step: the
    method's global buffers are kept equal by the method itself (and checked), and BN's running
    statistics are per process (MoCo's shuffle-BN) or synchronised by SyncBN."""
    if comm.get_world_size() == 1:
        return model
    device_ids = [comm.get_local_rank()] if torch.device(device).type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


def prepare_for_training(model: torch.nn.Module, cfg: CfgNode):
    """(model, optimizer, train_model): SyncBN on GPUs under DDP (``PRETRAIN.SYNC_BN``),
    channels_last (``PRETRAIN.CHANNELS_LAST``), the optimiser, then the model the step runs:
    DDP over several processes, ``torch.compile`` (``PRETRAIN.COMPILE``). ``model`` stays the
    unwrapped meta-architecture (what checkpoints save)."""
    if cfg.PRETRAIN.SYNC_BN and comm.get_world_size() > 1 and cfg.MODEL.DEVICE.startswith("cuda"):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cfg.PRETRAIN.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)
    train_model = wrap_ddp(model, cfg.MODEL.DEVICE)
    if cfg.PRETRAIN.COMPILE:
        train_model = torch.compile(train_model)
    return model, optimizer, train_model


def build_training_model(cfg: CfgNode, num_images: int):
    """``cfg``'s method to train on ``num_images`` images: the model gets the dataset size and the
    optimiser steps per epoch the schedule uses (``iterations_per_epoch``; at least 1: a set smaller
    than a batch, trained with ``SOLVER.MAX_ITER``, ends an epoch every step), on ``MODEL.DEVICE``."""
    iters_per_epoch = max(1, iterations_per_epoch(num_images, cfg.SOLVER.IMS_PER_BATCH))
    return build_pretrain_model(cfg, num_images, iters_per_epoch)


def build_pretrain_trainer(cfg: CfgNode, resume: bool = False) -> Tuple[PretrainTrainer, int, CfgNode]:
    """Data (the method's preparation and mapper from ``soco.data.method_data``) -> resolved
    schedule -> model (given the dataset size) -> optimiser -> trainer with hooks -> (resumed) state.

    Returns (trainer, start_iter, resolved cfg). ``cfg`` must be the merged, frozen config of
    this process (after ``default_setup``).
    """
    _check_device(cfg)
    method = pretrain_method_class(cfg)
    world_size = comm.get_world_size()
    dicts = prepare_dataset_dicts(cfg, get_pretrain_dataset_dicts(cfg))
    check_dataset_size(cfg, len(dicts))
    cfg = resolve_schedule(cfg, len(dicts), world_size)
    iters_per_epoch = iterations_per_epoch(len(dicts), cfg.SOLVER.IMS_PER_BATCH)
    logger.info(
        f"{method.__name__}: {cfg.PRETRAIN.NUM_IMAGES} images, batch {cfg.SOLVER.IMS_PER_BATCH}, "
        f"{cfg.SOLVER.MAX_ITER} iterations ({cfg.SOLVER.WARMUP_ITERS} warm-up)"
    )

    model = build_training_model(cfg, len(dicts))  # on MODEL.DEVICE
    # Random initialisations (weights, CoKe's centres, CLSA's queue) are drawn per process
    # (seeds differ by rank): rank 0's become everyone's.
    broadcast_module_state(model)
    model, optimizer, train_model = prepare_for_training(model, cfg)

    loader = build_pretrain_loader(
        cfg, dicts, build_mapper(cfg), _data_seed(cfg), comm.get_rank(), world_size
    )
    trainer = PretrainTrainer(
        train_model, loader, optimizer, cfg.PRETRAIN.ACCUM_STEPS, cfg.SOLVER.AMP.ENABLED, cfg.MODEL.DEVICE,
        cfg.PRETRAIN.LOG_PERIOD,
    )
    # The unwrapped model is saved, so names never carry "module." or "_orig_mod.".
    knn = KNNMonitor.from_config(cfg) if cfg.PRETRAIN.HEALTH.KNN_PERIOD > 0 and comm.is_main_process() else None
    checkpointer = PretrainCheckpointer(model, cfg.OUTPUT_DIR, cfg.dump(), trainer=weakref.proxy(trainer))
    trainer.register_hooks(
        [
            # First: its step time spans every other hook's work.
            StepWatchdogHook(rendezvous_address(), comm.get_rank(), world_size, 60 * cfg.PRETRAIN.DIST_TIMEOUT_MINUTES),
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=build_lr_multiplier(cfg, method.zero_lr_iterations(cfg, iters_per_epoch))),
            RNGStateHook(cfg.SOLVER.CHECKPOINT_PERIOD),
            GlobalStateCheckHook(model, cfg.PRETRAIN.STATE_CHECK_PERIOD),
            # Before the writer, so each check's health/* scalars are written at its iteration.
            HealthMonitorHook(model, cfg.PRETRAIN.HEALTH.PERIOD, HealthThresholds.from_config(cfg), cfg.OUTPUT_DIR,
                              knn, cfg.PRETRAIN.HEALTH.KNN_PERIOD),
            hooks.PeriodicCheckpointer(checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD) if comm.is_main_process() else None,
            MetricsHistoryHook(),
            StopOnSignalHook(checkpointer),  # after every hook that updates state; the writer logs its iteration
            hooks.PeriodicWriter(default_writers(cfg.OUTPUT_DIR, cfg.SOLVER.MAX_ITER), period=cfg.PRETRAIN.LOG_PERIOD)
            if comm.is_main_process()
            else None,
        ]
    )
    start_iter = 0
    # Every process resumes from the same file (the newest readable one), or all stop.
    resume_from = agreed_checkpoint(checkpointer) if resume else None
    if resume_from is not None:
        check_resumed_config(saved_config(resume_from), cfg)
        checkpointer.load(resume_from)
        start_iter = trainer.iter + 1
        logger.info(f"Resuming from {resume_from} at iteration {start_iter}")
    elif cfg.MODEL.WEIGHTS:
        checkpointer.load(cfg.MODEL.WEIGHTS, checkpointables=[])
    if comm.is_main_process():
        truncate_metrics(os.path.join(cfg.OUTPUT_DIR, "metrics.json"), start_iter)
    return trainer, start_iter, cfg


def run_pretraining(cfg: CfgNode, resume: bool = False) -> PretrainTrainer:
    """Build everything and train from the start (or the last checkpoint with ``resume``).

    A collective that times out in an iteration the watchdog reported late raises
    :class:`soco.engine.watchdog.StalledRankError` naming the stalled rank."""
    trainer, start_iter, cfg = build_pretrain_trainer(cfg, resume)
    if start_iter >= cfg.SOLVER.MAX_ITER:
        logger.info(f"Nothing to do: the last checkpoint is at the end ({cfg.SOLVER.MAX_ITER} iterations)")
        return trainer
    try:
        trainer.train(start_iter, cfg.SOLVER.MAX_ITER)
    except RuntimeError as exc:  # a collective's timeout: name the stalled rank the watchdog saw
        watchdog = next(h for h in trainer._hooks if isinstance(h, StepWatchdogHook))
        stalled = watchdog.stalled_error(exc)
        if stalled is None:
            raise
        raise stalled from exc
    return trainer


def setup_pretraining(args) -> CfgNode:
    """One process's config and set-up from a Detectron2 argument namespace (``config_file``,
    ``opts``, ``resume``, optional ``overwrite``): the config (unknown keys name themselves,
    checked at load), the claimed output folder, logging with the config dump kept off the
    console, Detectron2's ``default_setup`` (config.yaml, seed)."""
    cfg = load_pretrain_config(args.config_file, args.opts)
    if not cfg.OUTPUT_DIR:
        raise ValueError("OUTPUT_DIR is empty; set it in the config or on the command line")
    cfg.freeze()
    # Before default_setup writes config.yaml into the folder.
    claim_output_dir_on_all_ranks(cfg.OUTPUT_DIR, args.resume, getattr(args, "overwrite", False))
    setup_run(cfg, args)
    return cfg


def pretrain_main(args) -> None:
    """What every process of ``tools/pretrain_net.py`` (and the demo's pretraining step) runs."""
    cfg = setup_pretraining(args)
    if args.eval_only:
        raise ValueError("--eval-only does not apply to pretraining; use tools/eval_representation.py")
    run_pretraining(cfg, resume=args.resume)
