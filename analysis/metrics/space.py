"""Embedding-space metrics of Roth et al. (ICML 2020): class compression and spectral decay.

With u_i the L2-normalised embeddings, d(u, v) = 1 - u.v the cosine distance, classes C_1..C_K
and mu_c = normalise(mean of u_i in C_c) the class centres:

    pi_intra = (1/K') sum_c  [ 1 / (|C_c| (|C_c| - 1)) sum_{i != j in C_c} d(u_i, u_j) ]
               (mean over the K' classes with at least 2 members of the mean pairwise distance)
    pi_inter = 1 / (K (K - 1)) sum_{a != b} d(mu_a, mu_b)
    pi_ratio = pi_intra / pi_inter   ("density": higher = classes less compressed)

Spectral decay: with s_1 >= ... >= s_m the singular values of the (n x d) embedding matrix
(rows L2-normalised, not mean-centred; m = min(n, d)), S = s / sum(s) and U = uniform on m:

    rho = KL(U || S) = sum_i (1/m) log((1/m) / S_i)

(0 for a flat spectrum, +inf when the matrix is rank-deficient: some S_i = 0). The variant
`drop_largest=True` (Roth et al.'s code calls it `rho_spectrum@2`) drops s_1 first and
normalises the rest. Lower rho = more directions used; it tracked generalisation to unseen
classes best in their study. Singular values below max(n, d) * eps * s_1 (the numerical-rank
tolerance of numpy.linalg.matrix_rank) count as 0. Their code took the spectrum from a
TruncatedSVD with d - 1 components, which leaves out the smallest singular value; here every
singular value is used, as the definition says.

Closed forms keep this O(n d): sum_{i,j in C} (1 - u_i.u_j) = |C|^2 - |S_C|^2 with S_C the class
sum vector (the i = j terms are 0 for unit rows).

Reference: Roth, Milbich, Sinha, Gupta, Ommer, Cohen, "Revisiting Training Strategies and
Generalization Performance in Deep Metric Learning", ICML 2020.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from blender_addon.core.errors import CarprobeError

from ._inputs import as_embeddings, encode_labels, l2_normalize


def class_distances(X: Any, labels: Any) -> tuple[float, float]:
    """(pi_intra, pi_inter) as defined in the module docstring (cosine, normalised rows)."""
    t = as_embeddings(X)
    codes, classes = encode_labels(labels, t.shape[0])
    k = len(classes)
    if k < 2:
        raise CarprobeError(f"labels: need at least 2 classes for the inter-class distance, got {k}")
    u = l2_normalize(t.to(torch.float64))
    codes_t = torch.from_numpy(codes).to(u.device)
    counts = torch.bincount(codes_t, minlength=k).to(torch.float64)
    sums = torch.zeros(k, u.shape[1], dtype=torch.float64, device=u.device).index_add_(0, codes_t, u)
    sq_norms = (u * u).sum(dim=1)
    # |C|^2 - |S_C|^2 counts 1 - |u_i|^2 on the diagonal: 0 for unit rows, 1 for all-zero rows
    diag = torch.zeros(k, dtype=torch.float64, device=u.device).index_add_(0, codes_t, 1.0 - sq_norms)
    pair_sums = counts ** 2 - (sums * sums).sum(dim=1) - diag
    multi = counts > 1
    if not bool(multi.any()):
        raise CarprobeError("labels: every class has a single member; pi_intra needs a class with >= 2 members")
    intra = (pair_sums[multi] / (counts[multi] * (counts[multi] - 1))).mean()
    centres = l2_normalize(sums / counts.unsqueeze(1))
    total = centres.sum(dim=0)
    c_sq = (centres * centres).sum(dim=1)
    inter_pairs = k * k - float((total * total).sum()) - float((1.0 - c_sq).sum())
    inter = inter_pairs / (k * (k - 1))
    return float(intra), float(inter)


def singular_values(X: Any, normalize: bool = True) -> np.ndarray:
    """Singular values (descending, float64) of the embedding matrix, rows L2-normalised first
    when `normalize`; never mean-centred."""
    t = as_embeddings(X).to(torch.float64)
    if normalize:
        t = l2_normalize(t)
    return torch.linalg.svdvals(t).cpu().numpy()


def spectral_decay(X: Any, drop_largest: bool = False, normalize: bool = True) -> float:
    """rho = KL(U || S) of the normalised singular-value spectrum (see the module docstring)."""
    s = singular_values(X, normalize)
    return spectral_decay_of(s, drop_largest, tol_scale=max(as_embeddings(X).shape))


def spectral_decay_of(s: Any, drop_largest: bool = False, tol_scale: int | None = None) -> float:
    """rho from given singular values s (any order). tol_scale (default len(s)) sets the zero
    tolerance tol_scale * eps * max(s)."""
    s = np.sort(np.asarray(s, dtype=np.float64))[::-1]
    if s.ndim != 1 or len(s) == 0 or not np.isfinite(s).all() or (s < 0).any():
        raise CarprobeError("singular values: expected a non-empty 1-D array of finite values >= 0")
    if s[0] == 0:
        raise CarprobeError("singular values: all zero (an all-zero embedding matrix has no spectrum)")
    tol = (tol_scale or len(s)) * np.finfo(np.float64).eps * s[0]
    s = np.where(s <= tol, 0.0, s)
    if drop_largest:
        s = s[1:]
        if len(s) == 0 or s.sum() == 0:
            return math.inf  # nothing but the largest direction: as far from flat as it gets
    m = len(s)
    spectrum = s / s.sum()
    if (spectrum == 0).any():
        return math.inf
    return float(np.sum((1.0 / m) * np.log((1.0 / m) / spectrum)))


def embedding_space_metrics(X: Any, labels: Any, normalize: bool = True) -> dict[str, float]:
    """Roth et al.'s embedding-space metrics: pi_intra, pi_inter, pi_ratio, rho, rho_drop_largest.

    X: (n, d) embeddings; labels: n class labels (>= 2 classes, one with >= 2 members).
    Distances are cosine on L2-normalised rows; the spectrum is of the row-normalised matrix
    when `normalize` (Roth et al.'s embeddings are L2-normalised), else of X as given.
    pi_ratio is +inf when all class centres coincide (pi_inter = 0).
    """
    intra, inter = class_distances(X, labels)
    s = singular_values(X, normalize)
    scale = max(as_embeddings(X).shape)
    return {
        "pi_intra": intra,
        "pi_inter": inter,
        "pi_ratio": intra / inter if inter > 0 else math.inf,
        "rho": spectral_decay_of(s, False, scale),
        "rho_drop_largest": spectral_decay_of(s, True, scale),
    }
