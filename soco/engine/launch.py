"""Start one process per device: Detectron2's ``launch`` on GPUs, gloo processes on CPU.

Detectron2 0.6's ``launch`` asserts that CUDA is available and always uses NCCL, so on CPU it
stops with ``AssertionError: cuda is not available``. For ``MODEL.DEVICE cpu`` this module
spawns the processes itself, with the gloo backend and the same arguments (processes per
machine, machines, machine rank, ``--dist-url``), sets Detectron2's per-machine process group
(``comm.get_local_rank``) as its launcher does, and calls the same ``main_func``: the trainer,
sampler, checkpointer and hooks are those of a GPU run. Works with Detectron2 0.6 and with the
official Detectron2 (``comm.create_local_process_group``) without editing either.
"""

import logging
import os
import socket
from datetime import timedelta
from typing import Any, Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as detectron2_launch
from detectron2.utils import comm

__all__ = ["free_local_url", "launch"]

DEFAULT_TIMEOUT = timedelta(minutes=30)


def free_local_url() -> str:
    """tcp://127.0.0.1:PORT with a port free at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


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
    """Run ``main_func(*args)`` in ``num_processes_per_machine`` processes on this machine
    (world size = that times ``num_machines``). ``device``: the config's MODEL.DEVICE; "cuda..."
    delegates to Detectron2's launch (one process per GPU, NCCL), "cpu" spawns gloo processes.
    ``dist_url`` "auto" picks a free local port (one machine only)."""
    if torch.device(device).type != "cpu":
        detectron2_launch(main_func, num_processes_per_machine, num_machines, machine_rank, dist_url, args=tuple(args))
        return
    world_size = num_processes_per_machine * num_machines
    if world_size == 1:
        main_func(*args)
        return
    if dist_url in (None, "auto"):
        if num_machines > 1:
            raise ValueError("--dist-url auto works on one machine only; give tcp://MACHINE0:PORT")
        dist_url = free_local_url()
    mp.start_processes(
        _cpu_worker,
        nprocs=num_processes_per_machine,
        args=(main_func, world_size, num_processes_per_machine, machine_rank, dist_url, tuple(args), timeout),
        daemon=False,
        start_method="spawn",
    )


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


def _cpu_worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout):
    rank = machine_rank * num_per_machine + local_rank
    try:
        dist.init_process_group("gloo", init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout)
    except Exception:
        logging.getLogger(__name__).error(f"could not join the process group at {dist_url} as rank {rank}")
        raise
    _set_local_process_group(num_per_machine, machine_rank)
    if "OMP_NUM_THREADS" not in os.environ:  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_per_machine))
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
