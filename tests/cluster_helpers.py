"""Jobs of tools/pretrain_net.py at world size 2 on CPU for the cluster tests (not a test module):
a tiny SMoG run on 8 smooth images, started as a process group so signals can reach the
launcher, every process or one rank, and the checks shared by the spawned, torchrun, Slurm-env
and real-Slurm runs."""

import glob
import json
import os
import subprocess
import sys
import time
from typing import List, Optional

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "pretrain_net.py")
MAX_ITER = 20
CHECKPOINT_PERIOD = 5


def tiny_smog_opts(image_root: str, output_dir: str, *extra) -> List[str]:
    """KEY VALUE overrides of configs/SMoG/smog_R18_cpu_demo.yaml for a run of MAX_ITER
    iterations of batch 4 (2 per process at world size 2) that takes well under a second each."""
    return [
        "MODEL.PROJECTOR.HIDDEN_DIM", "32", "MODEL.PROJECTOR.OUT_DIM", "16", "MODEL.PREDICTOR.HIDDEN_DIM", "32",
        "MODEL.SMOG.NUM_GROUPS", "4", "MODEL.SMOG.RESET_PERIOD", "4", "MODEL.SMOG.CROP_SIZE", "32",
        "MODEL.SMOG.NUM_SMALL_CROPS", "0", "DATASETS.TRAIN", "()", "PRETRAIN.IMAGE_ROOT", image_root,
        "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", str(MAX_ITER), "PRETRAIN.WARMUP_EPOCHS", "0",
        "SOLVER.CHECKPOINT_PERIOD", str(CHECKPOINT_PERIOD), "PRETRAIN.LOG_PERIOD", "1",
        "DATALOADER.NUM_WORKERS", "0", "SEED", "3", "OUTPUT_DIR", output_dir, *extra,
    ]


def tool_command(image_root: str, output_dir: str, *tool_args, opts=()) -> List[str]:
    """python tools/pretrain_net.py --config-file <SMoG demo> [tool_args] <tiny overrides> [opts]."""
    return [sys.executable, TOOL, "--config-file", os.path.join(REPO, "configs", "SMoG", "smog_R18_cpu_demo.yaml"),
            *tool_args, *tiny_smog_opts(image_root, output_dir, *opts)]


def tool_env(**extra) -> dict:
    """The environment of a tool run: this checkout first on the path, one thread per process."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def start(command: List[str], log_path: str, env: Optional[dict] = None) -> subprocess.Popen:
    """Start ``command`` in its own session (its pid is the process group id), output to a file."""
    log = open(log_path, "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env or tool_env(),
                            start_new_session=True)


def wait_for_iteration(output_dir: str, iteration: int, process: subprocess.Popen, timeout: float = 240) -> None:
    """Block until OUTPUT_DIR/metrics.json has a line of ``iteration`` (or fail)."""
    path = os.path.join(output_dir, "metrics.json")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before iteration {iteration}")
        if os.path.exists(path) and any(json.loads(line).get("iteration", -1) >= iteration
                                        for line in open(path) if line.strip()):
            return
        time.sleep(0.05)
    raise AssertionError(f"no iteration {iteration} in {path} within {timeout} s")


def checkpoint_names(output_dir: str) -> List[str]:
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(output_dir, "model_*.pth")))


def final_weights_equal(a: str, b: str) -> bool:
    """model_final.pth of two output folders hold bit-identical tensors."""
    wa = torch.load(os.path.join(a, "model_final.pth"), weights_only=True)["model"]
    wb = torch.load(os.path.join(b, "model_final.pth"), weights_only=True)["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def worker_pids(launcher_pid: int) -> List[int]:
    """The spawned workers of a launcher, rank 0 first (its pid is in OUTPUT_DIR/run.lock too)."""
    children = open(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read().split()
    workers = [int(c) for c in children if "--multiprocessing-fork" in open(f"/proc/{c}/cmdline").read()]
    return sorted(workers)
