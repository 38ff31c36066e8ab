"""Comparing attribution maps between models, image by image (Kobs et al.'s step 1).

Per image and model pair: Spearman and Pearson correlation of the flattened maps,
Jensen–Shannon divergence in nats (natural log, 0..ln 2, as Kobs et al.'s
``scipy.spatial.distance.jensenshannon(p, q) ** 2``; metric name ``js_nats``) of the magnitudes
normalised to sum 1, top-k %
overlap (IoU of the k % highest-magnitude pixels of each map) and SSIM (Gaussian window,
sigma 1.5, 11 x 11, on maps scaled to 0..1). Over images: the mean with a confidence interval;
correlations are averaged on Fisher's z = artanh(r) and transformed back.
"""

from __future__ import annotations

from itertools import combinations
from typing import Iterable, Mapping

import numpy as np
from scipy import ndimage, stats

from blender_addon.core.errors import CarprobeError

METRICS = ("spearman", "pearson", "js_nats", "iou", "ssim")
CORRELATIONS = ("spearman", "pearson")
# Value of each metric for a map compared with itself (the matrix diagonal).
SELF_VALUE = {"spearman": 1.0, "pearson": 1.0, "js_nats": 0.0, "iou": 1.0, "ssim": 1.0}
_R_LIMIT = 1 - 1e-7  # artanh(+-1) is infinite; identical maps still average to ~1


def _flat(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).ravel()


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = _flat(a), _flat(b)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return pearson(stats.rankdata(_flat(a)), stats.rankdata(_flat(b)))


def js_divergence(a: np.ndarray, b: np.ndarray) -> float:
    """Jensen–Shannon divergence in nats (0..ln 2) of |a| and |b| normalised to sum 1."""
    p, q = np.abs(_flat(a)), np.abs(_flat(b))
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float((x[nz] * np.log(x[nz] / m[nz])).sum())

    return max(0.0, 0.5 * kl(p) + 0.5 * kl(q))


def top_k_mask(a: np.ndarray, k: float) -> np.ndarray:
    """Boolean mask of the ceil(k x size) highest-magnitude pixels (ties: the earlier pixel)."""
    flat = np.abs(_flat(a))
    count = max(1, int(np.ceil(k * flat.size)))
    chosen = np.argsort(-flat, kind="stable")[:count]
    mask = np.zeros(flat.size, dtype=bool)
    mask[chosen] = True
    return mask


def topk_iou(a: np.ndarray, b: np.ndarray, k: float = 0.1) -> float:
    if not 0 < k <= 1:
        raise CarprobeError(f"top-k fraction {k!r} must be in (0, 1]")
    ma, mb = top_k_mask(a, k), top_k_mask(b, k)
    return float((ma & mb).sum() / (ma | mb).sum())


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5, data_range: float = 1.0) -> float:
    """Mean structural similarity (Wang et al., 2004) with a Gaussian window.

    Maps are scaled to 0..1 by their own magnitude maximum first, so SSIM compares shape, not
    the arbitrary scale of two models' gradients.
    """
    a, b = np.abs(np.asarray(a, dtype=np.float64)), np.abs(np.asarray(b, dtype=np.float64))
    if a.shape != b.shape or a.ndim != 2:
        raise CarprobeError(f"ssim needs two maps of the same 2-D shape, got {a.shape} and {b.shape}")
    a = a / a.max() if a.max() > 0 else a
    b = b / b.max() if b.max() > 0 else b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        # truncate 3.5 sigma: the 11 x 11 window of the original paper at sigma 1.5
        return ndimage.gaussian_filter(x, sigma=sigma, truncate=3.5, mode="reflect")

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def pair_metrics(maps_a: np.ndarray, maps_b: np.ndarray, metrics: Iterable[str] = METRICS,
                 k: float = 0.1) -> dict[str, np.ndarray]:
    """Each metric for each image: maps_a and maps_b are (N, H, W) maps of the same N images."""
    maps_a, maps_b = np.asarray(maps_a), np.asarray(maps_b)
    if maps_a.shape != maps_b.shape:
        raise CarprobeError(f"maps to compare differ in shape: {maps_a.shape} vs {maps_b.shape}")
    funcs = {"spearman": spearman, "pearson": pearson, "js_nats": js_divergence,
             "iou": lambda a, b: topk_iou(a, b, k), "ssim": ssim}
    out = {}
    for metric in metrics:
        if metric not in funcs:
            raise CarprobeError(f"unknown comparison metric {metric!r}; allowed: {', '.join(METRICS)}")
        out[metric] = np.array([funcs[metric](a, b) for a, b in zip(maps_a, maps_b)], dtype=np.float64)
    return out


def summarize(values: np.ndarray, metric: str, ci: float = 0.95, method: str = "t",
              n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float, int]:
    """(mean, ci_low, ci_high, n) over images; correlations via Fisher z. NaNs are dropped.

    method "t": Student-t interval of the mean (on z for correlations); "bootstrap": percentile
    interval of `n_boot` seeded resamples. With fewer than 2 values the interval is NaN.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    fisher = metric in CORRELATIONS
    if fisher:
        v = np.arctanh(np.clip(v, -_R_LIMIT, _R_LIMIT))
    back = np.tanh if fisher else (lambda x: x)
    mean = float(v.mean())
    if n < 2:
        lo = hi = float("nan")
    elif method == "t":
        half = stats.t.ppf(0.5 + ci / 2, n - 1) * v.std(ddof=1) / np.sqrt(n)
        lo, hi = mean - half, mean + half
    elif method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = v[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
        lo, hi = np.quantile(means, [0.5 - ci / 2, 0.5 + ci / 2])
    else:
        raise CarprobeError(f"confidence interval method {method!r}; allowed: t, bootstrap")
    return float(back(mean)), float(back(lo)), float(back(hi)), n


def compare_models(maps: Mapping[str, np.ndarray], metrics: Iterable[str] = METRICS, k: float = 0.1,
                   ci: float = 0.95, ci_method: str = "t", indices: Iterable[int] | None = None):
    """Every model pair on the same images → (summary, per_image) pandas DataFrames.

    summary: model_a, model_b, metric, mean, ci_low, ci_high, n (one row per unordered pair);
    per_image: image, model_a, model_b, metric, value.
    """
    import pandas as pd

    names = list(maps)
    if len(names) < 2:
        raise CarprobeError("comparing maps needs at least 2 models")
    metrics = list(metrics)
    first = np.asarray(maps[names[0]])
    image_ids = list(indices) if indices is not None else list(range(len(first)))
    summary, per_image = [], []
    for a, b in combinations(names, 2):
        values = pair_metrics(maps[a], maps[b], metrics, k)
        for metric in metrics:
            mean, lo, hi, n = summarize(values[metric], metric, ci, ci_method)
            summary.append({"model_a": a, "model_b": b, "metric": metric, "mean": mean,
                            "ci_low": lo, "ci_high": hi, "n": n})
            per_image.extend({"image": i, "model_a": a, "model_b": b, "metric": metric, "value": float(v)}
                             for i, v in zip(image_ids, values[metric]))
    return pd.DataFrame(summary), pd.DataFrame(per_image)


def matrix(summary, metric: str, names: list[str] | None = None, column: str = "mean") -> tuple[list[str], np.ndarray]:
    """Symmetric model x model matrix of one metric from compare_models' summary table."""
    rows = summary[summary["metric"] == metric]
    if names is None:
        names = list(dict.fromkeys(list(rows["model_a"]) + list(rows["model_b"])))
    pos = {n: i for i, n in enumerate(names)}
    m = np.full((len(names), len(names)), np.nan)
    np.fill_diagonal(m, SELF_VALUE.get(metric, np.nan))
    for r in rows.itertuples():
        if r.model_a in pos and r.model_b in pos:
            m[pos[r.model_a], pos[r.model_b]] = m[pos[r.model_b], pos[r.model_a]] = getattr(r, column)
    return names, m
