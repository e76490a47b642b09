"""End-to-end demo on the embedded data, on CPU: does pretraining help a detector?
(tools/demo.py, or python -m soco.demo.cli)

    python tools/demo.py            # about 9 minutes on 2 idle CPU cores: random init vs SoCo
    python tools/demo.py --quick    # a few minutes: every step, tiny budgets (a smoke test)
    python tools/demo.py --setting few-label --budget medium --pretrain-seeds 2 --seeds 3 --methods all
    python tools/demo.py --setting few-label --budget long --methods all --pretrain-seeds 2 --seeds 3

Steps (each a package function in a process of its own, soco.demo.worker; its log under OUTPUT/logs/):
  1. build the embedded data sets (soco.embedded.build_all; the few-label setting's pool of
     3000 unlabelled mosaics on first use)
  2. selective-search proposals on the pretraining images, with a size band for their small
     objects (soco.proposals.generate, as tools/gen_proposals.py --scale-range 0.08 0.5 --min-side 16)
  3. pretraining of each method (--methods; SoCo R18-FPN by default) with each pretraining seed
     (0..N-1) on those images without their labels (soco.engine.run_pretraining, the configs of
     soco/demo/settings.py), the same number of images seen by every method
  4. conversion to Detectron2 weights (soco.checkpoint.convert, as tools/convert_to_d2.py)
  5. item probe of every start: kNN and linear top-1 on res5 features of the labelled items' crops
     (soco.evaluation.item_probe; bank: soco_demo_det_train's items, queries: soco_demo_det_val's)
  6. Faster R-CNN R18-FPN fine-tuning of every start, and of random initialisation, with seeds
     1..N (--seeds), and COCO AP on soco_demo_det_val (soco.engine.finetune, as tools/finetune_net.py,
     configs/finetune/faster_rcnn_R18_FPN_demo_cpu.yaml)
Settings (--setting): "current" pretrains on the 200 training images and fine-tunes on the same
images with their labels; "few-label" pretrains on the unlabelled pool (soco_demo_pool) and
fine-tunes on 64 labelled images (soco_demo_det_train_few). Budgets (--budget): see
soco/demo/settings.py ("full": `make demo`, "quick": smoke, "short" / "medium" / "long": the
few-label comparisons).
The table (start x probe, AP, AP50, AP75: mean ± standard error; each start's difference from
random init, paired by fine-tuning seed, with its 95 % interval) is printed and written to
OUTPUT/demo_results.json, with a plot in OUTPUT/demo_results.png. Steps whose result already
exists in OUTPUT are reused; --fresh starts over.
"""

import argparse
import os
import shutil
import sys

from .pipeline import PLOT_FILE, RESULTS_FILE, collect_finished, run_comparison
from .settings import BUDGETS, METHODS, SETTINGS
from .steps import StepFailed

__all__ = ["main", "parse_methods"]


def parse_methods(text: str):
    """"all" or a comma-separated list of METHODS (any case) -> names in METHODS order."""
    if text.strip().lower() == "all":
        return list(METHODS)
    by_lower = {m.lower(): m for m in METHODS}
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in by_lower]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)} or all")
    return [m for m in METHODS if m.lower() in names]


def main(argv=None, output_root: str = None) -> int:
    """The demo's command line; the default output folders are under ``output_root`` (default:
    the current folder)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke mode: the quick budget, minutes")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default=None,
                        help="iterations and images (default: full, quick with --quick)")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="current",
                        help="current: pretrain and fine-tune on the 200 training images; few-label: pretrain on "
                             "the unlabelled pool, fine-tune on 64 labelled images (default current)")
    parser.add_argument("--methods", default="SoCo",
                        help=f"pretraining starts besides random init: comma-separated from {', '.join(METHODS)}, "
                             "or all (default SoCo)")
    parser.add_argument("--with-byol", action="store_true", help="add BYOL to --methods")
    parser.add_argument("--pretrain-seeds", type=int, default=1,
                        help="pretrain every method with SEED 0..N-1 (default 1: seed 0)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="fine-tune every start with seeds 1..N (default 1)")
    parser.add_argument("--no-probe", action="store_true", help="skip the item probe of the starts")
    parser.add_argument("--probe-only", action="store_true",
                        help="pretrain and probe every start, fine-tune none (minutes per start instead of tens)")
    parser.add_argument("--output", default=None,
                        help="output folder (default: output/demo, output/demo_quick, "
                             "or output/demo_<setting>_<budget>)")
    parser.add_argument("--fresh", action="store_true", help="delete the output folder first")
    parser.add_argument("--collect", action="store_true",
                        help="run nothing: print the table of the fine-tunes and probes finished so far in the "
                             "output folder (of a comparison still running, or interrupted)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="independent steps run at once, each with cores/jobs threads (default: "
                             "2 where there are 2 cores or more)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.pretrain_seeds < 1:
        parser.error(f"--pretrain-seeds must be >= 1, got {args.pretrain_seeds}")
    if args.no_probe and args.probe_only:
        parser.error("--no-probe and --probe-only leave nothing to measure")
    if args.quick and args.budget not in (None, "quick"):
        parser.error(f"--quick is the quick budget; it contradicts --budget {args.budget}")
    try:
        methods = parse_methods(args.methods + (",BYOL" if args.with_byol else ""))
    except ValueError as exc:
        parser.error(f"--methods: {exc}")

    budget = BUDGETS[args.budget or ("quick" if args.quick else "full")]
    setting = SETTINGS[args.setting]
    if args.output:
        out = os.path.abspath(args.output)
    elif setting.name == "current" and budget.name in ("full", "quick"):
        out = os.path.join(os.path.abspath(output_root or "."), "output", "demo" + ("_quick" if budget.name == "quick" else ""))
    else:
        out = os.path.join(os.path.abspath(output_root or "."), "output", f"demo_{setting.name}_{budget.name}")
    if args.collect:
        if not os.path.isdir(out):
            parser.error(f"--collect: {out} does not exist")
        found = collect_finished(out, budget)
        print(f"finished so far in {out}: {len(found['runs'])} fine-tunes, {len(found['probes'])} probes\n"
              f"{found['table']}\nAP per fine-tune:\n{found['per_run']}")
        return 0
    if args.fresh and os.path.isdir(out):
        shutil.rmtree(out)
    try:
        summary = run_comparison(setting, budget, methods, list(range(args.pretrain_seeds)),
                                 list(range(1, args.seeds + 1)), out, jobs=max(1, args.jobs),
                                 probe_starts=not args.no_probe, finetune_starts=not args.probe_only)
    except StepFailed as exc:
        print(f"demo stopped: {exc}", file=sys.stderr)
        return 1

    seeds = f"fine-tuning seeds 1-{args.seeds}" if args.seeds > 1 else "fine-tuning seed 1"
    if args.pretrain_seeds > 1:
        seeds += f", pretraining seeds 0-{args.pretrain_seeds - 1}"
    if args.probe_only:
        print(f"\nItem probe of each start ({setting.name} setting, {budget.name} budget):\n{summary['table']}")
        print(f"\nwall time {summary['wall_seconds'] / 60:.1f} min; results: {os.path.join(out, RESULTS_FILE)}")
        return 0
    print(f"\nFaster R-CNN R18-FPN, {budget.finetune_iters} fine-tuning iterations on {setting.finetune_dataset}, "
          f"COCO box AP on soco_demo_det_val ({setting.name} setting, {budget.name} budget, {seeds}); "
          "mean ± standard error; * = the 95 % interval of the difference excludes 0:")
    print(summary["table"])
    print("AP per fine-tune:\n" + summary["per_run"])
    print(f"\nwall time {summary['wall_seconds'] / 60:.1f} min; results: {os.path.join(out, RESULTS_FILE)}, "
          f"plot: {os.path.join(out, PLOT_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
