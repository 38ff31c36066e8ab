"""Embeddings in batches on the best device, streamed from disk, cached per (model, render set).

Embeddings are the model's raw `forward` output (before any L2 norm) unless `normalize=True`:
analyses that need normalised vectors normalise them, and the cache holds one exact copy.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from blender_addon.core.errors import CarprobeError
from blender_addon.core.render_set import temp_path

from .data import ImagePathsDataset, ImageReadError, RenderSetData, loader_error_message

CACHE_DIR = Path(".carprobe-cache") / "embeddings"


def auto_workers(count: int, batch_size: int) -> int:
    """DataLoader workers: none for a single batch (starting processes costs more than it
    saves), else one per available core but one (the main process runs the model), 1..8."""
    if count <= batch_size:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores - 1))


def make_loader(paths: Sequence[str | Path], transform, batch_size: int, num_workers: int, pin_memory: bool):
    """The DataLoader embed_paths uses (shared with bench/embed.py so both compare like for like)."""
    from torch.utils.data import DataLoader

    return DataLoader(ImagePathsDataset(paths, transform), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers, pin_memory=pin_memory,
                      prefetch_factor=4 if num_workers else None)


def embed_paths(paths: Sequence[str | Path], model, batch_size: int = 64, num_workers: int | str | None = "auto",
                device=None, amp: bool = False, progress: bool = True, *, normalize: bool = False,
                out: np.ndarray | None = None, desc: str = "embed") -> np.ndarray:
    """Embed images by path with `model` (an EmbeddingModel) → float32 array (len(paths), D).

    Best device by default (CUDA, else CPU); `amp` = float16 autocast, on CUDA only (ignored on
    the CPU); pinned memory on CUDA; images are decoded in `num_workers` DataLoader processes
    ("auto": see auto_workers) and never all held in memory. `out` (e.g. a memmap) receives the
    rows instead of a new array. A missing or corrupt image raises CarprobeError naming it.
    """
    import torch
    import torch.nn.functional as F
    from blender_addon.core.progress import Progress

    from .models import resolve_device

    if not isinstance(batch_size, int) or batch_size < 1:
        raise CarprobeError(f"batch size {batch_size!r}: must be a positive integer")
    if num_workers in (None, "auto"):
        num_workers = auto_workers(len(paths), batch_size)
    elif not isinstance(num_workers, int) or num_workers < 0:
        raise CarprobeError(f"workers {num_workers!r}: must be 'auto' or an integer >= 0")
    dev = resolve_device(device)
    count, dim = len(paths), int(model.embedding_dim)
    result = out if out is not None else np.empty((count, dim), dtype=np.float32)
    if result.shape != (count, dim):
        raise CarprobeError(f"out has shape {result.shape}; expected {(count, dim)}")
    if count == 0:
        return result
    use_amp = bool(amp) and dev.type == "cuda"
    loader = make_loader(paths, model.preprocess.transform(), batch_size, num_workers, dev.type == "cuda")
    was_training = model.training
    model.to(dev).eval()
    bar = Progress(count, label=desc, enabled=progress)
    start = 0
    try:
        with torch.inference_mode():
            for batch in loader:
                x = batch.to(dev, non_blocking=True)
                with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                    y = model(x)
                y = y.float()
                if normalize:
                    y = F.normalize(y, dim=1)
                stop = start + y.shape[0]
                result[start:stop] = y.cpu().numpy()
                bar.update(stop - start)
                start = stop
    except ImageReadError as exc:
        raise ImageReadError(loader_error_message(exc)) from None
    finally:
        bar.close()
        if was_training:
            model.train()
    return result


def embedding_cache_path(data: RenderSetData, model, amp: bool = False) -> Path:
    """<set>/.carprobe-cache/embeddings/<model fingerprint[:16]>-<set hash[:16]>[-amp].npy
    (float16 autocast gives slightly different numbers, so it is cached apart)."""
    name = f"{model.fingerprint[:16]}-{data.set_hash[:16]}{'-amp' if amp else ''}.npy"
    return data.root / CACHE_DIR / name


def embed_render_set(set_path: str | Path | RenderSetData, model, batch_size: int = 64,
                     num_workers: int | str | None = "auto", device=None, amp: bool = False,
                     progress: bool = True, cache: bool = True, normalize: bool = False) -> np.ndarray:
    """Embeddings of every image of a render set, rows aligned with its metadata (raw unless
    `normalize`). With `cache`, reused from / written to the set's cache folder (atomically;
    written straight to disk, so large sets never sit in memory twice). `model` may be a
    models.CheckpointRef: its network is built only on a cache miss."""
    import torch

    from .models import CheckpointRef

    data = set_path if isinstance(set_path, RenderSetData) else RenderSetData(set_path)
    amp = bool(amp) and _cuda_device(device, torch)
    shape = (len(data), int(model.embedding_dim))
    path = embedding_cache_path(data, model, amp)
    if cache and path.is_file():
        try:
            cached = np.load(path)
        except (OSError, ValueError):
            cached = None  # torn or foreign file: recompute and replace it
        if cached is not None and cached.shape == shape and cached.dtype == np.float32:
            return _l2(cached) if normalize else cached
    kwargs = dict(batch_size=batch_size, num_workers=num_workers, device=device, amp=amp,
                  progress=progress, desc=f"embed {data.root.name} · {model.name}")
    if isinstance(model, CheckpointRef):
        model = model.load()
    if not cache:
        return embed_paths(data.image_paths, model, normalize=normalize, **kwargs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
    except OSError as exc:
        print(f"carprobe: cannot write the embedding cache under {data.root} ({exc.strerror}); "
              "computing without it", file=sys.stderr)
        return embed_paths(data.image_paths, model, normalize=normalize, **kwargs)
    try:
        mapped = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        embed_paths(data.image_paths, model, out=mapped, **kwargs)
        mapped.flush()
        del mapped
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    result = np.load(path)
    return _l2(result) if normalize else result


def _cuda_device(device, torch) -> bool:
    if device is None or str(device) == "auto":
        return torch.cuda.is_available()
    return str(device).startswith("cuda")


def _l2(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)
