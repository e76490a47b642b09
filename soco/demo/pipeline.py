"""The whole comparison: data -> proposals -> pretraining of each method and seed -> conversion
-> probe of every start -> fine-tuning of every start and seed -> table, plot, results file.

Independent steps run side by side (``jobs`` at once, each process with cores / jobs threads).
Pretrainings are queued first: a fine-tune or probe that waits for its weights only starts once
they are being made, so the pool never blocks on work it has not begun.
"""

import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Sequence

from .. import embedded
from ..utils.files import atomic_write_json
from .report import format_runs, format_table, plot
from .results import differences, read_health, read_metrics, summarise
from .settings import METHODS, RANDOM_INIT, Budget, Setting
from .steps import Runner, StepFailed, finetune, image_subset, pretrain, pretrain_dirs, probe, proposals, read_finetune

__all__ = ["run_comparison", "collect_finished", "RESULTS_FILE", "PLOT_FILE"]

RESULTS_FILE, PLOT_FILE = "demo_results.json", "demo_results.png"


def _short(dataset: str) -> str:
    return dataset.replace("soco_demo_", "")


def run_comparison(setting: Setting, budget: Budget, methods: Sequence[str], pretrain_seeds: Sequence[int],
                   finetune_seeds: Sequence[int], out: str, jobs: int = 1, probe_starts: bool = True,
                   finetune_starts: bool = True) -> Dict:
    """Run every step (reusing finished ones) and write ``out/demo_results.json`` and
    ``out/demo_results.png``; returns the results dict (also printed as a table by the CLI).

    Starts: random init (one per fine-tuning seed) and each of ``methods`` x ``pretrain_seeds``,
    each fine-tuned with every seed of ``finetune_seeds`` on ``setting.finetune_dataset``
    (``finetune_starts`` False: probes only, random init probed with each of those seeds).
    """
    start_time = time.time()
    cores = os.cpu_count() or 1
    runner = Runner(out, threads=max(1, cores // jobs) if jobs > 1 else None)
    data_start = time.time()
    embedded.build_all(fashion_mnist=False)  # registers the datasets; builds what is missing
    runner.timings["data"] = time.time() - data_start
    image_root = embedded.image_root(setting.pretrain_dataset)
    tag = _short(setting.pretrain_dataset)
    image_list = image_subset(image_root, out, budget.pretrain_images, tag) if budget.pretrain_images else None
    if image_list:
        tag = os.path.splitext(os.path.basename(image_list))[0][len("images_"):]
    embedded.image_root(setting.finetune_dataset)  # build before the parallel steps

    runs: List[Dict] = []
    probes: List[Dict] = []
    with ThreadPoolExecutor(jobs) as pool:
        proposal_file = pool.submit(proposals, runner, out, tag, image_root, image_list) if "SoCo" in methods else None

        def pretrain_start(method: str, seed: int) -> str:
            props = proposal_file.result() if method == "SoCo" else None
            return pretrain(runner, method, seed, budget, out, image_root, image_list, props)

        weights = {(m, s): pool.submit(pretrain_start, m, s) for s in pretrain_seeds for m in methods}

        def finetune_start(method: str, pseed: int, seed: int) -> Dict:
            if method is None:
                start, name, start_weights = RANDOM_INIT, "random", ""
            else:
                start, name, start_weights = method, f"{method.lower()}_p{pseed}", weights[method, pseed].result()
            run = finetune(runner, name, start_weights, budget, out, seed, setting.finetune_dataset)
            return {"start": start, "pretrain_seed": pseed, "seed": seed, **run}

        def probe_start(method: str, pseed: int, seed: int) -> Dict:
            if method is None:
                start, name, start_weights = RANDOM_INIT, f"random_seed{seed}", ""
            else:
                start, name, start_weights = method, f"{method.lower()}_p{pseed}", weights[method, pseed].result()
            return {"start": start, "pretrain_seed": pseed, "seed": seed,
                    **probe(runner, name, start_weights, seed, out)}

        # Queue order: random init's probes (no weights to wait for), the first fine-tuning seed
        # of every start, the pretrained starts' probes (their weights exist by then), the
        # other seeds: the first figures of every start come early.
        starts = [(None, None)] + [(m, p) for m in methods for p in pretrain_seeds]
        probe_futures = [pool.submit(probe_start, None, None, s) for s in finetune_seeds] if probe_starts else []
        seeds = finetune_seeds if finetune_starts else []
        futures = [pool.submit(finetune_start, m, p, s) for s in seeds[:1] for m, p in starts]
        if probe_starts:
            probe_futures += [pool.submit(probe_start, m, p, finetune_seeds[0]) for m, p in starts[1:]]
        futures += [pool.submit(finetune_start, m, p, s) for s in seeds[1:] for m, p in starts]
        try:
            runs = [f.result() for f in futures]
            probes = [f.result() for f in probe_futures]
        except StepFailed:
            pool.shutdown(wait=False, cancel_futures=True)  # queued steps never start
            raise

    rows, diffs = _reduce(runs, probes, read_health(out))
    curves = {d[len("pretrain_"):]: read_metrics(os.path.join(out, d, "metrics.json")) for d in pretrain_dirs(out)}
    wall = time.time() - start_time
    summary = {
        "setting": vars(setting), "budget": vars(budget), "jobs": jobs, "wall_seconds": wall,
        "step_seconds": runner.timings, "methods": list(methods), "pretrain_seeds": list(pretrain_seeds),
        "finetune_seeds": list(finetune_seeds),
        "results": {n: {k: v for k, v in r.items() if k not in ("iterations", "total_loss")} for n, r in rows.items()},
        "differences": diffs, "runs": [{k: v for k, v in r.items() if k not in ("iterations", "total_loss")}
                                       for r in runs],
        "probes": probes,
    }
    atomic_write_json(os.path.join(out, RESULTS_FILE), summary)
    plot(rows, curves, os.path.join(out, PLOT_FILE),
         title=f"{setting.name} setting, {budget.name} budget: {len(finetune_seeds)} fine-tuning seed(s), "
               f"{len(pretrain_seeds)} pretraining seed(s)")
    return {**summary, **_texts(rows, diffs)}


def _reduce(runs: List[Dict], probes: List[Dict], health: List[Dict]):
    """(one row per start, with its pretraining runs' health, each start's differences from random init)."""
    return summarise(runs, probes, health), differences(runs, probes, RANDOM_INIT)


def _texts(rows: Dict, diffs: Dict) -> Dict[str, str]:
    """The printed table and the AP of every fine-tune."""
    return {"table": format_table(rows, diffs if len(rows) > 1 else None, RANDOM_INIT), "per_run": format_runs(rows)}


def _start_of(name: str):
    """Step name -> (start, pretraining seed): "random" -> (random init, None), "soco_p1" -> (SoCo, 1)."""
    if name == "random":
        return RANDOM_INIT, None
    method, pseed = re.fullmatch(r"(\w+?)_p(\d+)", name).groups()
    return {m.lower(): m for m in METHODS}[method], int(pseed)


def collect_finished(out: str, budget: Budget) -> Dict:
    """The runs and probes that have finished in ``out`` so far (while a comparison is still
    running, or after an interrupted one), reduced like :func:`run_comparison`'s results:
    {"runs", "probes", "results", "differences", "table", "per_run"}."""
    runs, probes = [], []
    for entry in sorted(os.listdir(out)):
        match = re.fullmatch(r"finetune_(\w+)_seed(\d+)", entry)
        if match and os.path.exists(os.path.join(out, entry, "eval_results.json")):
            start, pseed = _start_of(match.group(1))
            runs.append({"start": start, "pretrain_seed": pseed, "seed": int(match.group(2)),
                         **read_finetune(os.path.join(out, entry), budget.finetune_iters)})
        match = re.fullmatch(r"probe_(\w+)\.json", entry)
        if match:
            with open(os.path.join(out, entry)) as f:
                result = json.load(f)
            name = match.group(1)
            start, pseed = _start_of("random" if name.startswith("random_seed") else name)
            probes.append({"start": start, "pretrain_seed": pseed, "seed": result["seed"],
                           **{k: result[k] for k in ("knn_top1", "linear_top1") if k in result}})
    order = {RANDOM_INIT: -1, **{m: i for i, m in enumerate(METHODS)}}
    runs.sort(key=lambda r: (order[r["start"]], r["pretrain_seed"] or 0, r["seed"]))
    rows, diffs = _reduce(runs, probes, read_health(out))
    return {"runs": runs, "probes": probes, "results": rows, "differences": diffs, **_texts(rows, diffs)}
