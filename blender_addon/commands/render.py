"""`carprobe render SPEC --out DIR [--limit N] [--shard K/N] [--workers N]`: render a render set.

Which samples: the first ``--limit`` samples (default all), then this job's shard of them
(``--shard K/N``, 1-based, or from SLURM / Kubernetes Indexed Job variables; see core/shard.py).

``--workers N`` starts N Blender processes, each rendering every N-th of those indices into the
same folder (each with its own journal); the parent shows their combined progress from the
journals, forwards Ctrl-C (workers finish their current image's bookkeeping and stop), then
rebuilds metadata.csv and dataset.json. Worker output goes to DIR/.carprobe/logs/worker-W.log.
Under the bpy wheel a worker is ``python -m blender_addon.commands.render ... --worker-slice W/N``;
inside Blender it is ``blender -b --factory-startup --python-expr ...`` with the same arguments.
Each worker gets ``--threads`` = usable cores // N (Cycles would otherwise start one thread per
core in every worker and oversubscribe the CPU); a single process uses every core.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..core import render_set
from ..core.errors import CarprobeError
from ..core.progress import Progress
from ..core.sampling import sample_count
from ..core.shard import parse_shard, shard_from_env, shard_indices
from ..core.spec import load_spec

PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # folder that holds blender_addon/
POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="dataset spec (TOML)")
    parser.add_argument("--out", required=True, help="render-set folder (created; reruns resume)")
    parser.add_argument("--limit", type=int, help="render only the first N samples")
    parser.add_argument("--shard", help="render shard K of N (K is 1-based, e.g. 3/8); default from "
                        "SLURM_ARRAY_TASK_ID/COUNT or JOB_COMPLETION_INDEX + CARPROBE_SHARD_COUNT")
    parser.add_argument("--workers", type=int, default=1, help="Blender processes to run in parallel")
    parser.add_argument("--threads", type=int, help="Cycles threads per Blender process (default: every "
                        "usable core; with --workers N, usable cores // N)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or log lines")
    parser.add_argument("--worker-slice", help=argparse.SUPPRESS)  # internal: W/N of a parent's workers


def planned_indices(total: int, limit: int | None, shard: tuple[int, int] | None) -> list[int]:
    """The first `limit` samples, then the shard's part of them."""
    if limit is not None and limit < 1:
        raise CarprobeError(f"--limit {limit}: must be at least 1")
    count = total if limit is None else min(limit, total)
    return list(shard_indices(count, *shard)) if shard else list(range(count))


def usable_cores() -> int:
    """Cores this process may run on (a SLURM or container CPU set, not the whole machine)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity on macOS / Windows
        return max(1, os.cpu_count() or 1)


def worker_threads(workers: int, threads: int | None = None) -> int:
    """Cycles threads of each of `workers` processes: `threads` if given, else a fair share."""
    return threads if threads else max(1, usable_cores() // workers)


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise CarprobeError(f"--workers {args.workers}: must be at least 1")
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise CarprobeError(f"--threads {threads}: must be at least 1 (leave it out to use every core)")
    spec = load_spec(args.spec)
    shard = parse_shard(args.shard) if args.shard else shard_from_env()
    indices = planned_indices(sample_count(spec), args.limit, shard)
    out = Path(args.out)

    if args.worker_slice:
        worker, count = parse_shard(args.worker_slice)
        return _render_here(spec, out, indices[worker - 1::count], progress=False, shard=shard, quiet=True,
                            threads=threads)
    if args.workers == 1 or len(indices) <= 1:
        return _render_here(spec, out, indices, progress=not args.no_progress, shard=shard, threads=threads)
    return _render_with_workers(args, spec, out, indices, shard, min(args.workers, len(indices)))


def _render_here(spec, out: Path, indices: list[int], progress: bool, shard, quiet: bool = False,
                 threads: int | None = None) -> int:
    from ..blender.render import render_spec  # bpy only here

    result = render_spec(spec, out, indices, progress, shard=shard, threads=threads)
    if not quiet:
        print(f"{out}: {result.complete}/{result.total} images complete ({result.rendered} rendered now, "
              f"{result.skipped} already there)")
    return 0


def worker_command(args: argparse.Namespace, worker: int, count: int) -> list[str]:
    """The command line of worker `worker` (1-based) of `count`."""
    argv = [str(Path(args.spec).resolve()), "--out", str(Path(args.out).resolve()),
            "--worker-slice", f"{worker}/{count}"]
    if args.limit is not None:
        argv += ["--limit", str(args.limit)]
    if args.shard:
        argv += ["--shard", args.shard]
    if getattr(args, "threads", None):
        argv += ["--threads", str(args.threads)]
    blender = _blender_binary()
    if blender is None:  # the bpy wheel (or a plain Python that has it)
        return [sys.executable, "-m", "blender_addon.commands.render", *argv]
    expr = ("import sys; sys.path.insert(0, {parent!r}); "
            "from blender_addon.commands import render; "
            "sys.exit(render.main(sys.argv[sys.argv.index('--') + 1:]))").format(parent=str(PACKAGE_PARENT))
    return [blender, "-b", "--factory-startup", "--python-expr", expr, "--", *argv]


def _blender_binary() -> str | None:
    """Blender's executable when running inside the Blender application, else None."""
    bpy = sys.modules.get("bpy")
    path = getattr(getattr(bpy, "app", None), "binary_path", "") if bpy else ""
    return path or None


def _render_with_workers(args, spec, out: Path, indices: list[int], shard, count: int) -> int:
    render_set.prepare_folder(spec, out)  # refuse a foreign folder before starting anyone
    log_dir = out / render_set.LOG_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_PARENT), env.get("PYTHONPATH", "")) if p)
    for name in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"):
        env.pop(name, None)  # the parent already resolved the shard; workers get it as --shard
    shard_arg = f"{shard[0]}/{shard[1]}" if shard else None
    worker_args = argparse.Namespace(spec=args.spec, out=args.out, limit=args.limit, shard=shard_arg,
                                     threads=worker_threads(count, getattr(args, "threads", None)))

    workers = []
    for w in range(1, count + 1):
        log = open(log_dir / f"worker-{w}.log", "wb")
        # own session: a terminal's Ctrl-C reaches only the parent, which forwards it once
        proc = subprocess.Popen(worker_command(worker_args, w, count), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        workers.append((w, proc, log))
    planned = set(indices)
    bar = Progress(len(planned), label=f"render {spec.name} ({count} workers)", enabled=not args.no_progress)
    previous_term = _term_as_interrupt()
    interrupted = False
    try:
        while any(proc.poll() is None for _, proc, _ in workers):
            bar.set(len(planned.intersection(render_set.journal_entries(out))))
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        interrupted = True
        _stop(workers)
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
        for _, proc, log in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    done = len(planned.intersection(render_set.completed_indices(out)))
    bar.set(done)
    bar.close()
    complete = render_set.finalize(spec, out, shard=shard)
    if interrupted:
        raise KeyboardInterrupt
    failed = [(w, proc.returncode) for w, proc, _ in workers if proc.returncode != 0]
    if failed:
        w, code = failed[0]
        log_path = log_dir / f"worker-{w}.log"
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise CarprobeError(f"{len(failed)} of {count} workers failed (worker {w}: exit code {code}; log "
                            f"{log_path}); {complete} images are complete, rerun to resume. Last lines of "
                            f"the log:\n{tail}")
    print(f"{out}: {complete}/{sample_count(spec)} images complete ({count} workers)")
    return 0


def _stop(workers) -> None:
    """Forward Ctrl-C to the workers and give them time to finish their bookkeeping."""
    for _, proc, _ in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for _, proc, _ in workers:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


def _term_as_interrupt():
    """Treat SIGTERM (SLURM scancel, kill) like Ctrl-C so workers are stopped, not orphaned."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def main(argv: list[str] | None = None) -> int:
    """Entry of a worker process (python -m blender_addon.commands.render ARGS)."""
    from ..cli import main as cli_main

    return cli_main(["render", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
