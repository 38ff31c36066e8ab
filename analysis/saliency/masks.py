"""Attribution measured against the render's own part masks.

A mask PNG holds one part id per pixel in the order of `blender_addon.core.schema.MASK_PARTS`
(background=0, body=1, glass=2, wheels=3, lights=4, trim=5, ground=6; dataset.json's
``mask_parts`` may list them). Masks go through the same resize and centre crop as the image
(nearest neighbour, so ids stay ids) before they are laid over a map.

The attribution *mass* of a pixel is the magnitude of its map value. Per-part shares divide the
mass over every part id present, so they sum to 1; the car is every part but background and
ground. The pointing game asks whether the single highest-magnitude pixel lies on the car; that
pixel is taken from the map before normalisation (`attribute(..., return_peaks=True)`), because
percentile normalisation clips the top 1% of pixels to the same value. Given only a map whose
maximum is tied, the score is the share of the tied pixels on the car (the expected hit of a
random pick), never whichever tied pixel comes first.
`area` (the share of pixels of each part) is what a uniform map would give.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from blender_addon.core import schema
from blender_addon.core.errors import CarprobeError

NOT_CAR = ("background", "ground")


def part_names(info: Mapping | None = None) -> list[str]:
    """Part names by id: dataset.json's `mask_parts` ({name: id}) when present, else the schema's."""
    parts = (info or {}).get("mask_parts")
    if isinstance(parts, dict) and parts:
        names = [""] * (max(int(v) for v in parts.values()) + 1)
        for name, i in parts.items():
            names[int(i)] = name
        return [n or f"part{i}" for i, n in enumerate(names)]
    return list(schema.MASK_PARTS)


def car_ids(names: Sequence[str]) -> list[int]:
    return [i for i, n in enumerate(names) if n not in NOT_CAR]


def read_mask(path: str | Path) -> np.ndarray:
    """A mask PNG → (H, W) uint8 part ids (a grey image, or the first channel of an RGB one)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except (OSError, ValueError) as exc:
        raise CarprobeError(f"mask {path}: not a readable image ({exc})") from None
    return (array[..., 0] if array.ndim == 3 else array).astype(np.uint8)


def mask_to_input(mask: np.ndarray, preprocess=None) -> np.ndarray:
    """The mask in the geometry the model sees: the preprocess's resize and centre crop,
    nearest neighbour (ids must not blend)."""
    if preprocess is None:
        return mask
    import torch
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    t = torch.from_numpy(np.ascontiguousarray(mask))[None]
    if getattr(preprocess, "resize", None):
        t = TF.resize(t, preprocess.resize, interpolation=InterpolationMode.NEAREST_EXACT, antialias=False)
    if getattr(preprocess, "crop", None):
        t = TF.center_crop(t, [preprocess.crop, preprocess.crop])
    return t[0].numpy()


def _check(map_: np.ndarray, mask: np.ndarray) -> None:
    if map_.shape != mask.shape:
        raise CarprobeError(f"map shape {map_.shape} differs from mask shape {mask.shape} "
                            "(masks must go through the model's resize and crop: mask_to_input)")


def part_shares(map_: np.ndarray, mask: np.ndarray, n_parts: int) -> np.ndarray:
    """Share of |map| mass per part id 0..n_parts-1 (sums to 1; NaN for an all-zero map)."""
    map_ = np.abs(np.asarray(map_, dtype=np.float64))
    _check(map_, mask)
    if mask.max(initial=0) >= n_parts:
        raise CarprobeError(f"mask holds part id {int(mask.max())}, but only {n_parts} parts are known")
    mass = np.bincount(mask.ravel(), weights=map_.ravel(), minlength=n_parts)
    total = mass.sum()
    return mass / total if total > 0 else np.full(n_parts, np.nan)


def part_areas(mask: np.ndarray, n_parts: int) -> np.ndarray:
    counts = np.bincount(mask.ravel(), minlength=n_parts).astype(np.float64)
    return counts / counts.sum()


def pointing_game(map_: np.ndarray, mask: np.ndarray, car: Iterable[int], peak: int | None = None) -> float:
    """1.0 if the strongest pixel is on the car, else 0.0. peak: its flat (row-major) index from
    the unnormalised map; without it, the share of the map's tied maximum pixels on the car."""
    map_ = np.abs(np.asarray(map_))
    _check(map_, mask)
    on_car = np.isin(mask.ravel(), list(car))
    if peak is not None:
        if not 0 <= int(peak) < map_.size:
            raise CarprobeError(f"peak {peak} is outside the map's {map_.size} pixels")
        return float(on_car[int(peak)])
    flat = map_.ravel()
    tied = flat == flat.max()
    return float(on_car[tied].mean())


def rescale_peaks(peaks: np.ndarray, shape: tuple[int, int], to: tuple[int, int]) -> np.ndarray:
    """Flat peak indices on an (h, w) map moved to the matching pixel of an (H, W) map."""
    h, w = shape
    rows, cols = np.divmod(np.asarray(peaks, dtype=np.int64), w)
    rows = np.minimum(((rows + 0.5) * to[0] / h).astype(np.int64), to[0] - 1)
    cols = np.minimum(((cols + 0.5) * to[1] / w).astype(np.int64), to[1] - 1)
    return rows * to[1] + cols


def wilson_interval(hits: float, n: int, ci: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a hit rate: stays inside [0, 1] (a t-interval on 0/1 outcomes
    does not, and collapses to a point when every image hits)."""
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + ci / 2))
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if hits == 0 else max(0.0, centre - half)  # exact ends: no rounding past 0 or 1
    high = 1.0 if hits == n else min(1.0, centre + half)
    return float(low), float(high)


def mask_tables(maps: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], names: Sequence[str],
                indices: Sequence[int], ci: float = 0.95, peaks: Mapping[str, np.ndarray] | None = None):
    """Mask results for every model → (shares, summary, per_image) DataFrames.

    maps[model]: (N, H, W); masks[model]: (N, H, W) part ids in that model's input geometry;
    peaks[model]: (N,) flat index of each map's strongest pixel before normalisation (see
    `pointing_game`; without it, tied maxima of the stored maps are shared out).
    shares: model, part, share, area (means over images; shares sum to 1 per model).
    summary: model, metric (car_share, pointing_game), mean, ci_low, ci_high, n.
    per_image: image, model, part, share.
    """
    import pandas as pd

    from .compare import summarize

    car = car_ids(names)
    shares_rows, summary_rows, per_image = [], [], []
    for model, model_maps in maps.items():
        model_masks = masks[model]
        shares = np.array([part_shares(m, k, len(names)) for m, k in zip(model_maps, model_masks)])
        areas = np.array([part_areas(k, len(names)) for k in model_masks])
        model_peaks = [None] * len(model_maps) if peaks is None or model not in peaks else peaks[model]
        hits = np.array([pointing_game(m, k, car, p) for m, k, p in zip(model_maps, model_masks, model_peaks)],
                        dtype=float)
        valid = np.isfinite(shares).all(axis=1)
        mean_share = shares[valid].mean(axis=0) if valid.any() else np.full(len(names), np.nan)
        for p, name in enumerate(names):
            shares_rows.append({"model": model, "part": name, "share": float(mean_share[p]),
                                "area": float(areas[:, p].mean())})
            per_image.extend({"image": i, "model": model, "part": name, "share": float(s)}
                             for i, s in zip(indices, shares[:, p]))
        car_share = shares[:, car].sum(axis=1)
        for metric, values in (("car_share", car_share), ("car_area", areas[:, car].sum(axis=1))):
            mean, lo, hi, n = summarize(values, metric, ci)
            summary_rows.append({"model": model, "metric": metric, "mean": mean, "ci_low": lo, "ci_high": hi,
                                 "n": n})
        lo, hi = wilson_interval(float(hits.sum()), len(hits), ci)
        summary_rows.append({"model": model, "metric": "pointing_game", "mean": float(hits.mean()) if len(hits)
                             else float("nan"), "ci_low": lo, "ci_high": hi, "n": len(hits)})
    return pd.DataFrame(shares_rows), pd.DataFrame(summary_rows), pd.DataFrame(per_image)
