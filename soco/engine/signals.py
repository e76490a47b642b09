"""Stop requests that reach a job by signal: which signals, the exit codes, and the path from a
launcher that spawned the workers to those workers.

A signal can reach the launcher only (``kill PID``), every process (``kill -- -PGID``, Ctrl-C,
Slurm's time limit) or one rank (``scancel --signal``, a pre-emption notice). Workers act on
what they receive themselves (``soco.engine.run_guard.StopOnSignalHook``) and, when a launcher
spawned them, on what it received: the launcher writes the signal into a shared integer that
every worker reads after each iteration. A shared value rather than a forwarded signal,
because a signal sent to the whole group already reached the workers, and a second signal means
"stop at once".
"""

import logging
import os
import signal
from typing import Callable, Optional

__all__ = ["STOP_SIGNALS", "LauncherSignals", "early_signal", "exit_code", "launcher_request",
           "record_early_signals", "set_launcher_flag"]

logger = logging.getLogger(__name__)

# SIGUSR1: what Slurm sends before the time limit with --signal=USR1@SECONDS (pre-emption notice).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)

_launcher_flag = None  # in a spawned worker: the launcher's shared integer (0: no request)
_early_signal = 0  # a stop signal that arrived before the training loop took over the handlers


def exit_code(signum: int) -> int:
    """The shell's convention for a process stopped by ``signum``: 128 + number (SIGINT 130,
    SIGUSR1 138, SIGTERM 143)."""
    return 128 + signum


def set_launcher_flag(flag) -> None:
    """In a spawned worker: read stop requests from ``flag`` (a shared ``multiprocessing.Value``)."""
    global _launcher_flag
    _launcher_flag = flag


def launcher_request() -> int:
    """The signal the launcher of this worker received (0: none, or no launcher)."""
    return _launcher_flag.value if _launcher_flag is not None else 0


def record_early_signals() -> dict:
    """From process start until the training loop installs its own handlers, record a stop
    signal instead of dying of it (a pre-emption notice can come while data is being set up);
    the loop then stops after its first iteration with a checkpoint. Returns the previous
    handlers, which the caller restores once its work is done (a signal while the process
    shuts down must act as usual)."""

    def record(signum, frame):
        global _early_signal
        if _early_signal:  # a second signal (or set-up hangs): act as without this handler
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        _early_signal = signum
        logger.warning(f"{signal.Signals(signum).name} received during set-up: stopping after the first iteration "
                       "(send it again to stop at once)")

    return {s: signal.signal(s, record) for s in STOP_SIGNALS}


def early_signal() -> int:
    """The stop signal :func:`record_early_signals` recorded (0: none)."""
    return _early_signal


class LauncherSignals:
    """In a launcher, for the life of its workers: the first stop signal is written into
    ``flag`` (the workers checkpoint at the end of their iteration and stop); a second one calls
    ``stop_now`` (kill the workers: the last checkpoint stays valid) and exits with
    :func:`exit_code`. Handlers are restored on exit."""

    def __init__(self, flag, stop_now: Callable[[], None]):
        self.flag = flag
        self.stop_now = stop_now
        self._previous = {}

    @property
    def received(self) -> Optional[int]:
        return self.flag.value or None

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.flag.value:
            logger.warning(f"launcher (pid {os.getpid()}): second signal {name}: stopping the workers at once")
            self.stop_now()
            raise SystemExit(exit_code(self.flag.value))
        self.flag.value = signum
        logger.warning(f"launcher (pid {os.getpid()}): {name} received: every process saves a checkpoint after "
                       "its current iteration and stops (send it again to stop at once)")

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False
