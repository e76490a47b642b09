#!/usr/bin/env python
"""Proposal metadata at ImageNet size: today's path (pickle, list of dicts) vs the memory-mapped store.

    python benchmarks/bench_scale.py --images 128117 [--processes 2 --workers 2] [--work-dir /tmp/bench_scale]

Builds, under ``--work-dir`` (removed at the end unless ``--keep``): a synthetic ImageNet-shaped
tree of N hard links to 375 x 500 JPEGs (one file per class) in 1000 class folders; a finished
generator work folder of N images with ``--boxes`` synthetic whole-pixel boxes each (the
project's own chunk writer); then
merges it both ways and measures, each step in a fresh forked process (memory = its peak or held
RSS above what it started with):

* file bytes per image, merge time and peak memory: ``.pkl`` (today) vs store (streaming merge);
* read time and memory held per process: ``read_proposal_file`` of the pickle vs ``ProposalStore``;
* dataset build time and memory held: listing + a dict per image with its boxes (today's
  ``image_folder_dicts`` + ``attach_proposals``) vs ``attach_proposals(ImageFolderDataset(root))``;
* a machine of P processes x W workers that each touch every item once, then collect garbage
  (an epoch): total PSS of all its processes, and USS growth per worker.

* with ``--baseline-repo DIR`` (a checkout of the code before the store, e.g. ``git archive`` of
  an older commit): ``tools/pretrain_net.py`` launch -> "Starting training" with the SoCo CPU demo
  config on the tree, the baseline's code reading the pickle vs this checkout reading the store
  (one process, no workers; each run is stopped once training starts).

The ratios compare the two paths measured in the same run. Prints a markdown table (and
``--json`` writes the figures).
"""
import argparse
import gc
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from soco.proposals.chunks import check_manifest, manifest, write_chunk  # noqa: E402
from soco.utils.files import atomic_write_json  # noqa: E402

CLASSES = 1000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synthetic_ids(num_images: int) -> list:
    """ImageNet-shaped ids, sorted: ``nXXXXXXXX/nXXXXXXXX_YYYYYY.JPEG`` in 1000 classes."""
    per_class = -(-num_images // CLASSES)
    return [f"n{i // per_class:08d}/n{i // per_class:08d}_{i:07d}.JPEG" for i in range(num_images)]


def synthetic_work_folder(output: str, ids, sizes, boxes_per_image: int = 55, chunk_size: int = 1000,
                          fail_every: int = 997, seed: int = 0) -> None:
    """A finished generator work folder for ``ids`` (sizes: (height, width) per id or one for all):
    ``boxes_per_image`` random boxes per image, every ``fail_every``-th image recorded as failed."""
    shard_dir = output + ".shards"
    os.makedirs(shard_dir, exist_ok=True)
    check_manifest(shard_dir, manifest(list(ids), "vectorized", 320, chunk_size, None))
    rng = np.random.default_rng(seed)
    for k in range(0, len(ids), chunk_size):
        results = []
        for i in range(k, min(len(ids), k + chunk_size)):
            h, w = sizes[i] if len(sizes) == len(ids) else sizes[0]
            xy = rng.integers(0, min(h, w) // 2, (boxes_per_image, 2))
            boxes = np.concatenate([xy, xy + rng.integers(32, min(h, w) // 2, (boxes_per_image, 2))], 1)
            failure = "not a recognised image format" if i % fail_every == 5 else None
            results.append((ids[i], None if failure else boxes.astype(np.float32), 0, (h, w), failure, 0.01))
        write_chunk(shard_dir, k // chunk_size, results)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _smaps(pid) -> dict:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("Pss", "Private_Clean", "Private_Dirty")}


def in_child(fn):
    """Run ``fn()`` in a forked child -> (its result, seconds, peak MiB above its start, held MiB)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        gc.collect()
        start_rss = _rss_mib()
        t = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - t
        gc.collect()
        held = _rss_mib() - start_rss
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - start_rss
        os.write(write, json.dumps([value, seconds, peak, held]).encode())
        os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.waitpid(pid, 0)
    return json.loads(data)


def machine(build, processes: int, workers: int, freeze: bool) -> dict:
    """P processes that each build the dataset, then fork W workers that each touch every item and
    collect garbage: total PSS of the P + P*W processes (MiB) and mean USS growth per worker."""
    read, write = os.pipe()
    ready_r, ready_w = os.pipe()
    pids = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            dataset = build()
            gc.collect()
            if freeze:
                gc.freeze()
            kids, pipes = [], []
            for _ in range(workers):
                r, w = os.pipe()
                kid = os.fork()
                if kid == 0:
                    before = _smaps("self")
                    for i in range(len(dataset)):
                        dataset[i]
                    gc.collect()
                    after = _smaps("self")
                    growth = sum(after[k] - before[k] for k in ("Private_Clean", "Private_Dirty"))
                    os.write(w, json.dumps(growth).encode())
                    os.read(ready_r, 1)  # stay alive until the machine is measured
                    os._exit(0)
                kids.append(kid)
                pipes.append(r)
            growths = [json.loads(os.read(r, 100)) for r in pipes]
            os.write(write, (json.dumps({"pid": os.getpid(), "kids": kids, "growth": growths}) + "\n").encode())
            os.read(ready_r, 1)
            for kid in kids:
                os.waitpid(kid, 0)
            os._exit(0)
        pids.append(pid)
    reports, buffer = [], b""
    while len(reports) < processes:
        buffer += os.read(read, 65536)
        *lines, buffer = buffer.split(b"\n")
        reports += [json.loads(line) for line in lines if line]
    pss = sum(_smaps(p)["Pss"] for r in reports for p in [r["pid"], *r["kids"]])
    os.write(ready_w, b"x" * (processes * (workers + 1)))
    for pid in pids:
        os.waitpid(pid, 0)
    growths = [g for r in reports for g in r["growth"]]
    return {"pss_mib": pss, "worker_uss_growth_mib": float(np.mean(growths))}


def launch_seconds(repo: str, root: str, proposals: str, output_dir: str, timeout: float = 900) -> float:
    """Seconds from starting ``repo``'s tools/pretrain_net.py (SoCo CPU demo config on ``root``) to
    its "Starting training" line; the run is then stopped."""
    command = [sys.executable, "tools/pretrain_net.py", "--config-file", "configs/SoCo/SoCo_demo_R18_FPN_cpu.yaml",
               "PRETRAIN.IMAGE_ROOT", root, "MODEL.SOCO.PROPOSALS", proposals, "SOLVER.MAX_ITER", "1",
               "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", output_dir]
    env = dict(os.environ, PYTHONPATH=os.path.abspath(repo))
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "Starting training" in line:
                return time.perf_counter() - start
            if time.perf_counter() - start > timeout:
                break
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    raise RuntimeError(f"{repo}: pretrain_net.py did not start training:\n{''.join(lines[-20:])}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--boxes", type=int, default=55, help="boxes per image (default 55)")
    parser.add_argument("--processes", type=int, default=2, help="simulated processes per machine (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="simulated DataLoader workers per process (default 2)")
    parser.add_argument("--work-dir", default="/tmp/bench_scale")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (tree, chunks) for another run")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--baseline-repo", help="checkout of the code before the store: also time the launch")
    args = parser.parse_args(argv)

    from PIL import Image

    from soco.data.image_folder import ImageFolderDataset, image_folder_dicts
    from soco.data.proposals.file_format import read_proposal_file
    from soco.proposals.merging import merge
    from soco.data.proposals.store import ProposalStore
    from soco.data.soco_mapper import attach_proposals

    n = args.images
    work = os.path.join(args.work_dir, f"n{n}")
    root = os.path.join(work, "train")
    ids = synthetic_ids(n)
    t = time.perf_counter()
    if not os.path.exists(os.path.join(work, "tree.done")):
        os.makedirs(root, exist_ok=True)
        sources = []
        for k in range(4):
            path = os.path.join(work, f"source{k}.JPEG")
            Image.fromarray(np.random.default_rng(k).integers(0, 255, (375, 500, 3), np.uint8)).save(path)
            sources.append(path)
        for i, image_id in enumerate(ids):
            target = os.path.join(root, image_id)
            if i == 0 or image_id.split("/")[0] != ids[i - 1].split("/")[0]:
                # one copy per class: a file takes at most 65,000 hard links on ext4
                os.makedirs(os.path.dirname(target), exist_ok=True)
                source = os.path.join(work, "sources", image_id.split("/")[0] + ".JPEG")
                os.makedirs(os.path.dirname(source), exist_ok=True)
                shutil.copyfile(sources[len(os.listdir(root)) % 4], source)
            os.link(source, target)
        for output in ("today.pkl", "store.store"):
            synthetic_work_folder(os.path.join(work, output), ids, [(375, 500)], args.boxes)
        open(os.path.join(work, "tree.done"), "w").close()
    print(f"tree and chunks of {n} images: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    pkl, store = os.path.join(work, "today.pkl"), os.path.join(work, "store.store")

    rows = {}
    _, rows["merge_s_today"], rows["merge_peak_today"], _ = in_child(lambda: merge(pkl) and None)
    _, rows["merge_s_store"], rows["merge_peak_store"], _ = in_child(lambda: merge(store) and None)
    kept = n - sum(1 for i in range(n) if i % 997 == 5)
    rows["bytes_today"], rows["bytes_store"] = os.path.getsize(pkl) / kept, os.path.getsize(store) / kept
    print(json.dumps(rows), file=sys.stderr, flush=True)  # progress: figures so far

    holder = []
    _, rows["read_s_today"], _, rows["read_held_today"] = in_child(lambda: holder.append(read_proposal_file(pkl)))
    _, rows["read_s_store"], _, rows["read_held_store"] = in_child(lambda: holder.append(ProposalStore(store)))
    print(json.dumps(rows), file=sys.stderr, flush=True)  # progress: figures so far

    def today_dataset():
        proposals = read_proposal_file(pkl)
        return [dict(d, proposal_boxes=proposals.boxes[d["image_id"]], proposal_image_size=proposals.sizes[d["image_id"]])
                for d in image_folder_dicts(root) if d["image_id"] in proposals.boxes]

    def store_dataset():
        return attach_proposals(ImageFolderDataset(root), store)

    _, rows["build_s_today"], _, rows["build_held_today"] = in_child(lambda: holder.append(today_dataset()))
    _, rows["build_s_store"], _, rows["build_held_store"] = in_child(lambda: holder.append(store_dataset()))
    print(json.dumps(rows), file=sys.stderr, flush=True)  # progress: figures so far
    for name, build, freeze in (("today", today_dataset, False), ("store", store_dataset, True)):
        result = machine(build, args.processes, args.workers, freeze)
        rows[f"machine_pss_{name}"], rows[f"worker_growth_{name}"] = result["pss_mib"], result["worker_uss_growth_mib"]
        print(json.dumps(rows), file=sys.stderr, flush=True)  # progress: figures so far

    if args.baseline_repo:
        rows["launch_s_today"] = launch_seconds(args.baseline_repo, root, pkl, os.path.join(work, "out_today"))
        rows["launch_s_store"] = launch_seconds(REPO, root, store, os.path.join(work, "out_store"))

    def line(label, key, unit, fmt="{:.1f}"):
        a, b = rows[f"{key}_today"], rows[f"{key}_store"]
        ratio = f"{a / b:.1f}x" if b > 0.05 else "-"
        return f"| {label} | {fmt.format(a)} {unit} | {fmt.format(b)} {unit} | {ratio} |"

    print(f"\n{n} images, {args.boxes} boxes each; machine = {args.processes} processes x {args.workers} workers\n")
    print("| | today (pickle, list of dicts) | store (mmap index) | today / store |\n|---|---|---|---|")
    for label, key, unit in (("file bytes per image", "bytes", "B"), ("merge time", "merge_s", "s"),
                             ("merge peak memory", "merge_peak", "MiB"), ("read time", "read_s", "s"),
                             ("read: memory held per process", "read_held", "MiB"),
                             ("dataset build time", "build_s", "s"),
                             ("dataset: memory held per process", "build_held", "MiB"),
                             (f"machine {args.processes}x{args.workers}: total PSS", "machine_pss", "MiB"),
                             ("worker USS growth over an epoch", "worker_growth", "MiB"),
                             ("launch -> Starting training", "launch_s", "s")):
        if f"{key}_today" in rows:
            print(line(label, key, unit))
    if args.json:
        atomic_write_json(args.json, {"images": n, "boxes": args.boxes, "processes": args.processes,
                                      "workers": args.workers, **rows})
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
