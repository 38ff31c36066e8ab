"""Percentile bootstrap intervals of a mean over images.

The per-image values (a silhouette s(i), an NR-Prec z_i) are resampled with replacement; each
value stays as computed on the full set (the metric is not recomputed per resample), so the
interval describes how much the mean depends on which images were drawn. Seeded, so a table is
reproducible; resamples are drawn in blocks, so memory stays O(n) per block.
"""

from __future__ import annotations

import numpy as np

from blender_addon.core.errors import CarprobeError

N_BOOT = 1000
CONFIDENCE = 0.95
_BLOCK_ENTRIES = 1 << 22


def bootstrap_mean_ci(values, n_boot: int = N_BOOT, confidence: float = CONFIDENCE,
                      seed: int = 0) -> tuple[float, float]:
    """(low, high): the percentile interval of the mean of the finite `values` (NaN left out);
    NaN, NaN with fewer than 2 finite values."""
    if not 0 < confidence < 1:
        raise CarprobeError(f"confidence={confidence!r} is not allowed; expected a number between 0 and 1")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise CarprobeError(f"n_boot={n_boot!r} is not allowed; expected an integer >= 2")
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, _BLOCK_ENTRIES // n)
    for b0 in range(0, n_boot, step):
        b1 = min(b0 + step, n_boot)
        means[b0:b1] = v[rng.integers(0, n, size=(b1 - b0, n))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)
