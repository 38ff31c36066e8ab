"""Throughput of analysis.embed.embed_paths against a bare torch loop over the same images.

Both use the same model, images, batch size, DataLoader settings (workers, pinned memory,
prefetch) and device, in the same run; rounds alternate which side goes first. Prints the
per-round time ratio embed_paths/bare (min / median / max), CPU time per side, the load average
and a verdict that says when the machine was too loaded to conclude. Target: embed_paths within
10% of the bare loop (time ratio <= 1/0.90).

    .venv/bin/python bench/embed.py                       # ~1-2 min on 2 CPU cores
    .venv/bin/python bench/embed.py --images 4096 --size 512 --arch resnet50 --input 224 \
        --batch-size 128 --device cuda --amp              # a GPU run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from paired import Timed, compare, load_average  # noqa: E402


def write_images(folder: Path, count: int, size: int, seed: int = 0) -> list[Path]:
    """Random smooth-ish RGB PNGs (noise on a gradient: PNG decoding costs about what renders cost)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 160, size, dtype=np.float32)
    paths = []
    for i in range(count):
        base = ramp[None, :, None] + ramp[:, None, None] * rng.uniform(0, 1, 3)[None, None, :]
        pixels = np.clip(base + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{i:06d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


class BareDataset:
    """What a user would write by hand: open, convert, transform."""

    def __init__(self, paths, transform):
        self.paths, self.transform = [str(p) for p in paths], transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))


def bare_loop(paths, model, batch_size, workers, device, amp) -> np.ndarray:
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(BareDataset(paths, model.preprocess.transform()), batch_size=batch_size, shuffle=False,
                        num_workers=workers, pin_memory=device.type == "cuda",
                        prefetch_factor=4 if workers else None)
    out = []
    with torch.inference_mode():
        for batch in loader:
            x = batch.to(device, non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp and device.type == "cuda"):
                y = model(x)
            out.append(y.float().cpu().numpy())
    return np.concatenate(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--size", type=int, default=160, help="side of the generated PNGs")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--input", type=int, default=128, help="model input side (centre crop)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds per method (after one warm-up)")
    parser.add_argument("--images-dir", type=Path, default=None, help="use (and fill) this folder instead of a temp dir")
    args = parser.parse_args(argv)

    import torch

    from analysis.embed import auto_workers, embed_paths
    from analysis.models import build_model, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    workers = auto_workers(args.images, args.batch_size) if args.workers == "auto" else int(args.workers)
    torch.manual_seed(0)
    resize = max(args.input, int(round(args.input * 256 / 224)))
    model = build_model(args.arch, dim=128, random_init=True,
                        preprocess={"resize": resize, "crop": args.input}).to(device).eval()
    with tempfile.TemporaryDirectory(prefix="carprobe-bench-embed-") as tmp:
        folder = args.images_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        paths = sorted(folder.glob("*.png"))[: args.images]
        if len(paths) < args.images:
            paths = write_images(folder, args.images, args.size)
        print(f"{len(paths)} PNGs {args.size}px ready in {time.perf_counter() - start:.1f}s; {args.arch} at "
              f"{args.input}px, batch {args.batch_size}, {workers} workers, {device}"
              f"{', amp' if args.amp and device.type == 'cuda' else ''}, torch threads {torch.get_num_threads()}")

        def run_bare():
            return bare_loop(paths, model, args.batch_size, workers, device, args.amp)

        def run_embed():
            return embed_paths(paths, model, batch_size=args.batch_size, num_workers=workers, device=device,
                               amp=args.amp, progress=False)

        load_before = load_average()
        # warm-up (allocator, cudnn autotuning, page cache), and a check that both compute the same
        reference, ours = run_bare(), run_embed()
        tolerance = 2e-2 if args.amp else 1e-4
        if not np.allclose(reference, ours, rtol=tolerance, atol=tolerance):
            print(f"MISMATCH: max |diff| {np.abs(reference - ours).max():.3g}", file=sys.stderr)
            return 1
        timed = {"bare": Timed(), "embed_paths": Timed()}
        for r in range(args.rounds):
            # alternate which side goes first: on a shared machine the second is often slower
            for name, fn in (("bare", run_bare), ("embed_paths", run_embed))[::1 if r % 2 == 0 else -1]:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                timed[name].run(lambda: (fn(), torch.cuda.synchronize() if device.type == "cuda" else None))
            print(f"  round {r + 1}: bare {timed['bare'].wall[-1]:.2f} s, embed_paths {timed['embed_paths'].wall[-1]:.2f} s",
                  flush=True)
    for name, t in timed.items():
        print(f"{name:>12}: {len(paths) / statistics.median(t.wall):8.1f} images/s (median of {args.rounds})")
    # CPU time: this process only; with --workers > 0 the image decoding runs in worker processes
    compare("embed_paths / bare time (target: overhead < 10 %)", "embed_paths", timed["embed_paths"], "bare",
            timed["bare"], 1 / 0.90, higher_is_better=False, load_before=load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
