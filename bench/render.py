"""Render benchmark: pipeline overhead, worker scaling and memory growth, paired and interleaved.

1. Overhead: per-image time of the full pipeline (core.render_set.render_samples with
   blender.render's renderer: apply_row, render, mask pass, temporary files, batched fsyncs,
   journal) versus a bare bpy loop over the same rows in the same process (apply_row, then
   ``bpy.ops.render.render(write_still=True)`` to a plain file). Both sides build the same scenes,
   so the difference is carprobe's own per-image cost. Each round runs both sides, alternating
   which goes first; the per-round ratio pipeline / bare is the measurement.
   Goal: overhead < 5 % at 64 px, 8 samples (the defaults), with masks off and on. `--burn N`
   (auto: one per core) runs the rounds while N busy processes share the machine.
2. Worker scaling (--scaling): ``carprobe render`` in fresh processes, as a user runs it: one
   process (Cycles on every core) versus N workers with each candidate thread split per worker
   (--threads T, and auto = every core in each worker), all interleaved in rounds (the order
   rotates). Per round: speed-up = one process's wall time / the workers' wall time, including
   Blender's start-up. Goal: N workers >= 0.9 N x one process, for the 128 px quick spec and at
   --size 224. The split carprobe picks by default (commands.render.worker_threads) is marked.
3. Memory (--memory-n > 20): RSS growth over that many renders of varying samples (car, paint,
   lights, background) in one process, after 20 warm-up renders. Target: < 50 MB.

Each part prints the load average, the CPU seconds of each side (user + system; system alone
shows Cycles busy-waiting), per-round ratios (min / median / max) and a verdict that holds only
when every round agrees; on a loaded machine disagreeing rounds read "too loaded to conclude".

Usage: python bench/render.py [--n 12] [--size 64] [--samples 8] [--rounds 5] [--memory-n 0] [--burn auto]
       python bench/render.py --scaling [--spec scenes/quick.toml] [--size 224] [--limit 24]
                              [--workers 2 4] [--rounds 3]
Exits 0 either way (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from blender_addon.commands.render import blender_output_to  # noqa: E402  (Blender's log off stdout)
from blender_addon.core.spec import parse_spec  # noqa: E402
from paired import CpuBurner, Timed, is_loaded, load_average, load_line, spread, usable_cores, verdict  # noqa: E402

OVERHEAD_GOAL = 1.05  # pipeline / bare
SCALING_GOAL = 0.9  # x N


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


def bare_loop(spec, n: int, tmp: Path) -> None:
    """What a user's own script would do: build each row's scene and render it to a file."""
    import bpy

    from blender_addon.blender import render as render_mod
    from blender_addon.blender import scene as scene_mod
    from blender_addon.core.sampling import sample_row

    scene = bpy.context.scene
    for index in range(n):
        scene_mod.apply_row(sample_row(spec, index), spec)
        render_mod._set_mask_compositor(scene, None)
        scene.render.use_compositing = False
        scene.render.filepath = str(tmp / f"bare-{index}.png")
        bpy.ops.render.render(write_still=True)


def pipeline(spec, out: Path, durability: list[float] | None = None) -> None:
    """render_samples into `out`; adds to `durability` the seconds the render thread spent in
    journal commits (fsyncs, renames; most run beside the next render, see Journal)."""
    import bpy

    from blender_addon.blender import render as render_mod
    from blender_addon.core import render_set

    originals = {name: getattr(render_set.Journal, name) for name in ("commit", "commit_in_background")}

    def timed(method):
        def run(journal):
            t = time.perf_counter()
            try:
                method(journal)
            finally:
                if durability is not None:
                    durability.append(time.perf_counter() - t)
        return run

    for name, method in originals.items():
        setattr(render_set.Journal, name, timed(method))
    try:
        render_set.render_samples(spec, out, render_mod.make_image_renderer(spec), progress=False,
                                  blender_version=bpy.app.version_string)
    finally:
        for name, method in originals.items():
            setattr(render_set.Journal, name, method)


def overhead(args, load_before: float) -> None:
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    print(f"overhead: Blender {bpy.app.version_string}, Cycles CPU, {args.size}x{args.size} px, "
          f"{args.samples} samples, {args.n} images per side, {args.rounds} rounds, {args.burn} burner processes")
    # first-use costs (kernels, HDRI files) on neither side
    with tempfile.TemporaryDirectory() as tmp, blender_output_to(Path(tmp) / "blender.log"):
        warm = make_spec(3, args.size, args.samples, True, seed=99)
        pipeline(warm, Path(tmp) / "warm")
        bare_loop(warm, 3, Path(tmp))
    loaded = is_loaded(load_before) or args.burn > 0
    for masks in (False, True):
        spec = make_spec(args.n, args.size, args.samples, masks)
        bare, ours = Timed(), Timed()
        durability: list[float] = []
        with tempfile.TemporaryDirectory() as tmp, blender_output_to(Path(tmp) / "blender.log"), \
                CpuBurner(args.burn):
            for r in range(args.rounds):
                out = Path(tmp) / f"set-{r}"
                sides = [(bare, lambda: bare_loop(spec, args.n, Path(tmp))),
                         (ours, lambda: pipeline(spec, out, durability))]
                for timed, fn in sides if r % 2 == 0 else sides[::-1]:
                    timed.run(fn)
        wall = [o / b for o, b in zip(ours.wall, bare.wall)]
        cpu = [o / b for o, b in zip(ours.cpu, bare.cpu)]
        per = lambda xs: 1000 * sum(xs) / (len(xs) * args.n)  # noqa: E731 ms per image
        print(f"masks={'on ' if masks else 'off'}: bare {per(bare.wall):6.1f} ms/img (CPU {per(bare.cpu):6.1f}, "
              f"sys {per(bare.system):5.1f}), pipeline {per(ours.wall):6.1f} ms/img (CPU {per(ours.cpu):6.1f}, "
              f"sys {per(ours.system):5.1f}); of which the render thread waited on journal commits (fsyncs, renames) "
              f"{1000 * sum(durability) / (args.rounds * args.n):.1f} ms/img")
        for name, ratios in (("wall", wall), ("CPU", cpu)):
            print(f"  pipeline / bare {name} time per round: {spread(ratios)}; goal <= {OVERHEAD_GOAL:.2f}: "
                  f"{verdict(ratios, OVERHEAD_GOAL, higher_is_better=False, loaded=loaded)}")


def sized_spec(spec_path: Path, size: int | None, folder: Path) -> Path:
    """The spec file, with width and height set to `size` when given."""
    if size is None:
        return spec_path
    from blender_addon.core.spec import dumps_toml

    data = tomllib.loads(spec_path.read_text(encoding="utf-8"))
    data.setdefault("render", {}).update(width=size, height=size)
    path = folder / f"{spec_path.stem}-{size}.toml"
    path.write_text(dumps_toml(data), encoding="utf-8")
    return path


def thread_splits(workers: int, cores: int) -> list[int | str]:
    """Candidate Cycles threads per worker: 1, a fair share, 2, and auto (every core)."""
    fixed = sorted({1, max(1, cores // workers), min(2, cores)})
    return [*fixed, "auto"]


def scaling(args, load_before: float) -> None:
    from blender_addon.commands.render import worker_threads

    cores = usable_cores()
    workers = args.workers or [cores]
    with tempfile.TemporaryDirectory() as tmp:
        spec = sized_spec(Path(args.spec), args.size, Path(tmp))
        limit = args.limit or 8 * max(workers)
        configs: list[tuple[str, list[str]]] = [("1 process, auto threads", ["--workers", "1"])]
        default_mark = {}
        for n in workers:
            default = worker_threads(n)
            for t in thread_splits(n, cores):
                label = f"{n} workers x {t} threads"
                default_mark[label] = (t == "auto" and default is None) or t == default
                configs.append((label, ["--workers", str(n), "--threads", str(t)]))
        print(f"scaling: {spec.name} (--size {args.size or 'as in the spec'}), {limit} images per run, "
              f"{args.rounds} rounds, {cores} usable cores; speed-up = one process's wall / the run's wall")
        timed = {label: Timed(children=True) for label, _ in configs}
        steady: dict[str, list[float]] = {label: [] for label, _ in configs}
        for r in range(args.rounds):
            order = configs[r % len(configs):] + configs[:r % len(configs)]  # rotate who goes first
            for label, extra in order:
                out = Path(tmp) / f"{len(timed[label].wall)}-{label.replace(' ', '_')}"
                cmd = [sys.executable, "-m", "blender_addon.commands.render", str(spec), "--out", str(out),
                       "--limit", str(limit), "--no-progress", *extra]
                result = timed[label].run(subprocess.run, cmd, cwd=REPO, capture_output=True, text=True)
                if result.returncode != 0:
                    print(f"{label}: exit {result.returncode}\n{result.stderr[-2000:]}")
                    return
                steady[label].append(steady_rate(out))
            print(f"  round {r + 1}: " + ", ".join(f"{label} {timed[label].wall[-1]:.1f} s" for label, _ in configs),
                  flush=True)
        single = timed[configs[0][0]]
        # Workers can only scale onto cores one process leaves idle: when one process got less
        # than half the machine, other work held the cores and the runs say nothing about scaling.
        single_cores = sum(single.cpu) / sum(single.wall)
        loaded = is_loaded(load_before)
        starved = loaded and single_cores < 0.5 * cores
        for label, extra in configs:
            t = timed[label]
            cores_used = sum(t.cpu) / sum(t.wall)
            runs = len(t.wall) * limit
            cpu = (f"CPU {sum(t.cpu) / runs:.2f} s/img (sys {sum(t.system) / runs:.2f}), "
                   f"{cores_used:.2f} of {cores} cores busy")
            if label == configs[0][0]:
                print(f"{label}: median {statistics.median(t.wall):.1f} s per run, {cpu}")
                continue
            n = int(extra[1])
            goal = SCALING_GOAL * n
            ends = [s / w for s, w in zip(single.wall, t.wall)]
            rates = [w / s for s, w in zip(steady[configs[0][0]], steady[label])]
            print(f"{label}{' (carprobe default)' if default_mark[label] else ''}: {cpu}")
            print(f"  speed-up end to end (with start-up): {spread(ends)}")
            said = verdict(rates, goal, higher_is_better=True, loaded=loaded)
            if starved and not said.startswith("MEETS"):
                said = f"TOO LOADED TO CONCLUDE (one process got {single_cores:.2f} of {cores} cores)"
            print(f"  speed-up steady (image rate, start-up excluded): {spread(rates)}; goal >= {goal:.2f}: {said}")


def steady_rate(out: Path) -> float:
    """Images per second between the first and the last image written (file times): the rate
    of a long render, without Blender's start-up."""
    times = sorted(p.stat().st_mtime for p in (out / "images").glob("*.png"))
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 and times[-1] > times[0] else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="images per side and round (overhead)")
    ap.add_argument("--size", type=int, help="image side in px (overhead default 64; scaling: the spec's)")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5; scaling 3)")
    ap.add_argument("--scaling", action="store_true", help="measure render workers instead of the overhead")
    ap.add_argument("--spec", default=str(REPO / "scenes" / "quick.toml"), help="spec for --scaling")
    ap.add_argument("--limit", type=int, help="images per --scaling run (default 8 x the most workers)")
    ap.add_argument("--workers", type=int, nargs="+", help="worker counts for --scaling (default: usable cores)")
    ap.add_argument("--memory-n", type=int, default=0, help="renders for the memory check (0: skip)")
    ap.add_argument("--memory-size", type=int, default=32)
    ap.add_argument("--burn", default="0", help="busy processes during the overhead rounds (auto: one per core)")
    args = ap.parse_args(argv)
    args.burn = usable_cores() if args.burn == "auto" else int(args.burn)
    load_before = load_average()
    print(load_line(load_before))
    if args.scaling:
        args.rounds = args.rounds or 3
        scaling(args, load_before)
    else:
        args.rounds = args.rounds or 5
        args.size = args.size or 64
        overhead(args, load_before)
        if args.memory_n > 20:  # fewer cannot be measured past the warm-up
            memory(args)
    print(load_line(load_before))
    return 0


def memory(args) -> None:
    """One process, many different samples: RSS growth after a warm-up."""
    import bpy

    from blender_addon.blender import render as render_mod
    from blender_addon.core import render_set

    n = args.memory_n
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


if __name__ == "__main__":
    sys.exit(main())
