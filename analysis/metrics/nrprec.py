"""Normalised R-Precision (NR-Prec), the property measure of Kobs et al. (ICCV 2021).

For image i with label class C (size |C|) among n images, m of which share their label with
at least one other image (the non-singleton images):
    R_i = min(|C| - 1, max_neighbours)          (their library capped neighbours at 1023)
    X_i = number of images with i's label among i's R_i nearest neighbours (i itself excluded)
    p_i = |C| / m                               (as Kobs et al.'s code: the queries are the m
                                                 non-singleton images; m = n when none is alone)
    z_i = (X_i - R_i p_i) / sqrt(R_i p_i (1 - p_i))
NR-Prec is the mean of z_i over the images; an image alone in its class (R_i = 0) has no z and
is left out of the mean. z_i is X_i standardised against a binomial chance level, so 0 means
"no more same-label neighbours than chance".

Significance, one convention everywhere: SIGNIFICANT_Z = 2.576 is the two-sided p = 0.01
critical value of a standard normal, which Kobs et al. apply to the *mean* z of a factor, as
carprobe does. It is a per-image threshold used on a mean: a mean above it is a strong effect,
not a formal test of the mean. A set can be too small to reach it: X_i <= R_i caps z_i at
sqrt(R_i (1 - p_i) / p_i), so NRPrecision.max_mean (the mean of those caps) below 2.576 means
the factor cannot be called significant there, whatever the embeddings.

Neighbours are ranked in float64 with ties broken by index (`_knn`). Only genuinely continuous
factors should be binned (`bin_factor`); NR-Prec treats every distinct value as its own class.

Reference: Kobs, Steininger, Dulny, Hotho, "Do Different Deep Metric Learning Losses Lead to
Similar Learned Features?", ICCV 2021.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from blender_addon.core.errors import CarprobeError

from ._inputs import as_embeddings, check_metric, encode_labels, resolve_device
from ._knn import as_codes_tensor, iter_neighbours, same_label_hits

SIGNIFICANT_Z = 2.576  # two-sided p = 0.01 for a standard normal; Kobs et al. apply it to mean z


class NRPrecision(NamedTuple):
    """NR-Prec mean and its per-image parts (NaN z for images alone in their class)."""

    mean: float
    z: np.ndarray          # (n,) per-image z-score
    hits: np.ndarray       # (n,) X_i: same-label images among the R_i nearest
    r: np.ndarray          # (n,) R_i
    max_mean: float        # the largest NR-Prec these labels allow (every X_i = R_i)

    @property
    def can_reach_significance(self) -> bool:
        return self.max_mean >= SIGNIFICANT_Z


def nr_precision(X: Any, labels: Any, max_neighbours: int = 1023, metric: str = "euclidean",
                 device: str | torch.device | None = None, chunk_size: int | None = None) -> NRPrecision:
    """Kobs et al.'s normalised R-Precision of the embeddings X labelled by `labels`.

    X: (n, d) array or tensor; labels: n labels (numbers or strings, >= 2 distinct values);
    max_neighbours: cap on R (1023 as in the paper's library); metric: "euclidean" (paper) or
    "cosine". Exact neighbours, streamed in chunks. Returns NRPrecision(mean, z, hits, r, max_mean).
    """
    check_metric(metric)
    if not isinstance(max_neighbours, (int, np.integer)) or isinstance(max_neighbours, bool) or max_neighbours < 1:
        raise CarprobeError(f"max_neighbours={max_neighbours!r} is not allowed; expected an integer >= 1")
    t = as_embeddings(X, min_rows=2)
    n = t.shape[0]
    codes, classes = encode_labels(labels, n)
    if len(classes) < 2:
        raise CarprobeError(f"labels: NR-Prec needs at least 2 distinct labels, got {len(classes)} "
                            f"({classes[:1].tolist()}); a class share of 1 has no chance level")
    dev = resolve_device(X, device)
    counts = np.bincount(codes, minlength=len(classes))
    r = np.minimum(counts[codes] - 1, int(max_neighbours))
    k = int(r.max())
    if k == 0:
        raise CarprobeError("labels: every label occurs once; NR-Prec needs a label shared by at least 2 images")
    if int((counts > 1).sum()) < 2:
        raise CarprobeError("labels: only one label is shared by 2 or more images; NR-Prec's chance level "
                            "(class share among the non-singleton images) needs at least 2 such labels")
    codes_t = as_codes_tensor(codes, dev)
    r_t = torch.from_numpy(r).to(dev)
    hits = np.zeros(n, dtype=np.int64)
    for r0, r1, nbrs in iter_neighbours(t, k, metric, dev, chunk_size):
        within = torch.arange(nbrs.shape[1], device=dev).unsqueeze(0) < r_t[r0:r1].unsqueeze(1)
        hits[r0:r1] = (same_label_hits(nbrs, codes_t, r0) & within).sum(dim=1).cpu().numpy()
    queries = int((counts[codes] > 1).sum())  # Kobs: shares among the non-singleton images
    p = counts[codes] / queries
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (hits - r * p) / np.sqrt(r * p * (1 - p))
        z_cap = np.sqrt(r * (1 - p) / p)
    z[r == 0] = np.nan
    z_cap[r == 0] = np.nan
    return NRPrecision(float(np.nanmean(z)), z, hits, r, float(np.nanmean(z_cap)))


def bin_factor(values: Any, n_bins: int = 8, return_edges: bool = False):
    """Quantile bins of a continuous factor: integer bin codes 0..B-1 (B <= n_bins).

    Bin edges are the 0, 1/n_bins, ..., 1 quantiles of the values; bins that would be empty
    because of repeated values are merged (pandas.qcut with duplicates="drop"), so B may be
    smaller than n_bins. Equal-count bins keep the class shares p balanced, which NR-Prec's
    chance level and the silhouette both like. With return_edges=True also returns the B + 1
    edges (bin b holds values in (edges[b], edges[b+1]], the first bin also its left edge).
    """
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 2:
        raise CarprobeError(f"n_bins={n_bins!r} is not allowed; expected an integer >= 2")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CarprobeError(f"values: cannot bin non-numeric values ({exc}); expected numbers") from exc
    if arr.ndim != 1:
        raise CarprobeError(f"values: expected a 1-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise CarprobeError(f"values: {int((~np.isfinite(arr)).sum())} value(s) are NaN or infinite; expected finite numbers")
    if len(np.unique(arr)) < 2:
        raise CarprobeError("values: all values are equal; nothing to bin (a constant factor has one label)")
    codes, edges = pd.qcut(arr, q=n_bins, labels=False, retbins=True, duplicates="drop")
    codes = np.asarray(codes, dtype=np.int64)
    return (codes, np.asarray(edges)) if return_edges else codes
