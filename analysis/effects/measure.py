"""Interventional effects: how far one factor's change moves an embedding, against a change of car.

For a factor f: effect ratio = median distance over f-pairs / median distance over identity
pairs (two cars, everything else equal), both in the model's own distance. 95% intervals come
from a bootstrap over car identities (pairs of one car are not independent): each replicate
draws cars with replacement and weights every pair by how often its cars were drawn.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.saliency.masks import wilson_interval
from blender_addon.core.errors import CarprobeError

from .pairs import CAR_COLUMN, IDENTITY_COLUMNS, PairPlan, Pairs, factor_kind

DISTANCES = ("cosine", "euclidean", "dot", "snr")
DISTANCE_TEXT = {
    "cosine": "cosine distance 1 − cos",
    "euclidean": "Euclidean distance",
    "dot": "½‖a − b‖² (the dot-product similarity lost against self-similarity)",
    "snr": "signal-to-noise distance var(a − b) / var(a), averaged over both directions",
}
EFFECT_COLUMNS = ["model", "factor", "level_a", "level_b", "metric", "value", "ci_low", "ci_high", "n"]
RESPONSE_COLUMNS = ["model", "factor", "delta", "metric", "value", "ci_low", "ci_high", "n"]
N_BOOTSTRAP = 1000
SEED = 0
LEVEL = 0.95
MIN_CARS = 3  # with two cars, every resample that keeps both is the sample itself: no interval
MAX_DELTAS = 24  # more distinct Δvalues than this (continuous factors): equal-width bins
DELTA_BINS = 12
_CHUNK = 4_000_000  # entries per (replicates × pairs) or (queries × images) block


# --- distances --------------------------------------------------------------------------

def prepare(embeddings: np.ndarray, normalize: bool) -> np.ndarray:
    """The embeddings the model is used with, in float64 (L2-normalised when `normalize`)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise CarprobeError(f"embeddings must be a (images, dimensions) array, got shape {x.shape}")
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


class Geometry:
    """Embeddings set up once for a distance: rows centred (snr) or unit-length (cosine), and
    their squared norms, so every distance is aa + bb − 2ab from the same numbers."""

    def __init__(self, x: np.ndarray, kind: str):
        if kind not in DISTANCES:
            raise CarprobeError(f"model distance {kind!r} is not supported; allowed: {', '.join(DISTANCES)}")
        if kind == "snr":
            x = x - x.mean(axis=1, keepdims=True)
        elif kind == "cosine":
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        self.x, self.kind, self.sq = x, kind, np.einsum("ij,ij->i", x, x)

    def _finish(self, aa, bb, ab) -> np.ndarray:
        if self.kind == "cosine":
            return np.maximum(1.0 - ab, 0.0)
        squared = np.maximum(aa + bb - 2.0 * ab, 0.0)
        if self.kind == "euclidean":
            return np.sqrt(squared)
        if self.kind == "dot":
            return 0.5 * squared
        dims = self.x.shape[1]
        var_a, var_b = np.maximum(aa / dims, 1e-24), np.maximum(bb / dims, 1e-24)
        return 0.5 * (squared / dims) * (1.0 / var_a + 1.0 / var_b)

    def matrix(self, rows: np.ndarray) -> np.ndarray:
        """Distances from `rows` to every image: (len(rows), n)."""
        return self._finish(self.sq[rows][:, None], self.sq[None, :], self.x[rows] @ self.x.T)

    def pairs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Distance of each pair (first[i], second[i]), gathered in blocks (no P × D copies)."""
        out = np.empty(len(first))
        step = max(1, _CHUNK // max(self.x.shape[1], 1))
        for start in range(0, len(first), step):
            a, b = first[start:start + step], second[start:start + step]
            ab = np.einsum("ij,ij->i", self.x[a], self.x[b])
            out[start:start + step] = self._finish(self.sq[a], self.sq[b], ab)
        return out


def pair_distances(geometry: Geometry, pairs: Pairs) -> np.ndarray:
    return geometry.pairs(pairs.first, pairs.second)


# --- statistics -------------------------------------------------------------------------

def weighted_medians(values: np.ndarray, weights: np.ndarray, presorted: bool = False) -> np.ndarray:
    """Median of `values` under each row of integer `weights` (replicates × values); NaN where a
    row weighs nothing. With unit weights it is numpy's median (the middle two averaged)."""
    if not presorted:
        order = np.argsort(values, kind="stable")
        values, weights = values[order], weights[:, order]
    cumulative = np.cumsum(weights, axis=1)
    total = cumulative[:, -1:]
    low = np.minimum((2 * cumulative < total).sum(axis=1), len(values) - 1)
    high = np.minimum((2 * cumulative <= total).sum(axis=1), len(values) - 1)
    result = 0.5 * (values[low] + values[high])
    result[total[:, 0] == 0] = np.nan
    return result


class CarBootstrap:
    """Resamples car identities: replicate r draws every car `counts[r, car]` times."""

    def __init__(self, n_cars: int, n_boot: int = N_BOOTSTRAP, seed: int = SEED):
        if n_boot < 0:
            raise CarprobeError(f"bootstrap replicates {n_boot}: must be >= 0")
        rng = np.random.default_rng(seed)
        self.counts = rng.multinomial(n_cars, np.full(n_cars, 1.0 / n_cars), size=n_boot) if n_cars else \
            np.zeros((n_boot, 0), dtype=np.int64)

    def medians(self, distances: np.ndarray, cars_a: np.ndarray, cars_b: np.ndarray) -> np.ndarray:
        """Per replicate: the weighted median; a pair of cars (a, b) weighs count(a)·count(b), a
        pair within one car count(a) (how often that pair is in the resampled set of cars)."""
        reps = np.empty(len(self.counts))
        if not len(distances):
            reps[:] = np.nan
            return reps
        order = np.argsort(distances, kind="stable")  # sorted once for every replicate
        distances, cars_a, cars_b = distances[order], cars_a[order], cars_b[order]
        same = cars_a == cars_b
        step = max(1, _CHUNK // len(distances))
        for start in range(0, len(self.counts), step):
            counts = self.counts[start:start + step]
            weights = counts[:, cars_a] * np.where(same[None, :], 1, counts[:, cars_b])
            reps[start:start + step] = weighted_medians(distances, weights, presorted=True)
        return reps


def interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    if not len(finite):
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


# 95% Wilson score interval of a proportion (NaN without trials): the saliency pointing game's,
# so both sections report rates the same way (kept under this name: analysis.effects exports it)
wilson = wilson_interval


# --- identity kept ----------------------------------------------------------------------

def identity_kept(geometry: Geometry, pairs: dict[str, Pairs], cars: np.ndarray) -> dict[str, np.ndarray]:
    """Per factor, per pair and direction (x → x′, then x′ → x): is the partner strictly nearer
    the query than every image of another car? A bool array of length 2 · len(pairs) per factor.

    One pass over the query images for every factor at once: each query's distances to the whole
    set are computed once, and its partners' distances are read from that same row (ties stay ties).
    """
    names = list(pairs)
    queries = np.concatenate([np.r_[pairs[f].first, pairs[f].second] for f in names] or [np.zeros(0, int)])
    targets = np.concatenate([np.r_[pairs[f].second, pairs[f].first] for f in names] or [np.zeros(0, int)])
    kept = np.zeros(len(queries), dtype=bool)
    order = np.argsort(queries, kind="stable")
    sorted_queries = queries[order]
    unique = np.unique(queries)
    step = max(1, _CHUNK // max(len(cars), 1))
    for start in range(0, len(unique), step):
        block = unique[start:start + step]
        matrix = geometry.matrix(block)
        other_car = cars[None, :] != cars[block][:, None]
        nearest_other = np.where(other_car, matrix, np.inf).min(axis=1)
        lo = np.searchsorted(sorted_queries, block[0], side="left")
        hi = np.searchsorted(sorted_queries, block[-1], side="right")
        mine = order[lo:hi]
        position = np.searchsorted(block, queries[mine])
        kept[mine] = matrix[position, targets[mine]] < nearest_other[position]
    result, offset = {}, 0
    for f in names:
        result[f] = kept[offset:offset + 2 * len(pairs[f])]
        offset += 2 * len(pairs[f])
    return result


# --- per model --------------------------------------------------------------------------

def _delta(a: np.ndarray, b: np.ndarray, circular: bool) -> np.ndarray:
    delta = np.abs(a.astype(np.float64) - b.astype(np.float64))
    if circular:
        delta = np.mod(delta, 360.0)
        delta = np.minimum(delta, 360.0 - delta)
    return np.round(delta, 6)


def model_effects(model: str, embeddings: np.ndarray, metadata: pd.DataFrame, plan: PairPlan,
                  distance: str = "cosine", normalize: bool = True, n_boot: int = N_BOOTSTRAP,
                  seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(effects rows, response-curve rows) of one model; see EFFECT_COLUMNS / RESPONSE_COLUMNS."""
    if len(embeddings) != len(metadata):
        raise CarprobeError(f"model {model}: {len(embeddings)} embeddings for {len(metadata)} metadata rows")
    geometry = Geometry(prepare(embeddings, normalize), distance)
    cars = plan.cars
    # Same seed: every model sees the same resamples. Too few cars: no bootstrap, NaN intervals.
    boot = CarBootstrap(len(plan.car_names), n_boot if plan.cars_in(plan.identity) >= MIN_CARS else 0, seed)
    rows: list[dict] = []
    response: list[dict] = []

    def add(factor, metric, value, low=math.nan, high=math.nan, n=0, level_a="", level_b=""):
        rows.append({"model": model, "factor": factor, "level_a": level_a, "level_b": level_b, "metric": metric,
                     "value": float(value), "ci_low": float(low), "ci_high": float(high), "n": int(n)})

    identity = plan.identity
    id_dist = pair_distances(geometry, identity)
    id_a, id_b = cars[identity.first], cars[identity.second]
    yardstick = float(np.median(id_dist)) if len(id_dist) else math.nan
    id_reps = boot.medians(id_dist, id_a, id_b)
    add(CAR_COLUMN, "identity_distance", yardstick, *interval(id_reps), n=len(identity))
    add(CAR_COLUMN, "cars", plan.cars_in(identity), n=len(identity))

    def ratio(distances, cars_a, cars_b):
        """(point ratio, interval, median, median interval) of a set of f-pairs."""
        median = float(np.median(distances))
        reps = boot.medians(distances, cars_a, cars_b)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio_reps = reps / id_reps
        point = median / yardstick if yardstick > 0 else math.nan
        return point, interval(ratio_reps), median, interval(reps)

    kept_by_factor = identity_kept(geometry, {f: p for f, p in plan.factors.items()
                                              if f not in IDENTITY_COLUMNS and len(p)}, cars)
    for factor, pairs in plan.factors.items():
        if not len(pairs):
            continue
        dist = pair_distances(geometry, pairs)
        cars_a, cars_b = cars[pairs.first], cars[pairs.second]
        value, (low, high), median, (m_low, m_high) = ratio(dist, cars_a, cars_b)
        add(factor, "effect_ratio", value, low, high, n=len(pairs))
        add(factor, "median_distance", median, m_low, m_high, n=len(pairs))
        add(factor, "cars", plan.cars_in(pairs), n=len(pairs))
        if factor in kept_by_factor:  # not for identity factors: they swap the car, nothing to keep
            kept = kept_by_factor[factor]
            add(factor, "identity_kept", kept.mean(), *wilson(int(kept.sum()), len(kept)), n=len(pairs))
        values = metadata[factor].reset_index(drop=True)
        kind = factor_kind(factor, values)
        if kind == "categorical":
            codes, levels = pd.factorize(values, use_na_sentinel=False)  # first-appearance order; NaN a level
            a, b = codes[pairs.first], codes[pairs.second]
            low_level, high_level = np.minimum(a, b), np.maximum(a, b)
            levels = ["" if pd.isna(level) else level for level in levels]
            table = pd.DataFrame({"a": low_level, "b": high_level, "d": dist}).groupby(["a", "b"])["d"].agg(["mean", "size"])
            for (i, j), stats in table.iterrows():
                add(factor, "mean_distance", stats["mean"], n=stats["size"], level_a=str(levels[i]),
                    level_b=str(levels[j]))
        else:
            delta = _delta(values.iloc[pairs.first].to_numpy(), values.iloc[pairs.second].to_numpy(),
                           kind == "circular")
            if len(np.unique(delta)) > MAX_DELTAS:
                edges = np.linspace(delta.min(), delta.max(), DELTA_BINS + 1)
                which = np.clip(np.searchsorted(edges, delta, side="right") - 1, 0, DELTA_BINS - 1)
                delta = np.round(0.5 * (edges[which] + edges[which + 1]), 6)
            for value_delta in np.unique(delta):
                mask = delta == value_delta
                point, (low, high), _, _ = ratio(dist[mask], cars_a[mask], cars_b[mask])
                response.append({"model": model, "factor": factor, "delta": float(value_delta),
                                 "metric": "effect_ratio", "value": point, "ci_low": low, "ci_high": high,
                                 "n": int(mask.sum())})
    return (pd.DataFrame(rows, columns=EFFECT_COLUMNS), pd.DataFrame(response, columns=RESPONSE_COLUMNS))
