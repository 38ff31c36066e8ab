"""Shared by `carprobe silhouettes` and `carprobe metrics`: load models, embed a set (cached),
print a compact table; `parse_workers` also serves `carprobe embed` and `carprobe report`. Imports torch only when called."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("set", help="render set folder (holds dataset.json and metadata.csv)")
    parser.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                        help="carprobe checkpoints (.pt), TorchScript files, reality-check folders or "
                             "torchvision:<arch>[:dim] specs")
    parser.add_argument("--random-init", action="store_true",
                        help="torchvision:<arch> models without pretrained weights (untrained trunk)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the tidy CSV tables (default: <SET>/carprobe-results)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:N")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_bins_argument(parser: argparse.ArgumentParser) -> None:
    """--bins N|none: quantile bins for the factors a random design draws continuously."""
    parser.add_argument("--bins", default="8", metavar="N|none",
                        help="quantile bins for continuous factors (uniform/normal draws of a random design; "
                             "listed values always stay one class each), or 'none' (default 8)")


def parse_workers(value) -> int | str:
    """--workers: 'auto' or a non-negative integer (CarprobeError otherwise)."""
    from blender_addon.core.errors import CarprobeError

    if value == "auto":
        return value
    if not str(value).isdigit():
        raise CarprobeError(f"--workers {value!r}: must be 'auto' or a non-negative integer")
    return int(value)


def embed_models(args: argparse.Namespace):
    """(RenderSetData, {model name: embeddings}, torch device), in --models order; duplicate
    names get a '#2', '#3' suffix."""
    from blender_addon.core.errors import CarprobeError

    from ..data import RenderSetData
    from ..embed import embed_render_set
    from ..models import load_model, resolve_device

    if args.batch_size < 1:
        raise CarprobeError(f"--batch-size {args.batch_size}: must be >= 1")
    device = resolve_device(args.device)
    data = RenderSetData(args.set)
    embeddings = {}
    for ref in args.models:
        model = load_model(ref, random_init=args.random_init)
        name, i = model.name, 2
        while name in embeddings:
            name, i = f"{model.name}#{i}", i + 1
        embeddings[name] = embed_render_set(data, model, batch_size=args.batch_size, device=device,
                                            progress=not args.quiet)
    return data, embeddings, device


def out_dir(args: argparse.Namespace, data) -> Path:
    out = Path(args.out) if args.out is not None else Path(data.root) / "carprobe-results"
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_csv(frame, path: Path) -> None:
    from blender_addon.core.render_set import atomic_write_text

    atomic_write_text(path, frame.to_csv(index=False))


def print_pivot(frame, index: list[str], title: str) -> None:
    """One line per `index` group, one column per model."""
    if frame.empty:
        return
    table = frame.pivot_table(index=index, columns="model", values="value", aggfunc="first", sort=False)
    table.columns.name = None
    print(title)
    print(table.to_string(float_format=lambda v: f"{v:8.4f}"))
