"""Retrieval metrics used across deep metric learning (Musgrave et al. 2020; Roth et al. 2020).

Leave-one-out retrieval within one set: each image is a query against all other images.
Queries whose class has no other member are left out (as pytorch-metric-learning does). For a
query q of class C with R = |C| - 1 relevant images and rel(i) = 1 when its i-th nearest
neighbour (self excluded) shares q's label:

    Recall@k      = 1 if any of the k nearest is relevant, else 0       (mean over queries)
    R-Precision   = (1/R) sum_{i<=R} rel(i)
    MAP@R         = (1/R) sum_{i<=R} rel(i) * P(i),  P(i) = (1/i) sum_{j<=i} rel(j)
    NMI           = normalized mutual information (arithmetic mean normalisation) between the
                    labels and a k-means clustering of the embeddings into as many clusters as
                    there are labels (scikit-learn KMeans, seeded, 10 inits).

Distances: cosine on L2-normalised rows (default) or Euclidean. Neighbours are exact, ranked in
float64 with ties broken by index (`_knn`), and streamed in row chunks: memory stays bounded
however large a class is (100,000 images in 6 classes fit in well under 2 GB; bench/metrics.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from blender_addon.core.errors import CarprobeError

from ._inputs import as_embeddings, check_metric, encode_labels, l2_normalize, resolve_device
from ._knn import as_codes_tensor, iter_neighbours, same_label_hits


def retrieval_metrics(X: Any, labels: Any, ks: Sequence[int] = (1, 2, 4, 8), metric: str = "cosine",
                      nmi: bool = True, random_state: int = 0, device: str | torch.device | None = None,
                      chunk_size: int | None = None) -> dict[str, float]:
    """Recall@k for every k in `ks`, R-Precision, MAP@R and (if `nmi`) NMI, as a dict
    {"recall@1": ..., "r_precision": ..., "map_at_r": ..., "nmi": ...}."""
    check_metric(metric)
    t = as_embeddings(X, min_rows=2)
    n = t.shape[0]
    codes, classes = encode_labels(labels, n)
    ks = list(ks)
    for k in ks:
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= n - 1:
            raise CarprobeError(f"ks: {k!r} is not allowed; expected integers from 1 to n_samples - 1 = {n - 1}")
    counts = np.bincount(codes, minlength=len(classes))
    r = counts[codes] - 1
    queries = r > 0
    if not queries.any():
        raise CarprobeError("labels: every label occurs once; retrieval needs a label shared by at least 2 images")
    dev = resolve_device(X, device)
    k_max = int(max(max(ks, default=1), r.max()))
    codes_t = as_codes_tensor(codes, dev)
    r_all = torch.from_numpy(r).to(dev, torch.float64)
    found = {k: 0.0 for k in ks}
    r_precision = map_at_r = 0.0
    for r0, r1, nbrs in iter_neighbours(t, k_max, metric, dev, chunk_size):
        q = torch.from_numpy(queries[r0:r1]).to(dev)
        rel = same_label_hits(nbrs, codes_t, r0)[q].to(torch.float64)         # (queries in chunk, k_max)
        r_t = r_all[r0:r1][q].unsqueeze(1)
        for k in ks:
            found[k] += float(rel[:, :k].amax(dim=1).sum())
        ranks = torch.arange(1, rel.shape[1] + 1, device=dev, dtype=torch.float64).unsqueeze(0)
        rel *= ranks <= r_t
        r_precision += float((rel.sum(dim=1, keepdim=True) / r_t).sum())
        map_at_r += float(((rel.cumsum(dim=1) / ranks * rel).sum(dim=1, keepdim=True) / r_t).sum())
    n_queries = int(queries.sum())
    out: dict[str, float] = {f"recall@{k}": found[k] / n_queries for k in ks}
    out["r_precision"] = r_precision / n_queries
    out["map_at_r"] = map_at_r / n_queries
    if nmi:
        out["nmi"] = nmi_kmeans(t, codes, metric, random_state)
    return out


def nmi_kmeans(X: Any, labels: Any, metric: str = "cosine", random_state: int = 0) -> float:
    """NMI between `labels` and k-means (k = number of labels) on the (normalised, for cosine) rows."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    t = as_embeddings(X).to(torch.float64)
    codes, classes = encode_labels(labels, t.shape[0])
    if len(classes) < 2:
        raise CarprobeError(f"labels: NMI needs at least 2 distinct labels, got {len(classes)}")
    x = (l2_normalize(t) if metric == "cosine" else t).cpu().numpy()
    pred = KMeans(n_clusters=len(classes), n_init=10, random_state=random_state).fit_predict(x)
    return float(normalized_mutual_info_score(codes, pred))
