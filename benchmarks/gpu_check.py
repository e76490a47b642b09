#!/usr/bin/env python
"""GPU check: speed, peak memory and model FLOP utilisation of SoCo R50-FPN and BYOL R50.

For each method and variant it trains ``--steps`` steps (after ``--warmup``) on a synthetic
batch through the project's own ``training_step`` (the trainer's step), in one process per
GPU (``soco.engine.launch``, NCCL, DDP as in ``build_pretrain_trainer``), and prints per GPU:
images/s, peak allocated memory and MFU = (FLOPs of one step, counted by PyTorch's
FlopCounterMode on the eager model: forward + backward of online and target networks) x
steps/s / peak dense TFLOPS of the GPU (``--peak-tflops``, default from the device name, the
bf16/fp16 dense figure; the fp32 rows are measured against the same figure).

Variants: fp32, amp (fp16 + GradScaler), amp+channels_last, amp+compile (torch.compile),
amp+syncbn (SyncBatchNorm; needs 2+ GPUs, skipped with a note on one). ``--smoke`` runs tiny
R18 models on CPU for two steps, to check the script itself without a GPU.

The defaults (10 timed steps after 3 warm-up steps) keep the whole check on one GPU within a
few minutes; ``--steps``/``--warmup`` measure longer. ``--budget-min`` (default 7) skips the
variants that would start after that many minutes, each with a note, so the command ends in
under 8 minutes even where compiling is slow. It prints one table at the end and writes the
results as JSON (``--output``); ``--table FILE`` prints the table of such a file again.

    bash benchmarks/gpu_check.sh                     # every GPU of the machine
    python benchmarks/gpu_check.py --num-gpus 1 --methods BYOL --variants amp
    python benchmarks/gpu_check.py --table gpu_check.json
"""

import argparse
import json
import os
import sys
import time
from typing import Optional

import torch

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)

CONFIGS = {"SoCo": "configs/SoCo/SoCo_R50_FPN_100ep.yaml", "BYOL": "configs/BYOL/byol_R50_300ep.yaml"}
VARIANTS = ["fp32", "amp", "amp+channels_last", "amp+compile", "amp+syncbn"]
# Dense bf16/fp16 tensor-core TFLOPS by device name (vendor data sheets, SXM parts).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "V100": 125.0}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-gpus", type=int, default=max(torch.cuda.device_count(), 1))
    p.add_argument("--methods", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (torch.compile compiles here)")
    p.add_argument("--budget-min", type=float, default=7.0,
                   help="start no variant after this many minutes (the rest are skipped with a note)")
    p.add_argument("--batch", type=int, default=0, help="images per GPU (default: SoCo 32, BYOL 64)")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="peak dense TFLOPS of one GPU (default: by name)")
    p.add_argument("--output", default="", help="also write the results as JSON here")
    p.add_argument("--smoke", action="store_true", help="tiny R18 models on CPU, 2 steps: checks the script")
    p.add_argument("--table", metavar="JSON", help="only print the table of a previous run's JSON")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.num_gpus < 1:
        p.error("--steps and --num-gpus must be at least 1, --warmup at least 0")
    return args


def build_cfg(method: str, variant: str, args, world: int):
    from soco.config.defaults import load_pretrain_config

    batch = args.batch or {"SoCo": 32, "BYOL": 64}[method]
    opts = [
        "MODEL.DEVICE", "cpu" if args.smoke else "cuda", "SOLVER.IMS_PER_BATCH", batch * world,
        "SOLVER.MAX_ITER", 1000, "PRETRAIN.NUM_IMAGES", 1000 * batch * world,
        "SOLVER.AMP.ENABLED", variant.startswith("amp"), "PRETRAIN.CHANNELS_LAST", "channels_last" in variant,
        "PRETRAIN.COMPILE", "compile" in variant, "PRETRAIN.SYNC_BN", "syncbn" in variant,
    ]
    if args.smoke:
        opts += ["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.PROJECTOR.HIDDEN_DIM", 64,
                 "MODEL.PREDICTOR.HIDDEN_DIM", 64, "MODEL.BYOL.CROP_SIZE", 32, "MODEL.SOCO.VIEW1_SIZE", 64,
                 "MODEL.SOCO.VIEW2_SIZE", 64, "MODEL.SOCO.VIEW3_SIZE", 32, "MODEL.FPN.OUT_CHANNELS", 32,
                 "MODEL.ROI_BOX_HEAD.CONV_DIM", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.SOCO.LEVEL_THRESHOLDS", (12, 24, 48)]
    cfg = load_pretrain_config(os.path.join(REPO, CONFIGS[method]), [str(o) for o in opts])
    cfg.freeze()
    return cfg


def synthetic_batch(cfg, model, images: int):
    """Mapped-looking inputs: uint8 views of the method's sizes (SoCo: its views and boxes)."""
    from soco.data.method_data import build_mapper

    gen = torch.Generator().manual_seed(0)
    if cfg.MODEL.META_ARCHITECTURE == "BYOL":
        size = cfg.MODEL.BYOL.CROP_SIZE
        return [{"views": [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen) for _ in range(2)],
                 "image_id": str(i)} for i in range(images)]
    mapper = build_mapper(cfg)
    out = []
    for i in range(images):
        image = torch.randint(0, 256, (3, 320, 400), dtype=torch.uint8, generator=gen)
        boxes = torch.tensor([[20.0, 30, 200, 220], [150, 60, 380, 300], [40, 100, 260, 310], [100, 20, 300, 200]])
        views = mapper.build_views(image, boxes)
        out.append({"views": [views["images"][v] for v in model.view_names], "boxes": views["boxes"], "image_id": str(i)})
    return out


def step_flops(model, batch, cfg) -> float:
    """FLOPs of one training step (forward + backward) of the eager model, fp32."""
    from torch.utils.flop_counter import FlopCounterMode

    from soco.engine.step import training_step

    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    with FlopCounterMode(display=False) as counter:
        training_step(model, lambda: batch, opt, 0, cfg.SOLVER.MAX_ITER, method_hooks=False)
    return float(counter.get_total_flops())


def run_variant(method: str, variant: str, args) -> dict:
    from detectron2.utils import comm

    from soco.engine.pretrain import prepare_for_training
    from soco.engine.step import make_grad_scaler, training_step
    from soco.modeling.distributed import broadcast_module_state
    from soco.engine.pretrain import build_training_model

    world = comm.get_world_size()
    skip = skip_reason(variant, world, args.smoke)
    if skip:
        return {"skipped": skip}
    cfg = build_cfg(method, variant, args, world)
    device = torch.device(cfg.MODEL.DEVICE)
    torch.manual_seed(0)
    model = build_training_model(cfg, cfg.SOLVER.IMS_PER_BATCH)
    broadcast_module_state(model)
    batch = synthetic_batch(cfg, model, cfg.SOLVER.IMS_PER_BATCH // world)
    flops = step_flops(model, batch, cfg)
    model, optimizer, train_model = prepare_for_training(model, cfg)
    model.train()
    scaler = make_grad_scaler(cfg.SOLVER.AMP.ENABLED, device.type)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def steps(start, count):
        for it in range(start, start + count):
            training_step(train_model, lambda: batch, optimizer, it, cfg.SOLVER.MAX_ITER, amp=cfg.SOLVER.AMP.ENABLED,
                          device_type=device.type, grad_scaler=scaler)

    compile_start = time.perf_counter()
    steps(0, args.warmup)
    sync()
    warmup_s = time.perf_counter() - compile_start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    steps(args.warmup, args.steps)
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    images = len(batch)
    result = {
        "images_per_s_per_gpu": images / seconds,
        "seconds_per_step": seconds,
        "warmup_s": warmup_s,
        "peak_memory_GB": torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None,
        "step_TFLOP_per_gpu": flops / 1e12,
    }
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if device.type == "cuda"
                                     and k in torch.cuda.get_device_name()), 0.0)
    result["MFU"] = flops / seconds / (peak * 1e12) if peak else None
    del train_model, model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def skip_reason(variant: str, world: int, smoke: bool) -> Optional[str]:
    """Why ``variant`` cannot run in this setting (None if it can)."""
    if "syncbn" not in variant:
        return None
    if smoke:
        return "SyncBatchNorm runs on GPUs only"
    return f"SyncBN needs 2+ GPUs (this run has {world}); run on a machine with several" if world < 2 else None


def format_table(data: dict) -> str:
    """The results of a run (``{"info": ..., "results": {"METHOD VARIANT": row}}``, as written to
    ``--output``) as one text table, with skipped and failed variants as notes in their row."""
    info = data["info"]
    lines = [f"gpu_check: {info['device']} x {info['world_size']} | torch {info['torch']} | "
             f"{info.get('steps', '?')} timed steps after {info.get('warmup', '?')} warm-up, per GPU",
             f"{'method':6s} {'variant':18s} {'img/s/GPU':>10s} {'ms/step':>8s} {'peak GB':>8s} {'MFU':>6s} "
             f"{'warmup s':>9s}  note"]
    for key, row in data["results"].items():
        method, variant = key.split(" ", 1)
        if "images_per_s_per_gpu" not in row:
            note = f"skipped: {row['skipped']}" if "skipped" in row else f"error: {row.get('error', '?')}"
            lines.append(f"{method:6s} {variant:18s} {'-':>10s} {'-':>8s} {'-':>8s} {'-':>6s} {'-':>9s}  {note}")
            continue
        memory = f"{row['peak_memory_GB']:.2f}" if row.get("peak_memory_GB") is not None else "-"
        mfu = f"{100 * row['MFU']:.1f}%" if row.get("MFU") is not None else "-"
        lines.append(f"{method:6s} {variant:18s} {row['images_per_s_per_gpu']:10.1f} {1000 * row['seconds_per_step']:8.1f} "
                     f"{memory:>8s} {mfu:>6s} {row['warmup_s']:9.1f}")
    return "\n".join(lines)


def worker(args) -> None:
    from detectron2.utils import comm

    from soco.utils.files import atomic_write_json

    torch.backends.cudnn.benchmark = True
    results = {}
    start = time.perf_counter()
    for method in args.methods:
        for variant in args.variants:
            key = f"{method} {variant}"
            # Every rank takes the slowest rank's clock, so all skip the same variants.
            minutes = max(comm.all_gather(time.perf_counter() - start)) / 60
            if minutes > args.budget_min:
                results[key] = {"skipped": f"time budget spent ({minutes:.1f} > --budget-min {args.budget_min:g} minutes)"}
                continue
            try:
                results[key] = run_variant(method, variant, args)
            except Exception as e:  # one failing variant must not hide the others' figures
                results[key] = {"error": f"{type(e).__name__}: {e}"[:500]}
            if comm.is_main_process():
                print(f"gpu_check: {key} done after {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    if comm.is_main_process():
        info = {"world_size": comm.get_world_size(), "torch": torch.__version__, "steps": args.steps,
                "warmup": args.warmup, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
        data = {"info": info, "results": results}
        if args.output:
            atomic_write_json(args.output, data)
        print(format_table(data), flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.table:
        with open(args.table) as f:
            print(format_table(json.load(f)))
        return
    from soco.engine.launch import launch

    import soco.modeling.meta_arch  # noqa: F401  (registers the methods)

    if args.smoke:
        args.steps, args.warmup, args.batch = 2, 1, args.batch or 2
        args.variants = [v for v in args.variants if "compile" not in v]
    launch(worker, args.num_gpus, dist_url="auto", args=(args,), device="cpu" if args.smoke else "cuda")


if __name__ == "__main__":
    main()
