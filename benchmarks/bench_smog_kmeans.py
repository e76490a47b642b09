#!/usr/bin/env python
"""Memory of SMoG's re-grouping k-means: the full M x L similarity matrix against chunks.

At the paper's 800-epoch setting (batch 4096, re-grouping every 300 iterations, so the cache
holds M = 1,228,800 features of D = 128, and L = 3000 groups) the assignment step of a k-means
that scores all features at once allocates an M x L float32 matrix: 14.7 GB on every GPU.
``spherical_kmeans(..., chunk_bytes=MODEL.SMOG.KMEANS_CHUNK_MB MiB)`` scores row blocks instead.

This script prints the analytic figures at the paper's size and measures the peak resident
memory (CPU, one subprocess per variant, ru_maxrss) of both variants at a scaled size
(M / --scale), with the chunk bound scaled alike, and checks that both give the same groups.

    python benchmarks/bench_smog_kmeans.py [--scale 16] [--iters 2]
"""

import argparse
import json
import resource
import subprocess
import sys
import time

PAPER_M, PAPER_L, PAPER_D = 4096 * 300, 3000, 128
DEFAULT_CHUNK_MB = 1024


def analytic(m: int, l: int, d: int, chunk_mb: float) -> dict:
    """Bytes of the cache, the full similarity matrix and one chunk's block."""
    rows = max(1, int(chunk_mb * 2**20) // (4 * l))
    return {
        "cache_MB": m * d * 4 / 1e6,
        "full_similarity_MB": m * l * 4 / 1e6,
        "chunk_similarity_MB": min(rows, m) * l * 4 / 1e6,
    }


def child(m: int, l: int, d: int, iters: int, chunk_bytes: int) -> dict:
    import torch

    from soco.modeling.losses.smog import spherical_kmeans

    torch.set_num_threads(1)
    x = torch.nn.functional.normalize(torch.randn(m, d, generator=torch.Generator().manual_seed(0)), dim=1)
    x.float().sum()  # touch: the baseline includes the features and one normalised copy
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    groups = spherical_kmeans(x, l, iters, generator=torch.Generator().manual_seed(1), chunk_bytes=chunk_bytes)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"extra_peak_MB": (peak - base) * 1024 / 1e6, "seconds": seconds, "checksum": float(groups.double().sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=16, help="measure at M / scale features")
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--child", nargs=5, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    print("paper 800 ep (analytic):", json.dumps(analytic(PAPER_M, PAPER_L, PAPER_D, DEFAULT_CHUNK_MB)))
    m = PAPER_M // args.scale
    chunk_bytes = DEFAULT_CHUNK_MB * 2**20 // args.scale
    print(f"measured at M={m}, L={PAPER_L}, D={PAPER_D}, chunk {chunk_bytes / 2**20:.0f} MiB:",
          json.dumps(analytic(m, PAPER_L, PAPER_D, chunk_bytes / 2**20)))
    results = {}
    for name, chunk in (("full", 0), ("chunked", chunk_bytes)):
        cmd = [sys.executable, __file__, "--child", str(m), str(PAPER_L), str(PAPER_D), str(args.iters), str(chunk)]
        results[name] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(name, json.dumps(results[name]))
    same = results["full"]["checksum"] == results["chunked"]["checksum"]
    ratio = results["full"]["extra_peak_MB"] / max(results["chunked"]["extra_peak_MB"], 1e-9)
    print(f"peak memory full / chunked: {ratio:.1f}x; same groups: {same}; "
          f"time chunked / full: {results['chunked']['seconds'] / results['full']['seconds']:.2f}x")


if __name__ == "__main__":
    main()
