"""Attribution maps on disk: one compressed file per (render set, model, method, target, options).

Each file (np.savez_compressed) holds ``maps`` (N, H, W) float16, ``indices`` (N,) the image
indices of the set, ``peaks`` (N,) each map's strongest pixel before normalisation (flat index;
the pointing game reads it, since clipping and float16 make the stored maximum a tie), and a JSON
``meta`` (model name and fingerprint, method, target, options,
set hash). Maps are normalised before they are stored (see methods.py), so float16 keeps them
to ~3 significant digits. Asking for indices already stored reuses them; new indices are
computed and merged into the same file (written atomically).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:40] or "model"


class MapStore:
    """Maps under `root` (usually <out>/maps)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def key(self, model_name: str, fingerprint: str, method: str, target: str, options: dict[str, Any],
            set_hash: str = "") -> tuple[Path, dict[str, Any]]:
        meta = {"model": model_name, "fingerprint": fingerprint, "method": method, "target": target,
                "options": options, "set_hash": set_hash}
        digest = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "model"}, sort_keys=True,
                                           default=str).encode()).hexdigest()[:16]
        return self.root / f"{_slug(model_name)}-{method}-{target}-{digest}.npz", meta

    @staticmethod
    def read(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """(maps, indices, peaks, meta); a file written before peaks were stored raises KeyError."""
        with np.load(path, allow_pickle=False) as data:
            return data["maps"], data["indices"], data["peaks"], json.loads(str(data["meta"]))

    def get(self, indices: Sequence[int], compute: Callable[[list[int]], tuple[np.ndarray, np.ndarray]], *,
            model_name: str, fingerprint: str, method: str, target: str, options: dict[str, Any],
            set_hash: str = "", on_reuse: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(maps (len(indices), H, W) float32, peaks (len(indices),) int64) for `indices`: stored
        ones reused, missing ones from `compute(missing_indices)` -> (maps, peaks) and stored."""
        path, meta = self.key(model_name, fingerprint, method, target, options, set_hash)
        stored_maps, stored_idx, stored_peaks = None, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        if path.is_file():
            try:
                stored_maps, stored_idx, stored_peaks, _ = self.read(path)
            except (OSError, ValueError, KeyError):  # unreadable or without peaks: recompute
                stored_maps, stored_idx, stored_peaks = None, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        have = {int(i): row for row, i in enumerate(stored_idx)}
        missing = [int(i) for i in indices if int(i) not in have]
        if on_reuse is not None:
            on_reuse(len(indices) - len(missing))
        if missing:
            new, new_peaks = compute(missing)
            new = np.asarray(new, dtype=np.float16)
            all_idx, all_maps = np.asarray(missing, dtype=np.int64), new
            all_peaks = np.asarray(new_peaks, dtype=np.int64)
            if stored_maps is not None and stored_maps.shape[1:] == new.shape[1:]:
                all_idx = np.concatenate([stored_idx.astype(np.int64), all_idx])
                all_maps = np.concatenate([stored_maps, new])
                all_peaks = np.concatenate([stored_peaks.astype(np.int64), all_peaks])
            order = np.argsort(all_idx, kind="stable")
            stored_maps, stored_idx, stored_peaks = all_maps[order], all_idx[order], all_peaks[order]
            self._write(path, stored_maps, stored_idx, stored_peaks, meta)
            have = {int(i): row for row, i in enumerate(stored_idx)}
        rows = [have[int(i)] for i in indices]
        return np.stack([stored_maps[r] for r in rows]).astype(np.float32), stored_peaks[rows].astype(np.int64)

    def _write(self, path: Path, maps: np.ndarray, indices: np.ndarray, peaks: np.ndarray,
               meta: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, maps=maps.astype(np.float16), indices=indices.astype(np.int64),
                            peaks=peaks.astype(np.int64), meta=np.array(json.dumps(meta, default=str)))
        os.replace(tmp, path)
