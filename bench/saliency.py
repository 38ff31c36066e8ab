"""Saliency benchmark: overhead of our `attribute` verb over bare forward+backward passes.

Integrated Gradients (default 32 steps, 224 px, ResNet-50 with random weights, target = distance
to the black image's embedding) through ``analysis.saliency.methods.attribute`` versus the
bare throughput of the same model in the same run: the same number of evaluations
(images x steps) in the same batch sizes, each a forward pass of the same explained scalar and
``torch.autograd.grad`` to the input. The two are timed alternately, after a warm-up; the
ratio is taken per repeat (min / median / max), with CPU time per side, the load average and
a verdict that says when the machine was too loaded to conclude. Target: overhead < 10 %.

Usage: python bench/saliency.py [--images 1] [--steps 32] [--size 224] [--arch resnet50]
       [--internal-batch-size 16] [--repeats 4] [--device cpu|cuda] [--threads N]
Defaults take about 4 minutes on 2 CPU cores; on a GPU try --device cuda --images 16 --repeats 5.
Prints the numbers and the ratio; exits 0 either way (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from paired import Timed, compare, load_average  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1, help="maps per timed call")
    parser.add_argument("--steps", type=int, default=32, help="Integrated Gradients steps")
    parser.add_argument("--size", type=int, default=224, help="input side in pixels")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--internal-batch-size", type=int, default=16, help="evaluations per forward pass")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)

    import torch

    from analysis.models import build_model, resolve_device
    from analysis.saliency import methods, targets

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = build_model(args.arch, dim=128, random_init=True).eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)  # both sides differentiate to the input only
    images = torch.randn(args.images, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    images = images.to(device)
    target = targets.baseline_target(model, images)
    evals = args.images * args.steps
    ibs = args.internal_batch_size

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def bare() -> None:
        # the same evaluations as IG: every (image, step) input, in batches of `ibs`
        alphas = torch.linspace(0, 1, args.steps, device=device)
        black = targets.black_image(model, images)
        for start in range(0, evals, ibs):
            k = torch.arange(start, min(start + ibs, evals), device=device)
            img, step = k // args.steps, k % args.steps
            x = (black + alphas[step].view(-1, 1, 1, 1) * (images[img] - black)).requires_grad_(True)
            score = target.score(model, x, target.anchors[img])
            (grad,) = torch.autograd.grad(score.sum(), x)
            grad.mean().item()  # the result must reach the host, as the maps do
        sync()

    def ours() -> None:
        methods.attribute(model, images, "ig", target, n_steps=args.steps, internal_batch_size=ibs)
        sync()

    def timed(fn) -> float:
        sync()
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    print(f"device {device}, {args.arch} random init, {args.size} px, IG {args.steps} steps, "
          f"{args.images} image(s) per call = {evals} evaluations in batches of {ibs}, "
          f"{torch.get_num_threads()} CPU threads")
    load_before = load_average()
    timed(bare), timed(ours)  # warm-up (allocator, kernels, captum import)
    t_bare, t_ours = Timed(), Timed()
    for r in range(args.repeats):
        # Alternate which side goes first: on a shared 2-core box the second of a pair is often slower.
        for side, fn in ((t_bare, bare), (t_ours, ours))[::1 if r % 2 == 0 else -1]:
            sync()
            side.run(fn)
        print(f"  repeat {r + 1}: bare {t_bare.wall[-1]:.3f} s, attribute {t_ours.wall[-1]:.3f} s, "
              f"ratio {t_ours.wall[-1] / t_bare.wall[-1]:.3f}")
    bare_s, ours_s = statistics.median(t_bare.wall), statistics.median(t_ours.wall)
    print(f"bare forward+backward: {args.images / bare_s:.3f} maps/s ({evals / bare_s:.1f} evaluations/s)")
    print(f"attribute (IG):        {args.images / ours_s:.3f} maps/s")
    compare("attribute / bare (target: overhead < 10 %)", "attribute", t_ours, "bare", t_bare, 1.10,
            higher_is_better=False, load_before=load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
