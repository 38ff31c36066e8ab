"""Exact silhouette coefficients (Rousseeuw 1987), fast on CPU and GPU, equal to scikit-learn's.

For sample i in cluster A, with d the chosen distance:
    a(i) = mean of d(i, j) over the other members j of A,
    b(i) = min over clusters C != A of the mean of d(i, j) over j in C,
    s(i) = (b(i) - a(i)) / max(a(i), b(i)),  and s(i) = 0 when A = {i} (singleton) or a = b = 0.
The silhouette score is the mean of s(i). Conventions (label count 2..n-1, singletons, 0/0 -> 0)
follow `sklearn.metrics.silhouette_samples`; results agree with it to 1e-6 or better.

Cosine (d = 1 - cos on L2-normalised rows) has a closed form: with u the normalised rows and
S_C the sum of the u in C, sum_{j in C} (1 - u_i.u_j) = |C| - u_i.S_C. So every a(i) and b(i)
comes from one (n x d) @ (d x k) product in float64: O(n d k) time, O(k d) extra memory,
streamed over row chunks, no n x n matrix.

Euclidean has no such form. The rows are centred and sorted by label, and the upper triangle of
the distance matrix is swept in (block x block) float32 tiles (||x||^2 + ||y||^2 - 2 x.y in one
GEMM; each tile counted for both its row and its column block), each tile reduced to per-cluster
sums by one product with the one-hot (columns x clusters) matrix of the clusters it touches
(a running sum when it touches very many). That float32 pass only *selects* clusters: a(i)
(own cluster) and b(i) (every cluster whose approximate mean distance is within
`_CANDIDATE_RTOL` of the nearest) are then recomputed exactly in float64 with each cluster
centred on its own mean, which is what makes the 1e-6 agreement hold for tight, far-off
clusters too. On the CPU both passes are split over threads that each run single-threaded
kernels (tiles, then clusters, dealt out in a fixed order: the same bits on any thread count),
so no kernel waits in a barrier for a thread another process has taken the core from. For very
large n, `silhouette_estimate` evaluates a seeded random sample of rows
exactly against all n points and states the standard error of the mean.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from blender_addon.core.errors import CarprobeError

from ._inputs import as_embeddings, check_label_count, check_metric, encode_labels, resolve_device

log = logging.getLogger(__name__)

# Above this many rows an Euclidean silhouette_score samples rows (see silhouette_estimate).
EXACT_EUCLIDEAN_MAX_ROWS = 100_000
# Rows evaluated by that automatic sample; standard error is about std(s) / sqrt(20,000) <= 0.007.
DEFAULT_SAMPLE_SIZE = 20_000
# Clusters whose float32 mean distance is within this relative margin of the nearest one are
# recomputed in float64 (float32 tile sums are good to ~1e-6 relative).
_CANDIDATE_RTOL = 1e-4
# Up to this many clusters per tile, per-cluster sums are one product with a one-hot matrix;
# above, differences of a float64 running sum (the product's cost grows with the cluster count).
_ONEHOT_MAX_CLUSTERS = 128
# Cosine: normalised rows up to this size are kept from the first pass for the second.
_COSINE_KEEP_BYTES = 64 * 2**20
_CPU_TILE = 768  # rows and columns of a Euclidean distance tile on the CPU (see _euclidean_silhouettes)
# Memory the Euclidean threads' own buffers may take beyond one thread's (the sweep's sums, the
# exact pass's distance blocks; see _sweep, _exact_candidate_sums); beyond it, fewer threads.
_SWEEP_EXTRA_BYTES = 256 * 2**20


class SilhouetteEstimate(NamedTuple):
    """Mean silhouette over `n_evaluated` of `n_samples` rows, with its standard error (0 if exact)."""

    score: float
    standard_error: float
    n_evaluated: int
    n_samples: int


def silhouette_samples(X: Any, labels: Any, metric: str = "cosine", device: str | torch.device | None = None,
                       chunk_size: int | None = None) -> np.ndarray:
    """Silhouette coefficient of every sample, as `sklearn.metrics.silhouette_samples`.

    X: (n_samples, n_features) numpy array or torch tensor; labels: n_samples labels (numbers or
    strings). metric: "cosine" (1 - cos similarity of L2-normalised rows) or "euclidean".
    device: torch device to compute on (default: X's device, else CPU), e.g. "cuda".
    chunk_size: rows per chunk (cosine) or tile side (Euclidean); default depends on the device.
    Returns a float64 numpy array of length n_samples. On a CPU whose cores other processes
    already fill, torch's kernels run on one thread (its setting is restored afterwards); the
    Euclidean passes still use torch's thread count, as that many independent threads.
    """
    workers = torch.get_num_threads()  # read before _cpu_threads: the Euclidean threads never wait on each other
    with _cpu_threads(resolve_device(X, device)):  # 5-15x faster on a busy machine (see _cpu_threads)
        t, codes, k, dev = _prepare(X, labels, metric, device)
        if metric == "cosine":
            return _cosine_silhouettes(t, codes, k, dev, chunk_size)
        return _euclidean_silhouettes(t, codes, k, dev, chunk_size, rows=None, workers=workers)


def silhouette_score(X: Any, labels: Any, metric: str = "cosine", device: str | torch.device | None = None,
                     chunk_size: int | None = None, sample_size: int | None = None,
                     random_state: int = 0) -> float:
    """Mean silhouette coefficient over all samples (as `sklearn.metrics.silhouette_score`).

    Exact unless `sample_size` is given, or the metric is Euclidean with more than
    EXACT_EUCLIDEAN_MAX_ROWS rows (then DEFAULT_SAMPLE_SIZE rows are sampled and a warning with the
    standard error is logged). Unlike scikit-learn's `sample_size`, which recomputes the silhouette
    of a sub-dataset, a sampled row here keeps its exact silhouette against all n points, so the
    estimate is unbiased for the full-set score; see `silhouette_estimate` for its standard error.
    """
    n = _row_count(X)
    if sample_size is None and metric == "euclidean" and n > EXACT_EUCLIDEAN_MAX_ROWS:
        est = silhouette_estimate(X, labels, metric, DEFAULT_SAMPLE_SIZE, random_state, device, chunk_size)
        log.warning("euclidean silhouette of %d rows estimated from %d sampled rows: %.6f +- %.6f (1 s.e.)",
                    n, est.n_evaluated, est.score, est.standard_error)
        return est.score
    if sample_size is not None:
        est = silhouette_estimate(X, labels, metric, sample_size, random_state, device, chunk_size)
        log.info("silhouette estimated from %d of %d rows: %.6f +- %.6f (1 s.e.)",
                 est.n_evaluated, est.n_samples, est.score, est.standard_error)
        return est.score
    return float(np.mean(silhouette_samples(X, labels, metric, device, chunk_size)))


def silhouette_estimate(X: Any, labels: Any, metric: str = "euclidean", sample_size: int = DEFAULT_SAMPLE_SIZE,
                        random_state: int = 0, device: str | torch.device | None = None,
                        chunk_size: int | None = None) -> SilhouetteEstimate:
    """Silhouette score from a seeded uniform sample of rows (without replacement).

    Each sampled row's silhouette is exact (a and b against all n points), so the sample mean is
    an unbiased estimate of the full score; its standard error is
    std(s_sample, ddof=1) / sqrt(m) * sqrt((n - m) / (n - 1)) (finite-population correction).
    Cost O(m n d) instead of O(n^2 d). With sample_size >= n the result is exact (s.e. 0).
    """
    if not isinstance(sample_size, (int, np.integer)) or isinstance(sample_size, bool) or sample_size < 2:
        raise CarprobeError(f"sample_size={sample_size!r} is not allowed; expected an integer >= 2")
    workers = torch.get_num_threads()
    with _cpu_threads(resolve_device(X, device)):
        t, codes, k, dev = _prepare(X, labels, metric, device)
        n = t.shape[0]
        m = min(int(sample_size), n)
        if m == n:
            rows = np.arange(n)
        else:
            rows = np.sort(np.random.default_rng(random_state).choice(n, size=m, replace=False))
        if metric == "cosine":
            s = _cosine_silhouettes(t, codes, k, dev, chunk_size, rows=rows)
        else:
            s = _euclidean_silhouettes(t, codes, k, dev, chunk_size, rows=rows, workers=workers)
    se = 0.0 if m == n else float(np.std(s, ddof=1) / math.sqrt(m) * math.sqrt((n - m) / (n - 1)))
    return SilhouetteEstimate(float(np.mean(s)), se, m, n)


# -- shared ------------------------------------------------------------------------------------

def _row_count(X: Any) -> int:
    shape = getattr(X, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) >= 1 else len(X)


def _prepare(X: Any, labels: Any, metric: str, device: Any) -> tuple[torch.Tensor, np.ndarray, int, torch.device]:
    check_metric(metric)
    t = as_embeddings(X)
    codes, classes = encode_labels(labels, t.shape[0])
    check_label_count(len(classes), t.shape[0])
    return t, codes, len(classes), resolve_device(X, device)


def _combine(a: torch.Tensor, b: torch.Tensor, own_counts: torch.Tensor) -> np.ndarray:
    """s = (b - a) / max(a, b); 0 for singletons and for 0/0, like scikit-learn's nan_to_num."""
    s = (b - a) / torch.maximum(a, b)
    s = torch.where(own_counts > 1, s, torch.zeros_like(s))
    return torch.nan_to_num(s, nan=0.0).cpu().numpy()


# -- cosine: closed form -----------------------------------------------------------------------

def _cosine_silhouettes(t: torch.Tensor, codes: np.ndarray, k: int, dev: torch.device, chunk_size: int | None,
                        rows: np.ndarray | None = None) -> np.ndarray:
    n, d = t.shape
    # CPU: 2,048 rows keep the per-chunk float64 temporaries near 10 MB (8,192 was no faster)
    chunk = chunk_size or (65536 if dev.type == "cuda" else 2048)
    codes_t = torch.from_numpy(codes).to(dev)
    counts = torch.bincount(codes_t, minlength=k).to(torch.float64)
    # Pass 1: per-cluster sums of the normalised rows (float64), streamed over row chunks; kept
    # for pass 2 while they are small (the 1M-row case streams twice, as memory is the limit).
    sums = torch.zeros(k, d, dtype=torch.float64, device=dev)
    keep = rows is None and n * d * 8 <= _COSINE_KEEP_BYTES
    kept = []
    for start in range(0, n, chunk):
        u = _unit_rows(t[start:start + chunk].to(dev, torch.float64))
        sums.index_add_(0, codes_t[start:start + chunk], u)
        if keep:
            kept.append(u)
    # Pass 2: summed distance to every cluster = |C| - u.S_C; own cluster excludes i itself.
    row_ids = torch.arange(n) if rows is None else torch.from_numpy(np.asarray(rows, dtype=np.int64))
    # One preallocated result: a small array kept per chunk pins the heap between the chunks'
    # temporaries, and the process grew by ~170 MB over 1M rows.
    out = np.empty(len(row_ids), dtype=np.float64)
    for number, start in enumerate(range(0, len(row_ids), chunk)):
        ids = row_ids[start:start + chunk]
        if keep:
            u = kept[number]
        elif rows is None:
            u = _unit_rows(t[start:start + chunk].to(dev, torch.float64))
        else:
            u = _unit_rows(t[ids.to(t.device)].to(dev, torch.float64))
        c = codes_t[ids.to(dev)]
        dist_sums = counts.unsqueeze(0) - u @ sums.T                          # (B, k)
        own_counts = counts[c]
        own = dist_sums.gather(1, c.unsqueeze(1)).squeeze(1) - (1.0 - (u * u).sum(1))  # drop d(i, i)
        a = own / (own_counts - 1).clamp(min=1)
        mean_other = dist_sums / counts.unsqueeze(0)
        mean_other.scatter_(1, c.unsqueeze(1), math.inf)
        b = mean_other.min(dim=1).values
        out[start:start + len(ids)] = _combine(a, b, own_counts)
    return out


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """l2_normalize with one division per row, not per element (a new tensor: `x` may be the
    caller's own float64 input); within an ulp of scikit-learn's `normalize`."""
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return x * torch.where(norms == 0, torch.ones_like(norms), norms).reciprocal_()


# -- Euclidean: float32 tiles select, float64 decides ------------------------------------------

def _euclidean_silhouettes(t: torch.Tensor, codes: np.ndarray, k: int, dev: torch.device, chunk_size: int | None,
                           rows: np.ndarray | None, workers: int = 1) -> np.ndarray:
    """workers: CPU threads of the tile sweep and the exact sums (see _on_threads); 1 on a GPU."""
    n = t.shape[0]
    workers = workers if dev.type == "cpu" else 1
    # CPU: 768 x 768 float32 tiles (2.25 MiB) stay in cache through the product, the square root
    # and both cluster sums; 4096-wide tiles went through memory each time and took 1.8x the CPU
    # time on one thread (512 and 1024 were within 10% of 768 on one and on two threads). The
    # GPU wants large tiles.
    block = chunk_size or (8192 if dev.type == "cuda" else _CPU_TILE)
    order = np.argsort(codes, kind="stable")
    codes_sorted = codes[order]
    counts_np = np.bincount(codes_sorted, minlength=k)
    starts_np = np.concatenate([[0], np.cumsum(counts_np)[:-1]])
    x64 = t.to(dev, torch.float64)[torch.from_numpy(order).to(dev)]
    x64 = x64 - x64.mean(dim=0, keepdim=True)  # distances are shift-invariant; centring keeps float32 tight
    x32 = x64.to(torch.float32)
    codes_t = torch.from_numpy(codes_sorted).to(dev)
    counts = torch.from_numpy(counts_np).to(dev, torch.float64)

    if rows is None:
        pos = np.arange(n)
        approx = _tile_cluster_sums_symmetric(x32, codes_sorted, k, block, workers)
    else:
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = np.arange(n)
        pos = np.sort(inverse[np.asarray(rows, dtype=np.int64)])  # sorted positions of the sampled rows
        approx = _tile_cluster_sums_rows(x32, codes_sorted, k, block, pos, workers)
    pos_t = torch.from_numpy(pos).to(dev)
    own_c = codes_t[pos_t]
    mean_other = approx / counts.unsqueeze(0)
    mean_other.scatter_(1, own_c.unsqueeze(1), math.inf)
    unknown = torch.isnan(mean_other)
    mean_other = torch.where(unknown, torch.full_like(mean_other, math.inf), mean_other)
    nearest = mean_other.min(dim=1, keepdim=True).values
    candidates = (mean_other <= nearest * (1 + _CANDIDATE_RTOL) + 1e-12) | unknown

    # Exact float64 sums for the own cluster and every candidate cluster.
    own_sum = torch.zeros(len(pos), dtype=torch.float64, device=dev)
    b = torch.full((len(pos),), math.inf, dtype=torch.float64, device=dev)
    own_c_np = own_c.cpu().numpy()
    cand_np = candidates.cpu().numpy()
    _exact_candidate_sums(x64, pos, own_c_np, cand_np, starts_np, counts_np, block, own_sum, b, workers)
    own_counts = counts[own_c]
    a = own_sum / (own_counts - 1).clamp(min=1)
    s_sorted = _combine(a, b, own_counts)
    out = np.empty(len(pos))
    # Back from label-sorted positions to input order (rows given: ascending input index).
    original = order[pos]
    out_order = np.argsort(original, kind="stable")
    out[:] = s_sorted[out_order]
    return out


@contextlib.contextmanager
def _cpu_threads(dev: torch.device):
    """Run CPU kernels on one thread while the machine is busy (see _machine_busy). Every
    multi-threaded kernel ends in a barrier; when other processes hold the cores, a thread
    spins there for a whole time slice: a 2 s Euclidean silhouette took 20 s, its CPU time
    equal to its wall time. A quiet machine keeps torch's thread setting."""
    if dev.type != "cpu" or not _machine_busy():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _machine_busy() -> bool:
    """Other runnable tasks now (/proc/loadavg), or the 1-min load average, fill every core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        with open("/proc/loadavg") as handle:
            fields = handle.read().split()
        return int(fields[3].split("/")[0]) - 1 >= cores or float(fields[0]) >= cores  # - 1: this thread
    except (OSError, ValueError, IndexError):  # not Linux
        try:
            return os.getloadavg()[0] >= cores
        except OSError:
            return False


def _exact_candidate_sums(x64: torch.Tensor, pos: np.ndarray, own_c_np: np.ndarray, cand_np: np.ndarray,
                          starts_np: np.ndarray, counts_np: np.ndarray, block: int,
                          own_sum: torch.Tensor, b: torch.Tensor, workers: int = 1) -> None:
    """Fill own_sum (exact summed distance to the own cluster) and b (min exact mean distance
    over the candidate clusters), one cluster at a time, in float64: cluster job c on thread
    c % workers (see _on_threads), the results applied here in cluster order."""
    dev = x64.device
    jobs = []
    for c in range(len(counts_np)):
        own_rows = np.flatnonzero(own_c_np == c)
        cand_rows = np.flatnonzero(cand_np[:, c])
        if len(own_rows) or len(cand_rows):
            jobs.append((c, own_rows, cand_rows))
    block_bytes = 8 * 4 * block * block  # _exact_sums_to_cluster's float64 distance block
    workers = max(1, min(workers, len(jobs), 1 + _SWEEP_EXTRA_BYTES // block_bytes))

    def run(w: int, stop: threading.Event) -> list[torch.Tensor]:
        out = []
        for c, own_rows, cand_rows in jobs[w::workers]:
            if stop.is_set():
                break
            lo, hi = int(starts_np[c]), int(starts_np[c] + counts_np[c])
            out.append(_exact_sums_to_cluster(x64, pos[np.concatenate([own_rows, cand_rows])], lo, hi, block))
        return out

    per_thread = _on_threads(workers, run)
    for i, (c, own_rows, cand_rows) in enumerate(jobs):
        sums = per_thread[i % workers][i // workers]
        n_own = len(own_rows)
        if n_own:
            own_sum[torch.from_numpy(own_rows).to(dev)] = sums[:n_own]
        if len(cand_rows):
            idx = torch.from_numpy(cand_rows).to(dev)
            b[idx] = torch.minimum(b[idx], sums[n_own:] / counts_np[c])


def _blocks(n: int, block: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + block, n)) for lo in range(0, n, block)]


def _augment(x32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column factors whose product is the squared distance matrix in one GEMM:
    [x, |x|^2, 1] . [-2y, 1, |y|^2] = |x|^2 + |y|^2 - 2 x.y."""
    sq = (x32 * x32).sum(dim=1, keepdim=True)
    ones = torch.ones_like(sq)
    return torch.cat([x32, sq, ones], dim=1), torch.cat([-2.0 * x32, ones, sq], dim=1)


def _tile_distances(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    # A rounding-negative square (near-duplicate rows) counts as 0: the one-hot products below
    # would spread a NaN over every cluster of its row. Own and nearest clusters are recomputed
    # exactly in float64 anyway.
    return (left @ right.T).clamp_(min=0.0).sqrt_()


class _BlockClusters:
    """The clusters a block of label-sorted columns touches, and how to sum a tile over them.

    Up to _ONEHOT_MAX_CLUSTERS clusters, a tile's cluster sums are one matrix product with a
    (clusters x columns) one-hot matrix: one large call instead of one strided .sum() per
    cluster, each of which ends in a thread barrier that costs a time slice when other
    processes keep the cores busy. Above
    that, the product would cost more than the distances; segment sums come from one float64
    running sum instead.
    """

    def __init__(self, codes_sorted: np.ndarray, lo: int, hi: int, device: torch.device):
        local = codes_sorted[lo:hi]
        self.c0, self.c1 = int(local[0]), int(local[-1]) + 1
        self.width = self.c1 - self.c0
        self.onehot = self.width <= _ONEHOT_MAX_CLUSTERS
        if self.onehot:
            # (clusters, columns): a short, wide left factor is the fast GEMM layout (3x faster
            # on the CPU than tile @ (columns, clusters))
            self.indicator = torch.zeros(self.width, hi - lo, dtype=torch.float32, device=device)
            self.indicator[torch.from_numpy(local - self.c0).to(device),
                           torch.arange(hi - lo, device=device)] = 1.0
        else:
            change = np.flatnonzero(np.diff(local)) + 1
            starts = np.concatenate([[0], change]).astype(np.int64)
            self.ends_t = torch.from_numpy(np.concatenate([change, [hi - lo]]).astype(np.int64)).to(device)
            self.starts_t = torch.from_numpy(starts).to(device)
            self.codes_t = torch.from_numpy((local[starts] - self.c0).astype(np.int64)).to(device)

    def sum_columns(self, tile: torch.Tensor) -> torch.Tensor:
        """(r, cols) -> (r, c1 - c0) float64: each row summed over each cluster's columns."""
        if self.onehot:
            return (self.indicator @ tile.T).T.to(torch.float64)
        cs = torch.nn.functional.pad(tile.to(torch.float64).cumsum(dim=1), (1, 0))
        out = torch.zeros(tile.shape[0], self.width, dtype=torch.float64, device=tile.device)
        out[:, self.codes_t] = cs[:, self.ends_t] - cs[:, self.starts_t]
        return out

    def sum_rows(self, tile: torch.Tensor) -> torch.Tensor:
        """(rows, c) -> (c, c1 - c0) float64: each column summed over each cluster's rows."""
        if self.onehot:
            return (self.indicator @ tile).T.to(torch.float64)
        return self.sum_columns(tile.T)


def _tile_cluster_sums_symmetric(x32: torch.Tensor, codes_sorted: np.ndarray, k: int, block: int,
                                 workers: int) -> torch.Tensor:
    """Approximate (n, k) sums of distances from every row to every cluster, upper-triangle tiles."""
    n, dev = x32.shape[0], x32.device
    left, right = _augment(x32)
    blocks = _blocks(n, block)
    info = [_BlockClusters(codes_sorted, lo, hi, dev) for lo, hi in blocks]

    def add_tile(tile_ij: tuple[int, int], sums: torch.Tensor) -> None:
        i, j = tile_ij
        (ilo, ihi), (jlo, jhi) = blocks[i], blocks[j]
        tile = _tile_distances(left[ilo:ihi], right[jlo:jhi])
        sums[ilo:ihi, info[j].c0:info[j].c1] += info[j].sum_columns(tile)
        if j != i:
            sums[jlo:jhi, info[i].c0:info[i].c1] += info[i].sum_rows(tile)

    tiles = [(i, j) for i in range(len(blocks)) for j in range(i, len(blocks))]
    return _sweep(tiles, add_tile, (n, k), dev, workers)


def _tile_cluster_sums_rows(x32: torch.Tensor, codes_sorted: np.ndarray, k: int, block: int,
                            pos: np.ndarray, workers: int) -> torch.Tensor:
    """Approximate (m, k) distance sums from the rows at sorted positions `pos` to every cluster."""
    n, dev = x32.shape[0], x32.device
    left, right = _augment(x32)
    lr = left[torch.from_numpy(pos).to(dev)]
    column_blocks = _blocks(n, block)
    info = [_BlockClusters(codes_sorted, lo, hi, dev) for lo, hi in column_blocks]
    row_blocks = _blocks(len(pos), block)

    def add_tile(tile_rj: tuple[int, int], sums: torch.Tensor) -> None:
        (rlo, rhi), (jlo, jhi), bj = row_blocks[tile_rj[0]], column_blocks[tile_rj[1]], info[tile_rj[1]]
        tile = _tile_distances(lr[rlo:rhi], right[jlo:jhi])
        sums[rlo:rhi, bj.c0:bj.c1] += bj.sum_columns(tile)

    tiles = [(r, j) for j in range(len(column_blocks)) for r in range(len(row_blocks))]
    return _sweep(tiles, add_tile, (len(pos), k), dev, workers)


def _sweep(tiles: list, add_tile: Callable[[Any, torch.Tensor], None], shape: tuple[int, int],
           dev: torch.device, workers: int) -> torch.Tensor:
    """Run add_tile(tile, sums) over `tiles` and return the float64 sums: tile t on thread
    t % workers, into that thread's own sums, added up in thread order at the end (so the result
    does not depend on timing). Extra sums beyond _SWEEP_EXTRA_BYTES mean fewer threads."""
    workers = max(1, min(workers, len(tiles), 1 + _SWEEP_EXTRA_BYTES // max(1, 8 * shape[0] * shape[1])))

    def run(w: int, stop: threading.Event) -> torch.Tensor:
        sums = torch.zeros(shape, dtype=torch.float64, device=dev)
        for tile in tiles[w::workers]:
            if stop.is_set():
                break
            add_tile(tile, sums)
        return sums

    partial = _on_threads(workers, run)
    total = partial[0]
    for more in partial[1:]:
        total += more
    return total


def _on_threads(workers: int, job: Callable[[int, threading.Event], Any]) -> list[Any]:
    """[job(0, stop), ..., job(workers - 1, stop)], each on its own thread running single-threaded
    torch kernels (one worker: here, with torch's setting). Torch's own threads end every kernel
    in a barrier, where a thread whose partner lost its core spins for a time slice; threads that
    share nothing but their input never wait for each other, and on a machine other jobs keep
    busy they get one share of the cores per thread instead of one for the whole silhouette.

    A job checks `stop` between its items: it is set when any job fails or the caller is
    interrupted (Ctrl-C), so no thread goes on computing a result nobody will read."""
    stop = threading.Event()
    if workers <= 1:
        return [job(0, stop)]
    results: list[Any] = [None] * workers
    errors: list[BaseException | None] = [None] * workers

    def run(w: int) -> None:
        try:
            results[w] = job(w, stop)
        except BaseException as exc:  # raised in the calling thread below
            errors[w] = exc
            stop.set()

    threads = [threading.Thread(target=run, args=(w,), name=f"carprobe-silhouette-{w}", daemon=True)
               for w in range(workers)]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    except BaseException:
        stop.set()  # e.g. KeyboardInterrupt in join: the threads end after their current item
        raise
    finally:
        torch.set_num_threads(before)
    for error in errors:
        if error is not None:
            raise error
    return results


def _exact_sums_to_cluster(x64: torch.Tensor, positions: np.ndarray, lo: int, hi: int, block: int) -> torch.Tensor:
    """Float64 sums of Euclidean distances from rows at `positions` to sorted rows lo:hi,
    with the cluster centred on its own mean (small norms, little cancellation); a row's distance
    to itself counts as exactly 0."""
    dev = x64.device
    members = x64[lo:hi]
    centre = members.mean(dim=0, keepdim=True)
    y = members - centre
    sy = (y * y).sum(dim=1)
    pos_t = torch.from_numpy(positions).to(dev)
    out = torch.empty(len(positions), dtype=torch.float64, device=dev)
    step = max(1, (4 * block * block) // max(1, hi - lo))
    for s in range(0, len(positions), step):
        p = pos_t[s:s + step]
        q = x64[p] - centre
        sq = (q * q).sum(dim=1)
        d2 = torch.addmm(sy.unsqueeze(0), q, y.T, alpha=-2.0).add_(sq.unsqueeze(1)).clamp_(min=0.0)
        inside = (p >= lo) & (p < hi)
        if bool(inside.any()):
            r = torch.nonzero(inside).squeeze(1)
            d2[r, p[r] - lo] = 0.0
        out[s:s + step] = d2.sqrt_().sum(dim=1)
    return out
