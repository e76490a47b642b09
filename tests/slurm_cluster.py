"""A one-node Slurm cluster on this machine for tests/test_slurm.py (not a test module).

Debian's packages (``apt-get install -y --no-install-recommends slurmctld slurmd slurm-client
munge``, as root) run it: ``munged`` as the ``munge`` user on a hand-made /run/munge, then
``slurmctld -i`` and ``slurmd`` with a slurm.conf whose control host and only node are this
machine (``hostname -s``), its CPUs, no accounting, state and spool folders in a scratch folder
and free ports. Every client command gets the config through ``SLURM_CONF``, which batch jobs
inherit. :func:`unavailable` says why it cannot run here (None when it can).
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from typing import List, Optional

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "scancel")


def unavailable() -> Optional[str]:
    """Why a local Slurm cannot run here, or None."""
    if os.geteuid() != 0:
        return "a local Slurm needs root (slurmd runs jobs as their users)"
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        return ("Slurm is not installed (missing " + ", ".join(missing) + "); as root: apt-get install -y "
                "--no-install-recommends slurmctld slurmd slurm-client munge")
    return None


def _free_ports(n: int) -> List[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


CONF = """ClusterName=soco-test
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
KillWait=30
MinJobAge=300
JobRequeue=1
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class LocalSlurm:
    """Start with :meth:`start`, stop with :meth:`stop` (kills what it started, by pid).
    ``env``: the environment for client commands (SLURM_CONF set)."""

    def __init__(self, root: str):
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.conf = os.path.join(root, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self._started: List[subprocess.Popen] = []
        self._munged_pid: Optional[int] = None

    def start(self, timeout: float = 60) -> "LocalSlurm":
        os.makedirs(os.path.join(self.root, "state"), exist_ok=True)
        os.makedirs(os.path.join(self.root, "spool"), exist_ok=True)
        ctld_port, d_port = _free_ports(2)
        with open(self.conf, "w") as f:
            f.write(CONF.format(host=self.host, ctld_port=ctld_port, d_port=d_port, root=self.root,
                                cpus=os.cpu_count() or 1))
        self._start_munge()
        for daemon in (["slurmctld", "-D", "-i"], ["slurmd", "-D"]):
            self._started.append(subprocess.Popen(daemon, env=self.env, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL, start_new_session=True))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
            if state in ("idle", "mixed", "allocated"):
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the local Slurm did not come up in {timeout} s (node state {state!r}); logs in {self.root}")

    def _start_munge(self) -> None:
        probe = subprocess.run(["munge", "-n"], capture_output=True)
        if probe.returncode == 0:
            return  # a munged already runs (started by the system or an earlier test)
        os.makedirs("/run/munge", exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        pid_file = "/run/munge/soco-test-munged.pid"  # a folder the munge user may write
        subprocess.run(["runuser", "-u", "munge", "--", "munged", "--pid-file", pid_file, "--force"]
                       if shutil.which("runuser") else ["munged", "--force"], check=True)
        deadline = time.monotonic() + 10
        while subprocess.run(["munge", "-n"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("munged did not start")
            time.sleep(0.2)
        if os.path.exists(pid_file):
            self._munged_pid = int(open(pid_file).read().split()[0])

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(command), env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def stop(self) -> None:
        for process in reversed(self._started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._started = []
        if self._munged_pid is not None:
            try:
                os.kill(self._munged_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self._munged_pid = None
