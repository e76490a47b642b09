"""The demo's table (text), plot (PNG) and results file (JSON), from :mod:`.results` rows."""

import math
from typing import Dict, List, Tuple

from ..utils.files import atomic_write

from .results import METRICS, PROBE_METRICS, differences

__all__ = ["format_value", "format_table", "format_markdown", "format_versus", "format_runs", "plot"]

_HEADERS = {"knn_top1": "probe kNN %", "linear_top1": "probe lin. %", "AP": "AP", "AP50": "AP50", "AP75": "AP75"}
_HEALTH_HEADER = "health: stem norm x / any stage x / stem rank; embedding std / ideal; clusters occupied"
_DIFFERENCE_WIDTH = 32  # one difference column of the text table, after 3 spaces


def format_value(mean: float, se: float) -> str:
    """``"10.22 ± 0.11"``; the standard error is left out when unknown (NaN: one value)."""
    return f"{mean:.2f}" if math.isnan(se) else f"{mean:.2f} ± {se:.2f}"


def _signed(d: Dict, mark: bool = True) -> str:
    """``"+2.33 [+0.90, +3.77] *"``: a difference, its 95 % interval (when known) and, with
    ``mark``, ``*`` where the interval excludes 0."""
    low, high = d["ci95"]
    interval = "" if math.isnan(low) else f" [{low:+.2f}, {high:+.2f}]"
    return f"{d['mean']:+.2f}{interval}{' *' if mark and d['exceeds_noise'] else ''}"


def _markdown_difference(d: Dict, missing: str) -> str:
    """A difference for a markdown cell, bold where its interval excludes 0; ``missing`` for None."""
    if d is None:
        return missing
    return f"**{_signed(d, mark=False)}**" if d["exceeds_noise"] else _signed(d)


def format_table(rows: Dict[str, Dict], diffs: Dict[str, Dict] = None, baseline: str = "random init") -> str:
    """start x (probe kNN, probe linear, AP, AP50, AP75: mean ± standard error; runs: fine-tunes
    averaged) and, with ``diffs``, each start's AP, kNN and linear-probe difference from
    ``baseline`` with its 95 % interval, ``*`` where the interval excludes 0; where a start has
    one, its pretraining's health last (as :func:`_health_cell`)."""
    keys = [k for k in (*PROBE_METRICS, *METRICS) if any(k in r for r in rows.values())]
    cells = {name: [format_value(r[k], r["se"][k]) if k in r else "-" for k in keys] for name, r in rows.items()}
    width = max([15, *(len(c) + 2 for row in cells.values() for c in row)])  # lists: nothing finished yet works
    name_width = max([16, *(len(n) + 2 for n in rows)])
    header = f"{'start':<{name_width}}" + "".join(f"{_HEADERS[k]:>{width}}" for k in keys) + f"{'runs':>6}"
    if diffs:
        header += "".join(f"   {k + ' - ' + baseline + ' [95% CI]':<{_DIFFERENCE_WIDTH}}" for k in ("AP", "kNN", "linear"))
    with_health = any(_health_cell(r.get("health", {})) for r in rows.values())
    if with_health:
        header += f"   {_HEALTH_HEADER}"
    lines = [header.rstrip()]
    for name, r in rows.items():
        line = f"{name:<{name_width}}" + "".join(f"{c:>{width}}" for c in cells[name]) + f"{r['runs']:>6}"
        if diffs and name in diffs:
            d = diffs[name]
            line += "".join(f"   {_signed(d[k]) if k in d else '-':<{_DIFFERENCE_WIDTH}}"
                            for k in ("AP", "knn_top1", "linear_top1"))
        elif diffs and with_health:
            line += " " * (3 * (3 + _DIFFERENCE_WIDTH))
        if with_health:
            line += f"   {_health_cell(r.get('health', {}))}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def format_markdown(summaries: Dict[str, Dict], baseline: str = "random init") -> str:
    """One markdown table over settings: ``summaries`` maps a label (a setting's name, or e.g.
    "few-label, medium") to the results dict of :func:`soco.demo.pipeline.run_comparison` or
    :func:`soco.demo.pipeline.collect_finished` (its ``results`` and ``differences``). Columns:
    label, start, pretraining x fine-tuning seeds, probe kNN and linear, AP, AP50 (mean ±
    standard error), the AP and linear-probe differences from ``baseline`` with their 95 %
    intervals (bold where the interval excludes 0), and the start's health at the end of its
    pretraining (``soco.engine.health``): the stem's weight norm against its start, the largest
    such ratio of any stage, the stem's effective rank (random filters: about 51), and where
    measured the embeddings' std against the ideal 1/sqrt(D) and the occupied clusters."""
    lines = ["| setting | start | seeds (pretrain x fine-tune) | probe kNN % | probe linear % | AP | AP50 "
             f"| AP - {baseline} [95% CI] | linear - {baseline} [95% CI] | {_HEALTH_HEADER} |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for setting, summary in summaries.items():
        for name, r in summary["results"].items():
            pseeds = len({x["pretrain_seed"] for x in r["per_run"]})
            fseeds = len({x["seed"] for x in r["per_run"]})
            seeds = f"{fseeds}" if name == baseline else f"{pseeds} x {fseeds}"
            cells = [format_value(r[k], r["se"][k]) if k in r else "-" for k in ("knn_top1", "linear_top1", "AP", "AP50")]
            cells += [_markdown_difference(summary.get("differences", {}).get(name, {}).get(key), "")
                      for key in ("AP", "linear_top1")]
            cells.append(_health_cell(r.get("health", {})))
            lines.append(f"| {setting} | {name} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _health_cell(health: Dict[str, float]) -> str:
    """``"1.01 / 1.24 / 51.5; emb 0.30; 38 % occupied"`` (stem norm ratio / largest stage ratio /
    stem rank; embedding std as a fraction of the ideal; smallest occupied fraction of clusters),
    the last two only where measured; "" without the first three."""
    if not all(k in health for k in ("norm_ratio_stem", "norm_ratio_max", "stem_rank")):
        return ""
    parts = [f"{health['norm_ratio_stem']:.2f} / {health['norm_ratio_max']:.2f} / {health['stem_rank']:.1f}"]
    if "embed_std_frac" in health:
        parts.append(f"emb {health['embed_std_frac']:.2f}")
    if "occupied_min_frac" in health:
        parts.append(f"{100 * health['occupied_min_frac']:.0f} % occupied")
    return "; ".join(parts)


def format_versus(summaries: Dict[str, Dict], start: str = "SoCo", baseline: str = "random init") -> str:
    """Markdown rows of ``start`` minus each other pretrained start, per label of ``summaries``
    (results dicts with ``runs`` and ``probes``): the AP difference paired by fine-tuning seed
    and the linear-probe difference (Welch), each with its 95 % interval, bold where it excludes
    0. Empty string when no label has ``start`` and another pretrained start."""
    lines = []
    for setting, summary in summaries.items():
        runs, probes = summary.get("runs", []), summary.get("probes", [])
        starts = [s for s in dict.fromkeys([r["start"] for r in runs] + [p["start"] for p in probes])
                  if s not in (start, baseline)]
        if start not in {r["start"] for r in runs} | {p["start"] for p in probes}:
            continue
        for other in starts:
            diff = differences(runs, probes, other).get(start, {})
            cells = [_markdown_difference(diff.get(key), "-") for key in ("AP", "linear_top1")]
            lines.append(f"| {setting} | {start} - {other} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    return "\n".join([f"| setting | difference | AP [95% CI] | probe linear % [95% CI] |", "|---|---|---|---|", *lines])


def format_runs(rows: Dict[str, Dict]) -> str:
    """One line per start: each fine-tune's AP as ``p<pretraining seed>/f<fine-tuning seed>``."""
    lines = []
    for name, r in rows.items():
        runs = " ".join(
            (f"p{x['pretrain_seed']}/" if x["pretrain_seed"] is not None else "") + f"f{x['seed']} {x['AP']:.2f}"
            for x in r["per_run"])
        lines.append(f"  {name}: {runs or '(not fine-tuned yet)'}")
    return "\n".join(lines)


def plot(rows: Dict[str, Dict], pretrain_curves: Dict[str, Tuple[List[int], List[float]]], path: str,
         title: str = "") -> None:
    """Five panels: fine-tuning loss, AP while fine-tuning (means over runs), pretraining loss
    per run, AP / AP50 bars and probe bars (error bars: standard errors). Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(25, 4.4))
    for name, r in rows.items():
        axes[0].plot(r["iterations"], r["total_loss"], marker="o", markersize=3, label=name)
        axes[1].plot([0, *r["ap_iterations"]], [0.0, *r["ap_curve"]], marker="o", label=name)
    axes[0].set(title="fine-tuning loss (Faster R-CNN R18-FPN)", xlabel="iteration", ylabel="total loss")
    axes[1].set(title="box AP on soco_demo_det_val while fine-tuning", xlabel="iteration", ylabel="AP (%)")
    for name, (its, losses) in pretrain_curves.items():
        axes[2].plot(its, losses, marker="o", markersize=3, label=name)
    axes[2].set(title="pretraining loss", xlabel="iteration", ylabel="total loss")
    names = list(rows)
    for ax, keys, title_ in ((axes[3], METRICS[:2], "COCO AP on soco_demo_det_val"),
                             (axes[4], PROBE_METRICS, "item probe of the start (top-1 %)")):
        keys = [k for k in keys if any(k in rows[n] for n in names)]
        width = 0.8 / max(len(keys), 1)
        for j, key in enumerate(keys):
            xs = [i + (j - (len(keys) - 1) / 2) * width for i in range(len(names))]
            means = [rows[n].get(key, 0.0) for n in names]
            errors = [0.0 if math.isnan(rows[n]["se"].get(key, math.nan)) else rows[n]["se"][key] for n in names]
            ax.bar(xs, means, width, yerr=errors, capsize=3, label=_HEADERS[key])
        ax.set_xticks(range(len(names)), names, rotation=10)
        ax.set(title=title_, ylabel="%")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, dpi=90, format="png"))
    plt.close(fig)
