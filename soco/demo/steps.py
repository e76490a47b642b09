"""The demo's steps, each a package function run in a process of its own
(``python -m soco.demo.worker``) with its log under ``OUTPUT/logs/<step>.log``; a step whose
result file exists is reused."""

import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional

from ..model_zoo import get_config_file
from ..utils.files import atomic_write_bytes
from ..utils.paths import PACKAGE_PARENT
from .results import METRICS, nan_to_zero, read_metrics
from .settings import CONVERT_INCLUDE, FINETUNE_CONFIG, PRETRAIN_CONFIGS, PROPOSAL_FILTER, Budget
from .worker import STEPS

__all__ = ["StepFailed", "Runner", "image_subset", "proposals", "pretrain", "finetune", "read_finetune", "probe",
           "pretrain_dirs"]



class StepFailed(RuntimeError):
    pass


class Runner:
    """Runs the steps as processes, logging each to OUTPUT/logs/<name>.log; each process gets
    ``threads`` intra-op threads (OMP_NUM_THREADS; None: the libraries' default). ``timings``:
    seconds per step that ran."""

    def __init__(self, output_dir: str, threads: int = None):
        self.output_dir = output_dir
        self.log_dir = os.path.join(output_dir, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        self.timings = {}
        self.env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PARENT, os.environ.get("PYTHONPATH")) if p)

    def run(self, name: str, step: str, kwargs: Dict, done_file: str = None):
        """``step`` of :mod:`.worker` (``python -m soco.demo.worker step JSON``) with ``kwargs``,
        unless ``done_file`` exists."""
        if done_file and os.path.exists(done_file):
            print(f"[{name}] reused {done_file}", flush=True)
            return
        if step not in STEPS:
            raise StepFailed(f"[{name}] {step!r} is not a step of soco.demo.worker ({', '.join(STEPS)})")
        log = os.path.join(self.log_dir, f"{name}.log")
        arguments = json.dumps(kwargs)
        print(f"[{name}] python -m soco.demo.worker {step} '{arguments}'", flush=True)
        start = time.time()
        with open(log, "w") as f:
            rc = subprocess.call([sys.executable, "-m", "soco.demo.worker", step, arguments], stdout=f,
                                 stderr=subprocess.STDOUT, env=self.env)
        self.timings[name] = time.time() - start
        if rc != 0:
            with open(log) as f:
                tail = "".join(f.readlines()[-15:])
            raise StepFailed(f"[{name}] failed (exit code {rc}); log: {log}\n{tail}")
        print(f"[{name}] done in {self.timings[name]:.0f} s", flush=True)


def image_subset(root: str, out: str, count: int, tag: str) -> str:
    """List file of the first ``count`` images under ``root`` (sorted paths), named by ``tag``."""
    from soco.data.image_folder import list_images

    names = list_images(root)[:count]
    path = os.path.join(out, f"images_{tag}_{len(names)}.txt")
    atomic_write_bytes(path, ("\n".join(names) + "\n").encode())
    return path


def proposals(runner: Runner, out: str, tag: str, image_root: str, image_list: Optional[str]) -> str:
    """Selective-search proposals (SoCo's) on the pretraining images, the demo's size band."""
    path = os.path.join(out, f"proposals_{tag}.pkl")
    runner.run(f"proposals_{tag}", "proposals",
               {"image_root": image_root, "output": path, "image_list": image_list, **PROPOSAL_FILTER}, done_file=path)
    return path


def pretrain(runner: Runner, method: str, seed: int, budget: Budget, out: str, image_root: str,
             image_list: Optional[str] = None, proposal_file: Optional[str] = None) -> str:
    """Pretrain ``method`` with ``SEED seed`` on the images of ``image_root`` (optionally those
    of ``image_list``) for the budget's iterations, convert; returns the Detectron2 weight file
    ``out/<method>_seed<seed>_d2.pkl``."""
    tag = f"{method.lower()}_seed{seed}"
    run_dir = os.path.join(out, f"pretrain_{tag}")
    opts = ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", run_dir, "SEED", str(seed),
            "SOLVER.MAX_ITER", str(budget.pretrain_iters[method]),
            "SOLVER.CHECKPOINT_PERIOD", "100000", "DATALOADER.NUM_WORKERS", "1",
            "DATASETS.TRAIN", "()", "PRETRAIN.IMAGE_ROOT", image_root, "PRETRAIN.IMAGE_LIST", image_list or ""]
    if method == "SoCo":
        opts += ["MODEL.SOCO.PROPOSALS", proposal_file]
    final = os.path.join(run_dir, "model_final.pth")
    # --resume: a step interrupted by Ctrl-C continues from the checkpoint it wrote.
    runner.run(f"pretrain_{tag}", "pretrain",
               {"config_file": get_config_file(PRETRAIN_CONFIGS[method]), "opts": opts}, done_file=final)
    weights = os.path.join(out, f"{tag}_d2.pkl")
    runner.run(f"convert_{tag}", "convert",
               {"checkpoint": final, "output": weights, "layout": "fpn", "include": [CONVERT_INCLUDE[method]]},
               done_file=weights)
    return weights


def finetune(runner: Runner, name: str, weights: str, budget: Budget, out: str, seed: int,
             dataset: str) -> Dict:
    """Fine-tune from ``weights`` ("" = random init) with ``seed`` on registered ``dataset``;
    AP, loss and AP curves (a run of :mod:`.results` without its start and seeds)."""
    run_dir = os.path.join(out, f"finetune_{name}_seed{seed}")
    iters = budget.finetune_iters
    opts = ["MODEL.WEIGHTS", weights, "OUTPUT_DIR", run_dir, "SOLVER.MAX_ITER", str(iters), "SEED", str(seed),
            "DATASETS.TRAIN", f"('{dataset}',)",
            # Same schedule shape as the config at any budget: lr / 10 at 2/3 and 8/9.
            "SOLVER.STEPS", f"({iters * 2 // 3},{iters * 8 // 9})",
            "SOLVER.WARMUP_ITERS", str(max(1, iters // 6)),
            # AP at evenly spaced points: the plot's convergence curve.
            "TEST.EVAL_PERIOD", str(max(1, iters // budget.evals))]
    runner.run(f"finetune_{name}_seed{seed}", "finetune",
               {"args": ["--config-file", get_config_file(FINETUNE_CONFIG), "--resume", *opts]},
               done_file=os.path.join(run_dir, "eval_results.json"))
    return read_finetune(run_dir, iters)


def read_finetune(run_dir: str, iters: int) -> Dict:
    """A finished fine-tune of ``iters`` iterations in ``run_dir``: AP, loss and AP curves."""
    with open(os.path.join(run_dir, "eval_results.json")) as f:
        bbox = json.load(f)["bbox"]
    metrics = os.path.join(run_dir, "metrics.json")
    its, losses = read_metrics(metrics)
    # Periodic evaluations are logged at iteration i after i + 1 steps, the final one at MAX_ITER.
    ap_its, ap_values = read_metrics(metrics, "bbox/AP")
    return {**{k: nan_to_zero(bbox[k]) for k in METRICS}, "iterations": its, "total_loss": losses,
            "ap_iterations": [min(i + 1, iters) for i in ap_its], "ap_curve": [nan_to_zero(v) for v in ap_values]}


def probe(runner: Runner, name: str, weights: str, seed: int, out: str) -> Dict:
    """Item probe (:mod:`soco.evaluation.item_probe`) of the start ``weights`` ("" = random init
    under ``seed``) as the fine-tuning config builds it: {"knn_top1", "linear_top1", ...}."""
    path = os.path.join(out, f"probe_{name}.json")
    runner.run(f"probe_{name}", "probe",
               {"args": ["--config-file", get_config_file(FINETUNE_CONFIG), "--weights", weights, "--seed", str(seed),
                         "--output", path]}, done_file=path)
    with open(path) as f:
        return json.load(f)


def pretrain_dirs(out: str) -> List[str]:
    """The pretraining run folders under ``out`` (for their loss curves)."""
    return sorted(d for d in os.listdir(out) if d.startswith("pretrain_") and os.path.isdir(os.path.join(out, d)))
