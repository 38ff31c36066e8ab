"""Benchmark: matched pairs of a 100,000-row one-at-a-time set (`analysis.effects.find_pairs`).

    python bench/effects.py                 # 100,000 rows: 500 cars × 200 one-factor images
    python bench/effects.py --cars 50       # smaller

Builds the metadata of a one-factor-at-a-time design (every schema factor column, as
metadata.csv has them) and times find_pairs, which groups rows by hashing the other factor
columns. The in-run baseline is a pairwise scan (compare every row with every other on the
factor columns, vectorised with numpy) timed on a subsample and scaled by n²; printed: both
times, their ratio, and whether find_pairs met the issue's target (< 10 s on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.effects import find_pairs  # noqa: E402
from analysis.effects.pairs import factor_columns  # noqa: E402
from blender_addon.core import schema  # noqa: E402

TARGET_S = 10.0
SUBSETS = {"paint.color": [f"#{i * 6:02x}40{255 - i * 6:02x}" for i in range(40)],
           "camera.azimuth": [5.0 * i for i in range(72)],
           "background.color": [f"#{i * 5:02x}{i * 5:02x}80" for i in range(48)],
           "camera.elevation": [float(i) for i in range(-5, 35)]}


def one_at_a_time_metadata(cars: int) -> pd.DataFrame:
    """cars × (40 colours + 72 azimuths + 48 backgrounds + 40 elevations) rows."""
    bodies = ["sedan", "suv", "hatchback", "coupe", "wagon"]
    blocks = []
    for factor, values in SUBSETS.items():
        car = np.repeat(np.arange(cars), len(values))
        block = {p.path: p.default for p in schema.PARAMS if p.factor}
        block = pd.DataFrame({k: [v] * len(car) for k, v in block.items()})
        block["car.body"] = [bodies[c % len(bodies)] for c in car]
        block["car.shape_seed"] = car // len(bodies)
        block[factor] = np.tile(np.asarray(values, dtype=object), cars)
        block["subset"] = factor
        blocks.append(block)
    meta = pd.concat(blocks, ignore_index=True)
    meta["car_id"] = meta["car.body"] + "-" + meta["car.shape_seed"].map("{:04d}".format)
    meta["camera.azimuth"] = meta["camera.azimuth"].astype(float)
    meta["camera.elevation"] = meta["camera.elevation"].astype(float)
    return meta


def scan_pairs(meta: pd.DataFrame, factors: list[str]) -> int:
    """The n² baseline: for every row, compare it with every later row on the factor columns."""
    columns = factor_columns(meta) + ["car_id"]
    codes = np.stack([pd.factorize(meta[c])[0] for c in columns], axis=1)
    found = 0
    for factor in factors:
        others = [i for i, c in enumerate(columns) if c != factor]
        key = codes[:, others]
        for i in range(len(key)):
            found += int((key[i + 1:] == key[i]).all(axis=1).sum())
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cars", type=int, default=500, help="car identities (200 rows each; default 500)")
    parser.add_argument("--scan-rows", type=int, default=2000, help="rows of the n² baseline's subsample")
    args = parser.parse_args(argv)
    meta = one_at_a_time_metadata(args.cars)
    factors = list(SUBSETS)
    start = time.perf_counter()
    plan = find_pairs(meta, factors)
    ours = time.perf_counter() - start
    sample = meta.sample(n=min(args.scan_rows, len(meta)), random_state=0).reset_index(drop=True)
    start = time.perf_counter()
    scan_pairs(sample, factors)
    scan = (time.perf_counter() - start) * (len(meta) / len(sample)) ** 2
    pairs = {f: len(p) for f, p in plan.factors.items()}
    print(f"rows {len(meta):,}; pairs {pairs}; identity pairs {len(plan.identity):,}")
    print(f"find_pairs (hash on the other columns): {ours:.2f} s")
    print(f"pairwise scan, scaled from {len(sample):,} rows: {scan:.1f} s")
    print(f"ratio scan / find_pairs: {scan / ours:.0f}x")
    print(f"target < {TARGET_S:g} s: {'met' if ours < TARGET_S else 'MISSED'}")
    return 0 if ours < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
