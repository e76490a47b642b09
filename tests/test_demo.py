"""tools/demo.py: the end-to-end smoke run (slow: every step of the pipeline on CPU), and its
failure message and report pieces (fast)."""

import json
import math
import os
import pickle
import subprocess
import sys

import pytest

from conftest import load_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "tools", "demo.py")


def load_demo():
    return load_tool("demo")


def test_missing_step_fails_with_a_clear_message(tmp_path):
    demo = load_demo()
    runner = demo.Runner(str(tmp_path))
    with pytest.raises(demo.StepFailed, match="tools/not_there.py is not in this checkout"):
        runner.run("later", "tools/not_there.py", [])


def test_failing_step_reports_its_log(tmp_path):
    demo = load_demo()
    runner = demo.Runner(str(tmp_path))
    script = tmp_path / "fails.py"
    script.write_text("import sys\nprint('error: input.pth: no such file')\nsys.exit(1)\n")
    with pytest.raises(demo.StepFailed, match=r"(?s)\[convert\] failed \(exit code 1\); "
                                              r"log: .*convert.log.*no such file"):
        runner.run("convert", str(script), ["input.pth"])


def test_table_and_plot(tmp_path):
    demo = load_demo()
    rows = {"random init": {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "iterations": [19, 39],
                            "total_loss": [2.0, 1.5], "ap_iterations": [20, 40], "ap_curve": [0.0, 0.0]},
            "SoCo (R18-FPN)": {"AP": 3.5, "AP50": 9.25, "AP75": 1.0, "iterations": [19, 39],
                               "total_loss": [1.8, 1.2], "ap_iterations": [20, 40], "ap_curve": [1.0, 3.5]}}
    table = demo.print_table(rows)
    assert "SoCo (R18-FPN)" in table and "9.25" in table and "1.200" in table
    path = str(tmp_path / "plot.png")
    demo.plot(rows, {"SoCo": ([0, 1], [-0.1, -0.2])}, path)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_mean_over_seeds_averages_metrics_and_curves():
    demo = load_demo()
    run = {"iterations": [19, 39], "ap_iterations": [20, 40]}
    runs = {1: {**run, "AP": 8.0, "AP50": 20.0, "AP75": 6.0, "total_loss": [2.0, 1.0], "ap_curve": [1.0, 8.0]},
            2: {**run, "AP": 10.0, "AP50": 22.0, "AP75": 7.0, "total_loss": [1.0, 0.5], "ap_curve": [3.0, 10.0]}}
    row = demo.mean_over_seeds(runs)
    assert (row["AP"], row["AP50"], row["AP75"]) == (9.0, 21.0, 6.5)
    assert row["total_loss"] == [1.5, 0.75] and row["ap_curve"] == [2.0, 9.0]
    assert row["iterations"] == [19, 39] and row["ap_iterations"] == [20, 40]
    assert row["per_seed"] == {1: {"AP": 8.0, "AP50": 20.0, "AP75": 6.0}, 2: {"AP": 10.0, "AP50": 22.0, "AP75": 7.0}}
    table = demo.print_table({"SoCo (R18-FPN)": row})
    assert "AP per seed" in table and "8.00 10.00" in table and "9.00" in table


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quick_demo_end_to_end(tmp_path):
    """Every step runs: data, proposals, SoCo pretraining, conversion, two starts x two seeds of
    fine-tuning, AP table. About 5 minutes on 2 free CPU cores (tiny budgets: the AP values mean
    nothing here)."""
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, DEMO, "--quick", "--seeds", "2", "--output", str(out)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "COCO box AP on soco_demo_det_val" in proc.stdout
    with open(out / "demo_results.json") as f:
        summary = json.load(f)
    assert set(summary["results"]) == {"random init", "SoCo (R18-FPN)"}
    for row in summary["results"].values():
        assert all(math.isfinite(row[k]) and 0 <= row[k] <= 100 for k in ("AP", "AP50", "AP75"))
        assert row["ap_iterations"] == [12] and row["ap_curve"] == [row["AP"]]
        assert sorted(row["per_seed"]) == ["1", "2"]  # JSON keys
        assert row["AP"] == pytest.approx(sum(v["AP"] for v in row["per_seed"].values()) / 2)
    with open(out / "proposals_det_train.summary.json") as f:
        proposals = json.load(f)
    assert proposals["images"] == 24 and proposals["filter"] == {"scale_range": [0.08, 0.5], "min_side": 16.0}
    assert (out / "demo_results.png").stat().st_size > 10_000
    # The demo exports SoCo's ResNet and FPN, not its box head (CONVERT_INCLUDE).
    with open(out / "soco_d2.pkl", "rb") as f:
        names = pickle.load(f)["model"].keys()
    assert any(n.startswith("backbone.bottom_up.res5.") for n in names)
    assert any(n.startswith("backbone.fpn_") for n in names)
    assert not any(n.startswith("roi_heads.") for n in names)


def test_seeds_below_one_are_refused(tmp_path, capsys):
    demo = load_demo()
    with pytest.raises(SystemExit):
        demo.main(["--seeds", "0", "--output", str(tmp_path / "demo")])
    assert "--seeds must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()  # refused before anything is written
