"""Input checks shared by the metric functions: plain arrays in, clear CarprobeErrors out."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from blender_addon.core.errors import CarprobeError

METRICS = ("cosine", "euclidean")


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise CarprobeError(f"metric={metric!r} is not supported; expected one of {', '.join(METRICS)}")
    return metric


def resolve_device(X: Any, device: str | torch.device | None) -> torch.device:
    """`device` if given, else the device of a torch input, else the CPU."""
    if device is not None:
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise CarprobeError(f"device={str(device)!r} was asked for but CUDA is not available; use device='cpu'")
        return device
    if isinstance(X, torch.Tensor):
        return X.device
    return torch.device("cpu")


def as_embeddings(X: Any, name: str = "X", min_rows: int = 1) -> torch.Tensor:
    """A 2-D, finite, real tensor (n_samples, n_features) on its own device, dtype kept."""
    if isinstance(X, torch.Tensor):
        t = X.detach()
    else:
        try:
            arr = np.asarray(X)
        except Exception as exc:  # ragged lists and the like
            raise CarprobeError(f"{name}: could not be read as an array ({exc}); expected a 2-D array of floats") from exc
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise CarprobeError(f"{name}: dtype {arr.dtype} is not numeric; expected a 2-D array of floats")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.ndim != 2:
        raise CarprobeError(f"{name}: expected a 2-D array (n_samples, n_features), got shape {tuple(t.shape)}")
    if t.shape[0] < min_rows or t.shape[1] < 1:
        raise CarprobeError(f"{name}: shape {tuple(t.shape)} is too small; expected at least {min_rows} row(s) "
                            "and 1 feature")
    if t.is_complex():
        raise CarprobeError(f"{name}: complex values are not supported; expected real floats")
    if not t.is_floating_point():
        t = t.to(torch.float64)
    bad = count_nonfinite_rows(t)
    if bad:
        raise CarprobeError(f"{name}: {bad} row(s) contain NaN or infinity; expected finite values")
    return t


# Elements per chunk of the finiteness check: its temporaries stay a few MB, not input-sized.
_FINITE_CHUNK_ELEMENTS = 1 << 20


def count_nonfinite_rows(t: torch.Tensor) -> int:
    """Rows of a 2-D tensor holding NaN or infinity, checked in row chunks (bounded memory)."""
    step = max(1, _FINITE_CHUNK_ELEMENTS // max(1, t.shape[1]))
    bad = 0
    for start in range(0, t.shape[0], step):
        chunk = t[start:start + step]
        # A NaN or infinity makes any sum non-finite, so a finite sum clears the chunk at a
        # twentieth of isfinite's cost; a non-finite one (or an overflow) is checked element-wise.
        if bool(torch.isfinite(chunk.sum())):
            continue
        finite = torch.isfinite(chunk)
        if not bool(finite.all()):
            bad += int((~finite.all(dim=1)).sum())
    return bad


def encode_labels(labels: Any, n: int, name: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """(codes 0..k-1 as int64, sorted distinct labels). Labels may be numbers or strings."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise CarprobeError(f"{name}: expected a 1-D array with one label per row, got shape {arr.shape}")
    if len(arr) != n:
        raise CarprobeError(f"{name}: has {len(arr)} entries but the embeddings have {n} rows; expected one label per row")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise CarprobeError(f"{name}: {int(np.isnan(arr).sum())} label(s) are NaN; expected a label for every row")
    if arr.dtype == object:
        missing = sum(1 for v in arr if v is None or (isinstance(v, float) and v != v))
        if missing:
            raise CarprobeError(f"{name}: {missing} label(s) are missing (None/NaN); expected a label for every row")
        try:
            classes, codes = np.unique(arr, return_inverse=True)
        except TypeError:  # mixed types that do not sort: compare as strings
            classes, codes = np.unique(arr.astype(str), return_inverse=True)
    else:
        classes, codes = np.unique(arr, return_inverse=True)
    return codes.astype(np.int64).reshape(-1), classes


def check_label_count(n_labels: int, n_samples: int) -> None:
    """The silhouette needs 2 <= n_labels <= n_samples - 1, as in scikit-learn."""
    if not 1 < n_labels < n_samples:
        raise CarprobeError(f"number of labels is {n_labels} for {n_samples} samples; valid values are 2 to "
                            "n_samples - 1 (inclusive)")


def l2_normalize(t: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length; all-zero rows stay zero (as scikit-learn's `normalize`)."""
    norms = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    return t / torch.where(norms == 0, torch.ones_like(norms), norms)
