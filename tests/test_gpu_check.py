"""benchmarks/gpu_check.py and gpu_check.sh without a GPU: options, the 1-GPU SyncBN note, the
time budget, the table from a run's JSON, and the shell script's refusal without a GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402

RESULTS = {
    "info": {"world_size": 1, "torch": "2.11.0+cu130", "device": "NVIDIA H100 80GB HBM3", "steps": 10, "warmup": 3},
    "results": {
        "SoCo amp": {"images_per_s_per_gpu": 412.34, "seconds_per_step": 0.0776, "warmup_s": 4.2,
                     "peak_memory_GB": 21.456, "step_TFLOP_per_gpu": 30.0, "MFU": 0.3912},
        "SoCo amp+syncbn": {"skipped": gpu_check.skip_reason("amp+syncbn", 1, smoke=False)},
        "BYOL amp+compile": {"error": "RuntimeError: boom"},
    },
}


def test_defaults_are_short_and_more_steps_are_an_option():
    args = gpu_check.parse_args([])
    assert (args.steps, args.warmup, args.budget_min) == (10, 3, 7.0)
    assert args.variants == gpu_check.VARIANTS and args.methods == ["SoCo", "BYOL"]
    args = gpu_check.parse_args(["--steps", "50", "--warmup", "10", "--num-gpus", "8"])
    assert (args.steps, args.warmup, args.num_gpus) == (50, 10, 8)
    for bad in (["--steps", "0"], ["--num-gpus", "0"], ["--variants", "fp16"]):
        with pytest.raises(SystemExit):
            gpu_check.parse_args(bad)


def test_syncbn_is_skipped_with_a_note_on_one_gpu_only():
    assert gpu_check.skip_reason("amp+syncbn", 1, smoke=False) == (
        "SyncBN needs 2+ GPUs (this run has 1); run on a machine with several")
    assert gpu_check.skip_reason("amp+syncbn", 2, smoke=False) is None
    assert gpu_check.skip_reason("amp+syncbn", 2, smoke=True) == "SyncBatchNorm runs on GPUs only"
    assert gpu_check.skip_reason("amp+compile", 1, smoke=False) is None


def test_table_from_a_json_file(tmp_path, capsys):
    path = tmp_path / "gpu_check.json"
    path.write_text(json.dumps(RESULTS))
    gpu_check.main(["--table", str(path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("gpu_check: NVIDIA H100 80GB HBM3 x 1 | torch 2.11.0+cu130 | "
                        "10 timed steps after 3 warm-up, per GPU")
    assert lines[2].split() == ["SoCo", "amp", "412.3", "77.6", "21.46", "39.1%", "4.2"]
    assert lines[3].split()[:2] == ["SoCo", "amp+syncbn"]
    assert lines[3].endswith("skipped: SyncBN needs 2+ GPUs (this run has 1); run on a machine with several")
    assert lines[4].endswith("error: RuntimeError: boom") and len(lines) == 5


def test_a_spent_budget_skips_every_variant_with_a_note(tmp_path, capsys):
    out = tmp_path / "r.json"
    gpu_check.main(["--smoke", "--num-gpus", "1", "--methods", "BYOL", "--budget-min", "0", "--output", str(out)])
    data = json.loads(out.read_text())
    assert list(data["results"]) == ["BYOL fp32", "BYOL amp", "BYOL amp+channels_last", "BYOL amp+syncbn"]
    assert all(r["skipped"].startswith("time budget spent") for r in data["results"].values())
    assert capsys.readouterr().out.strip() == gpu_check.format_table(data)


def test_the_shell_script_refuses_without_a_gpu():
    env = dict(os.environ, PYTHON=sys.executable, NUM_GPUS="0")
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "gpu_check: no GPU visible" in done.stderr
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--wheelhouse", str(ROOT / "no-such-wheelhouse")],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "has no wheelhouse.json" in done.stderr
