"""Benchmark: memory of the neighbour metrics (Recall@k, R-Precision, MAP@R, NR-Prec) at Kobs et
al.'s scale, where a few huge classes make R = class size - 1 enormous.

    python bench/metrics.py                      # n=100,000 in 6 classes, d=32, CPU
    python bench/metrics.py --n 20000 --threads 2
    python bench/metrics.py --device cuda

Prints the wall time, the peak resident memory (ru_maxrss) above the in-run baseline (the process
after the data exist), the size an (n x (largest class - 1)) int64 neighbour table would take
(what a non-streamed implementation allocates, twice over with its float64 relevance table), and
their ratio. The issue's target: peak RSS under 2 GB at n = 100,000 with 6 classes.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GIB = 1024 ** 3


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="images (default 100,000)")
    parser.add_argument("--classes", type=int, default=6, help="classes (default 6, as Kobs et al.'s car models)")
    parser.add_argument("--dim", type=int, default=32, help="embedding dimension (default 32)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-nrprec", action="store_true", help="retrieval only")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # long runs: each line shows as it is printed

    import torch

    from analysis.metrics import nr_precision, retrieval_metrics

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, args.classes, size=args.n)
    X = (rng.normal(size=(args.classes, args.dim))[labels] + rng.normal(scale=2.0, size=(args.n, args.dim)))
    X = X.astype(np.float32)
    baseline = peak_rss()
    largest = int(np.bincount(labels).max())
    table = args.n * (largest - 1) * 8
    print(f"n={args.n:,} d={args.dim} classes={args.classes} (largest {largest:,}) device={args.device} "
          f"threads={torch.get_num_threads()}")
    print(f"baseline peak RSS (data loaded): {baseline / GIB:.2f} GiB; an n x (largest class - 1) int64 "
          f"table alone: {table / GIB:.2f} GiB")
    start = time.perf_counter()
    result = retrieval_metrics(X, labels, ks=(1, 4), nmi=False, device=args.device)
    took = time.perf_counter() - start
    print(f"retrieval {took:.1f} s: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))
    if not args.skip_nrprec:
        start = time.perf_counter()
        nr = nr_precision(X, labels, device=args.device)
        print(f"NR-Prec (R capped at 1023) {time.perf_counter() - start:.1f} s: {nr.mean:.3f}")
    peak = peak_rss()
    print(f"peak RSS {peak / GIB:.2f} GiB (target < 2 GiB); above baseline {(peak - baseline) / GIB:.2f} GiB; "
          f"neighbour table / growth = {table / max(peak - baseline, 1):.1f}x")
    return 0 if peak < 2 * GIB else 1


if __name__ == "__main__":
    sys.exit(main())
