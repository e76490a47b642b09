"""tools/demo.py and soco/demo: the end-to-end smoke run (slow: every step of the pipeline on CPU),
and its steps, statistics, table and plot (fast)."""

import json
import math
import os
import pickle
import subprocess
import sys

import pytest

from conftest import load_tool
from soco.demo import report, results, settings, statistics, steps
from soco.model_zoo import get_config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "tools", "demo.py")


def load_demo():
    return load_tool("demo")


def test_unknown_step_fails_with_a_clear_message(tmp_path):
    runner = steps.Runner(str(tmp_path))
    with pytest.raises(steps.StepFailed, match="'gen_proposals' is not a step of soco.demo.worker"):
        runner.run("later", "gen_proposals", {})


def test_failing_step_reports_its_log(tmp_path):
    runner = steps.Runner(str(tmp_path))
    missing = str(tmp_path / "input.pth")
    with pytest.raises(steps.StepFailed, match=r"(?s)\[convert\] failed \(exit code 1\); "
                                               r"log: .*convert.log.*input.pth"):
        runner.run("convert", "convert", {"checkpoint": missing, "output": str(tmp_path / "out.pkl"),
                                          "layout": "fpn", "include": ["none"]})


def test_steps_run_package_functions_of_this_soco(tmp_path):
    """A step is a package function in a process of its own (no tools/ script), importing the same
    soco; a finished step is reused."""
    import soco
    from PIL import Image

    runner = steps.Runner(str(tmp_path))
    assert runner.env["PYTHONPATH"].split(os.pathsep)[0] == os.path.dirname(os.path.dirname(soco.__file__))
    (tmp_path / "images").mkdir()
    for i in range(2):
        Image.new("RGB", (64, 48), (40 * i, 120, 200)).save(tmp_path / "images" / f"{i}.png")
    path = steps.proposals(runner, str(tmp_path), "tiny", str(tmp_path / "images"), None)
    with open(path.replace(".pkl", ".summary.json")) as f:
        assert json.load(f)["filter"] == {"scale_range": [0.08, 0.5], "min_side": 16.0}
    assert "proposals_tiny" in runner.timings and os.path.exists(tmp_path / "logs" / "proposals_tiny.log")
    del runner.timings["proposals_tiny"]
    steps.proposals(runner, str(tmp_path), "tiny", str(tmp_path / "images"), None)
    assert "proposals_tiny" not in runner.timings  # reused, not run again


def _run(start, pseed, seed, ap, ap50=None, curve=None):
    return {"start": start, "pretrain_seed": pseed, "seed": seed, "AP": ap, "AP50": ap50 if ap50 is not None else 2 * ap,
            "AP75": ap / 2, "iterations": [19, 39], "total_loss": [2.0, 1.0], "ap_iterations": [20, 40],
            "ap_curve": curve or [ap / 2, ap]}


RUNS = [_run("random init", None, 1, 8.0), _run("random init", None, 2, 9.0), _run("random init", None, 3, 9.0),
        _run("SoCo", 0, 1, 10.0), _run("SoCo", 0, 2, 11.0), _run("SoCo", 0, 3, 12.0),
        _run("SoCo", 1, 1, 10.0), _run("SoCo", 1, 2, 11.0), _run("SoCo", 1, 3, 12.0)]
PROBES = [{"start": "random init", "pretrain_seed": None, "seed": s, "knn_top1": v, "linear_top1": v - 1}
          for s, v in ((1, 30.0), (2, 31.0), (3, 32.0))]
PROBES += [{"start": "SoCo", "pretrain_seed": p, "seed": 1, "knn_top1": v, "linear_top1": v + 1}
           for p, v in ((0, 40.0), (1, 42.0))]


def test_mean_and_standard_error():
    assert statistics.mean_se([8.0, 9.0, 10.0]) == {"mean": 9.0, "se": pytest.approx(1 / math.sqrt(3)), "n": 3}
    one = statistics.mean_se([5.0])
    assert one["mean"] == 5.0 and math.isnan(one["se"])
    with pytest.raises(ValueError, match="no values"):
        statistics.mean_se([])


def test_paired_difference_and_its_interval():
    # Differences 2, 2, 3: mean 7/3, sd 0.577, se 1/3; t(0.975, 2 dof) = 4.303.
    d = statistics.paired_difference([10.0, 11.0, 12.0], [8.0, 9.0, 9.0])
    assert d["mean"] == pytest.approx(7 / 3) and d["se"] == pytest.approx(1 / 3) and d["n"] == 3
    assert d["ci95"] == pytest.approx([7 / 3 - 4.3027 / 3, 7 / 3 + 4.3027 / 3], abs=1e-3)
    assert d["exceeds_noise"]
    # Differences 2, -1, 1: the interval holds 0.
    assert not statistics.paired_difference([10.0, 8.0, 10.0], [8.0, 9.0, 9.0])["exceeds_noise"]
    # One pair: no noise estimate, nothing called significant.
    single = statistics.paired_difference([10.0], [8.0])
    assert single["mean"] == 2.0 and math.isnan(single["ci95"][0]) and not single["exceeds_noise"]
    with pytest.raises(ValueError, match="3 values against 2"):
        statistics.paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])


def test_unpaired_difference():
    # se^2 = 1 + 1/3: the variances of the two means; Welch's dof (4/3)^2 / (1/1 + (1/9)/2) = 1.684,
    # t(0.975, 1.684) = 5.176.
    d = statistics.unpaired_difference([40.0, 42.0], [30.0, 31.0, 32.0])
    assert d["mean"] == pytest.approx(10.0) and d["se"] == pytest.approx(math.sqrt(1 / 3 + 1))
    assert d["n"] == 2 and d["dof"] == pytest.approx(1.6842, abs=1e-4)
    assert d["ci95"][0] == pytest.approx(10.0 - 5.1762 * d["se"], abs=1e-3) and d["exceeds_noise"]
    assert not statistics.unpaired_difference([40.0, 42.0], [30.0, 38.0, 46.0])["exceeds_noise"]
    single = statistics.unpaired_difference([40.0], [30.0, 31.0])
    assert single["mean"] == 9.5 and math.isnan(single["se"]) and not single["exceeds_noise"]


def test_summarise_rows():
    rows = results.summarise(RUNS, PROBES)
    assert list(rows) == ["random init", "SoCo"]
    soco = rows["SoCo"]
    assert soco["AP"] == pytest.approx(11.0) and soco["se"]["AP"] == pytest.approx(math.sqrt(0.8 / 6))
    assert soco["runs"] == 6 and soco["probes"] == 2
    assert soco["knn_top1"] == 41.0 and soco["se"]["knn_top1"] == pytest.approx(1.0)
    assert soco["linear_top1"] == 42.0
    assert soco["ap_curve"] == [5.5, 11.0] and soco["total_loss"] == [2.0, 1.0]
    assert soco["per_run"][3] == {"pretrain_seed": 1, "seed": 1, "AP": 10.0, "AP50": 20.0, "AP75": 5.0}
    assert rows["random init"]["AP"] == pytest.approx(26 / 3)


def test_differences_pair_by_finetuning_seed():
    diffs = results.differences(RUNS, PROBES, "random init")
    assert list(diffs) == ["SoCo"]
    # Per seed: SoCo (mean over pretraining seeds) 10, 11, 12 against 8, 9, 9.
    assert diffs["SoCo"]["AP"]["mean"] == pytest.approx(7 / 3) and diffs["SoCo"]["AP"]["se"] == pytest.approx(1 / 3)
    assert diffs["SoCo"]["AP"]["exceeds_noise"]
    assert diffs["SoCo"]["knn_top1"]["mean"] == pytest.approx(10.0)
    # A start fine-tuned with seeds random init lacks is compared on the shared seeds only.
    extra = RUNS + [_run("SoCo", 0, 4, 50.0)]
    assert results.differences(extra, [], "random init")["SoCo"]["AP"]["n"] == 3


def test_read_metrics(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"iteration": 19, "total_loss": 2.0}\n{"iteration": 39, "bbox/AP": 3.5}\n'
                    '{"iteration": 39, "total_loss": 1.5}\n')
    assert results.read_metrics(str(path)) == ([19, 39], [2.0, 1.5])
    assert results.read_metrics(str(path), "bbox/AP") == ([39], [3.5])
    assert results.read_metrics(str(tmp_path / "missing.json")) == ([], [])
    assert results.nan_to_zero(float("nan")) == 0.0 and results.nan_to_zero(4.5) == 4.5


def test_table_runs_and_plot(tmp_path):
    rows = results.summarise(RUNS, PROBES)
    table = report.format_table(rows, results.differences(RUNS, PROBES, "random init"))
    lines = table.splitlines()
    assert "probe kNN %" in lines[0] and "AP - random init [95% CI]" in lines[0]
    assert lines[2].startswith("SoCo") and "11.00 ± 0.37" in lines[2] and "41.00 ± 1.00" in lines[2]
    assert "+2.33 [+0.90, +3.77] *" in lines[2] and "+10.00 [" in lines[2]
    assert "8.67 ± 0.33" in lines[1]
    assert "health" not in table  # no start has a pretraining health yet
    # With one: a last column, under its header, blank for random init.
    health = [{"start": "SoCo", "pretrain_seed": 0, "norm_ratio_stem": 1.0, "norm_ratio_max": 1.5, "stem_rank": 50.0,
               "embed_std_frac": 0.25}]
    lines = report.format_table(results.summarise(RUNS, PROBES, health),
                                results.differences(RUNS, PROBES, "random init")).splitlines()
    assert lines[0].endswith("health: stem norm x / any stage x / stem rank; embedding std / ideal; clusters occupied")
    assert lines[2].endswith("   1.00 / 1.50 / 50.0; emb 0.25") and not lines[1].endswith("emb 0.25")
    assert lines[2].index("1.00 / 1.50") == lines[0].index("health:")
    runs = report.format_runs(rows)
    assert "random init: f1 8.00 f2 9.00 f3 9.00" in runs and "SoCo: p0/f1 10.00" in runs
    # One run per start: no standard error, no interval.
    single = results.summarise(RUNS[:1] + RUNS[3:4], [])
    table = report.format_table(single, results.differences(RUNS[:1] + RUNS[3:4], [], "random init"))
    assert " 10.00 " in table and "±" not in table and "+2.00 " in table and "*" not in table
    path = str(tmp_path / "plot.png")
    report.plot(rows, {"soco_seed0": ([0, 1], [-0.1, -0.2])}, path, title="test")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_markdown_table_over_settings():
    summary = {"results": results.summarise(RUNS, PROBES), "differences": results.differences(RUNS, PROBES, "random init")}
    table = report.format_markdown({"few-label": summary, "current": {**summary, "differences": {}}})
    lines = table.splitlines()
    assert lines[0].startswith("| setting | start | seeds (pretrain x fine-tune) | probe kNN %")
    assert lines[0].endswith("| AP - random init [95% CI] | linear - random init [95% CI] "
                             "| health: stem norm x / any stage x / stem rank; embedding std / ideal; clusters occupied |")
    assert lines[2] == "| few-label | random init | 3 | 31.00 ± 0.58 | 30.00 ± 0.58 | 8.67 ± 0.33 | 17.33 ± 0.67 |  |  |  |"
    assert lines[3].startswith("| few-label | SoCo | 2 x 3 | 41.00 ± 1.00 | 42.00 ± 1.00 | 11.00 ± 0.37 | 22.00 ± 0.73 "
                               "| **+2.33 [+0.90, +3.77]** | **+12.00 [")
    assert lines[5].startswith("| current | SoCo | 2 x 3 |") and lines[5].endswith("|  |  |  |")
    # With the pretraining runs' health: the means over the start's pretraining seeds.
    health = [{"start": "SoCo", "pretrain_seed": p, "norm_ratio_stem": 1.0 + p, "norm_ratio_max": 2.0, "stem_rank": 50.0 + p}
              for p in (0, 1)]
    summary["results"] = results.summarise(RUNS, PROBES, health)
    assert report.format_markdown({"few-label": summary}).splitlines()[3].endswith("| 1.50 / 2.00 / 50.5 |")
    # Embedding std and occupancy where every pretraining seed measured them (the smallest head's).
    for h, frac in zip(health, (0.2, 0.4)):
        h.update(embed_std_frac=frac, occupied_min_frac=frac + 0.1)
    summary["results"] = results.summarise(RUNS, PROBES, health)
    assert report.format_markdown({"few-label": summary}).splitlines()[3].endswith(
        "| 1.50 / 2.00 / 50.5; emb 0.30; 40 % occupied |")


def test_soco_against_the_image_level_starts():
    # BYOL's two pretraining seeds differ by 1 AP: the baseline's value for a fine-tuning seed is
    # its mean over them, as for the start's.
    byol = [_run("BYOL", p, s, ap + p) for p in (0, 1) for s, ap in ((1, 9.0), (2, 10.5), (3, 11.0))]
    byol_probes = [{"start": "BYOL", "pretrain_seed": p, "seed": 1, "knn_top1": 35.0, "linear_top1": v}
                   for p, v in ((0, 38.0), (1, 40.0))]
    summary = {"runs": RUNS + byol, "probes": PROBES + byol_probes}
    table = report.format_versus({"few-label": summary}).splitlines()
    assert table[0] == "| setting | difference | AP [95% CI] | probe linear % [95% CI] |"
    # SoCo per seed 10, 11, 12 against BYOL 9.5, 11, 11.5: +0.5, 0, +0.5 -> mean +0.33.
    assert len(table) == 3 and table[2].startswith("| few-label | SoCo - BYOL | +0.33 [-0.38, +1.05] | +3.00 [")
    byol_p0 = [r for r in byol if r["pretrain_seed"] == 0]  # 9, 10.5, 11: +1, +0.5, +1 -> +0.83
    table = report.format_versus({"few-label": {"runs": RUNS + byol_p0, "probes": PROBES + byol_probes}})
    assert table.splitlines()[2].startswith("| few-label | SoCo - BYOL | **+0.83 [+0.12, +1.55]** | +3.00 [")
    assert report.format_versus({"current": {"runs": RUNS, "probes": PROBES}}) == ""


def test_every_method_sees_the_same_images():
    """iterations x batch is equal for every method within each budget."""
    from soco.config import load_pretrain_config

    batches = {m: load_pretrain_config(get_config_file(p)).SOLVER.IMS_PER_BATCH
               for m, p in settings.PRETRAIN_CONFIGS.items()}
    for budget in settings.BUDGETS.values():
        seen = {m: budget.pretrain_iters[m] * batches[m] for m in settings.METHODS}
        assert len(set(seen.values())) == 1, (budget.name, seen)
    assert settings.BUDGETS["full"].pretrain_iters["SoCo"] == 300  # the figures of docs/TRANSFER.md


def test_method_names_parse():
    demo = load_demo()
    assert demo.parse_methods("all") == list(settings.METHODS)
    assert demo.parse_methods("smog, soco") == ["SoCo", "SMoG"]
    with pytest.raises(ValueError, match="unknown method.*moco"):
        demo.parse_methods("SoCo,moco")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_quick_demo_end_to_end(tmp_path):
    """Every step runs: data, proposals, SoCo pretraining with two seeds, conversion, item probes,
    two starts x two fine-tuning seeds, table with standard errors and paired differences. About
    5 minutes on 2 free CPU cores, over 30 on a loaded one (tiny budgets: the values mean nothing
    here)."""
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, DEMO, "--quick", "--seeds", "2", "--pretrain-seeds", "2",
                           "--output", str(out)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "COCO box AP on soco_demo_det_val" in proc.stdout and "probe kNN %" in proc.stdout
    with open(out / "demo_results.json") as f:
        summary = json.load(f)
    assert set(summary["results"]) == {"random init", "SoCo"}
    assert summary["pretrain_seeds"] == [0, 1] and summary["finetune_seeds"] == [1, 2]
    for name, row in summary["results"].items():
        assert all(math.isfinite(row[k]) and 0 <= row[k] <= 100 for k in ("AP", "AP50", "AP75"))
        assert 0 <= row["knn_top1"] <= 100 and 0 <= row["linear_top1"] <= 100
        assert row["ap_iterations"] == [12]
        assert row["runs"] == (2 if name == "random init" else 4)
        assert row["AP"] == pytest.approx(sum(r["AP"] for r in row["per_run"]) / row["runs"])
    assert {(p["start"], p["pretrain_seed"], p["seed"]) for p in summary["probes"]} == {
        ("random init", None, 1), ("random init", None, 2), ("SoCo", 0, 1), ("SoCo", 1, 1)}
    assert summary["differences"]["SoCo"]["AP"]["n"] == 2
    # The two pretraining seeds gave two different starts.
    soco_probes = [p["knn_top1"] for p in summary["probes"] if p["start"] == "SoCo"]
    with open(out / "soco_seed0_d2.pkl", "rb") as f0, open(out / "soco_seed1_d2.pkl", "rb") as f1:
        w0, w1 = pickle.load(f0)["model"], pickle.load(f1)["model"]
    assert not (w0["backbone.bottom_up.res5.0.conv1.weight"] == w1["backbone.bottom_up.res5.0.conv1.weight"]).all()
    assert len(soco_probes) == 2
    with open(out / "proposals_det_train_24.summary.json") as f:
        proposals = json.load(f)
    assert proposals["images"] == 24 and proposals["filter"] == {"scale_range": [0.08, 0.5], "min_side": 16.0}
    assert (out / "demo_results.png").stat().st_size > 10_000
    # The demo exports SoCo's ResNet and FPN, not its box head (CONVERT_INCLUDE).
    names = w0.keys()
    assert any(n.startswith("backbone.bottom_up.res5.") for n in names)
    assert any(n.startswith("backbone.fpn_") for n in names)
    assert not any(n.startswith("roi_heads.") for n in names)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_quick_few_label_demo_with_every_method(tmp_path):
    """The few-label setting with every method as a start (tiny budgets): each pretrains on the
    pool, converts, is probed and fine-tuned on the 64 labelled images."""
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, DEMO, "--quick", "--setting", "few-label", "--methods", "all",
                           "--output", str(out)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "demo_results.json") as f:
        summary = json.load(f)
    assert list(summary["results"]) == ["random init", *settings.METHODS]
    assert summary["setting"]["pretrain_dataset"] == "soco_demo_pool"
    assert summary["setting"]["finetune_dataset"] == "soco_demo_det_train_few"
    assert set(summary["differences"]) == set(settings.METHODS)
    for method in settings.METHODS:
        assert "knn_top1" in summary["results"][method]
        log = (out / "logs" / f"pretrain_{method.lower()}_seed0.log").read_text()
        assert "images_pool_24.txt" in log
    assert (out / "images_pool_24.txt").read_text().split() == [f"{i:06d}.jpg" for i in range(24)]


def test_seeds_below_one_are_refused(tmp_path, capsys):
    demo = load_demo()
    with pytest.raises(SystemExit):
        demo.main(["--seeds", "0", "--output", str(tmp_path / "demo")])
    assert "--seeds must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()  # refused before anything is written
    with pytest.raises(SystemExit):
        demo.main(["--pretrain-seeds", "0", "--output", str(tmp_path / "demo")])
    assert "--pretrain-seeds must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo.main(["--methods", "SoCo,moco", "--output", str(tmp_path / "demo")])
    assert "--methods: unknown method(s) moco" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo.main(["--quick", "--budget", "long", "--output", str(tmp_path / "demo")])
    assert "contradicts --budget long" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_bench_transfer_refuses_unknown_settings_and_methods(tmp_path, capsys):
    bench = load_tool("bench_transfer", "benchmarks")
    for argv in (["--settings", "few-label,imagenet"], ["--methods", "SoCo,MoCo"], ["--seeds", "0"]):
        with pytest.raises(SystemExit):
            bench.main([*argv, "--output", str(tmp_path / "bench")])
        assert "unknown setting or method" in capsys.readouterr().err
    assert not (tmp_path / "bench").exists()


def _finished_fine_tune(out, name, ap):
    """A fine-tune's folder as tools/finetune_net.py leaves it (eval_results.json, metrics.json)."""
    folder = out / f"finetune_{name}"
    folder.mkdir(parents=True)
    (folder / "eval_results.json").write_text(json.dumps({"bbox": {"AP": ap, "AP50": 2 * ap, "AP75": float("nan")}}))
    (folder / "metrics.json").write_text('{"iteration": 9, "total_loss": 1.5}\n{"iteration": 9, "bbox/AP": %s}\n' % ap)


def _finished_probe(out, name, seed, knn, linear=1.0):
    (out / f"probe_{name}.json").write_text(json.dumps({"seed": seed, "knn_top1": knn, "linear_top1": linear}))


def test_collect_finished_reads_the_steps_done_so_far(tmp_path):
    from soco.demo.pipeline import collect_finished

    for name, ap in (("random_seed1", 8.0), ("random_seed2", 9.0), ("soco_p1_seed2", 11.0), ("smog_p0_seed1", 7.0)):
        _finished_fine_tune(tmp_path, name, ap)
    (tmp_path / "finetune_soco_p0_seed1").mkdir()  # still running: no eval_results.json
    for name, seed, knn in (("random_seed1", 1, 30.0), ("random_seed2", 2, 32.0), ("coke_p0", 1, 35.0)):
        _finished_probe(tmp_path, name, seed, knn)
    (tmp_path / "pretrain_coke_seed0").mkdir()  # its health, as soco.engine.health writes it
    (tmp_path / "pretrain_coke_seed0" / "health.json").write_text(json.dumps(
        {"metrics": {"norm_ratio_stem": 11.0, "norm_ratio_res2": 12.5, "stem_rank": 3.5, "embed_std": 0.05,
                     "embed_std_ideal": 0.125, "coke_head0_occupied_frac": 0.5, "coke_head1_occupied_frac": 0.25}}))
    (tmp_path / "pretrain_smog_seed0").mkdir()  # still running: no health.json
    found = collect_finished(str(tmp_path), settings.BUDGETS["quick"])
    assert found["results"]["CoKe"]["health"] == {"norm_ratio_stem": 11.0, "stem_rank": 3.5, "norm_ratio_max": 12.5,
                                                  "embed_std_frac": 0.4, "occupied_min_frac": 0.25}
    assert "health" not in found["results"]["SMoG"]
    assert [(r["start"], r["pretrain_seed"], r["seed"], r["AP"], r["AP75"]) for r in found["runs"]] == [
        ("random init", None, 1, 8.0, 0.0), ("random init", None, 2, 9.0, 0.0), ("SoCo", 1, 2, 11.0, 0.0),
        ("SMoG", 0, 1, 7.0, 0.0)]
    assert found["runs"][0]["ap_iterations"] == [10] and found["runs"][0]["total_loss"] == [1.5]
    assert list(found["results"]) == ["random init", "SoCo", "SMoG", "CoKe"]
    assert found["results"]["CoKe"]["runs"] == 0 and found["results"]["CoKe"]["knn_top1"] == 35.0
    assert found["differences"]["SoCo"]["AP"]["mean"] == 2.0  # paired with random init's seed 2
    assert found["differences"]["CoKe"]["knn_top1"]["mean"] == 4.0
    assert "CoKe: (not fine-tuned yet)" in found["per_run"]
    assert found["table"].splitlines()[4].startswith("CoKe")


def test_collect_finished_before_anything_finished(tmp_path):
    from soco.demo.pipeline import collect_finished

    (tmp_path / "finetune_random_seed1").mkdir()  # still running
    found = collect_finished(str(tmp_path), settings.BUDGETS["quick"])
    assert found["runs"] == [] and found["results"] == {} and found["table"].startswith("start")


def test_bench_transfer_collects_one_table_from_finished_folders(tmp_path, capsys):
    bench = load_tool("bench_transfer", "benchmarks")
    few, current = tmp_path / "few", tmp_path / "current"
    for out, base in ((few, 1.0), (current, 8.0)):
        for seed in (1, 2):
            _finished_fine_tune(out, f"random_seed{seed}", base + seed)
            _finished_fine_tune(out, f"soco_p0_seed{seed}", base + 1.5 * seed + 1.0)
            _finished_probe(out, f"random_seed{seed}", seed, 30.0, linear=30.0 + seed)
        _finished_probe(out, "soco_p0", 1, 31.0, linear=40.0)
    assert bench.main(["--collect", f"few-label:medium={few}", "--collect", f"current:full={current}",
                       "--output", str(tmp_path / "table")]) == 0
    table = (tmp_path / "table" / "transfer_table.md").read_text()
    assert "600 fine-tuning iterations" in table and "200 SoCo pretraining iterations of 4 images on 800" in table
    rows = [line for line in table.splitlines() if line.startswith("| few-label") or line.startswith("| current")]
    assert rows[0].startswith("| few-label (medium) | random init | 2 | 30.00 ± 0.00 | 31.50 ± 0.50 | 2.50 ± 0.50 |")
    assert rows[1].startswith("| few-label (medium) | SoCo | 1 x 2 |") and "| +1.75 [-1.43, +4.93] | +8.50 |" in rows[1]
    assert rows[3].startswith("| current (full) | SoCo | 1 x 2 |") and "11.25 ± 0.75" in rows[3]
    for spec in ("few-label=DIR", f"imagenet:full={few}", f"current:full={tmp_path / 'missing'}"):
        with pytest.raises(SystemExit):
            bench.main(["--collect", spec, "--output", str(tmp_path / "bad")])
        assert "--collect" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
