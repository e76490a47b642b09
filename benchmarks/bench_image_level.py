#!/usr/bin/env python
"""Image-level methods against plain baselines on the same backbone, in the same run.

1. Speed and memory: iterations/s (forward + backward + optimiser step + step hooks, data
   prepared beforehand) and peak memory of one training step of CoKe, CLSA, SMoG, and of the
   baselines BYOL (ENGINE's meta-architecture) and MoCo v2 (CLSA with BETA = 0), each in its
   own subprocess (peak RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU).
2. Learning signal (``--knn-steps N``): weighted-kNN top-1 on a Fashion-MNIST subset of each
   method's backbone after N in-memory training steps vs the same network at random init.

    python benchmarks/bench_image_level.py                      # R18, 64 px, batch 16, CPU
    python benchmarks/bench_image_level.py --depth 50 --size 224 --batch 64 --device cuda
    python benchmarks/bench_image_level.py --knn-steps 200 --skip-speed

Timings on a shared CPU vary with the machine's load; compare ratios from the same run.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from soco.utils.files import atomic_write_json

METHODS = {
    "BYOL": ("BYOL", {}),
    "MoCo v2": ("CLSA", {"MODEL.CLSA.BETA": 0.0}),
    "CLSA": ("CLSA", {}),
    "CLSA*": ("CLSA", {"STAR": True}),
    "CoKe": ("CoKe", {"MODEL.COKE.INIT_EPOCHS": 0}),
    "SMoG": ("SMoG", {}),
}


def make_cfg(arch: str, extra: dict, args):
    from soco.config import get_pretrain_cfg

    c = get_pretrain_cfg()
    c.MODEL.META_ARCHITECTURE = arch
    c.MODEL.DEVICE = args.device
    c.MODEL.RESNETS.DEPTH = args.depth
    c.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if args.depth in (18, 34) else 256
    c.MODEL.PROJECTOR.HIDDEN_DIM = c.MODEL.PREDICTOR.HIDDEN_DIM = args.hidden
    c.MODEL.PROJECTOR.OUT_DIM = 128
    c.SOLVER.IMS_PER_BATCH = args.batch
    c.SOLVER.OPTIMIZER = "SGD"
    c.SOLVER.BASE_LR = args.lr
    c.SOLVER.WEIGHT_DECAY = 1e-4
    c.MODEL.BYOL.CROP_SIZE = args.size
    for key in ("COKE", "CLSA", "SMOG"):
        c.MODEL[key].CROP_SIZE = args.size
    c.MODEL.COKE.SMALL_CROP_SIZE = c.MODEL.SMOG.SMALL_CROP_SIZE = max(args.size * 3 // 7, 8)
    c.MODEL.COKE.NUM_CLUSTERS = [10, 20]
    c.MODEL.COKE.CROP_SCALE = c.MODEL.SMOG.CROP_SCALE = c.MODEL.BYOL.CROP_SCALE = (0.3, 1.0)
    c.MODEL.CLSA.QUEUE_SIZE = args.queue
    c.MODEL.CLSA.STRONG_CROP_SIZES = [max(args.size * 3 // 7, 8)]
    c.MODEL.SMOG.NUM_GROUPS = args.groups
    c.MODEL.SMOG.RESET_PERIOD = args.reset_period
    c.MODEL.EMA.MOMENTUM = 0.99
    extra = dict(extra)
    if extra.pop("STAR", False):
        s = args.size
        c.MODEL.CLSA.STRONG_CROP_SIZES = [s, s * 6 // 7, s * 5 // 7, s * 4 // 7, s * 3 // 7]
        c.MODEL.CLSA.STRONG_CROP_MIN_SCALES = [0.2, 0.172, 0.143, 0.114, 0.086]
        c.MODEL.CLSA.STRONG_CROP_MAX_SCALES = [1.0, 0.86, 0.715, 0.571, 0.429]
    for key, value in extra.items():
        node = c
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    return c


def make_batch(cfg, images):
    from soco.data.method_data import build_mapper

    mapper = build_mapper(cfg)
    return [mapper.map_image(images[i % len(images)], str(i), i) for i in range(cfg.SOLVER.IMS_PER_BATCH)]


def time_one(name: str, args) -> dict:
    """Runs in a subprocess: speed and peak memory of one method's training step."""
    from soco.engine.step import training_step
    from soco.engine.pretrain import build_training_model
    from soco.solver import build_optimizer

    torch.manual_seed(0)
    arch, extra = METHODS[name]
    cfg = make_cfg(arch, extra, args)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, args.size + 16, args.size + 16), dtype=torch.uint8, generator=gen)
    t0 = time.perf_counter()
    batch = make_batch(cfg, images)
    data_s = time.perf_counter() - t0
    model = build_training_model(cfg, args.num_images)
    optimizer = build_optimizer(cfg, model)
    model.train()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def step(it):
        training_step(model, lambda: batch, optimizer, it, 1000)

    for it in range(args.warmup):
        step(it)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for it in range(args.warmup, args.warmup + args.iters):
        step(it)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = (time.perf_counter() - t0) / args.iters
    return {"method": name, "it_per_s": 1.0 / seconds, "peak_mb": peak_mb, "data_s_per_batch": data_s}


def knn_one(name: str, args) -> dict:
    """Runs in a subprocess: kNN of random init vs after ``--knn-steps`` in-memory steps."""
    from soco.engine.in_memory import pretrain_in_memory
    from soco.engine.pretrain import build_training_model
    from soco.evaluation.quick_check import fashion_mnist_subset, knn_of

    arch, extra = METHODS[name]
    cfg = make_cfg(arch, extra, args)
    train = fashion_mnist_subset("train", args.knn_train)
    test = fashion_mnist_subset("test", args.knn_test)
    torch.manual_seed(0)
    model = build_training_model(cfg, args.knn_train)
    before = knn_of(model, train, test, args.size, k=args.knn_k)
    t0 = time.perf_counter()
    run = pretrain_in_memory(cfg, train[0], args.knn_steps, model=model)
    after = knn_of(model, train, test, args.size, k=args.knn_k)
    return {
        "method": name, "knn_random_init": before, "knn_after": after, "steps": args.knn_steps,
        "train_seconds": time.perf_counter() - t0, "first_loss": run["losses"][0], "last_loss": run["losses"][-1],
    }


def run_child(mode: str, name: str, argv) -> dict:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *argv, "--child", mode, "--child-method", name],
        capture_output=True, text=True, check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--depth", type=int, default=18)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--queue", type=int, default=4096)
    p.add_argument("--groups", type=int, default=100)
    p.add_argument("--reset-period", type=int, default=50)
    p.add_argument("--num-images", type=int, default=1024)
    p.add_argument("--lr", type=float, default=0.4, help="BASE_LR at reference batch 256 (SGD)")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--knn-steps", type=int, default=0, help="> 0: also run the kNN learning check")
    p.add_argument("--knn-train", type=int, default=1000)
    p.add_argument("--knn-test", type=int, default=500)
    p.add_argument("--knn-k", type=int, default=20)
    p.add_argument("--output", default="", help="write all results as JSON")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--child-method", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps((time_one if args.child == "speed" else knn_one)(args.child_method, args)))
        return 0
    results = {"settings": {k: v for k, v in vars(args).items() if not k.startswith("child")}}
    if not args.skip_speed:
        rows = [run_child("speed", m, argv) for m in args.methods]
        base = {r["method"]: r["it_per_s"] for r in rows}
        print(f"ResNet-{args.depth}, {args.size} px, batch {args.batch}, {args.device}")
        print(f"{'method':<9} {'it/s':>7} {'vs BYOL':>8} {'vs MoCo v2':>10} {'peak MB':>8} {'views s/batch':>13}")
        for r in rows:
            vs_byol = r["it_per_s"] / base["BYOL"] if "BYOL" in base else float("nan")
            vs_moco = r["it_per_s"] / base["MoCo v2"] if "MoCo v2" in base else float("nan")
            print(f"{r['method']:<9} {r['it_per_s']:>7.3f} {vs_byol:>8.2f} {vs_moco:>10.2f} {r['peak_mb']:>8.0f} {r['data_s_per_batch']:>13.2f}")
        results["speed"] = rows
    if args.knn_steps > 0:
        rows = [run_child("knn", m, argv) for m in args.methods]
        print(f"kNN top-1 (k={args.knn_k}, T=0.07) on {args.knn_test} Fashion-MNIST test images, "
              f"bank {args.knn_train} train images, {args.size} px, after {args.knn_steps} steps")
        print(f"{'method':<9} {'random':>7} {'trained':>8} {'delta':>7} {'loss':>15} {'seconds':>8}")
        for r in rows:
            print(f"{r['method']:<9} {100 * r['knn_random_init']:>6.1f}% {100 * r['knn_after']:>7.1f}% "
                  f"{100 * (r['knn_after'] - r['knn_random_init']):>+6.1f} {r['first_loss']:>7.3f}->{r['last_loss']:<7.3f} {r['train_seconds']:>8.0f}")
        results["knn"] = rows
    if args.output:
        atomic_write_json(args.output, results, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
