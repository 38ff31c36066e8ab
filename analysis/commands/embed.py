"""`carprobe embed SET --model M`: embed every image of a render set (cached per model and set)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("set", help="render set folder (holds dataset.json and metadata.csv)")
    parser.add_argument("--model", required=True,
                        help="carprobe checkpoint (.pt), TorchScript file, reality-check experiment folder, "
                             "or torchvision:<arch>[:dim] (e.g. torchvision:resnet50:128)")
    parser.add_argument("--random-init", action="store_true",
                        help="torchvision:<arch> without pretrained weights (untrained trunk)")
    parser.add_argument("--preprocess", default=None,
                        help="override the model's preprocessing: a preset (imagenet, bninception, "
                             "reality-check) or a JSON file; TorchScript files default to imagenet")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", default="auto", help="DataLoader worker processes ('auto' or a number)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:N")
    parser.add_argument("--amp", action="store_true", help="float16 mixed precision (CUDA only)")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings written to --out")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the embedding cache")
    parser.add_argument("--out", type=Path, default=None, help="also write the embeddings to FILE.npy")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from blender_addon.core.errors import CarprobeError
    from blender_addon.core.render_set import atomic_write_bytes

    from ..data import RenderSetData
    from ..embed import embed_render_set, embedding_cache_path
    from ..models import describe_model, load_model, resolve_device
    from ._embeddings import parse_workers

    workers = parse_workers(args.workers)
    if args.batch_size < 1:
        raise CarprobeError(f"--batch-size {args.batch_size}: must be >= 1")
    if args.out is not None and args.out.suffix != ".npy":
        raise CarprobeError(f"--out {args.out}: must end in .npy")
    device = resolve_device(args.device)
    data = RenderSetData(args.set)
    model = load_model(args.model, random_init=args.random_init, preprocess=args.preprocess)
    print(describe_model(model))
    amp = args.amp and device.type == "cuda"
    if args.amp and not amp:
        print("--amp ignored: mixed precision is used on CUDA only")
    cached = embedding_cache_path(data, model, amp)
    hit = not args.no_cache and cached.is_file()
    embeddings = embed_render_set(data, model, batch_size=args.batch_size, num_workers=workers, device=device,
                                  amp=amp, progress=not args.quiet, cache=not args.no_cache,
                                  normalize=args.normalize)
    print(f"{len(data)} images -> embeddings {embeddings.shape[0]} x {embeddings.shape[1]} on {device}"
          + ("" if args.no_cache else f" ({'reused' if hit else 'cached at'} {cached})"))
    if args.out is not None:
        import io

        buffer = io.BytesIO()
        np.save(buffer, embeddings)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.out, buffer.getvalue())
        print(f"wrote {args.out}")
    return 0
