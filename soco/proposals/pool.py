"""The proposal generator's process pool: workers that may die or hang without stopping a run.

Workers are a ``concurrent.futures.ProcessPoolExecutor``. A worker that dies (the OOM killer on
a huge image, a crash in a decoder) breaks the pool; the images that were in flight are then
rerun one at a time in a separate worker, the one whose worker dies again is recorded as a
failure ("worker died") and the run goes on, so a rerun never meets it again. An image still in
flight ``image_timeout`` seconds after it was handed to the pool (a decoder stuck in a loop, a
search that never ends) is treated the same way: the pool's workers are stopped, the images in
flight are rerun one at a time under the same limit, and the one that exceeds it again is recorded
as a failure ("timed out ...").
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

__all__ = ["WORKER_DIED", "DEFAULT_IMAGE_TIMEOUT", "default_num_workers", "Workers"]

logger = logging.getLogger(__name__)

WORKER_DIED = "worker died while processing this image (killed, e.g. by the out-of-memory killer, or crashed)"
# Seconds an image may stay in flight (about 1 s is typical at the default working size).
DEFAULT_IMAGE_TIMEOUT = 600.0


def default_num_workers() -> int:
    """Cores available to this process (respects CPU affinity / cgroup pinning)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _worker_init() -> None:
    import signal

    import cv2

    cv2.setNumThreads(1)  # one core per worker: the pool provides the parallelism
    # Ctrl-C reaches the whole process group: the parent alone handles it (keeps finished
    # chunks, stops the pool); a worker interrupted mid-image would only look like a death.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _timed_out(seconds: float) -> str:
    return f"timed out: still in flight after {seconds:g} s (a hung decoder or search); skipped"


class Workers:
    """A process pool that survives the death and the hang of its workers.

    ``run(items)`` maps ``job`` (a picklable top-level function of a task, returning a tuple
    ``(image id, boxes, level, size, failure, seconds)``) over ``(key, task)`` pairs and yields ``(key, result)`` in
    completion order, keeping at most ``2 * num_workers + 2`` tasks submitted. When a worker
    dies, every task in flight fails with ``BrokenProcessPool`` and nothing says which one
    killed it: those tasks are rerun one by one in a one-worker pool, where a death names its
    image, which gets the result "worker died"; then a fresh pool continues. A task in flight
    longer than ``image_timeout`` seconds (None: no limit; counted from its submission, which
    precedes its start by at most two tasks' time) is handled the same way, its rerun limited
    to ``image_timeout`` too.
    """

    def __init__(self, job, num_workers: int, image_timeout: float | None = DEFAULT_IMAGE_TIMEOUT,
                 start_method: str = "spawn"):
        self.job, self.start_method = job, start_method
        self.num_workers = num_workers
        self.image_timeout = image_timeout
        self.window = 2 * num_workers + 2
        self.pool = self._new_pool(num_workers)
        self.single = None

    def _new_pool(self, n: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(n, mp_context=multiprocessing.get_context(self.start_method),
                                   initializer=_worker_init)

    @staticmethod
    def _stop(pool: ProcessPoolExecutor) -> None:
        """Kill the pool's workers, then shut it down. concurrent.futures cannot cancel a running
        task; its worker processes (the private ``_processes``) are the only handle on a hung one."""
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.kill()
        pool.shutdown(wait=True, cancel_futures=True)

    def run(self, items):
        items = iter(items)
        in_flight, deadline = {}, {}
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < self.window:
                item = next(items, None)
                if item is None:
                    exhausted = True
                else:
                    future = self.pool.submit(self.job, item[1])
                    in_flight[future] = item
                    if self.image_timeout:
                        deadline[future] = time.monotonic() + self.image_timeout
            if not in_flight:
                return
            timeout = max(0.0, min(deadline[f] for f in in_flight) - time.monotonic()) if self.image_timeout else None
            done, _ = wait(in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
            if not done:  # the oldest task passed its deadline
                hung = [in_flight[f][1][0] for f in in_flight if deadline[f] <= time.monotonic()]
                logger.warning(f"{', '.join(hung)}: in flight for over {self.image_timeout:g} s; stopping the "
                               f"workers and rerunning the {len(in_flight)} images in flight one at a time")
                suspects = list(in_flight.values())
                in_flight.clear()
                deadline.clear()
                self._stop(self.pool)
                yield from self._isolate(suspects)
                self.pool = self._new_pool(self.num_workers)
                continue
            suspects = []
            for future in done:
                key, task = in_flight.pop(future)
                deadline.pop(future, None)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    suspects.append((key, task))
                    continue
                yield key, result
            if suspects:
                suspects += in_flight.values()
                in_flight.clear()
                deadline.clear()
                self.pool.shutdown(wait=True, cancel_futures=True)
                logger.warning(f"a proposal worker died; rerunning the {len(suspects)} images it may have "
                               "been processing one at a time")
                yield from self._isolate(suspects)
                self.pool = self._new_pool(self.num_workers)

    def _isolate(self, items):
        for key, task in items:
            if self.single is None:
                self.single = self._new_pool(1)
            try:
                result = self.single.submit(self.job, task).result(timeout=self.image_timeout or None)
            except (BrokenProcessPool, FutureTimeout) as exc:
                self._stop(self.single)
                self.single = None
                reason = WORKER_DIED if isinstance(exc, BrokenProcessPool) else _timed_out(self.image_timeout)
                logger.error(f"{task[1]}: {reason}; recorded as a failure")
                result = (task[0], None, -1, None, reason, 0.0)
            yield key, result

    def close(self):
        for pool in (self.pool, self.single):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)


