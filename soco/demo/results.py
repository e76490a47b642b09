"""Reading the demo's run outputs and reducing them to one row per start.

A *health* entry is the last representation-health check of one pretraining run
(``soco.engine.health``, ``pretrain_<method>_seed<k>/health.json``): ``{"start",
"pretrain_seed", "norm_ratio_stem", "stem_rank", ...}``.

A *run* is one fine-tune: ``{"start", "pretrain_seed" (None for random init), "seed" (the
fine-tuning seed), "AP", "AP50", "AP75", "iterations", "total_loss", "ap_iterations",
"ap_curve"}``. A *probe* is one item-probe result of a start's initial weights: ``{"start",
"pretrain_seed", "seed", "knn_top1", "linear_top1"}`` (random init: one per fine-tuning seed,
which is its initialisation seed; a pretrained start: one per pretraining seed).
"""

import json
import math
import os
import re
from typing import Dict, List, Sequence, Tuple

from .settings import METHODS
from .statistics import mean_se, paired_difference, unpaired_difference

__all__ = ["read_metrics", "read_health", "nan_to_zero", "METRICS", "PROBE_METRICS", "HEALTH_METRICS", "summarise",
           "differences"]

METRICS = ("AP", "AP50", "AP75")
PROBE_METRICS = ("knn_top1", "linear_top1")
# What the table shows of a start's health (means over its pretraining seeds): its stem's
# weight-norm ratio against the start and effective rank, and the largest ratio of any stage;
# where the method has them, its embeddings' per-dimension std as a fraction of the ideal
# 1/sqrt(D), and the smallest occupied fraction of its clusters or groups over its heads.
HEALTH_METRICS = ("norm_ratio_stem", "stem_rank", "norm_ratio_max", "embed_std_frac", "occupied_min_frac")


def read_metrics(path: str, key: str = "total_loss") -> Tuple[List[int], List[float]]:
    """(iterations, values) of ``key`` in a Detectron2 metrics.json (one JSON object per line;
    missing file: empty lists)."""
    its, values = [], []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if key in row:
                    its.append(row["iteration"])
                    values.append(row[key])
    return its, values


def read_health(out: str) -> List[Dict]:
    """The health entries of the pretraining runs under ``out`` that have written one; each
    with ``norm_ratio_max``, the largest ``norm_ratio_<stage>``, and where the run measured them
    ``embed_std_frac`` (``embed_std`` / ``embed_std_ideal``) and ``occupied_min_frac`` (the
    smallest ``*_occupied_frac``)."""
    names = {m.lower(): m for m in METHODS}
    entries = []
    for entry in sorted(os.listdir(out)):
        match = re.fullmatch(r"pretrain_(\w+?)_seed(\d+)", entry)
        path = os.path.join(out, entry, "health.json")
        if not match or match.group(1) not in names or not os.path.exists(path):
            continue
        with open(path) as f:
            metrics = json.load(f)["metrics"]
        entries.append({"start": names[match.group(1)], "pretrain_seed": int(match.group(2)), **metrics,
                         **_derived_health(metrics)})
    return entries


def _derived_health(metrics: Dict[str, float]) -> Dict[str, float]:
    """The table's summaries of one run's health metrics (those it can derive)."""
    derived = {}
    ratios = [v for k, v in metrics.items() if k.startswith("norm_ratio_")]
    if ratios:
        derived["norm_ratio_max"] = max(ratios)
    if "embed_std" in metrics and metrics.get("embed_std_ideal"):
        derived["embed_std_frac"] = metrics["embed_std"] / metrics["embed_std_ideal"]
    occupied = [v for k, v in metrics.items() if k.endswith("_occupied_frac")]
    if occupied:
        derived["occupied_min_frac"] = min(occupied)
    return derived


def nan_to_zero(ap: float) -> float:
    """COCO AP is NaN when the detector outputs nothing above the score threshold: that is AP 0."""
    return 0.0 if math.isnan(ap) else ap


def _mean_curves(curves: List[List[float]]) -> List[float]:
    return [sum(v) / len(v) for v in zip(*curves)]


def summarise(runs: List[Dict], probes: List[Dict], health: Sequence[Dict] = ()) -> Dict[str, Dict]:
    """One row per start (in order of first appearance in ``runs``, then ``probes``): the mean of
    each metric (``AP``, ..., ``knn_top1``, ``linear_top1``; only those measured), their standard
    errors under ``se``, the run and probe counts, each run's and probe's values (``per_run``,
    ``per_probe``) and the curves averaged over the runs (same budget, so they share their
    iterations; empty for a start not fine-tuned yet); ``health``: the means over the start's
    pretraining seeds of ``HEALTH_METRICS`` from its ``health`` entries (absent without any)."""
    rows = {}
    for start in dict.fromkeys([r["start"] for r in runs] + [p["start"] for p in probes]):
        mine = [r for r in runs if r["start"] == start]
        mine_probes = [p for p in probes if p["start"] == start]
        row = {"iterations": mine[0]["iterations"] if mine else [],
               "ap_iterations": mine[0]["ap_iterations"] if mine else [],
               "total_loss": _mean_curves([r["total_loss"] for r in mine]),
               "ap_curve": _mean_curves([r["ap_curve"] for r in mine]), "se": {}, "runs": len(mine),
               "probes": len(mine_probes)}
        for key in METRICS:
            if mine:
                stat = mean_se([r[key] for r in mine])
                row[key], row["se"][key] = stat["mean"], stat["se"]
        for key in PROBE_METRICS:
            values = [p[key] for p in mine_probes if key in p]
            if values:
                stat = mean_se(values)
                row[key], row["se"][key] = stat["mean"], stat["se"]
        mine_health = [h for h in health if h["start"] == start]
        if mine_health:
            row["health"] = {k: sum(h[k] for h in mine_health) / len(mine_health)
                             for k in HEALTH_METRICS if all(k in h for h in mine_health)}
        row["per_run"] = [{k: r[k] for k in ("pretrain_seed", "seed", *METRICS)} for r in mine]
        row["per_probe"] = [{k: p[k] for k in ("pretrain_seed", "seed", *PROBE_METRICS) if k in p} for p in mine_probes]
        rows[start] = row
    return rows


def _mean_by_seed(runs: List[Dict], start: str, key: str) -> Dict[int, float]:
    """Fine-tuning seed -> ``start``'s mean of ``key`` over its runs with that seed (its
    pretraining seeds)."""
    by_seed: Dict[int, List[float]] = {}
    for r in runs:
        if r["start"] == start:
            by_seed.setdefault(r["seed"], []).append(r[key])
    return {seed: sum(values) / len(values) for seed, values in by_seed.items()}


def differences(runs: List[Dict], probes: List[Dict], baseline: str) -> Dict[str, Dict]:
    """Each other start minus ``baseline``: AP metrics paired by fine-tuning seed (each start's
    value for a seed, the baseline's too, is its mean over pretraining seeds), probe metrics
    unpaired (the starts' probes share no seed). See :mod:`.statistics` for the keys and when a
    difference is called larger than its noise."""
    out = {}
    starts = [r["start"] for r in runs] + [p["start"] for p in probes]
    for start in dict.fromkeys(s for s in starts if s != baseline):
        diff = {}
        for key in METRICS:
            mine, base = _mean_by_seed(runs, start, key), _mean_by_seed(runs, baseline, key)
            seeds = sorted(set(mine) & set(base))
            if seeds:
                diff[key] = paired_difference([mine[s] for s in seeds], [base[s] for s in seeds])
        for key in PROBE_METRICS:
            a = [p[key] for p in probes if p["start"] == start and key in p]
            b = [p[key] for p in probes if p["start"] == baseline and key in p]
            if a and b:
                diff[key] = unpaired_difference(a, b)
        out[start] = diff
    return out
