"""Exact k-nearest neighbours of every row among the other rows, in chunks (torch.topk, no faiss).

Memory is O(chunk x (block + k)) at a time; time O(n^2 d). Ranking distances are computed in
float32 after centring the rows (Euclidean) or on L2-normalised rows (cosine); neighbours whose
distances tie to float32 precision may come in either order.
"""

from __future__ import annotations

import numpy as np
import torch

from ._inputs import l2_normalize


def nearest_neighbours(t: torch.Tensor, k: int, metric: str, device: torch.device,
                       chunk_size: int | None = None) -> torch.Tensor:
    """(n, k) int64 indices of each row's k nearest other rows, nearest first (self excluded)."""
    n = t.shape[0]
    k = min(k, n - 1)
    x = t.to(device, torch.float64)
    if metric == "cosine":
        # distance ordering of 1 - u.v equals the ordering of -u.v
        left = l2_normalize(x).to(torch.float32)
        right = -left
    else:
        x = x - x.mean(dim=0, keepdim=True)
        sq = (x * x).sum(dim=1, keepdim=True)
        ones = torch.ones_like(sq)
        # |x|^2 is constant per query row and does not change its ranking: [x, 1] . [-2y, |y|^2]
        left = torch.cat([x, ones], dim=1).to(torch.float32)
        right = torch.cat([-2.0 * x, sq], dim=1).to(torch.float32)
    rows = chunk_size or (4096 if device.type == "cuda" else 512)
    block = max(8192, 2 * k)
    out = torch.empty(n, k, dtype=torch.int64, device=device)
    if k == 0:
        return out
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        best_d = best_i = None
        for c0 in range(0, n, block):
            c1 = min(c0 + block, n)
            d = left[r0:r1] @ right[c0:c1].T
            lo, hi = max(r0, c0), min(r1, c1)
            if lo < hi:  # the query itself is never its own neighbour
                ar = torch.arange(lo, hi, device=device)
                d[ar - r0, ar - c0] = float("inf")
            idx = torch.arange(c0, c1, device=device).expand(r1 - r0, -1)
            if best_d is not None:
                d = torch.cat([best_d, d], dim=1)
                idx = torch.cat([best_i, idx], dim=1)
            kk = min(k, d.shape[1])
            best_d, pick = torch.topk(d, kk, dim=1, largest=False, sorted=True)
            best_i = idx.gather(1, pick)
        out[r0:r1] = best_i
    return out


def same_label_hits(neighbours: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """(n, k) bool: neighbour j of row i has row i's label."""
    return codes[neighbours] == codes.unsqueeze(1)


def as_codes_tensor(codes: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(codes, dtype=np.int64)).to(device)
