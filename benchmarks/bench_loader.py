#!/usr/bin/env python
"""Data-loading cost per image: today's mapper vs the fast CPU path vs the device path's CPU share.

For SoCo and each image-level method (BYOL, CoKe, CLSA with its strong views, CLSA*, SMoG),
with the view sizes of the paper configs, on one thread:

Per-image figures are CPU time of one thread (``time.process_time``), the fastest of
``--repeats`` interleaved passes. Paths:

* ``decode``: JPEG decoding alone, Pillow (today's reader) and torchvision (``read_image_chw``);
* ``today``: the mapper as it was: Pillow decoding + the reference torchvision v2 augmentation;
* ``fast``: the default CPU path (torchvision decoding + the OpenCV photometric kernels);
* ``device CPU``: the loader's share with ``PRETRAIN.AUGMENT_ON: device`` (decode, crops,
  resizes, flips, boxes, parameter draws);
* ``device ms``: the deferred colour operations applied batched on ``--device`` (ms per image,
  batch ``--batch``; on a CPU this is CPU time, on a GPU the GPU's);

then images/s of the loader with ``--workers`` worker processes for each path, and the cores one
GPU needs at ``--gpu-throughput`` images/s (cores = images/s x CPU ms per image / 1000).
Ratios are against ``today`` measured in the same run. Images: the embedded demo photos
(default) or any folder (``--images DIR``, walked recursively).

    python benchmarks/bench_loader.py
    python benchmarks/bench_loader.py --images datasets/imagenet/val --num-images 200 --workers 4 8
    python benchmarks/bench_loader.py --methods SoCo --device cuda --json loader.json

Timings on a shared machine vary with its load; compare ratios from the same run.
"""

import argparse
import contextlib
import os
import sys
import time
from contextlib import contextmanager
from unittest import mock

import numpy as np
import torch

# Method -> (paper config whose view sizes are used, extra config options).
METHODS = {
    "SoCo": ("configs/SoCo/SoCo_R50_FPN_400ep.yaml", {}),
    "SoCo*": ("configs/SoCo/SoCo_star_R50_FPN_400ep.yaml", {}),
    "BYOL": ("configs/BYOL/byol_R50_300ep.yaml", {}),
    "CoKe": ("configs/CoKe/coke_R50_800ep_multicrop.yaml", {}),
    "CLSA": ("configs/CLSA/clsa_R50_200ep.yaml", {}),
    "CLSA*": ("configs/CLSA/clsa_star_R50_200ep.yaml", {}),
    "SMoG": ("configs/SMoG/smog_R50_400ep_multicrop.yaml", {}),
}
PATHS = ("today", "fast", "device")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def list_images(folder: str, limit: int):
    from soco.data.image_folder import image_folder_dicts

    dicts = image_folder_dicts(folder)[:limit]
    if not dicts:
        sys.exit(f"no images found under {folder}")
    return dicts


def attach_synthetic_proposals(dicts, seed: int = 0, count: int = 40):
    """SoCo needs proposals; boxes within the paper's filter (1/3 <= w/h <= 3, 0.3-0.8 of the
    image's side) stand in for selective search, whose cost is not the loader's."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for d in dicts:
        with Image.open(d["file_name"]) as im:
            w, h = im.size
        side = rng.uniform(0.3, 0.8, count) * np.sqrt(w * h)
        ratio = np.exp(rng.uniform(np.log(1 / 3), np.log(3), count))
        bw, bh = np.minimum(side * np.sqrt(ratio), w), np.minimum(side / np.sqrt(ratio), h)
        x0, y0 = rng.uniform(0, 1, count) * (w - bw), rng.uniform(0, 1, count) * (h - bh)
        boxes = np.stack([x0, y0, x0 + bw, y0 + bh], 1).astype(np.float32)
        out.append(dict(d, proposal_boxes=boxes))
    return out


def load_cfg(name: str):
    from soco.config import get_pretrain_cfg

    path, extra = METHODS[name]
    cfg = get_pretrain_cfg()
    cfg.merge_from_file(os.path.join(REPO, path))
    for k, v in extra.items():
        cfg.merge_from_list([k, v])
    return cfg


def build_mapper(cfg, path: str):
    """The method's mapper configured for ``path`` ("today" and "fast" on the CPU, or "device")."""
    from soco.data import method_data

    mapper = method_data.build_mapper(cfg)
    impl, on = {"today": ("reference", "cpu"), "fast": ("fast", "cpu"), "device": ("fast", "device")}[path]
    mapper.configure_augmentation(impl, on)
    return mapper


def pillow_read_chw(path, max_pixels=None):
    """Today's reader: Pillow for every format (before read_image_chw decoded JPEGs with torchvision);
    ``max_pixels``: the mappers pass PRETRAIN.MAX_IMAGE_PIXELS (0: no limit); None: its default."""
    from soco.data.image_io import MAX_IMAGE_PIXELS, read_image_rgb

    limit = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    return torch.from_numpy(np.require(read_image_rgb(path, limit), requirements="W")).permute(2, 0, 1)


@contextmanager
def decoder(path: str):
    """Mappers read with Pillow for ``today``, with read_image_chw otherwise."""
    if path != "today":
        yield
        return
    with mock.patch("soco.data.soco_mapper.read_image_chw", pillow_read_chw), mock.patch(
        "soco.data.image_level_mapper.read_image_chw", pillow_read_chw
    ):
        yield


def per_image_ms(fns: dict, items, repeats: int, context=None) -> dict:
    """{name: CPU ms per image} of each callable over ``items``.

    CPU time of this process (``time.process_time``; torch and OpenCV run one thread), not wall
    time: it is what one core spends per image, and a machine shared with other jobs inflates it
    far less than wall time. The passes of the callables are interleaved and the fastest of
    ``repeats`` passes is kept, so what remains of load effects hits every path alike."""
    best = {name: float("inf") for name in fns}
    for name, fn in fns.items():
        with (context(name) if context else contextlib.nullcontext()):
            for item in items[: min(4, len(items))]:
                fn(item)  # warm-up (lazy imports, allocator)
    for r in range(repeats):
        for name, fn in fns.items():
            with (context(name) if context else contextlib.nullcontext()):
                start = time.process_time()
                for i, item in enumerate(items):
                    torch.manual_seed(r * 100_003 + i)
                    fn(item)
                best[name] = min(best[name], (time.process_time() - start) * 1e3 / len(items))
    return best


def device_ms(mapper, dicts, device: str, batch: int, repeats: int) -> float:
    """Batched deferred colour operations on ``device``, ms per image."""
    from soco.data.transforms.device import apply_deferred_photometric

    samples = []
    for i in range(batch):
        torch.manual_seed(i)
        samples.append(mapper(dicts[i % len(dicts)]))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    apply_deferred_photometric(samples, device)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        apply_deferred_photometric(samples, device)
    sync()
    return (time.perf_counter() - start) * 1e3 / (repeats * batch)


def loader_images_per_s(mapper, dicts, workers: int, batch: int, batches: int) -> float:
    from soco.data.build import ResumableLoader, SeededMapDataset

    loader = ResumableLoader(SeededMapDataset(dicts, mapper, 0), batch, batch, workers, seed=0)
    it = iter(loader)
    next(it)  # workers started and warm
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    elapsed = time.perf_counter() - start
    del it
    return batches * batch / elapsed


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default="", help="image folder (default: the embedded demo photos)")
    p.add_argument("--num-images", type=int, default=48)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--repeats", type=int, default=3, help="passes over the images per path (the fastest counts)")
    p.add_argument("--workers", type=int, nargs="*", default=[2], help="loader worker counts for img/s (none: skip)")
    p.add_argument("--loader-batches", type=int, default=6)
    p.add_argument("--batch", type=int, default=32, help="batch of the device timing and of the loader")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--gpu-throughput", type=float, default=300.0, help="images/s one GPU trains (for cores/GPU)")
    p.add_argument("--json", default="", help="also write the results here")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    if args.images:
        folder = args.images
    else:
        from soco.embedded.catalog import PHOTOS, image_root

        folder = image_root(PHOTOS)
    dicts = attach_synthetic_proposals(list_images(folder, args.num_images))
    from soco.data.image_io import read_image_chw

    files = [d["file_name"] for d in dicts]
    decode = per_image_ms({"pillow": pillow_read_chw, "torchvision": read_image_chw}, files, args.repeats)
    print(f"{len(dicts)} images from {folder}; CPU ms per image on one thread; device path on {args.device}")
    print(f"decode ms/img: Pillow {decode['pillow']:.2f}, torchvision {decode['torchvision']:.2f} "
          f"({decode['pillow'] / decode['torchvision']:.2f}x)")
    results = {"images": folder, "num_images": len(dicts), "device": args.device, "decode_ms": decode, "methods": {}}
    header = (f"{'method':8} {'today ms':>9} {'fast ms':>8} {'x':>5} {'dev CPU ms':>10} {'x':>5} {'dev ms':>7} "
              f"{'fast/dec':>8} {'cores/GPU today/fast/dev':>25}")
    print(header)
    for name in args.methods:
        cfg = load_cfg(name)
        row = per_image_ms({path: build_mapper(cfg, path) for path in PATHS}, dicts, args.repeats, decoder)
        row["device_ms"] = device_ms(build_mapper(cfg, "device"), dicts, args.device, args.batch, max(1, args.repeats))
        row["speedup_fast"] = row["today"] / row["fast"]
        row["speedup_device_cpu"] = row["today"] / row["device"]
        row["cores_per_gpu"] = {p: args.gpu_throughput * row[p] / 1000 for p in PATHS}
        for workers in args.workers:
            for path in ("today", "fast", "device"):
                mapper = build_mapper(cfg, path)
                with decoder(path):
                    ips = loader_images_per_s(mapper, dicts, workers, args.batch, args.loader_batches)
                row.setdefault("loader_img_per_s", {}).setdefault(str(workers), {})[path] = ips
        results["methods"][name] = row
        c = row["cores_per_gpu"]
        print(f"{name:8} {row['today']:9.2f} {row['fast']:8.2f} {row['speedup_fast']:5.2f} {row['device']:10.2f} "
              f"{row['speedup_device_cpu']:5.2f} {row['device_ms']:7.3f} {row['fast'] / decode['torchvision']:8.2f} "
              f"{c['today']:>9.1f}/{c['fast']:.1f}/{c['device']:.1f}")
        for workers, ips in row.get("loader_img_per_s", {}).items():
            print(f"{'':8} loader, {workers} workers: " + ", ".join(f"{p} {v:.0f} img/s" for p, v in ips.items()))
    print(f"cores/GPU at {args.gpu_throughput:.0f} img/s per GPU; x = today's ms / this path's ms (same run)")
    if args.json:
        from soco.utils.files import atomic_write_json

        atomic_write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
