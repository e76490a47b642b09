"""tools/slurm/pretrain.sbatch on a real one-node Slurm (tests/slurm_cluster.py), 2 tasks, CPU,
gloo: ``scancel --signal=TERM``, a USR1 pre-emption notice to the batch shell (what
``--signal=B:USR1@N`` delivers) with requeue, and a time limit each end in one checkpoint at one
iteration on both ranks, and the job continues from it; proposals as an array job over two
shards plus the dependent merge (tools/slurm/submit_proposals.sh) equal one generation. Skipped where Slurm cannot run (not root,
packages missing). Takes minutes: ``pytest -m slow tests/test_slurm.py``.
"""

import os
import subprocess
import sys
import time

import pytest

import cluster_helpers as h
import slurm_cluster

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(slurm_cluster.unavailable() is not None, reason=str(slurm_cluster.unavailable()))]

SBATCH = os.path.join(h.REPO, "tools", "slurm", "pretrain.sbatch")
TINY = ["--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = slurm_cluster.LocalSlurm(str(tmp_path_factory.mktemp("slurm"))).start()
    venv_bin = os.path.dirname(os.path.abspath(sys.executable))
    cluster.env = dict(h.tool_env(), SLURM_CONF=cluster.conf, PATH=venv_bin + os.pathsep + os.environ["PATH"])
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from test_engine import write_smooth_images

    root = tmp_path_factory.mktemp("images")
    write_smooth_images(root)
    return str(root)


def submit(slurm, out, images, *sbatch_options, opts=()) -> str:
    """sbatch tools/slurm/pretrain.sbatch at the tiny size; returns the job id."""
    command = ["sbatch", "--parsable", *TINY, f"--output={out}.slurm.out", *sbatch_options, SBATCH,
               *h.tool_command(images, out, opts=opts)[2:]]
    result = subprocess.run(command, env=slurm.env, cwd=h.REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def job_state(slurm, job: str) -> str:
    result = slurm.run("scontrol", "show", "job", job, check=False).stdout
    fields = dict(f.split("=", 1) for f in result.split() if "=" in f)
    return fields.get("JobState", "GONE")


def wait_state(slurm, job: str, states, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job_state(slurm, job)
        if state in states:
            return state
        time.sleep(1)
    raise AssertionError(f"job {job} not in {states} within {timeout} s (now {job_state(slurm, job)})")


def wait_iteration(out: str, iteration: int, timeout: float = 300) -> None:
    class Running:  # wait_for_iteration's view of a process that has not ended
        @staticmethod
        def poll():
            return None

    h.wait_for_iteration(out, iteration, Running, timeout)


def stop_iteration(out: str, signame: str) -> int:
    """The iteration both ranks stopped after (their logs agree), its checkpoint the last."""
    found = set()
    for log in ("log.txt", "log.txt.rank1"):
        for line in open(os.path.join(out, log)):
            if f"stopped by {signame}" in line:
                found.add(int(line.split("after iteration ")[1].split(";")[0]))
    assert len(found) == 1, found
    iteration = found.pop()
    assert f"model_{iteration:07d}.pth" in h.checkpoint_names(out)
    return iteration


@pytest.fixture(scope="module")
def uninterrupted(slurm, images, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("uninterrupted") / "run")
    job = submit(slurm, out, images)
    assert wait_state(slurm, job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")) == "COMPLETED", \
        open(out + ".slurm.out").read()[-3000:]
    return out


def test_scancel_term_checkpoints_and_a_resubmitted_job_equals_uninterrupted(slurm, images, uninterrupted, tmp_path):
    out = str(tmp_path / "run")
    job = submit(slurm, out, images)
    wait_iteration(out, 6)
    slurm.run("scancel", "--signal=TERM", job)
    wait_state(slurm, job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"))
    assert "step ended with exit code 143" in open(out + ".slurm.out").read()
    iteration = stop_iteration(out, "SIGTERM")
    again = submit(slurm, out, images)
    assert wait_state(slurm, again, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")) == "COMPLETED"
    assert f"at iteration {iteration + 1}" in open(os.path.join(out, "log.txt")).read()
    assert h.final_weights_equal(out, uninterrupted)


def test_preemption_notice_checkpoints_requeues_and_the_job_resumes_by_itself(slurm, images, uninterrupted, tmp_path):
    out = str(tmp_path / "run")
    job = submit(slurm, out, images)
    wait_iteration(out, 6)
    slurm.run("scancel", "--batch", "--signal=USR1", job)  # what --signal=B:USR1@N sends
    wait_state(slurm, job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=900)
    log = open(out + ".slurm.out").read()
    assert "pre-emption notice" in log and "requeueing job" in log and "step ended with exit code 138" in log
    iteration = stop_iteration(out, "SIGUSR1")
    assert f"at iteration {iteration + 1}" in open(os.path.join(out, "log.txt")).read()
    assert h.final_weights_equal(out, uninterrupted)


def test_time_limit_checkpoints_and_the_job_continues_from_it(slurm, images, tmp_path):
    out = str(tmp_path / "run")
    # The sbatch file's pre-emption notice (300 s before the limit) is moved out of the way.
    job = submit(slurm, out, images, "--time=1", "--no-requeue", "--signal=B:URG@1",
                 opts=["SOLVER.MAX_ITER", "100000", "SOLVER.CHECKPOINT_PERIOD", "1000"])
    # TIMEOUT, or FAILED when the batch shell exited (143) before Slurm's SIGKILL.
    assert wait_state(slurm, job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=300) != "COMPLETED"
    assert "DUE TO TIME LIMIT" in open(out + ".slurm.out").read()
    iteration = stop_iteration(out, "SIGTERM")
    assert open(os.path.join(out, "last_checkpoint")).read() == f"model_{iteration:07d}.pth"
    # The same run continues (the schedule follows a new length: the run is cut short here).
    again = submit(slurm, out, images, opts=["SOLVER.MAX_ITER", str(iteration + 3)])
    assert wait_state(slurm, again, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")) == "COMPLETED"
    assert f"at iteration {iteration + 1}" in open(os.path.join(out, "log.txt")).read()
    assert os.path.exists(os.path.join(out, "model_final.pth"))


def test_proposal_array_job_and_its_merge_equal_one_generation(slurm, tmp_path):
    from soco.data.proposals import load_proposals
    from test_proposals_runner import _photos

    _photos(str(tmp_path / "photos"), 6)
    one = subprocess.run([sys.executable, os.path.join(h.REPO, "tools", "gen_proposals.py"), "--image-root",
                          str(tmp_path / "photos"), "--output", str(tmp_path / "one.pkl"), "--num-workers", "0",
                          "--no-progress"], env=slurm.env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    env = dict(slurm.env, SBATCH_ARGS=f"--cpus-per-task=1 --output={tmp_path}/slurm-%j.out")
    submitted = subprocess.run([os.path.join(h.REPO, "tools", "slurm", "submit_proposals.sh"), "2", "--image-root",
                                str(tmp_path / "photos"), "--output", str(tmp_path / "sharded.pkl")],
                               env=env, cwd=h.REPO, capture_output=True, text=True, timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    merge_job = submitted.stdout.split("merge job ")[1].strip()
    assert wait_state(slurm, merge_job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")) == "COMPLETED"
    a, b = load_proposals(str(tmp_path / "one.pkl")), load_proposals(str(tmp_path / "sharded.pkl"))
    assert sorted(a) == sorted(b) and len(a) == 6
    assert all((a[k] == b[k]).all() for k in a)
