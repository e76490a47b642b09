#!/usr/bin/env python
"""Cost of object-level pretraining: SoCo R50-FPN (V1 224, V2 224, V3 112, K=4) against the
plain image-level BYOL step on the same ResNet-50, and the data loader against the model.

In one run, on the same images (the embedded demo photos, or --image-root):
  * training iterations/s (forward of online and target networks, backward, LARS step, EMA
    update), the two methods' steps interleaved in one process so that both see the same load
    (median over rounds), and the SoCo / BYOL ratio of each round;
  * peak memory of each method's step, each in its own subprocess (peak RSS growth on CPU,
    ``torch.cuda.max_memory_allocated`` on GPU);
  * data-loader images/s of SoCo's mapper through the project's loader with the config's
    default DATALOADER.NUM_WORKERS, against the images/s the SoCo model consumes.

    python benchmarks/bench_pretrain.py                       # CPU: batch 2, a few iterations
    python benchmarks/bench_pretrain.py --device cuda --batch 64 --iters 20 --output bench.json
    python benchmarks/bench_pretrain.py --variants   # VIEWS paper vs official+cutout, fp32 vs AMP

On CPU the loader's workers and the model share the same cores, so the two throughputs are
measured one after the other; on a shared machine the absolute numbers vary from run to run,
the ratios much less.
"""

import argparse
import concurrent.futures
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time

from soco.utils.files import atomic_write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "SoCo": os.path.join(REPO, "configs", "SoCo", "SoCo_R50_FPN_100ep.yaml"),
    "BYOL": os.path.join(REPO, "configs", "BYOL", "byol_R50_300ep.yaml"),
}


def load_cfg(method, args, proposal_file="", extra_opts=()):
    from soco.config.defaults import load_pretrain_config

    opts = [
        "MODEL.DEVICE", args.device,
        "SOLVER.IMS_PER_BATCH", str(args.batch),
        "SOLVER.MAX_ITER", str(args.warmup + args.iters),
        "SOLVER.WARMUP_ITERS", "0",
        "DATASETS.TRAIN", "('soco_demo_photos',)",
        "PRETRAIN.IMAGE_ROOT", args.image_root,
    ]
    if method == "SoCo":
        opts += ["MODEL.SOCO.PROPOSALS", proposal_file]
    return load_pretrain_config(CONFIGS[method], opts + list(extra_opts))


def dataset_dicts(args, count):
    from soco.data.build import get_pretrain_dataset_dicts

    dicts = get_pretrain_dataset_dicts(load_cfg("BYOL", args))
    if len(dicts) < count:
        raise ValueError(f"the benchmark needs {count} images, the data set has {len(dicts)}")
    return dicts[:count]


def write_proposals(dicts, path):
    """Proposals of ``dicts`` with the project's generator (fast settings: 160 px search)."""
    from soco.data.proposals import save_proposals
    from soco.proposals.runner import propose_file

    save_proposals(path, [d["image_id"] for d in dicts], [propose_file(d["file_name"], "vectorized", 160)[0] for d in dicts])


def build_training_step(method, args, proposal_file, extra_opts=(), amp=False):
    """(step(iteration, total) -> loss, views per image) for ``method`` on the benchmark batch.

    ``amp``: autocast as the trainer does (float16 + GradScaler on CUDA, bfloat16 on CPU)."""
    import torch

    from soco.data.method_data import build_mapper, prepare_dataset_dicts
    from soco.engine.step import make_grad_scaler, training_step
    from soco.engine.pretrain import build_training_model
    from soco.solver import build_optimizer

    cfg = load_cfg(method, args, proposal_file, extra_opts)
    dicts = prepare_dataset_dicts(cfg, dataset_dicts(args, args.batch))
    mapper = build_mapper(cfg)
    torch.manual_seed(0)
    batch = [mapper(d) for d in dicts]
    model = build_training_model(cfg, len(dicts))
    model.train()
    optimizer = build_optimizer(cfg, model)
    device_type = torch.device(args.device).type
    scaler = make_grad_scaler(amp, device_type)

    def step(it, total):
        metrics, _ = training_step(model, lambda: batch, optimizer, it, total, amp=amp,
                                   device_type=device_type, grad_scaler=scaler)
        return float(sum(v for k, v in metrics.items() if k.startswith("loss_")))

    return step, len(batch[0]["views"])


def _setup_torch(args):
    import torch

    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    return torch


def measure_memory(method, args, proposal_file):
    """Runs in a fresh process: peak memory of ``method``'s training step (warm-up + 1 step)."""
    torch = _setup_torch(args)
    cuda = args.device.startswith("cuda")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step, views = build_training_step(method, args, proposal_file)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for it in range(2):
        loss = step(it, 2)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before
    return {"peak_memory_mib": peak, "views_per_image": views, "loss": loss}


def measure_speed(args, proposal_file):
    """Runs in a fresh process: both methods' steps interleaved (BYOL, SoCo, BYOL, ...), so
    both see the same machine load; per-step seconds after ``args.warmup`` untimed rounds."""
    torch = _setup_torch(args)
    steps = {m: build_training_step(m, args, proposal_file)[0] for m in ("BYOL", "SoCo")}
    return time_interleaved(torch, steps, args)


def time_interleaved(torch, steps, args):
    """{name: per-step seconds after ``args.warmup`` untimed rounds} of ``steps`` (name ->
    step(iteration, total)) run in turn each round, so every one sees the same machine load."""
    cuda = args.device.startswith("cuda")
    total = args.warmup + args.iters
    times = {m: [] for m in steps}
    for it in range(total):
        for m, step in steps.items():
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            step(it, total)
            if cuda:
                torch.cuda.synchronize()
            if it >= args.warmup:
                times[m].append(time.perf_counter() - start)
    return times


# SoCo variants: the paper's views against the official pipeline with cutout (the
# official FPN 100-epoch script), and fp32 against mixed precision.
VARIANTS = {
    "paper fp32": ((), False),
    "official+cutout fp32": (("MODEL.SOCO.VIEWS", "official", "MODEL.SOCO.CUTOUT_PROB", "0.5"), False),
    "paper AMP": ((), True),
}


def measure_variants(args, proposal_file):
    """Runs in a fresh process: per-step seconds of each SoCo variant, steps interleaved, and the
    mapper's milliseconds per image of the two view modes."""
    torch = _setup_torch(args)
    steps = {name: build_training_step("SoCo", args, proposal_file, opts, amp)[0]
             for name, (opts, amp) in VARIANTS.items()}
    times = time_interleaved(torch, steps, args)
    from soco.data.method_data import build_mapper, prepare_dataset_dicts

    mapper_ms = {}
    for name in ("paper fp32", "official+cutout fp32"):
        cfg = load_cfg("SoCo", args, proposal_file, VARIANTS[name][0])
        dicts = prepare_dataset_dicts(cfg, dataset_dicts(args, args.loader_images))
        mapper = build_mapper(cfg)
        start = time.perf_counter()
        for d in dicts:
            mapper(d)
        mapper_ms[name.split(" ")[0]] = 1000 * (time.perf_counter() - start) / len(dicts)
    return times, mapper_ms


def report_variants(args, proposal_file):
    times, mapper_ms = in_subprocess(measure_variants, args, proposal_file)
    base = times["paper fp32"]
    summary = {"device": args.device, "batch": args.batch, "variants": {}, "mapper_ms_per_image": mapper_ms}
    print(f"\nSoCo R50-FPN variants, device {args.device}, batch {args.batch}, {args.iters} timed rounds (median)\n")
    print("| variant | s/step | vs paper fp32 (median of per-round ratios) |")
    print("|---|---|---|")
    for name, t in times.items():
        ratio = statistics.median(a / b for a, b in zip(t, base))
        summary["variants"][name] = {"step_seconds": t, "over_paper_fp32": ratio}
        print(f"| {name} | {statistics.median(t):.3f} | {ratio:.2f}x |")
    print(f"\nmapper ms/image: paper {mapper_ms['paper']:.1f}, official+cutout {mapper_ms['official+cutout']:.1f} "
          f"({mapper_ms['official+cutout'] / mapper_ms['paper']:.2f}x)")
    return summary


def measure_loader(args, proposal_file, num_batches):
    """Images/s of SoCo's mapper through the project's resumable loader (default workers)."""
    from soco.data.build import build_pretrain_loader
    from soco.data.method_data import build_mapper, prepare_dataset_dicts

    cfg = load_cfg("SoCo", args, proposal_file)
    dicts = prepare_dataset_dicts(cfg, dataset_dicts(args, args.loader_images))
    workers = cfg.DATALOADER.NUM_WORKERS if args.workers < 0 else args.workers
    cfg.defrost()
    cfg.DATALOADER.NUM_WORKERS = workers
    loader = iter(build_pretrain_loader(cfg, dicts, build_mapper(cfg), seed=0))
    next(loader)  # worker start-up is not throughput
    start = time.perf_counter()
    images = sum(len(next(loader)) for _ in range(num_batches))
    return {"images_per_s": images / (time.perf_counter() - start), "workers": workers}


def in_subprocess(fn, *a):
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *a).result()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2, help="images per step (CPU default 2: small)")
    parser.add_argument("--iters", type=int, default=3, help="timed rounds (one step of each method)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument("--workers", type=int, default=-1, help="loader workers (-1: the config's default)")
    parser.add_argument("--loader-batches", type=int, default=8)
    parser.add_argument("--loader-images", type=int, default=64)
    parser.add_argument("--image-root", default="", help="image folder instead of the embedded demo photos")
    parser.add_argument("--output", default="", help="write the results as JSON here")
    parser.add_argument("--variants", action="store_true",
                        help="instead of SoCo vs BYOL: SoCo's VIEWS paper vs official (with cutout) "
                             "and fp32 vs AMP (bfloat16 autocast on CPU, float16 + GradScaler on GPU)")
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    if args.variants:
        with tempfile.TemporaryDirectory() as tmp:
            proposal_file = os.path.join(tmp, "proposals.pkl")
            write_proposals(dataset_dicts(args, max(args.batch, args.loader_images)), proposal_file)
            summary = report_variants(args, proposal_file)
        write_json(args.output, summary)
        return

    with tempfile.TemporaryDirectory() as tmp:
        proposal_file = os.path.join(tmp, "proposals.pkl")
        write_proposals(dataset_dicts(args, max(args.batch, args.loader_images)), proposal_file)
        memory = {m: in_subprocess(measure_memory, m, args, proposal_file) for m in ("BYOL", "SoCo")}
        times = in_subprocess(measure_speed, args, proposal_file)
        loader = in_subprocess(measure_loader, args, proposal_file, args.loader_batches)

    results = {}
    for m in ("BYOL", "SoCo"):
        median = statistics.median(times[m])
        results[m] = dict(
            memory[m],
            step_seconds=times[m],
            iters_per_s=1.0 / median,
            images_per_s=args.batch / median,
        )
    soco, byol = results["SoCo"], results["BYOL"]
    ratios = [s_ / b_ for s_, b_ in zip(times["SoCo"], times["BYOL"])]
    summary = {
        "device": args.device,
        "batch": args.batch,
        "timed_iters": args.iters,
        "threads": args.threads or "default",
        "methods": results,
        "soco_over_byol_time_per_iter": statistics.median(ratios),
        "soco_over_byol_time_per_iter_each_round": ratios,
        "soco_over_byol_peak_memory": soco["peak_memory_mib"] / max(byol["peak_memory_mib"], 1e-9),
        "loader": loader,
        "loader_over_soco_consumption": loader["images_per_s"] / soco["images_per_s"],
    }
    mem = "peak GPU memory allocated" if args.device.startswith("cuda") else "peak RSS growth from the model step"
    print(f"\ndevice {args.device}, batch {args.batch}, {args.iters} timed rounds (median); memory = {mem}\n")
    print("| step | views/img | it/s | img/s | memory MiB |")
    print("|---|---|---|---|---|")
    for name in ("BYOL", "SoCo"):
        r = results[name]
        print(f"| {name} R50 | {r['views_per_image']} | {r['iters_per_s']:.3f} | {r['images_per_s']:.2f} | {r['peak_memory_mib']:.0f} |")
    each = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"\nSoCo / BYOL time per iteration: {summary['soco_over_byol_time_per_iter']:.2f}x (rounds: {each}; goal <= 1.5x)")
    print(f"SoCo / BYOL peak memory: {summary['soco_over_byol_peak_memory']:.2f}x")
    print(
        f"loader ({loader['workers']} workers): {loader['images_per_s']:.2f} img/s vs SoCo model "
        f"{soco['images_per_s']:.2f} img/s -> {summary['loader_over_soco_consumption']:.1f}x"
    )
    write_json(args.output, summary)


def write_json(path, summary):
    if path:
        atomic_write_json(path, summary)


if __name__ == "__main__":
    main()
