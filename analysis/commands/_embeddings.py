"""Shared by `carprobe silhouettes` and `carprobe metrics`: load models, embed a set (cached),
print a compact table. Imports torch only when called; shared flags come from
blender_addon/commands/common.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from blender_addon.commands import common


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("set", help="render set folder (holds dataset.json and metadata.csv)")
    common.add_models(parser)
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the tidy CSV tables (default: <SET>/carprobe-results)")
    common.add_device(parser)
    parser.add_argument("--batch-size", type=int, default=64)
    common.add_workers(parser, "DataLoader processes decoding images", common.AUTO_LOADER_WORKERS)
    common.add_progress(parser)


def load_models(refs, args: argparse.Namespace, device=None, preprocess=None, lazy: bool = False) -> list:
    """Every ref of --models as an EmbeddingModel, with --random-init and --weights (common.add_models)
    applied to the model specs; CarprobeError when --weights names no file or no ref takes it.
    `lazy`: carprobe checkpoints come as models.CheckpointRef, built only if their embeddings are
    not cached (callers that only embed)."""
    from blender_addon.core.errors import CarprobeError

    from ..models import is_model_spec, load_model, model_ref, parse_model_spec

    weights = getattr(args, "weights", None)
    random_init = bool(getattr(args, "random_init", False))

    def takes_weights(ref) -> bool:
        if not is_model_spec(ref):
            return False
        spec = parse_model_spec(ref)
        return spec.pretrained and not (random_init and spec.kind == "torchvision")

    if weights is not None:
        if not Path(weights).is_file():
            raise CarprobeError(f"--weights {weights!r}: file not found (a local state dict; carprobe never downloads)")
        if not any(takes_weights(ref) for ref in refs):
            raise CarprobeError(f"--weights {weights}: applies to torchvision:<arch> and imagenet:<arch> models "
                                f"(not with --random-init), and none of {', '.join(map(str, refs))} is one")
    load = model_ref if lazy else load_model
    return [load(ref, random_init=random_init, device=device, preprocess=preprocess,
                 weights=weights if weights is not None and takes_weights(ref) else None) for ref in refs]


def add_bins_argument(parser: argparse.ArgumentParser) -> None:
    """--bins N|none: quantile bins for the factors a random design draws continuously."""
    parser.add_argument("--bins", default="8", metavar="N|none",
                        help="quantile bins for continuous factors (uniform/normal draws of a random design; "
                             "listed values always stay one class each), or 'none' (default 8)")


def embed_models(args: argparse.Namespace, loaded: dict | None = None):
    """(RenderSetData, {model name: embeddings}, torch device), in --models order; duplicate
    names get a '#2', '#3' suffix. `loaded`, when given, receives name → the model itself (or its
    CheckpointRef: name, distance, normalize, fingerprint… without the network)."""
    from blender_addon.core.errors import CarprobeError

    from ..data import RenderSetData
    from ..embed import embed_render_set
    from ..models import resolve_device

    if args.batch_size < 1:
        raise CarprobeError(f"--batch-size {args.batch_size}: must be >= 1")
    device = resolve_device(args.device)
    data = RenderSetData(args.set)
    embeddings = {}
    for model in load_models(args.models, args, lazy=True):
        name, i = model.name, 2
        while name in embeddings:
            name, i = f"{model.name}#{i}", i + 1
        if loaded is not None:
            loaded[name] = model
        embeddings[name] = embed_render_set(data, model, batch_size=args.batch_size, num_workers=args.workers,
                                            device=device, progress=args.progress)
    return data, embeddings, device


def out_dir(args: argparse.Namespace, data) -> Path:
    return common.output_folder(args.out if args.out is not None else Path(data.root) / "carprobe-results")


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
