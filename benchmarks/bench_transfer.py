#!/usr/bin/env python
"""Does pretraining transfer? Every start (random init, SoCo, BYOL, CoKe, CLSA, SMoG) fine-tuned
with the same config and seeds, in both data settings of the demo, with the item probe beside
the AP: one markdown table, mean ± standard error, each start's AP difference from random init
(paired by fine-tuning seed) with its 95 % interval, and SoCo's differences from the image-level
starts. Random init is the baseline measured in the same run.

    python benchmarks/bench_transfer.py                          # long budget: hours on 2 cores
    python benchmarks/bench_transfer.py --budget short --settings few-label --methods SoCo
    python benchmarks/bench_transfer.py --budget quick --pretrain-seeds 1 --seeds 1  # smoke
    python benchmarks/bench_transfer.py --collect few-label:medium=DIR --collect current:full=DIR

``--collect SETTING:BUDGET=DIR`` runs nothing: it reads the fine-tunes and probes finished in
folders of ``tools/demo.py`` (or of this benchmark), runs of several invocations included, and
writes the same tables from them, one block of rows per folder. A second table gives SoCo minus
each image-level start (AP paired by fine-tuning seed, linear probe by Welch's test).

Each setting's steps, logs, results and plot are in OUTPUT/<setting>/ (soco.demo.pipeline;
finished steps are reused, so an interrupted run continues where it stopped); the table is
printed and written to OUTPUT/transfer_table.md with the budget and wall time.
"""

import argparse
import datetime
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from soco.demo.pipeline import collect_finished, run_comparison  # noqa: E402
from soco.demo.report import format_markdown, format_versus  # noqa: E402
from soco.demo.settings import BUDGETS, METHODS, SETTINGS  # noqa: E402
from soco.demo.steps import StepFailed  # noqa: E402
from soco.utils.files import atomic_write_bytes  # noqa: E402


def describe(budget) -> str:
    images = "all" if budget.pretrain_images is None else str(budget.pretrain_images)
    return (f"{budget.pretrain_iters['SoCo']} SoCo pretraining iterations of 4 images on {images} images, the same "
            f"images seen by every method; {budget.finetune_iters} fine-tuning iterations of 4 images")


def parse_collect(spec: str):
    """"few-label:medium=DIR" -> ("few-label", Budget medium, DIR); ValueError naming the problem."""
    label, sep, folder = spec.partition("=")
    setting, _, budget = label.partition(":")
    if not sep or not folder or setting not in SETTINGS or budget not in BUDGETS:
        raise ValueError(f"--collect {spec!r}: expected SETTING:BUDGET=DIR with SETTING in {', '.join(SETTINGS)} "
                         f"and BUDGET in {', '.join(BUDGETS)}")
    if not os.path.isdir(folder):
        raise ValueError(f"--collect {spec!r}: {folder} is not a folder")
    return setting, BUDGETS[budget], folder


def write_table(output: str, header: str, summaries) -> None:
    versus = format_versus(summaries)
    table = header + "\n\n" + format_markdown(summaries) + (
        f"\n\nSoCo against each image-level start (AP paired by fine-tuning seed):\n\n{versus}" if versus else "")
    print(table)
    os.makedirs(output, exist_ok=True)
    atomic_write_bytes(os.path.join(output, "transfer_table.md"), (table + "\n").encode())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="long")
    parser.add_argument("--settings", default="few-label,current",
                        help=f"comma-separated from {', '.join(SETTINGS)} (default: both, few-label first)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all)")
    parser.add_argument("--pretrain-seeds", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds 1..N (default 3)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--output", default=os.path.join(REPO, "output", "bench_transfer"))
    parser.add_argument("--collect", action="append", default=[], metavar="SETTING:BUDGET=DIR",
                        help="run nothing: the table of what has finished in DIR (repeatable)")
    args = parser.parse_args(argv)
    if args.collect:
        try:
            found = [parse_collect(spec) for spec in args.collect]
        except ValueError as exc:
            parser.error(str(exc))
        summaries = {f"{setting} ({budget.name})": collect_finished(folder, budget) for setting, budget, folder in found}
        budgets = "; ".join(f"{budget.name}: {describe(budget)}" for budget in {b.name: b for _, b, _ in found}.values())
        write_table(args.output, f"{datetime.date.today().isoformat()}, collected from finished runs. Budgets: "
                    f"{budgets}. Evaluation: COCO box AP on soco_demo_det_val.", summaries)
        return 0
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [s for s in settings if s not in SETTINGS] + [m for m in methods if m not in METHODS]
    if bad or args.seeds < 1 or args.pretrain_seeds < 1:
        parser.error(f"unknown setting or method {bad}, or seeds below 1; settings: {', '.join(SETTINGS)}; "
                     f"methods: {', '.join(METHODS)}")

    budget = BUDGETS[args.budget]
    start = time.time()
    summaries = {}
    try:
        for name in settings:
            summaries[name] = run_comparison(SETTINGS[name], budget, methods, list(range(args.pretrain_seeds)),
                                             list(range(1, args.seeds + 1)), os.path.join(args.output, name),
                                             jobs=max(1, args.jobs))
            print(f"\n{name} setting:\n{summaries[name]['table']}\n", flush=True)
    except StepFailed as exc:
        print(f"bench_transfer stopped: {exc}", file=sys.stderr)
        return 1
    wall = time.time() - start
    write_table(args.output, f"{datetime.date.today().isoformat()}, budget {budget.name} ({describe(budget)}), wall "
                f"time {wall / 3600:.1f} h with {args.jobs} jobs on {os.cpu_count()} cores. Evaluation: COCO box AP "
                "on soco_demo_det_val.", summaries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
