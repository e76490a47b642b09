"""Cluster life of tools/pretrain_net.py at world size 2 on CPU (gloo): signals to the launcher,
the process group or one rank; torchrun and Slurm's env:// contract; two jobs on one machine;
a stalled rank. Every run is the tool itself in its own process group (tests/cluster_helpers.py).
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import cluster_helpers as h
from soco.engine.cluster import ClusterProcess, cluster_process, first_host, restart_warning, slurm_port
from soco.engine.signals import exit_code

STOP_AT = 6  # the signal is sent once metrics.json shows this iteration (checkpoints at 4, 9, ...)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from test_engine import write_smooth_images

    root = tmp_path_factory.mktemp("images")
    write_smooth_images(root)
    return str(root)


@pytest.fixture(scope="module")
def uninterrupted(images, tmp_path_factory):
    """OUTPUT_DIR of a run of 2 spawned processes that nothing interrupts."""
    out = str(tmp_path_factory.mktemp("uninterrupted"))
    result = subprocess.run(h.tool_command(images, out, "--num-gpus", "2"), capture_output=True, text=True,
                            env=h.tool_env(), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def _no_cluster_env():
    return {k: v for k, v in h.tool_env().items()
            if not k.startswith(("SLURM_", "TORCHELASTIC_")) and k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE",
                                                                          "MASTER_ADDR", "MASTER_PORT")}


# ------------------------------------------------------------------ the env:// contract
def test_torchrun_variables_are_read():
    env = {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4",
           "MASTER_ADDR": "n0", "MASTER_PORT": "29400", "SLURM_PROCID": "0"}
    assert cluster_process(env) == ClusterProcess("torchrun", 5, 1, 8, 4, "n0", 29400)
    assert cluster_process(env).machine_rank == 1
    # torchrun's agent hosts the store for every restart attempt: each attempt gets its own keys
    elastic = dict(env, TORCHELASTIC_USE_AGENT_STORE="True", TORCHELASTIC_RESTART_COUNT="2")
    assert cluster_process(elastic).store_prefix == "soco/attempt_2"
    assert cluster_process(dict(elastic, TORCHELASTIC_USE_AGENT_STORE="False")).store_prefix == ""


def test_restarts_on_several_machines_with_the_shared_store_are_warned_about():
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8", "MASTER_ADDR": "n0",
           "MASTER_PORT": "29400", "TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RESTART_COUNT": "0",
           "TORCHELASTIC_MAX_RESTARTS": "2"}
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in restart_warning(cluster_process(env), env)
    for quiet in (dict(env, TORCHELASTIC_MAX_RESTARTS="0"), dict(env, LOCAL_WORLD_SIZE="16"),
                  dict(env, TORCHELASTIC_USE_AGENT_STORE="False")):
        assert restart_warning(cluster_process(quiet), quiet) is None


def test_slurm_step_variables_are_read_and_the_batch_shell_is_not_a_rank():
    step = {"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NUM_NODES": "2",
            "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "123456"}
    assert cluster_process(step) == ClusterProcess("slurm", 3, 1, 4, 2, "gpu07", slurm_port(123456))
    assert cluster_process(dict(step, MASTER_ADDR="10.0.0.1", MASTER_PORT="29500")).master_port == 29500
    batch_shell = {k: v for k, v in step.items() if k != "SLURM_STEP_NUM_TASKS"}
    assert cluster_process(batch_shell) is None
    with pytest.raises(ValueError, match="3 tasks on 2 nodes"):
        cluster_process(dict(step, SLURM_STEP_NUM_TASKS="3"))
    with pytest.raises(ValueError, match="SLURM_PROCID='x'"):
        cluster_process(dict(step, SLURM_PROCID="x"))


def test_first_host_of_a_slurm_hostlist():
    assert first_host("node[03-04,07],gpu1") == "node03"
    assert first_host("a1,b2") == "a1"
    assert first_host("rack[2-3]-ib") == "rack2-ib"
    assert slurm_port(7) != slurm_port(8)


# ------------------------------------------------------------------ signals
@pytest.mark.parametrize("target, signum", [("group", signal.SIGTERM), ("launcher", signal.SIGTERM),
                                            ("group", signal.SIGINT)])
def test_signal_stops_every_rank_at_one_checkpoint_and_resume_equals_uninterrupted(
        images, uninterrupted, tmp_path, target, signum):
    out = str(tmp_path / "run")
    job = h.start(h.tool_command(images, out, "--num-gpus", "2"), str(tmp_path / "job.log"))
    try:
        h.wait_for_iteration(out, STOP_AT, job)
        (os.killpg if target == "group" else os.kill)(job.pid, signum)
        assert job.wait(timeout=120) == exit_code(signum), open(tmp_path / "job.log").read()[-3000:]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    stopped = [n for n in h.checkpoint_names(out) if n != "model_0000004.pth"]
    assert len(stopped) == 1, h.checkpoint_names(out)
    iteration = int(stopped[0][6:13])
    assert STOP_AT <= iteration < h.MAX_ITER - 1
    assert open(os.path.join(out, "last_checkpoint")).read() == stopped[0]
    for log in ("log.txt", "log.txt.rank1"):  # every rank stopped after the same iteration
        text = open(os.path.join(out, log)).read()
        assert f"stopped by {signal.Signals(signum).name} (received by " in text
        assert f"after iteration {iteration}; {stopped[0]} written" in text
    assert "the launcher" in text  # it received the signal too, or alone
    resumed = subprocess.run(h.tool_command(images, out, "--num-gpus", "2", "--resume"), capture_output=True,
                             text=True, env=h.tool_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {os.path.join(out, stopped[0])} at iteration {iteration + 1}" in resumed.stdout + resumed.stderr
    assert h.final_weights_equal(out, uninterrupted)


# ------------------------------------------------------------------ cluster launchers
def test_torchrun_equals_spawned_processes(images, uninterrupted, tmp_path):
    out = str(tmp_path / "torchrun")
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    command = [torchrun, "--standalone", "--nproc_per_node", "2", *h.tool_command(images, out)[1:]]
    result = subprocess.run(command, capture_output=True, text=True, env=_no_cluster_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.exists(os.path.join(out, "log.txt.rank1"))  # one job of two ranks, not two of one
    assert h.final_weights_equal(out, uninterrupted)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_slurm_step_variables_set_by_hand_equal_spawned_processes(images, uninterrupted, tmp_path):
    out = str(tmp_path / "slurm")
    port = str(_free_port())
    tasks = []
    for rank in (0, 1):
        env = dict(_no_cluster_env(), SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_STEP_NUM_TASKS="2",
                   SLURM_STEP_NUM_NODES="1", SLURM_STEP_NODELIST="127.0.0.1", SLURM_JOB_ID="1", MASTER_PORT=port)
        tasks.append(h.start(h.tool_command(images, out), str(tmp_path / f"task{rank}.log"), env))
    try:
        assert [task.wait(timeout=300) for task in tasks] == [0, 0], open(tmp_path / "task1.log").read()[-3000:]
    finally:
        for task in tasks:
            if task.poll() is None:
                os.killpg(task.pid, signal.SIGKILL)
    assert os.path.exists(os.path.join(out, "log.txt.rank1"))  # one job of two ranks, not two of one
    assert h.final_weights_equal(out, uninterrupted)


# ------------------------------------------------------------------ shared machines
def test_two_jobs_started_at_once_on_one_machine_both_finish(images, tmp_path):
    jobs = [h.start(h.tool_command(images, str(tmp_path / f"job{i}"), "--num-gpus", "2",
                                   opts=["SOLVER.MAX_ITER", "3"]), str(tmp_path / f"job{i}.log"))
            for i in (0, 1)]
    try:
        codes = [job.wait(timeout=300) for job in jobs]
    finally:
        for job in jobs:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
    assert codes == [0, 0], open(tmp_path / "job1.log").read()[-3000:]
    assert all(os.path.exists(tmp_path / f"job{i}" / "model_final.pth") for i in (0, 1))


# ------------------------------------------------------------------ stalled ranks
def test_stopped_rank_is_named_and_every_rank_exits_within_the_timeout(images, tmp_path):
    out = str(tmp_path / "run")
    timeout_s = 15
    job = h.start(h.tool_command(images, out, "--num-gpus", "2", opts=["PRETRAIN.DIST_TIMEOUT_MINUTES", str(timeout_s / 60)]),
                  str(tmp_path / "job.log"))
    try:
        h.wait_for_iteration(out, STOP_AT, job)
        workers = h.worker_pids(job.pid)
        os.kill(workers[1], signal.SIGSTOP)
        start = time.monotonic()
        code = job.wait(timeout=timeout_s + 60)
        elapsed = time.monotonic() - start
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    log = open(tmp_path / "job.log").read()
    assert code not in (0, None)
    # The timeout, the launcher's grace (twice FAILURE_GRACE_S) and the exit, on a loaded machine.
    assert elapsed < timeout_s + 40, elapsed
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)
    assert "soco.engine.watchdog.StalledRankError: iteration" in log
    assert "rank 1 is not responding" in log and "(PRETRAIN.DIST_TIMEOUT_MINUTES)" in log


def test_counts_under_torchrun_are_refused_and_under_srun_spawn_as_told(monkeypatch):
    from soco.engine import launch as launch_module

    torchrun = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    for key, value in torchrun.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match="started by torchrun as rank 0 of 2.*leave --num-gpus"):
        launch_module.launch(print, 2, device="cpu")
    for key in torchrun:
        monkeypatch.delenv(key)
    for key, value in {"SLURM_PROCID": "1", "SLURM_LOCALID": "0", "SLURM_STEP_NUM_TASKS": "2",
                       "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_JOB_ID": "9"}.items():
        monkeypatch.setenv(key, value)
    spawned = []
    monkeypatch.setattr(launch_module, "_spawn", lambda *a: spawned.append(a))
    launch_module.launch(print, 8, num_machines=2, machine_rank=1, dist_url="tcp://n1:29500", device="cpu")
    assert [(a[3], a[4], a[5], a[6]) for a in spawned] == [("tcp://n1:29500", 8, 1, 16)]


_RESTART_PROBE = """
import os, signal, time
import torch, torch.distributed as dist
from soco.engine.launch import launch

def main():
    total = torch.ones(1)
    dist.all_reduce(total)
    print(f"attempt {os.environ['TORCHELASTIC_RESTART_COUNT']} rank {dist.get_rank()} sum {total.item():g}", flush=True)
    if os.environ["TORCHELASTIC_RESTART_COUNT"] == "0" and dist.get_rank() == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    dist.barrier()

if os.environ["TORCHELASTIC_RESTART_COUNT"] == "1" and os.environ["RANK"] == "1":
    time.sleep(3)  # rank 0 reaches the store first: it must not find the dead attempt's addresses
launch(main, 1, device="cpu")
"""


def test_torchrun_restarted_workers_join_a_fresh_process_group(tmp_path):
    """Rank 0 killed in attempt 0; torchrun --max-restarts 1 restarts both workers against the
    same agent-hosted store, and their process group connects (not to the dead attempt's ports)."""
    script = tmp_path / "probe.py"
    script.write_text(_RESTART_PROBE)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "--max-restarts", "1", str(script)],
                            capture_output=True, text=True, env=_no_cluster_env(), timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "attempt 1 rank 0 sum 2" in result.stdout and "attempt 1 rank 1 sum 2" in result.stdout


@pytest.mark.slow
def test_torchrun_restart_resumes_from_the_last_checkpoint(images, uninterrupted, tmp_path):
    """torchrun --max-restarts 1 with --resume: rank 0 killed after iteration 6 -> the restarted
    workers join a fresh process group (not the dead attempt's addresses in the agent's store),
    continue from model_0000004.pth and end bit-identical to the uninterrupted run."""
    out = str(tmp_path / "run")
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    command = [torchrun, "--standalone", "--nproc_per_node", "2", "--max-restarts", "1",
               *h.tool_command(images, out, "--resume")[1:]]
    job = h.start(command, str(tmp_path / "job.log"), _no_cluster_env())
    try:
        h.wait_for_iteration(out, STOP_AT, job)
        rank0 = int(open(os.path.join(out, "run.lock")).read().split('"pid": ')[1].split(",")[0])
        os.kill(rank0, signal.SIGKILL)
        assert job.wait(timeout=300) == 0, open(tmp_path / "job.log").read()[-3000:]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert f"Resuming from {os.path.join(out, 'model_0000004.pth')} at iteration 5" in open(tmp_path / "job.log").read()
    assert h.final_weights_equal(out, uninterrupted)


def test_signal_during_set_up_stops_after_the_first_iteration_with_a_checkpoint(images, tmp_path, monkeypatch):
    """A pre-emption notice while data and model are being built: recorded, not fatal."""
    from soco.engine import run_pretraining, signals
    from test_engine import tiny_byol_cfg

    monkeypatch.setattr(signals, "_early_signal", 0)
    previous = signals.record_early_signals()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        with pytest.raises(SystemExit) as stopped:
            run_pretraining(tiny_byol_cfg(images, tmp_path / "run", **{"SOLVER.CHECKPOINT_PERIOD": 100}))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert stopped.value.code == 138
    assert h.checkpoint_names(str(tmp_path / "run")) == ["model_0000000.pth"]
