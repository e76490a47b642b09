"""Start the processes of a job: spawned here (one per GPU, or per CPU slot with gloo), or
started by a cluster launcher (torchrun, Slurm's srun) and joined through its env:// contract.

Why not Detectron2's ``launch``: 0.6's asserts CUDA and always uses NCCL, so it cannot run on
CPU; and neither its launcher nor PyTorch's spawn survives a signal gracefully (the launcher
dies of SIGTERM's default action, PyTorch then sends every worker SIGINT as its parent-death
signal, and the spawn wrapper swallows the resulting ``KeyboardInterrupt``). Here the launcher
catches SIGINT / SIGTERM / SIGUSR1, hands the request to its workers (``soco.engine.signals``),
waits for them to write their checkpoint and exits 128 + signal. The worker's set-up is the same
as Detectron2's (process group, per-machine group for ``comm.get_local_rank``, the GPU of the
local rank) on every path, so the trainer, sampler, checkpointer and hooks are those of one
program. Works with Detectron2 0.6 and with the official Detectron2
(``comm.create_local_process_group``) without editing either.
"""

import logging
import os
import signal
import socket
from datetime import timedelta
from typing import Any, Callable, Optional, Sequence, Tuple
from urllib.parse import urlparse

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.utils import comm

from ..utils.errors import EXIT_INPUT_ERROR, InputError, debugging, print_input_error
from .cluster import cluster_process, restart_warning
from .signals import STOP_SIGNALS, LauncherSignals, exit_code, record_early_signals, set_launcher_flag

__all__ = ["free_local_url", "launch", "rendezvous_address"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=10)
# After one worker failed: seconds the others get to exit by themselves, then again after SIGTERM
# before SIGKILL (a stopped or hung worker must not keep the job alive).
FAILURE_GRACE_S = 5.0
_STOP_CODES = {exit_code(s) for s in STOP_SIGNALS}

_rendezvous: Optional[Tuple[str, int, str]] = None  # in a worker: (host, port, key prefix) of the job's TCP store


def free_local_url() -> str:
    """tcp://127.0.0.1:PORT with a port free at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def rendezvous_address() -> Optional[Tuple[str, int, str]]:
    """(host, port, key prefix) of the TCP store this process joined its job through; None for
    one process or a file:// rendezvous. The prefix ("" or "soco/attempt_N") keeps the keys of
    a torchrun restart attempt apart from those of the attempts before it."""
    return _rendezvous


def launch(
    main_func: Callable[..., Any],
    num_processes_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: Optional[str] = None,
    args: Sequence[Any] = (),
    device: str = "cuda",
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Run ``main_func(*args)`` in every process of the job.

    Started by torchrun or srun (``soco.engine.cluster``) with a world size above 1: this
    process is one rank; it joins the others (env://) and runs ``main_func``. The counts must
    then be 1 under torchrun; under srun, counts above 1 mean one task per machine that spawns
    its processes as told (Slurm's variables are then ignored). Otherwise ``num_processes_per_machine`` processes are spawned on this machine
    (world size = that times ``num_machines``; one process runs ``main_func`` in place).
    ``device``: the config's MODEL.DEVICE ("cuda..." -> NCCL, one GPU per process; "cpu" ->
    gloo). ``dist_url``: "tcp://HOST:PORT" of machine 0; None or "auto" picks a free local port
    (one machine only). ``timeout``: how long a collective waits for a missing process.

    A stop signal (SIGINT, SIGTERM, SIGUSR1) makes every process save one checkpoint at the
    same iteration; this function then raises ``SystemExit(128 + signal)`` once all have.
    """
    backend = "gloo" if torch.device(device).type == "cpu" else "nccl"
    cluster = cluster_process(os.environ)
    counts_given = num_processes_per_machine != 1 or num_machines != 1
    if cluster is not None and cluster.launcher == "slurm" and counts_given:
        cluster = None  # one srun task per machine that spawns its processes itself, as told
    if cluster is not None and cluster.world_size > 1:
        if counts_given:
            raise ValueError(
                f"this process was started by torchrun as rank {cluster.rank} of {cluster.world_size}, which "
                "starts one process per GPU (or CPU slot) itself: leave --num-gpus and --num-machines at 1"
            )
        os.environ.update(MASTER_ADDR=cluster.master_addr, MASTER_PORT=str(cluster.master_port),
                          RANK=str(cluster.rank), WORLD_SIZE=str(cluster.world_size))
        logger.info(f"{cluster.launcher}: rank {cluster.rank} of {cluster.world_size} "
                    f"(rendezvous {cluster.master_addr}:{cluster.master_port})")
        warning = restart_warning(cluster, os.environ)
        if warning and cluster.rank == 0:
            logger.warning(warning)
        _run_rank(main_func, tuple(args), backend, "env://", cluster.rank, cluster.world_size,
                  cluster.local_rank, cluster.local_world_size, timeout, cluster.store_prefix)
        return
    world_size = num_processes_per_machine * num_machines
    if world_size == 1:
        main_func(*args)
        return
    if dist_url in (None, "auto"):
        if num_machines > 1:
            raise ValueError("--dist-url auto works on one machine only; give every machine tcp://MACHINE0:PORT")
        dist_url = free_local_url()
    _spawn(main_func, tuple(args), backend, dist_url, num_processes_per_machine, machine_rank, world_size, timeout)


def _spawn(main_func, args, backend, dist_url, num_per_machine, machine_rank, world_size, timeout) -> None:
    """Spawn the workers of this machine, relay stop signals to them, wait for all of them."""
    context = mp.get_context("spawn")
    request, stopped = context.Value("i", 0), context.Value("i", 0)
    workers = mp.start_processes(
        _spawned_worker,
        nprocs=num_per_machine,
        args=(main_func, args, backend, dist_url, machine_rank, num_per_machine, world_size, timeout, request, stopped),
        daemon=False,
        start_method="spawn",
        join=False,
    )

    def kill_all():
        for process in workers.processes:
            if process.is_alive():
                process.kill()

    with LauncherSignals(request, kill_all) as signals:
        try:
            while not workers.join(grace_period=FAILURE_GRACE_S):
                pass
        except mp.ProcessExitedException as exc:
            if signals.received and exc.exit_code in _STOP_CODES:  # stopped at once by a second signal
                raise SystemExit(exit_code(signals.received)) from None
            if exc.exit_code == EXIT_INPUT_ERROR:  # a worker reported an input error on one line
                raise SystemExit(EXIT_INPUT_ERROR) from None
            raise
    if stopped.value:
        raise SystemExit(stopped.value)


def _spawned_worker(local_rank, main_func, args, backend, dist_url, machine_rank, num_per_machine, world_size,
                    timeout, request, stopped):
    set_launcher_flag(request)
    try:
        _run_rank(main_func, args, backend, dist_url, machine_rank * num_per_machine + local_rank, world_size,
                  local_rank, num_per_machine, timeout)
    except SystemExit as exc:
        if exc.code not in _STOP_CODES:
            raise
        stopped.value = exc.code  # a graceful stop: the launcher exits with this code once all are done
    except KeyboardInterrupt:  # a second signal; PyTorch's wrapper would swallow it and exit 0
        raise SystemExit(exit_code(request.value or signal.SIGINT)) from None
    except InputError as exc:
        # Every rank meets the same bad input (e.g. more clusters than images): the first
        # process of each machine says it on one line, as a tool run in one process does (so
        # every machine's log has the reason), and every worker exits 2.
        if debugging():
            raise
        if local_rank == 0:
            print_input_error(exc)
        raise SystemExit(EXIT_INPUT_ERROR) from None


def _run_rank(main_func, args, backend, init_method, rank, world_size, local_rank, local_world_size, timeout,
              store_prefix=""):
    """Join the job as ``rank`` and run ``main_func(*args)``; what every path shares.
    ``store_prefix``: with env://, a client of the store at MASTER_ADDR:MASTER_PORT (hosted by
    torchrun's agent) whose keys all carry this prefix ("" -> PyTorch's own env:// set-up)."""
    global _rendezvous
    previous_handlers = record_early_signals()
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"local rank {local_rank} needs GPU {local_rank}, but {torch.cuda.device_count()} are visible")
        torch.cuda.set_device(local_rank)
    try:
        if store_prefix:
            store = dist.PrefixStore(store_prefix, dist.TCPStore(
                os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False, timeout=timeout))
            dist.init_process_group(backend, store=store, world_size=world_size, rank=rank, timeout=timeout)
        else:
            dist.init_process_group(backend, init_method=init_method, world_size=world_size, rank=rank, timeout=timeout)
    except Exception:
        logger.error(f"could not join the process group at {init_method} as rank {rank} of {world_size}")
        raise
    if init_method == "env://":
        _rendezvous = (os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), store_prefix)
    elif init_method.startswith("tcp://"):
        url = urlparse(init_method)
        _rendezvous = (url.hostname, url.port, "")
    _set_local_process_group(local_world_size, rank // local_world_size)
    if backend == "gloo" and "OMP_NUM_THREADS" not in os.environ:  # share the cores, do not oversubscribe
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world_size))
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        dist.destroy_process_group()


def _set_local_process_group(num_per_machine: int, machine_rank: int) -> None:
    """Detectron2's per-machine group, as its own launcher creates it (0.6 sets a module
    global; later versions have ``create_local_process_group``)."""
    if hasattr(comm, "create_local_process_group"):
        comm.create_local_process_group(num_per_machine)
        return
    for i in range(dist.get_world_size() // num_per_machine):
        group = dist.new_group(list(range(i * num_per_machine, (i + 1) * num_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
