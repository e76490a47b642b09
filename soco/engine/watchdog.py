"""Name a stalled rank instead of waiting silently.

A rank that stops answering (SIGSTOP, a hung data loader, a frozen machine) leaves the others
blocked in their next collective until PRETRAIN.DIST_TIMEOUT_MINUTES pass, and the backend's
timeout error says neither who nor where. :class:`StepWatchdogHook` runs a thread per process
that publishes a heartbeat (iteration, phase, wall time) to the job's TCP store every second on
its own connection, so a rank whose main thread is blocked still beats, and a rank that beats no
more is frozen. Once a step takes far longer than the recent ones it reads everyone's heartbeat
and logs which rank is late and where; when the collective then times out, the run stops with a
:class:`StalledRankError` naming that rank and the iteration.
"""

import json
import logging
import statistics
import threading
import time
from collections import deque
from datetime import timedelta
from typing import List, Optional, Tuple

import torch.distributed as dist
from detectron2.engine import HookBase

__all__ = ["StalledRankError", "StepWatchdogHook"]

logger = logging.getLogger(__name__)

_KEY = "soco/watchdog/rank{}"


class StalledRankError(RuntimeError):
    """A collective timed out while another rank was stalled; the message names it."""


class StepWatchdogHook(HookBase):
    """Heartbeats of every rank and a report on the late ones (see the module docstring).

    ``address``: (host, port, key prefix) of the job's TCP store (``soco.engine.launch.rendezvous_address``);
    None or one process disables the hook. ``timeout_s``: the collectives' timeout. A step is
    slow once it has taken longer than ``factor`` times the median of the last 20 steps and
    ``min_slow_s`` seconds, or half the timeout, whichever comes first; a rank is frozen when
    its heartbeat is older than ``frozen_s`` seconds.
    """

    def __init__(self, address: Optional[Tuple[str, int, str]], rank: int, world_size: int, timeout_s: float,
                 factor: float = 10.0, min_slow_s: float = 60.0, beat_s: float = 1.0, frozen_s: float = 5.0):
        self.address = address if world_size > 1 else None
        self.rank, self.world_size = rank, world_size
        self.timeout_s = timeout_s
        self.factor, self.min_slow_s, self.beat_s, self.frozen_s = factor, min_slow_s, beat_s, frozen_s
        self._durations = deque(maxlen=20)
        self._iteration, self._phase, self._step_start = -1, "starting", time.monotonic()
        self._reported_iteration: Optional[int] = None
        self.report: Optional[str] = None  # the last report, for the error at the timeout
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._store = None

    # ------------------------------------------------------------------ trainer side
    def before_train(self):
        if self.address is None:
            return
        host, port, prefix = self.address
        self._store = dist.PrefixStore(prefix, dist.TCPStore(
            host, port, is_master=False, timeout=timedelta(seconds=self.frozen_s), wait_for_workers=False))
        self._thread = threading.Thread(target=self._run, name="soco-step-watchdog", daemon=True)
        self._thread.start()

    def before_step(self):
        self._iteration, self._phase, self._step_start = self.trainer.iter, "in the step", time.monotonic()

    def after_step(self):
        self._durations.append(time.monotonic() - self._step_start)
        self._phase = "in the hooks after the step (gathers, checkpoint)"

    def after_train(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.beat_s + self.frozen_s)
        self._thread = None

    def stalled_error(self, exc: BaseException) -> Optional[StalledRankError]:
        """The error to raise instead of ``exc`` when the current iteration was reported late."""
        if self.report is None or self._reported_iteration != self._iteration:
            return None
        return StalledRankError(f"{self.report}; the collective timed out after {self.timeout_s / 60:g} min "
                                f"(PRETRAIN.DIST_TIMEOUT_MINUTES): {type(exc).__name__}: {str(exc).splitlines()[0]}")

    # ------------------------------------------------------------------ watchdog thread
    def slow_after_s(self) -> float:
        """Seconds after which the current step counts as slow."""
        recent = statistics.median(self._durations) if self._durations else 0.0
        return min(max(self.factor * recent, self.min_slow_s), self.timeout_s / 2)

    def _run(self):
        while not self._stop.wait(self.beat_s):
            try:
                self._store.set(_KEY.format(self.rank), json.dumps(
                    {"iteration": self._iteration, "phase": self._phase, "time": time.time()}))
            except Exception:  # noqa: BLE001 - the store's host is frozen or gone; the report says so
                pass
            elapsed = time.monotonic() - self._step_start
            if elapsed > self.slow_after_s() and self._reported_iteration != self._iteration:
                self._reported_iteration = self._iteration
                self.report = self._late_report(elapsed)
                logger.warning(self.report)

    def _late_report(self, elapsed: float) -> str:
        """Where every other rank is: frozen ones (no heartbeat) first, then those behind."""
        head = (f"iteration {self._iteration} has taken {elapsed:.0f} s on rank {self.rank}, {self._phase} "
                f"(recent steps: {statistics.median(self._durations) if self._durations else 0:.2f} s)")
        frozen: List[str] = []
        others: List[str] = []
        now = time.time()
        for r in range(self.world_size):
            if r == self.rank:
                continue
            try:
                beat = json.loads(self._store.get(_KEY.format(r)))
            except Exception:  # noqa: BLE001 - a timeout: nobody answers for the store's host
                return (f"{head}; the job's rendezvous store does not answer: rank 0 (which hosts it) is stalled "
                        "or its machine is unreachable")
            age = now - beat["time"]
            where = f"iteration {beat['iteration']}, {beat['phase']}"
            if age > self.frozen_s:
                frozen.append(f"rank {r} is not responding (no heartbeat for {age:.0f} s; last seen at {where}): "
                              "stopped, frozen or its machine is gone")
            elif beat["iteration"] < self._iteration:
                frozen.append(f"rank {r} is behind, at {where}")
            else:
                others.append(f"rank {r} at {where}")
        return "; ".join([head] + frozen + others)
