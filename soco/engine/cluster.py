"""The env:// contract of cluster launchers: which process this is, when torchrun or Slurm
started it.

torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` in every worker. ``srun`` sets, in every task of a job step,
``SLURM_PROCID`` (rank), ``SLURM_LOCALID`` (rank on the node), ``SLURM_STEP_NUM_TASKS`` (world
size), ``SLURM_STEP_NUM_NODES`` and ``SLURM_STEP_NODELIST`` (a hostlist such
as ``node[03-04,07]``); the batch shell of an ``sbatch`` job sets no ``SLURM_STEP_NUM_TASKS``,
so a tool started there without ``srun`` is not mistaken for one rank of many. Slurm gives no
rendezvous address: the first node of the step hosts it, on ``MASTER_PORT`` when set, else on
a port derived from the job id (the same in every task, different for jobs that share a node).

torchrun's elastic restart (``--max-restarts``) starts new workers against the same store, which
its agent hosts for the whole job (``TORCHELASTIC_USE_AGENT_STORE=True``) and never clears: the
keys of the killed attempt (gloo's addresses of the old workers, among others) are still there,
and the new workers would read them and connect to processes that are gone. Each attempt
therefore keeps its keys under its own prefix (``ClusterProcess.store_prefix``, from
``TORCHELASTIC_RESTART_COUNT``). That count is kept by each machine's agent and grows only when
its own workers fail; an agent that restarts its workers for a machine joining (a replacement
node, or workers still waiting in a collective when the new round begins) does not count it,
so on several machines the prefixes can differ and the restarted workers do not find each other
(an error or a wait until the timeout). There ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` (set for torchrun) makes rank 0 host a
fresh store on a fresh port in every round instead: :func:`restart_warning` says so.
"""

import re
from dataclasses import dataclass
from typing import Mapping, Optional

__all__ = ["ClusterProcess", "cluster_process", "first_host", "restart_warning", "slurm_port"]

_TORCHRUN_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_SLURM_KEYS = ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST")
# Ports derived from a Slurm job id: above the well-known range, below Linux's ephemeral one.
_PORT_BASE, _PORT_SPAN = 20000, 12000


@dataclass(frozen=True)
class ClusterProcess:
    """One process of a job started by a cluster launcher.

    ``launcher``: "torchrun" or "slurm"; ``rank`` in [0, world_size); ``local_rank`` in
    [0, local_world_size) on its machine; ``master_addr``
    and ``master_port``: where rank 0 (torchrun: its agent) hosts the rendezvous;
    ``store_prefix``: "" when this process may use the store as it is, else the prefix that keeps
    this attempt's keys apart from those of an earlier one (torchrun's agent-hosted store)."""

    launcher: str
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    master_addr: str
    master_port: int
    store_prefix: str = ""

    @property
    def machine_rank(self) -> int:
        """Index of this process's machine (launchers place consecutive ranks on a machine)."""
        return self.rank // self.local_world_size


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise ValueError(f"environment variable {key}={env[key]!r} is not an integer") from None


def first_host(nodelist: str) -> str:
    """The first host of a Slurm hostlist: "node[03-04,07],gpu1" -> "node03", "a1,b2" -> "a1"."""
    match = re.match(r"([^\[,]*)(?:\[([^\]]*)\])?([^,]*)", nodelist.strip())
    prefix, ranges, suffix = match.groups()
    if ranges is not None:
        prefix += ranges.split(",")[0].split("-")[0]
    host = prefix + (suffix or "")
    if not host:
        raise ValueError(f"cannot read a host name from the Slurm node list {nodelist!r}")
    return host


def slurm_port(job_id: int) -> int:
    """The rendezvous port of Slurm job ``job_id`` when MASTER_PORT is not set."""
    return _PORT_BASE + job_id % _PORT_SPAN


def cluster_process(env: Mapping[str, str]) -> Optional[ClusterProcess]:
    """This process as torchrun or an ``srun`` step describes it in ``env`` (``os.environ``),
    or None when neither started it. torchrun's variables win over Slurm's (torchrun run by
    srun, one agent per node). ``MASTER_ADDR`` / ``MASTER_PORT`` override Slurm's defaults.

    Raises ValueError naming the variable when one is not an integer, or when the step's tasks
    are not spread evenly over its nodes (Detectron2's per-machine group needs equal counts)."""
    if all(k in env for k in _TORCHRUN_KEYS):
        world = _int(env, "WORLD_SIZE")
        local_world = _int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else world
        agent_store = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and "TORCHELASTIC_RESTART_COUNT" in env
        prefix = f"soco/attempt_{_int(env, 'TORCHELASTIC_RESTART_COUNT')}" if agent_store else ""
        return ClusterProcess(
            "torchrun", _int(env, "RANK"), _int(env, "LOCAL_RANK"), world, local_world,
            env["MASTER_ADDR"], _int(env, "MASTER_PORT"), prefix,
        )
    if all(k in env for k in _SLURM_KEYS):
        world = _int(env, "SLURM_STEP_NUM_TASKS")
        nodes = _int(env, "SLURM_STEP_NUM_NODES") if "SLURM_STEP_NUM_NODES" in env else 1
        if world % nodes:
            raise ValueError(
                f"the Slurm step runs {world} tasks on {nodes} nodes: give every node the same number "
                "(e.g. --ntasks-per-node)"
            )
        port = _int(env, "MASTER_PORT") if "MASTER_PORT" in env else slurm_port(_int(env, "SLURM_JOB_ID"))
        return ClusterProcess(
            "slurm", _int(env, "SLURM_PROCID"), _int(env, "SLURM_LOCALID"), world, world // nodes,
            env.get("MASTER_ADDR") or first_host(env["SLURM_STEP_NODELIST"]), port,
        )
    return None


def restart_warning(process: ClusterProcess, env: Mapping[str, str]) -> Optional[str]:
    """A warning when torchrun may restart the workers of several machines against its agent's
    shared store (see the module docstring), else None."""
    restarts = int(env.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0)
    if not process.store_prefix or restarts == 0 or process.local_world_size == process.world_size:
        return None
    return ("torchrun --max-restarts on several machines with the agent's shared store: the machines' restart "
            "counts can differ after a restart and the new workers then do not find each other; export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 before torchrun (rank 0 then hosts a new store "
            "in every round)")
