"""One run per output folder, nothing lost on Ctrl-C / SIGTERM, metrics.json without repeats.

- ``claim_output_dir``: a lock file ``OUTPUT_DIR/run.lock`` (host, pid, start time) held with
  ``flock`` for the life of the process, so a second concurrent run into the same folder is
  refused; the kernel drops the lock when a process dies, so a lock left by a killed job is
  stale and taken over. Starting without ``--resume`` in a folder that holds checkpoints is
  refused unless ``overwrite`` is set, which deletes the old checkpoints first.
  ``claim_output_dir_on_all_ranks`` does this on rank 0 and tells every rank of the job, on
  every machine, so a refusal stops them all instead of leaving the others waiting for rank 0.
- ``truncate_metrics``: drops the ``metrics.json`` lines of iterations >= the start iteration
  (those a killed job wrote after its last checkpoint), so a resumed run writes each once.
- ``MetricsHistoryHook``: puts the recent values of each logged scalar into checkpoints, so the
  20-iteration medians of ``metrics.json`` continue across a resume as in an uninterrupted run.
- ``StopOnSignalHook``: SIGINT / SIGTERM / SIGUSR1 (Slurm's time limit and pre-emption notice),
  received by any process or by the launcher that spawned them, finish the current iteration,
  save ``model_<iter>.pth`` and exit with 128 + the signal number; every process stops at the
  same iteration.
"""

import fcntl
import glob
import json
import logging
import os
import signal
import socket
import threading
import time
from typing import Optional

from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.events import HistoryBuffer

from ..utils.errors import InputError
from .signals import STOP_SIGNALS, early_signal, exit_code, launcher_request

__all__ = [
    "OutputDirInUseError",
    "add_overwrite_argument",
    "claim_output_dir",
    "claim_output_dir_on_all_ranks",
    "checkpoint_files",
    "truncate_metrics",
    "MetricsHistoryHook",
    "StopOnSignalHook",
]

logger = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
_held_locks = {}  # output dir -> open lock file, kept open (locked) for the life of the process


class OutputDirInUseError(InputError, RuntimeError):
    """Another live run holds the output folder, or it holds checkpoints of an earlier run. An
    input error (the tools print its one line and exit 2): the user picks another folder,
    ``--resume`` or ``--overwrite``, or stops the other run."""


def checkpoint_files(output_dir: str) -> list:
    """The checkpoint files (``model_*.pth``, ``last_checkpoint``) in ``output_dir``."""
    files = glob.glob(os.path.join(output_dir, "model_*.pth"))
    tag = os.path.join(output_dir, "last_checkpoint")
    return sorted(files + ([tag] if os.path.exists(tag) else []))


def _lock(output_dir: str) -> None:
    path = os.path.join(output_dir, LOCK_NAME)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown process"
        f.close()
        raise OutputDirInUseError(
            f"OUTPUT_DIR {output_dir} is in use by another run ({holder}; lock file {path}). "
            "Wait for it to finish, or give this run another OUTPUT_DIR"
        ) from None
    f.seek(0)
    previous = f.read().strip()
    if previous:
        logger.info(f"{path}: taking over a stale lock ({previous}; that process is gone)")
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                        "started": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
    f.flush()
    _held_locks[os.path.abspath(output_dir)] = f


def claim_output_dir(output_dir: str, resume: bool, overwrite: bool) -> None:
    """Lock ``output_dir`` for this process and check that this run may write there.

    Call once per job, in the main process, before anything is written into the folder.

    Raises:
        OutputDirInUseError: another live process holds the lock; or, without ``resume`` and
            ``overwrite``, the folder holds checkpoints (a new run would replace them).
    """
    if os.path.abspath(output_dir) in _held_locks:
        return
    os.makedirs(output_dir, exist_ok=True)
    _lock(output_dir)
    old = checkpoint_files(output_dir)
    if not old or resume:
        return
    if not overwrite:
        raise OutputDirInUseError(
            f"OUTPUT_DIR {output_dir} holds checkpoints of an earlier run ({', '.join(map(os.path.basename, old))}). "
            "Add --resume to continue it, --overwrite to delete them and start again, or choose another OUTPUT_DIR"
        )
    logger.warning(f"--overwrite: deleting {len(old)} checkpoint files of an earlier run in {output_dir}")
    for path in old:
        os.remove(path)


def claim_output_dir_on_all_ranks(output_dir: str, resume: bool, overwrite: bool) -> None:
    """:func:`claim_output_dir` on rank 0, its outcome shared with every rank (one gloo
    all-gather; nothing in a one-process job): a refused claim raises the same
    :class:`OutputDirInUseError` on every rank of every machine."""
    error = None
    if comm.is_main_process():
        try:
            claim_output_dir(output_dir, resume, overwrite)
        except OutputDirInUseError as exc:
            error = str(exc)
    if comm.get_world_size() > 1:
        error = comm.all_gather(error)[0]
    if error is not None:
        raise OutputDirInUseError(error if comm.is_main_process() else f"rank 0 refused the run: {error}")


def truncate_metrics(path: str, start_iter: int) -> int:
    """Cut ``metrics.json`` (one JSON object per line) before its first line whose
    ``iteration`` is >= ``start_iter``; returns the number of lines removed.

    In place (one ``truncate``), so a JSONWriter that already opened the file in append mode
    keeps writing to it. A torn last line (a kill mid-write) is removed too.
    """
    if not os.path.exists(path):
        return 0
    keep_bytes, removed = 0, 0
    with open(path, "rb") as f:
        lines = f.readlines()
    for line in lines:
        try:
            iteration = json.loads(line).get("iteration", -1)
        except ValueError:
            iteration = None
        if removed or iteration is None or iteration >= start_iter:
            removed += 1
        else:
            keep_bytes += len(line)
    if removed:
        os.truncate(path, keep_bytes)
        logger.info(f"{path}: removed {removed} lines of iterations >= {start_iter} (written after the last checkpoint)")
    return removed


class MetricsHistoryHook(HookBase):
    """Checkpoints the last ``keep`` values of every scalar in the EventStorage, and puts them
    back when a resumed run starts, so smoothed values (medians over 20 iterations in
    metrics.json, the console and TensorBoard) equal an uninterrupted run's."""

    def __init__(self, keep: int = 100):
        self.keep = keep
        self._restored = None

    def state_dict(self):
        storage = self.trainer.storage
        return {
            name: {"values": [[float(v), int(i)] for v, i in buf.values()[-self.keep:]],
                   "count": int(buf._count), "global_avg": float(buf.global_avg())}
            for name, buf in storage.histories().items()
        }

    def load_state_dict(self, state_dict):
        self._restored = state_dict  # the EventStorage only exists once training starts

    def before_train(self):
        if not self._restored:
            return
        histories = self.trainer.storage._history  # EventStorage has no public setter
        for name, saved in self._restored.items():
            buf = HistoryBuffer()
            for value, iteration in saved["values"]:
                buf.update(value, iteration)
            # Detectron2's HistoryBuffer has no API to restore its running average.
            buf._count, buf._global_avg = saved["count"], saved["global_avg"]
            histories[name] = buf
        self._restored = None


class StopOnSignalHook(HookBase):
    """On SIGINT, SIGTERM or SIGUSR1 (``soco.engine.signals.STOP_SIGNALS``) to this process or
    to the launcher that spawned it, finish the current iteration, save
    ``model_<iter:07d>.pth`` (what ``--resume`` continues from, losing nothing) and raise
    ``SystemExit(128 + signal)``.

    Register it after every hook whose ``after_step`` changes state (schedules, EMA) and
    before the PeriodicWriter, which then logs the last iteration once, in ``after_train``.

    With several processes the requests are gathered every iteration, so all stop at the same
    one whichever process the signal reached. A second signal stops at once (the last periodic
    checkpoint stays valid), except in a Slurm job, whose time limit signals the tasks twice
    (slurmstepd, then srun) and which SIGKILLs them after KillWait anyway.
    """

    def __init__(self, checkpointer):
        self.checkpointer = checkpointer
        self.received: Optional[int] = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received is not None:
            if "SLURM_JOB_ID" in os.environ:  # Slurm repeats its signals (stepd, then srun) and SIGKILLs after KillWait
                logger.warning(f"{signal.Signals(signum).name} again: still saving (under Slurm a second signal "
                               "does not stop at once)")
                return
            raise KeyboardInterrupt(f"second signal {signal.Signals(signum).name}")
        self.received = signum
        logger.warning(f"{signal.Signals(signum).name} received: saving a checkpoint after this iteration "
                       "(send it again to stop at once)")

    def before_train(self):
        self.received = self.received or early_signal() or None
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}

    def after_train(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def after_step(self):
        local = (self.received or 0, launcher_request())
        flags = comm.all_gather(local) if comm.get_world_size() > 1 else [local]
        signum = max(max(f) for f in flags)
        if not signum:
            return
        iteration = self.trainer.iter
        name = f"model_{iteration:07d}"
        self.checkpointer.save(name, iteration=iteration)
        comm.synchronize()
        ranks = [r for r, (own, _) in enumerate(flags) if own == signum]
        via = [f"rank {r}" for r in ranks] + (["the launcher"] if any(f[1] == signum for f in flags) else [])
        logger.warning(f"stopped by {signal.Signals(signum).name} (received by {', '.join(via)}) after iteration "
                       f"{iteration}; {name}.pth written: rerun with --resume to continue")
        self.after_train()  # restore the handlers now: a later hook's after_train may fail
        raise SystemExit(exit_code(signum))


def add_overwrite_argument(parser):
    """Add ``--overwrite`` to a tool's argument parser; returns the parser."""
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run in an OUTPUT_DIR holding checkpoints, deleting them "
                             "(without it, such a folder is refused unless --resume)")
    return parser
