"""`carprobe embed SET --models M [M …]`: embed every image of a render set with each model
(cached per model and set)."""

from __future__ import annotations

import argparse
from pathlib import Path

from blender_addon.commands import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("set", help="render set folder (holds dataset.json and metadata.csv)")
    common.add_models(parser)
    parser.add_argument("--preprocess", default=None,
                        help="override the model's preprocessing: a preset (imagenet, bninception, "
                             "reality-check) or a JSON file; TorchScript files default to imagenet")
    parser.add_argument("--batch-size", type=int, default=64)
    common.add_workers(parser, "DataLoader processes decoding images", common.AUTO_LOADER_WORKERS)
    common.add_device(parser)
    common.add_amp(parser, default=False, default_text="off (embeddings are cached per precision)")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings written to --out")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the embedding cache")
    parser.add_argument("--out", type=Path, default=None, help="also write the embeddings to FILE.npy "
                        "(with several models: FILE-<model>.npy); its folder is created")
    common.add_progress(parser)


def run(args: argparse.Namespace) -> int:
    import io

    import numpy as np

    from blender_addon.core.errors import CarprobeError
    from blender_addon.core.render_set import atomic_write_bytes

    from ..data import RenderSetData
    from ..embed import embed_render_set, embedding_cache_path
    from ..models import describe_model, resolve_device
    from ._embeddings import load_models

    if args.batch_size < 1:
        raise CarprobeError(f"--batch-size {args.batch_size}: must be >= 1")
    if args.out is not None and args.out.suffix != ".npy":
        raise CarprobeError(f"--out {args.out}: must end in .npy")
    device = resolve_device(args.device)
    data = RenderSetData(args.set)
    amp = args.amp and device.type == "cuda"
    if args.amp and not amp:
        print("--amp ignored: mixed precision is used on CUDA only")
    for model in load_models(args.models, args, preprocess=args.preprocess, lazy=True):
        print(describe_model(model))
        cached = embedding_cache_path(data, model, amp)
        hit = not args.no_cache and cached.is_file()
        embeddings = embed_render_set(data, model, batch_size=args.batch_size, num_workers=args.workers,
                                      device=device, amp=amp, progress=args.progress, cache=not args.no_cache,
                                      normalize=args.normalize)
        print(f"{len(data)} images -> embeddings {embeddings.shape[0]} x {embeddings.shape[1]} on {device}"
              + ("" if args.no_cache else f" ({'reused' if hit else 'cached at'} {cached})"))
        if args.out is not None:
            out = args.out if len(args.models) == 1 else args.out.with_name(f"{args.out.stem}-{model.name}.npy")
            buffer = io.BytesIO()
            np.save(buffer, embeddings)
            common.output_folder(out.parent)
            atomic_write_bytes(out, buffer.getvalue())
            print(f"wrote {out}")
    return 0
