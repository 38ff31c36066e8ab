"""Render benchmark: pipeline overhead and memory growth in one Blender process.

1. Overhead: per-image time of the full pipeline (core.render_set.render_samples with
   blender.render's renderer: apply_row, render, mask pass, atomic renames, journal) versus a bare
   ``bpy.ops.render.render(write_still=True)`` of the same scenes in the same process (the scene
   is set up untimed before each bare render). Target: overhead < 10 %.
2. Memory: RSS growth over 200 renders of varying samples (car, paint, lights, background) in one
   process, after 20 warm-up renders. Target: < 50 MB.

Usage: python bench/render.py [--n 16] [--size 128] [--samples 16] [--memory-n 200]
Prints the numbers and ratios; exits 0 either way (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bpy  # noqa: E402

from blender_addon.blender import render as render_mod  # noqa: E402
from blender_addon.blender import scene as scene_mod  # noqa: E402
from blender_addon.core import render_set  # noqa: E402
from blender_addon.core.sampling import sample_row  # noqa: E402
from blender_addon.core.spec import parse_spec  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def make_spec(n: int, size: int, samples: int, masks: bool, seed: int = 1):
    return parse_spec({
        "schema": 1, "name": "bench", "design": {"kind": "random", "count": n, "seed": seed},
        "render": {"width": size, "height": size, "samples": samples, "masks": masks},
        "car": {"body": {"choice": ["sedan", "hatchback", "suv", "coupe", "wagon", "van", "pickup"]},
                "shape_seed": {"choice": list(range(20))}},
        "paint": {"color": {"choice": ["red", "blue", "white", "black", "green"]},
                  "metallic": {"uniform": [0.0, 1.0]}},
        "lighting": {"kind": {"choice": ["sun", "hdri", "studio"]}, "sun_azimuth": {"uniform": [0, 360]}},
        "camera": {"azimuth": {"uniform": [0, 360]}, "elevation": {"uniform": [5, 30]}},
        "background": {"kind": {"choice": ["color", "sky", "hdri"]}},
    })


def overhead(spec, n: int, tmp: Path) -> tuple[float, float]:
    """(bare seconds per image, pipeline seconds per image), measured interleaved.

    Inside one render_samples run, before each pipeline render a bare render of the same row is
    timed (scene set up untimed, compositor off); then the previous row's scene is applied
    again, so the pipeline's own apply_row really has to change the scene. The time spent on
    those extra steps is subtracted from the run. Interleaving cancels drifts in machine load.
    """
    scene = bpy.context.scene
    inner = render_mod.make_image_renderer(spec)
    bare: list[float] = []
    excluded: list[float] = []
    prev: list[dict] = [sample_row(spec, n - 1)]

    def with_bare(row, image_path, mask_path):
        t0 = time.perf_counter()
        scene_mod.apply_row(row, spec)
        render_mod._set_mask_compositor(scene, None)
        scene.render.use_compositing = False
        scene.render.filepath = str(tmp / "bare.png")
        t = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        bare.append(time.perf_counter() - t)
        scene_mod.apply_row(prev[0], spec)
        prev[0] = row
        excluded.append(time.perf_counter() - t0)
        inner(row, image_path, mask_path)

    t = time.perf_counter()
    render_set.render_samples(spec, tmp / "set", with_bare, progress=False,
                              blender_version=bpy.app.version_string)
    total = time.perf_counter() - t - sum(excluded)
    return sum(bare) / n, total / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="images per overhead run")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--memory-n", type=int, default=200)
    ap.add_argument("--memory-size", type=int, default=32)
    args = ap.parse_args(argv)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    print(f"Blender {bpy.app.version_string}, Cycles CPU, {args.size}x{args.size} px, {args.samples} samples, "
          f"{args.n} images per run")

    # Warm up caches (kernels, HDRI files) so neither side pays first-use costs.
    with tempfile.TemporaryDirectory() as tmp:
        overhead(make_spec(3, args.size, args.samples, True, seed=99), 3, Path(tmp))
    for masks in (False, True):
        spec = make_spec(args.n, args.size, args.samples, masks)
        with tempfile.TemporaryDirectory() as tmp:
            per_bare, per_full = overhead(spec, args.n, Path(tmp))
        print(f"masks={'on ' if masks else 'off'}: bare render {per_bare * 1000:7.1f} ms/img, "
              f"pipeline {per_full * 1000:7.1f} ms/img, ratio {per_full / per_bare:.3f} "
              f"(overhead {100 * (per_full / per_bare - 1):+.1f} %, target < 10 %)")

    # Memory: one process, many different samples.
    n = args.memory_n
    if n <= 20:
        return 0  # --memory-n 0 (or too few to measure past the warm-up): overhead only
    spec = make_spec(n, args.memory_size, 1, True, seed=7)
    render_image = render_mod.make_image_renderer(spec)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mem"
        warm = 20
        render_set.render_samples(spec, out, render_image, indices=range(warm), progress=False,
                                  blender_version=bpy.app.version_string)
        before = rss_mb()
        t = time.perf_counter()
        render_set.render_samples(spec, out, render_image, indices=range(n), progress=False,
                                  blender_version=bpy.app.version_string)
        after = rss_mb()
        dt = time.perf_counter() - t
    print(f"memory: RSS {before:.1f} MB after {warm} warm-up renders, {after:.1f} MB after {n}; "
          f"growth {after - before:+.1f} MB over {n - warm} renders (target < 50 MB), "
          f"{1000 * dt / (n - warm):.0f} ms/img at {args.memory_size} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
