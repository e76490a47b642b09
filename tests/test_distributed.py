"""World size 2 on CPU (gloo): every method reproduces world size 1, global state is identical
on every rank, the cross-rank check fires, resume works at world size 2 and refuses a folder
the ranks do not share, the sampler covers each epoch exactly once, the CLI launches on CPU.

One spawn of 2 processes (``soco.engine.launch``) serves the whole module; the world-size-1
references run in the test process.
"""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from distributed_helpers import METHODS, STEPS, make_image_folder, method_cfg, train_and_record, worker
from soco.data.build import PositionSampler
from soco.engine.launch import launch

REPO = os.path.join(os.path.dirname(__file__), "..")
# Float tolerance of 2 x B against 1 x 2B (different summation orders) after STEPS steps.
# Weights: the demo configs' optimiser (LARS at lr 1.0, momentum 0.9; BN and bias parameters
# take plain steps of lr x gradient) turns gradient differences of float noise (<= 1e-6) into
# weight differences up to ~2e-5 after STEPS steps (measured: SoCo 2.2e-5, the others < 2e-6).
LOSS_TOL, GRAD_TOL, WEIGHT_TOL = 1e-5, 1e-5, 5e-5


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("data"))
    make_image_folder(path)
    return path


@pytest.fixture(scope="module")
def two_processes(root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("world2"))
    launch(worker, 2, dist_url="auto", args=(root, out, list(METHODS)), device="cpu")

    def load(name):
        return [torch.load(os.path.join(out, f"{name}.rank{r}.pt"), weights_only=False) for r in (0, 1)]

    load.out = out
    return load


@pytest.fixture(scope="module")
def one_process(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("world1")
    return {m: train_and_record(method_cfg(m, root, str(out / m)), frozen_bn=True) for m in METHODS}


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())[:5]
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


@pytest.mark.parametrize("method", list(METHODS))
def test_two_processes_reproduce_one_process(method, two_processes, one_process):
    """2 x B == 1 x 2B with BN on running statistics: per-step losses (mean over ranks),
    the first step's gradients, and every weight and buffer after STEPS steps."""
    rank0, rank1 = two_processes(f"{method}_frozen")
    ref = one_process[method]
    assert sorted(ref["loss"]) == list(range(STEPS))
    for it in range(STEPS):
        for name, value in ref["loss"][it].items():
            mean = (rank0["loss"][it][name] + rank1["loss"][it][name]) / 2
            assert mean == pytest.approx(value, abs=LOSS_TOL), (it, name)
    assert max_abs_diff(rank0["grad"], ref["grad"]) < GRAD_TOL
    assert max_abs_diff(rank0["grad"], rank1["grad"]) == 0.0  # DDP's all-reduce: identical
    integer = {k for k, v in ref["weights"].items() if not v.is_floating_point()}
    for k in integer:  # CoKe's labels, pointers, counters: exactly equal
        assert torch.equal(rank0["weights"][k], ref["weights"][k]), k
    assert max_abs_diff(rank0["weights"], ref["weights"]) < WEIGHT_TOL


@pytest.mark.parametrize("method", list(METHODS))
def test_global_state_is_identical_on_every_rank(method, two_processes):
    """With the method's real config (per-process BN): parameters, EMA target, queue, duals,
    labels, centres, groups, cache are bit-identical on both ranks after STEPS steps."""
    rank0, rank1 = two_processes(f"{method}_real")
    assert rank0["fingerprints"] == rank1["fingerprints"]
    names = set(rank0["fingerprints"])
    expected = {  # name prefixes that must be part of the checked state
        "SoCo": ["target.backbone.", "target.roi_heads.", "target.projector."],
        "BYOL": ["target.backbone.", "target.projector."],
        "CoKe": ["centers_0", "loss_centers_1", "duals_0", "counts_1", "labels", "epoch"],
        "CLSA": ["queue", "queue_ptr", "target.backbone."],
        "SMoG": ["groups", "cache", "cache_ptr", "cache_filled", "target.backbone."],
    }[method]
    missing = [p for p in expected if not any(n.startswith(p) for n in names)]
    assert not missing, missing
    assert not any(n.endswith("running_mean") for n in names)  # per-process BN statistics are local
    # The real runs use per-process BN, so the ranks' losses differ but the state does not.
    assert rank0["loss"] != rank1["loss"]


def test_state_check_names_the_perturbed_buffer_on_every_rank(two_processes):
    for result in two_processes("state_check"):
        assert result["type_ok"], result["error"]
        assert "centers_1" in result["error"] and "iteration 7" in result["error"] and "ranks [1]" in result["error"]


def test_resume_at_world_size_2_reproduces_an_uninterrupted_run(two_processes):
    for result in two_processes("resume"):
        straight, resumed = result["straight"], result["resumed"]
        assert sorted(resumed["loss"]) == [2, 3]
        assert all(resumed["loss"][i] == straight["loss"][i] for i in (2, 3))
        assert resumed["fingerprints"] == straight["fingerprints"]


def test_resume_at_world_size_1_from_a_world_size_2_checkpoint_continues(two_processes, root, tmp_path, caplog):
    """Another world size continues the run: resumed at world size 1 after step 1 of the
    2-process CoKe run (BN on running statistics), step 2's loss and the final weights and
    buffers are the 2-process run's; the RNG states fall back with a warning."""
    shutil.copy(os.path.join(two_processes.out, "CoKe_frozen", "model_0000001.pth"), tmp_path)
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    with caplog.at_level("WARNING"):
        resumed = train_and_record(method_cfg("CoKe", root, str(tmp_path)), frozen_bn=True, resume=True)
    assert "holds the RNG states of 2 processes, this run has 1" in caplog.text
    rank0, rank1 = two_processes("CoKe_frozen")
    assert sorted(resumed["loss"]) == [2]
    assert resumed["loss"][2]["loss_coke"] == pytest.approx((rank0["loss"][2]["loss_coke"] + rank1["loss"][2]["loss_coke"]) / 2, abs=LOSS_TOL)
    assert torch.equal(resumed["weights"]["labels"], rank0["weights"]["labels"])
    assert max_abs_diff(resumed["weights"], rank0["weights"]) < WEIGHT_TOL


def test_resume_from_a_folder_the_ranks_do_not_share_stops_every_rank(two_processes):
    for result in two_processes("unshared"):
        assert result["error"] is not None
        assert "OUTPUT_DIR must be one folder shared" in result["error"]
        # The first thing the folder holds that rank 1 lacks: the cached image listing.
        assert "rank(s) [1]" in result["error"]


@pytest.mark.parametrize("size,block,world", [(7, 3, 2), (8, 2, 2), (5, 1, 3), (10, 4, 3)])
def test_sampler_covers_each_epoch_exactly_once_across_ranks(size, block, world):
    """Rank-major concatenation of one step's micro-batches = consecutive global positions;
    every epoch (size not a multiple of the global batch included) is the dataset once."""
    steps = 4 * size
    per_rank = [iter(PositionSampler(size, seed=1, rank=r, world_size=world, block=block)) for r in range(world)]
    stream = []
    for _ in range(steps // block):
        for it in per_rank:
            stream.extend(next(it) for _ in range(block))
    positions = [p for p, _ in stream]
    assert positions == list(range(len(positions)))
    for epoch in range(len(positions) // size):
        assert sorted(i for p, i in stream if p // size == epoch) == list(range(size))


def test_pretrain_net_runs_two_cpu_processes(root, tmp_path):
    """The CLI: --num-gpus 2 with MODEL.DEVICE cpu trains in 2 gloo processes (Detectron2 0.6's
    launch would assert CUDA) and writes its checkpoint."""
    out = tmp_path / "cli"
    cmd = [
        sys.executable, os.path.join(REPO, "tools", "pretrain_net.py"), "--num-gpus", "2",
        "--config-file", os.path.join(REPO, "configs", "BYOL", "byol_R18_cpu_demo.yaml"),
        "MODEL.DEVICE", "cpu", "PRETRAIN.IMAGE_ROOT", os.path.join(root, "images"), "DATASETS.TRAIN", "()",
        "SOLVER.IMS_PER_BATCH", 4, "SOLVER.MAX_ITER", 2, "MODEL.BYOL.CROP_SIZE", 32,
        "MODEL.PROJECTOR.HIDDEN_DIM", 32, "MODEL.PREDICTOR.HIDDEN_DIM", 32, "MODEL.PROJECTOR.OUT_DIM", 16,
        "DATALOADER.NUM_WORKERS", 0, "PRETRAIN.LOG_PERIOD", 1, "OUTPUT_DIR", str(out),
    ]
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    done = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "model_final.pth").exists()
    assert "World size: 2" in (out / "log.txt").read_text()
