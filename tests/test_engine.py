"""The pretraining engine on CPU: BYOL learns, resume is exact, files are complete and atomic."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from detectron2.config import CfgNode
from PIL import Image

import soco.modeling.meta_arch  # noqa: F401
from soco.config import get_pretrain_cfg
from soco.data.build import PositionSampler
from soco.engine import PretrainCheckpointer, run_pretraining



def write_smooth_images(root) -> None:
    """8 smooth random PNGs of 40-56 px (crops of one image resemble each other) in ``root``."""
    rng = np.random.default_rng(0)
    for i in range(8):
        small = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        size = (40 + 2 * i, 56 - 2 * i)
        Image.fromarray(small).resize(size, Image.BILINEAR).save(root / f"{i}.png")


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_smooth_images(root)
    return str(root)


def tiny_byol_cfg(image_root, output_dir, **overrides):
    cfg = get_pretrain_cfg()
    cfg.merge_from_list(
        [
            "MODEL.META_ARCHITECTURE", "BYOL", "MODEL.DEVICE", "cpu",
            "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
            "MODEL.PROJECTOR.HIDDEN_DIM", 32, "MODEL.PROJECTOR.OUT_DIM", 16,
            "MODEL.PREDICTOR.HIDDEN_DIM", 32, "MODEL.BYOL.CROP_SIZE", 32,
            "PRETRAIN.IMAGE_ROOT", image_root, "SOLVER.IMS_PER_BATCH", 4,
            "PRETRAIN.EPOCHS", 2, "PRETRAIN.WARMUP_EPOCHS", 0, "SOLVER.BASE_LR", 2.0,
            "DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", str(output_dir),
            "SOLVER.CHECKPOINT_PERIOD", 2, "PRETRAIN.LOG_PERIOD", 1, "SEED", 0,
        ]
    )
    for k, v in overrides.items():
        cfg.merge_from_list([k, v])
    cfg.freeze()
    return cfg


def raw_losses(trainer, name="loss_byol"):
    return {it: v for v, it in trainer.storage.history(name).values()}


@pytest.fixture(scope="module")
def uninterrupted(image_root, tmp_path_factory):
    """4 iterations (2 epochs of 8 images, batch 4 in 2 accumulation steps), checkpoints every 2."""
    out = tmp_path_factory.mktemp("run_a")
    trainer = run_pretraining(tiny_byol_cfg(image_root, out, **{"PRETRAIN.ACCUM_STEPS": 2}))
    return out, raw_losses(trainer)


def test_resume_reproduces_uninterrupted_losses(image_root, uninterrupted, tmp_path):
    out_a, losses_a = uninterrupted
    assert sorted(losses_a) == [0, 1, 2, 3]
    # Restart from the iteration-1 checkpoint, as a job killed during iteration 2 would.
    shutil.copy(os.path.join(out_a, "model_0000001.pth"), tmp_path)
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    trainer = run_pretraining(tiny_byol_cfg(image_root, tmp_path, **{"PRETRAIN.ACCUM_STEPS": 2}), resume=True)
    losses_b = raw_losses(trainer)
    # 0 and 1 come back from the checkpoint (smoothed metrics continue), 2 and 3 are recomputed.
    assert losses_b == losses_a
    final_a = torch.load(os.path.join(out_a, "model_final.pth"))["model"]
    final_b = torch.load(tmp_path / "model_final.pth")["model"]
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    # The health monitor compares with the run's true start, which the checkpoint carries.
    health_a = json.loads(open(os.path.join(out_a, "health.json")).read())
    assert json.loads((tmp_path / "health.json").read_text())["metrics"] == health_a["metrics"]


def test_checkpoint_contents_and_metrics(uninterrupted):
    out, _ = uninterrupted
    files = sorted(os.listdir(out))
    assert {"model_0000001.pth", "model_0000003.pth", "model_final.pth", "metrics.json"} <= set(files)
    assert not [f for f in files if f.endswith(".tmp")]
    ckpt = torch.load(os.path.join(out, "model_final.pth"))
    assert ckpt["iteration"] == 3
    cfg = CfgNode.load_cfg(ckpt["cfg"])
    assert cfg.MODEL.META_ARCHITECTURE == "BYOL" and cfg.SOLVER.MAX_ITER == 4 and cfg.PRETRAIN.NUM_IMAGES == 8
    prefixes = {k.split(".")[0] for k in ckpt["model"]}
    assert prefixes == {"backbone", "projector", "predictor", "target"}
    assert "backbone.stem.conv1.weight" in ckpt["model"] and "target.backbone.stem.conv1.weight" in ckpt["model"]
    assert {"optimizer", "hooks"} <= set(ckpt["trainer"])
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    assert [r["iteration"] for r in records] == [0, 1, 2, 3]
    assert {"loss_byol", "total_loss", "lr", "ema_tau", "data_time"} <= set(records[-1])
    # The health monitor (period 50) checks after the last iteration, into metrics.json.
    assert {"health/norm_ratio_stem", "health/stem_rank", "health/embed_std"} <= set(records[-1])
    assert not [k for r in records[:-1] for k in r if k.startswith("health/")]
    assert "HealthMonitorHook" in ckpt["trainer"]["hooks"]


def test_byol_lowers_its_loss(image_root, tmp_path):
    # 8 steps over the 8 images; a broken loss, gradient path or optimiser step stays flat.
    cfg = tiny_byol_cfg(
        image_root, tmp_path,
        **{"SOLVER.MAX_ITER": 8, "SOLVER.CHECKPOINT_PERIOD": 100, "SOLVER.OPTIMIZER": "SGD", "SOLVER.BASE_LR": 3.2},
    )
    losses = raw_losses(run_pretraining(cfg))
    first, last = np.mean([losses[i] for i in (0, 1)]), np.mean([losses[i] for i in (6, 7)])
    assert last < first - 0.2, losses


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    ckpt = PretrainCheckpointer(model, str(tmp_path), cfg_yaml="A: 1\n")
    ckpt.save("model_0000000")
    before = (tmp_path / "model_0000000.pth").read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        ckpt.save("model_0000000")
    assert (tmp_path / "model_0000000.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"
    assert torch.load(tmp_path / "model_0000000.pth")["cfg"] == "A: 1\n"


def test_position_sampler_shards_and_restarts():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    full = take(PositionSampler(5, seed=3), 12)
    assert [p for p, _ in full] == list(range(12))
    assert sorted(i for _, i in full[:5]) == list(range(5))  # each epoch is a permutation
    assert [i for _, i in full[:5]] != [i for _, i in full[5:10]]  # reshuffled per epoch
    assert take(PositionSampler(5, seed=3, start=7), 5) == full[7:]
    rank0 = take(PositionSampler(5, seed=3, rank=0, world_size=2), 6)
    rank1 = take(PositionSampler(5, seed=3, rank=1, world_size=2), 6)
    assert rank0 == full[0::2] and rank1 == full[1::2]


def test_inconsistent_config_fails_before_training(image_root, tmp_path):
    with pytest.raises(ValueError, match="ACCUM_STEPS"):
        run_pretraining(tiny_byol_cfg(image_root, tmp_path, **{"PRETRAIN.ACCUM_STEPS": 3}))
    with pytest.raises(KeyError, match="not registered"):
        run_pretraining(tiny_byol_cfg(image_root, tmp_path, **{"MODEL.META_ARCHITECTURE": "Nope"}))
    with pytest.raises(ValueError, match="FREEZE_AT"):
        run_pretraining(tiny_byol_cfg(image_root, tmp_path, **{"MODEL.BACKBONE.FREEZE_AT": 2}))


def test_resume_with_a_different_config_fails_clearly(image_root, uninterrupted, tmp_path):
    out_a, _ = uninterrupted
    shutil.copy(os.path.join(out_a, "model_0000001.pth"), tmp_path)
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    cfg = tiny_byol_cfg(image_root, tmp_path, **{"SOLVER.IMS_PER_BATCH": 2})
    with pytest.raises(ValueError, match="SOLVER.IMS_PER_BATCH: checkpoint 4 vs now 2"):
        run_pretraining(cfg, resume=True)


def test_loader_is_independent_of_workers_and_skips_unreadable_images(image_root, tmp_path):
    from soco.data.build import build_pretrain_loader, get_pretrain_dataset_dicts
    from soco.data.method_data import build_mapper

    folder = tmp_path / "images"
    shutil.copytree(image_root, folder)
    (folder / "3.png").write_bytes(b"not a png")
    cfg = tiny_byol_cfg(str(folder), tmp_path)
    dicts = get_pretrain_dataset_dicts(cfg)
    assert len(dicts) == 8

    def first_batches(workers, start_iter, n=3):
        loader = build_pretrain_loader(cfg, dicts, build_mapper(cfg), seed=0)
        loader.num_workers, loader.start_iter = workers, start_iter
        it = iter(loader)
        return [next(it) for _ in range(n)]

    main, workers = first_batches(0, 0), first_batches(2, 0)
    for a, b in zip(main, workers):
        assert [x["image_id"] for x in a] == [x["image_id"] for x in b]
        assert all(torch.equal(u, v) for x, y in zip(a, b) for u, v in zip(x["views"], y["views"]))
    ids = [x["image_id"] for batch in main for x in batch]
    assert "3.png" not in ids and len(ids) == 12
    restarted = first_batches(0, 1, n=1)[0]
    assert [x["image_id"] for x in restarted] == [x["image_id"] for x in main[1]]
    assert torch.equal(restarted[0]["views"][1], main[1][0]["views"][1])


def test_missing_dataset_names_fail_clearly(tmp_path):
    from soco.data.build import get_pretrain_dataset_dicts

    cfg = get_pretrain_cfg()
    with pytest.raises(ValueError, match="DATASETS.TRAIN or PRETRAIN.IMAGE_ROOT"):
        get_pretrain_dataset_dicts(cfg)
    cfg.DATASETS.TRAIN = ("no_such_set",)
    with pytest.raises(KeyError, match="no_such_set"):
        get_pretrain_dataset_dicts(cfg)
    cfg.DATASETS.TRAIN = ()
    cfg.PRETRAIN.IMAGE_ROOT = str(tmp_path)
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    with pytest.raises(ValueError, match="no training images"):
        len(get_pretrain_dataset_dicts(cfg))  # the folder is listed on first use


class _ToyModel(torch.nn.Module):
    """Linear regression returning two losses and a logged metric (no BatchNorm)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 1)
        torch.nn.init.constant_(self.linear.weight, 0.5)
        torch.nn.init.constant_(self.linear.bias, 0.1)

    def forward(self, batch):
        x = torch.stack([b["x"] for b in batch])
        y = torch.stack([b["y"] for b in batch])
        err = self.linear(x).squeeze(1) - y
        return {"loss_a": (err**2).mean(), "loss_b": err.abs().mean(), "mean_error": err.mean()}


def test_accumulation_matches_one_big_batch_and_only_losses_are_summed():
    from soco.engine import PretrainTrainer

    g = torch.Generator().manual_seed(0)
    samples = [{"x": torch.randn(3, generator=g), "y": torch.randn((), generator=g)} for _ in range(4)]

    def one_step(micro_batch, accum):
        model = _ToyModel()
        loader = [samples[i : i + micro_batch] for i in range(0, 4, micro_batch)]
        trainer = PretrainTrainer(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), accum_steps=accum)
        trainer.train(0, 1)
        return model.linear.weight.detach().clone(), trainer.storage

    w_big, storage = one_step(4, 1)
    w_accum, _ = one_step(2, 2)
    assert torch.allclose(w_big, w_accum, atol=1e-7)
    latest = {k: v for k, (v, _) in storage.latest().items()}
    assert latest["total_loss"] == pytest.approx(latest["loss_a"] + latest["loss_b"])
    assert "mean_error" in latest


def test_pretrain_net_cli_runs_and_resumes(image_root, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [
        sys.executable, str(repo / "tools" / "pretrain_net.py"),
        "--config-file", str(repo / "configs" / "BYOL" / "byol_R18_cpu_demo.yaml"),
    ]
    opts = [
        "PRETRAIN.IMAGE_ROOT", image_root, "DATASETS.TRAIN", "()", "SOLVER.IMS_PER_BATCH", "4",
        "MODEL.BYOL.CROP_SIZE", "32", "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path),
        "MODEL.PROJECTOR.HIDDEN_DIM", "32", "MODEL.PREDICTOR.HIDDEN_DIM", "32", "PRETRAIN.LOG_PERIOD", "1",
    ]
    run = subprocess.run(base + opts + ["SOLVER.MAX_ITER", "2"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "eta:" in run.stderr + run.stdout
    assert (tmp_path / "model_final.pth").exists() and (tmp_path / "config.yaml").exists()
    # Extending the finished run by one iteration resumes at iteration 2.
    run = subprocess.run(base + ["--resume"] + opts + ["SOLVER.MAX_ITER", "3"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Resuming from" in run.stderr + run.stdout
    assert "Starting training from iteration 2" in run.stderr + run.stdout
