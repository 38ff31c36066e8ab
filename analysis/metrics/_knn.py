"""Exact k-nearest neighbours of every row among the other rows, streamed in row chunks (no faiss).

One ranking rule for every neighbour metric (Recall@k, R-Precision, MAP@R, NR-Prec): distances
in float64, and neighbours at exactly equal distance ordered by row index (the lower index is
nearer). So a float32 near-tie can never flip a neighbour, and the result does not depend on the
chunk size or the device.

Memory: each chunk holds (rows x n) float64 distances and (rows x k) indices, with rows chosen so
that rows x max(n, k) stays near `_CHUNK_ENTRIES`; nothing n x k is ever held, so a class of
16,000 images costs no more than one of 16. Time O(n^2 d).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ._inputs import l2_normalize

# Entries of one chunk's (rows x n) distance block: 4M float64 = 32 MiB.
_CHUNK_ENTRIES = 1 << 22


def iter_neighbours(t: torch.Tensor, k: int, metric: str, device: torch.device,
                    chunk_size: int | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yields (r0, r1, nbrs): nbrs[i] are the k nearest other rows of row r0 + i, nearest first
    (self excluded; ties by lower index). k is capped at n - 1. chunk_size: rows per chunk
    (default: as many as fit the memory bound)."""
    n = t.shape[0]
    k = min(k, n - 1)
    x = t.to(device, torch.float64)
    if metric == "cosine":
        # 1 - u.v ranks as -u.v
        left = l2_normalize(x)
        right = -left
        offset = None
    else:
        x = x - x.mean(dim=0, keepdim=True)  # shift-invariant; keeps the squares small
        left, right = x, -2.0 * x
        offset = (x * x).sum(dim=1)  # |y|^2 per column; |x|^2 is constant per row and dropped
    rows = chunk_size or max(1, min(4096, _CHUNK_ENTRIES // max(n, k, 1)))
    columns = torch.arange(n, device=device)
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        if k == 0:
            yield r0, r1, torch.empty(r1 - r0, 0, dtype=torch.int64, device=device)
            continue
        d = left[r0:r1] @ right.T
        if offset is not None:
            d += offset
        d[torch.arange(r1 - r0, device=device), columns[r0:r1]] = float("inf")  # never one's own neighbour
        yield r0, r1, _k_smallest_by_index(d, k)


def _k_smallest_by_index(d: torch.Tensor, k: int) -> torch.Tensor:
    """(rows, k) column indices of each row's k smallest values, ordered by (value, column)."""
    kth = torch.kthvalue(d, k, dim=1, keepdim=True).values
    below = d < kth
    tied = d == kth
    # of the values equal to the k-th, keep the lowest columns until k are chosen
    room = k - below.sum(dim=1, keepdim=True)
    chosen = below | (tied & (tied.cumsum(dim=1) <= room))
    idx = chosen.nonzero()[:, 1].view(d.shape[0], k)   # row-major: ascending column within a row
    vals = d.gather(1, idx)
    order = torch.sort(vals, dim=1, stable=True).indices  # stable: equal values keep column order
    return idx.gather(1, order)


def nearest_neighbours(t: torch.Tensor, k: int, metric: str, device: torch.device,
                       chunk_size: int | None = None) -> torch.Tensor:
    """(n, k) int64 indices of each row's k nearest other rows (see `iter_neighbours`). Holds n x k
    indices: for small k only; the metrics stream with `iter_neighbours`."""
    n = t.shape[0]
    out = torch.empty(n, min(k, n - 1), dtype=torch.int64, device=device)
    for r0, r1, nbrs in iter_neighbours(t, k, metric, device, chunk_size):
        out[r0:r1] = nbrs
    return out


def same_label_hits(neighbours: torch.Tensor, codes: torch.Tensor, r0: int) -> torch.Tensor:
    """(rows, k) bool: neighbour j of row r0 + i has that row's label (`codes` of all n rows)."""
    return codes[neighbours] == codes[r0:r0 + neighbours.shape[0]].unsqueeze(1)


def as_codes_tensor(codes: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(codes, dtype=np.int64)).to(device)
