#!/usr/bin/env python
"""End-to-end demo on the embedded data, on CPU: does SoCo pretraining help a detector?

    python tools/demo.py            # about 20 minutes on 2 CPU cores
    python tools/demo.py --quick    # a few minutes: every step, tiny budgets (a smoke test)

Steps (each one of the project's command-line tools, its log under OUTPUT/logs/):
  1. build the embedded data sets (tools/build_embedded_data.py)
  2. selective-search proposals on the detection set's training images, with a size band for its
     small objects (tools/gen_proposals.py --scale-range 0.08 0.5 --min-side 16)
  3. SoCo pretraining, R18-FPN, on those images without their labels (tools/pretrain_net.py,
     configs/SoCo/SoCo_demo_R18_FPN_cpu.yaml)
  4. conversion to Detectron2 weights (tools/convert_to_d2.py)
  5. Faster R-CNN R18-FPN fine-tuning on soco_demo_det_train and COCO AP on soco_demo_det_val
     (tools/finetune_net.py, configs/finetune/faster_rcnn_R18_FPN_demo_cpu.yaml), once from the
     SoCo weights and once from random initialisation with the same budget and seed; --with-byol
     adds image-level BYOL pretraining (configs/BYOL/byol_R18_cpu_demo.yaml) as a third start.
     --seeds N fine-tunes every start with seeds 1..N and reports the mean (error bars: at this
     budget one fine-tune's AP moves by 1-2 points with its seed).
Independent steps run side by side (--jobs, default 2: the random-init fine-tune runs while SoCo
pretrains), each process with an equal share of the cores.
The AP table is printed and written to OUTPUT/demo_results.json, with a plot (fine-tuning loss
and AP curves, pretraining loss, AP bars) in OUTPUT/demo_results.png. Steps whose result already
exists in OUTPUT are reused; --fresh starts over.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from soco.utils.files import atomic_write, atomic_write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FINETUNE_CONFIG = "configs/finetune/faster_rcnn_R18_FPN_demo_cpu.yaml"
PRETRAIN_CONFIGS = {"SoCo": "configs/SoCo/SoCo_demo_R18_FPN_cpu.yaml",
                    "BYOL": "configs/BYOL/byol_R18_cpu_demo.yaml"}
# The detection items are 24-120 px in 256-320 px images: below the paper's 0.3-0.8 size band.
PROPOSAL_FILTER = ["--scale-range", "0.08", "0.5", "--min-side", "16"]
# What each method's conversion exports besides the ResNet. SoCo: the FPN but not the box head.
# At this budget the pretrained 4conv1fc head costs AP: with it, 4.2 and 7.3 AP (fine-tuning
# seeds 1, 2); without it, 10.1 and 10.1 (random init: 9.2, 8.6). On ImageNet-scale pretraining
# the paper transfers the head too (tools/convert_to_d2.py exports it by default).
CONVERT_INCLUDE = {"SoCo": "fpn", "BYOL": "none"}

# Budgets: pretraining and fine-tuning iterations, and how many of the detection set's training
# images to pretrain on (None: all 200), evaluations per fine-tune (evenly spaced, the last at the
# end). "full" fits ~20 min on 2 cores.
BUDGETS = {
    "full": {"images": None, "pretrain_iters": {"SoCo": 300, "BYOL": 300}, "finetune_iters": 600, "evals": 2},
    "quick": {"images": 24, "pretrain_iters": {"SoCo": 6, "BYOL": 6}, "finetune_iters": 12, "evals": 1},
}


class StepFailed(RuntimeError):
    pass


class Runner:
    """Runs the steps as subprocesses, logging each to OUTPUT/logs/<name>.log; each subprocess
    gets ``threads`` intra-op threads (OMP_NUM_THREADS; None: the libraries' default)."""

    def __init__(self, output_dir: str, threads: int = None):
        self.output_dir = output_dir
        self.log_dir = os.path.join(output_dir, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        self.timings = {}
        self.env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))

    def run(self, name: str, tool: str, args, done_file: str = None):
        if done_file and os.path.exists(done_file):
            print(f"[{name}] reused {os.path.relpath(done_file, REPO)}", flush=True)
            return
        path = os.path.join(REPO, tool)
        if not os.path.exists(path):
            raise StepFailed(f"[{name}] {tool} is not in this checkout yet; this step cannot run")
        log = os.path.join(self.log_dir, f"{name}.log")
        print(f"[{name}] python {tool} {' '.join(args)}", flush=True)
        start = time.time()
        with open(log, "w") as f:
            rc = subprocess.call([sys.executable, path, *args], cwd=REPO, stdout=f,
                                 stderr=subprocess.STDOUT, env=self.env)
        self.timings[name] = time.time() - start
        if rc != 0:
            with open(log) as f:
                tail = "".join(f.readlines()[-15:])
            raise StepFailed(f"[{name}] failed (exit code {rc}); log: {log}\n{tail}")
        print(f"[{name}] done in {self.timings[name]:.0f} s", flush=True)


def read_metrics(path: str, key: str = "total_loss"):
    """(iterations, values) of ``key`` in a Detectron2 metrics.json (one JSON object per line)."""
    its, values = [], []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if key in row:
                    its.append(row["iteration"])
                    values.append(row[key])
    return its, values


def pretrain(runner, method: str, budget: dict, out: str, image_root: str, image_list: str = None,
             proposals: str = None) -> str:
    """Pretrain ``method`` on the images of ``image_root`` (optionally those of ``image_list``),
    convert; returns the Detectron2 weight file."""
    run_dir = os.path.join(out, f"pretrain_{method.lower()}")
    opts = ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", run_dir,
            "SOLVER.MAX_ITER", str(budget["pretrain_iters"][method]),
            "SOLVER.CHECKPOINT_PERIOD", "100000", "DATALOADER.NUM_WORKERS", "1",
            "DATASETS.TRAIN", "()", "PRETRAIN.IMAGE_ROOT", image_root, "PRETRAIN.IMAGE_LIST", image_list or ""]
    if proposals:
        opts += ["MODEL.SOCO.PROPOSALS", proposals]
    final = os.path.join(run_dir, "model_final.pth")
    runner.run(f"pretrain_{method.lower()}", "tools/pretrain_net.py",
               # --resume: a step interrupted by Ctrl-C continues from the checkpoint it wrote
               ["--config-file", PRETRAIN_CONFIGS[method], "--resume", *opts], done_file=final)
    weights = os.path.join(out, f"{method.lower()}_d2.pkl")
    runner.run(f"convert_{method.lower()}", "tools/convert_to_d2.py",
               [final, weights, "--layout", "fpn", "--include", CONVERT_INCLUDE[method]], done_file=weights)
    return weights


def nan_to_zero(ap: float) -> float:
    """COCO AP is NaN when the detector outputs nothing above the score threshold: that is AP 0."""
    return 0.0 if math.isnan(ap) else ap


def finetune(runner, name: str, weights: str, budget: dict, out: str, seed: int) -> dict:
    """Fine-tune from ``weights`` ("" = random init) with ``seed``; AP, loss and AP curves."""
    run_dir = os.path.join(out, f"finetune_{name}_seed{seed}")
    iters = budget["finetune_iters"]
    opts = ["MODEL.WEIGHTS", weights, "OUTPUT_DIR", run_dir, "SOLVER.MAX_ITER", str(iters), "SEED", str(seed),
            # Same schedule shape as the config at any budget: lr / 10 at 2/3 and 8/9.
            "SOLVER.STEPS", f"({iters * 2 // 3},{iters * 8 // 9})",
            "SOLVER.WARMUP_ITERS", str(max(1, iters // 6)),
            # AP at evenly spaced points: the plot's convergence curve.
            "TEST.EVAL_PERIOD", str(max(1, iters // budget["evals"]))]
    results = os.path.join(run_dir, "eval_results.json")
    runner.run(f"finetune_{name}_seed{seed}", "tools/finetune_net.py",
               ["--config-file", FINETUNE_CONFIG, "--resume", *opts], done_file=results)
    with open(results) as f:
        bbox = json.load(f)["bbox"]
    metrics = os.path.join(run_dir, "metrics.json")
    its, losses = read_metrics(metrics)
    # Periodic evaluations are logged at iteration i after i + 1 steps, the final one at MAX_ITER.
    ap_its, ap_values = read_metrics(metrics, "bbox/AP")
    ap = {k: nan_to_zero(bbox[k]) for k in ("AP", "AP50", "AP75")}
    return {**ap, "iterations": its, "total_loss": losses, "ap_iterations": [min(i + 1, iters) for i in ap_its],
            "ap_curve": [nan_to_zero(v) for v in ap_values]}


def mean_over_seeds(runs: dict) -> dict:
    """{seed: finetune() result} -> one row: AP, AP50, AP75 and the curves averaged over the
    seeds (same budget, so the curves share their iterations), plus ``per_seed`` AP values."""
    first = next(iter(runs.values()))
    row = {k: first[k] for k in ("iterations", "ap_iterations")}
    for key in ("AP", "AP50", "AP75", "total_loss", "ap_curve"):
        values = [r[key] for r in runs.values()]
        row[key] = [sum(v) / len(v) for v in zip(*values)] if isinstance(values[0], list) else sum(values) / len(values)
    row["per_seed"] = {seed: {k: r[k] for k in ("AP", "AP50", "AP75")} for seed, r in runs.items()}
    return row


def image_subset(root: str, out: str, count: int) -> str:
    """List file of the first ``count`` images under ``root`` (quick mode)."""
    from soco.data.image_folder import list_images

    path = os.path.join(out, f"images_{count}.txt")
    with open(path, "w") as f:
        f.write("\n".join(list_images(root)[:count]) + "\n")
    return path


def print_table(rows: dict) -> str:
    """Rows of mean_over_seeds(); with several seeds, a last column lists each seed's AP."""
    seeds = max(len(r.get("per_seed", {})) for r in rows.values())
    lines = [f"{'initialisation':<22}{'AP':>7}{'AP50':>7}{'AP75':>7}{'last loss':>11}"
             + ("   AP per seed" if seeds > 1 else "")]
    for name, r in rows.items():
        loss = f"{r['total_loss'][-1]:.3f}" if r["total_loss"] else "-"
        per_seed = "   " + " ".join(f"{v['AP']:.2f}" for v in r["per_seed"].values()) if seeds > 1 else ""
        lines.append(f"{name:<22}{r['AP']:>7.2f}{r['AP50']:>7.2f}{r['AP75']:>7.2f}{loss:>11}{per_seed}")
    return "\n".join(lines)


def plot(rows: dict, pretrain_curves: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    for name, r in rows.items():
        axes[0].plot(r["iterations"], r["total_loss"], marker="o", markersize=3, label=name)
        axes[1].plot([0, *r["ap_iterations"]], [0.0, *r["ap_curve"]], marker="o", label=name)
    axes[0].set(title="fine-tuning loss (Faster R-CNN R18-FPN)", xlabel="iteration", ylabel="total loss")
    axes[1].set(title="box AP on soco_demo_det_val while fine-tuning", xlabel="iteration", ylabel="AP (%)")
    for name, (its, losses) in pretrain_curves.items():
        axes[2].plot(its, losses, marker="o", markersize=3, label=name)
    axes[2].set(title="pretraining loss", xlabel="iteration", ylabel="total loss")
    names = list(rows)
    width = 0.4
    for k, metric in enumerate(("AP", "AP50")):
        xs = [i + (k - 0.5) * width for i in range(len(names))]
        axes[3].bar(xs, [rows[n][metric] for n in names], width, label=metric)
    axes[3].set_xticks(range(len(names)), names, rotation=10)
    axes[3].set(title="COCO AP on soco_demo_det_val", ylabel="AP (%)")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, dpi=100, format="png"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke mode: tiny budgets, minutes")
    parser.add_argument("--with-byol", action="store_true",
                        help="also fine-tune from image-level BYOL pretraining")
    parser.add_argument("--output", default=None,
                        help="output folder (default: output/demo or output/demo_quick)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="fine-tune every start with seeds 1..N and report the mean (default 1)")
    parser.add_argument("--fresh", action="store_true", help="delete the output folder first")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="independent steps run at once, each with cores/jobs threads (default: "
                             "2 where there are 2 cores or more)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")

    mode = "quick" if args.quick else "full"
    budget = BUDGETS[mode]
    out = os.path.abspath(args.output or os.path.join(REPO, "output", f"demo{'_quick' if args.quick else ''}"))
    if args.fresh and os.path.isdir(out):
        shutil.rmtree(out)
    jobs = max(1, args.jobs)
    runner = Runner(out, threads=max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None)
    start = time.time()
    try:
        runner.run("data", "tools/build_embedded_data.py", ["--no-fashion-mnist"])
        import soco.data.embedded as embedded

        image_root = embedded.image_root("soco_demo_det_train")
        image_list = image_subset(image_root, out, budget["images"]) if budget["images"] else None
        proposals = os.path.join(out, "proposals_det_train.pkl")
        runner.run("proposals", "tools/gen_proposals.py",
                   ["--image-root", image_root, "--output", proposals, "--no-progress", *PROPOSAL_FILTER,
                    *(["--image-list", image_list] if image_list else [])], done_file=proposals)

        # Each start's name in the table -> the method that pretrains it (None: random init).
        starts = {"random init": None, "SoCo (R18-FPN)": "SoCo",
                  **({"BYOL (image-level)": "BYOL"} if args.with_byol else {})}
        with ThreadPoolExecutor(jobs) as pool:
            # Pretrainings are queued first: a fine-tune that waits for its weights only starts
            # once they are being made, so the pool never blocks on work it has not begun.
            weights = {name: pool.submit(pretrain, runner, method, budget, out, image_root, image_list,
                                         proposals if method == "SoCo" else None)
                       for name, method in starts.items() if method}

            def finetune_start(name: str, seed: int) -> dict:
                start_weights = weights[name].result() if name in weights else ""
                return finetune(runner, name.split(" ")[0].lower(), start_weights, budget, out, seed)

            seeds = range(1, args.seeds + 1)
            runs = {(name, seed): pool.submit(finetune_start, name, seed) for seed in seeds for name in starts}
            try:
                rows = {name: mean_over_seeds({seed: runs[name, seed].result() for seed in seeds}) for name in starts}
            except StepFailed:
                pool.shutdown(wait=False, cancel_futures=True)  # queued steps never start
                raise
    except StepFailed as exc:
        print(f"demo stopped: {exc}", file=sys.stderr)
        return 1

    pretrain_curves = {m: read_metrics(os.path.join(out, f"pretrain_{m.lower()}", "metrics.json"))
                       for m in PRETRAIN_CONFIGS if os.path.isdir(os.path.join(out, f"pretrain_{m.lower()}"))}
    table = print_table(rows)
    wall = time.time() - start
    summary = {"mode": mode, "budget": budget, "jobs": jobs, "wall_seconds": wall, "step_seconds": runner.timings,
               "seeds": args.seeds,
               "results": {n: {k: r[k] for k in ("AP", "AP50", "AP75", "per_seed", "ap_iterations", "ap_curve")}
                           for n, r in rows.items()}}
    atomic_write_json(os.path.join(out, "demo_results.json"), summary)
    plot(rows, pretrain_curves, os.path.join(out, "demo_results.png"))
    averaged = f", mean over seeds 1-{args.seeds}" if args.seeds > 1 else ""
    print(f"\nFaster R-CNN R18-FPN, {budget['finetune_iters']} fine-tuning iterations each{averaged}, "
          f"COCO box AP on soco_demo_det_val ({mode} mode):")
    print(table)
    print(f"\nwall time {wall / 60:.1f} min; results: {os.path.join(out, 'demo_results.json')}, "
          f"plot: {os.path.join(out, 'demo_results.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
