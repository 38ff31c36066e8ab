"""`carprobe render SPEC --out DIR [--limit N] [--shard K/N] [--workers N]`: render a render set.

Which samples: the first ``--limit`` samples (default all), then this job's shard of them
(``--shard K/N``, 1-based, or from SLURM / Kubernetes Indexed Job variables; see core/shard.py).

Ctrl-C (or SIGTERM) stops the render after the image in progress, keeps every finished image
and exits 130 (see core.interrupt: Blender would swallow it mid-image).

``--workers N`` starts N Blender processes, each rendering every N-th of those indices into the
same folder (each with its own journal); the parent shows their combined progress from the
journals, forwards Ctrl-C (workers finish their current image and stop), then rebuilds
metadata.csv and dataset.json. Workers share the parent's process group (a signal to the group
reaches them all) and stop when the parent dies. Blender's own log (``Fra:1 Mem …``,
``Saved: …``) goes to DIR/.carprobe/logs/ (render.log, or worker-W.log), and to the terminal
only with ``--verbose``.
Under the bpy wheel a worker is ``python -m blender_addon.commands.render ... --worker-slice W/N``;
inside Blender it is ``blender -b --factory-startup --python-expr ...`` with the same arguments.
Each worker gets ``--threads`` = usable cores // N but at least 2 (worker_threads: Cycles would
otherwise start one thread per core in every worker, and at one thread it busy-waits); a single
process uses every core.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..core import render_set
from ..core.interrupt import StopRequest, stop_requests
from . import common
from ..core.errors import CarprobeError
from ..core.progress import Progress
from ..core.sampling import sample_count
from ..core.shard import parse_shard, shard_from_env, shard_indices
from ..core.spec import load_spec

PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # folder that holds blender_addon/
POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 60.0
PARENT_PID_ENV = "CARPROBE_RENDER_PARENT_PID"  # set for workers: they stop when that process dies


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="dataset spec (TOML)")
    parser.add_argument("--out", required=True, help="render-set folder (created; reruns resume)")
    parser.add_argument("--limit", type=int, help="render only the first N samples")
    parser.add_argument("--shard", help="render shard K of N (K is 1-based, e.g. 3/8); default from "
                        "SLURM_ARRAY_TASK_ID/COUNT or JOB_COMPLETION_INDEX + CARPROBE_SHARD_COUNT")
    common.add_workers(parser, "Blender processes rendering in parallel",
                       "one process using every core", default=1)
    parser.add_argument("--threads", metavar="N|auto", help="Cycles threads per Blender process; auto = Cycles' "
                        "own choice, every core (default: auto for one process; with --workers N, see "
                        "worker_threads)")
    common.add_progress(parser)
    parser.add_argument("--verbose", action="store_true", help="show Blender's own log (otherwise only in "
                        "DIR/.carprobe/logs/)")
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


def parse_threads(value) -> int | str | None:
    """--threads: None (not given), 'auto' or a whole number >= 1."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 1:
        raise CarprobeError(f"--threads {value}: must be 'auto' or a whole number of at least 1 (leave it out "
                            "for the default)")
    return int(text)


MIN_WORKER_THREADS = 2


def worker_threads(workers: int, threads: int | str | None = None) -> int | None:
    """Cycles threads of each of `workers` processes: `threads` if given ('auto' gives None:
    Cycles' own choice), else a fair share of the usable cores but at least MIN_WORKER_THREADS.

    At one fixed thread Cycles (Blender 4.5) busy-waits: bench/render.py --scaling measured 2
    workers x 1 thread on 2 cores slowest of every split, with the most CPU (and system) time per
    image, and 2 threads each fastest; a share of 2+ threads avoids that mode at the price of at
    most 2x oversubscription when there are more workers than half the cores.
    """
    if threads is not None:
        return None if threads == "auto" else threads
    return max(MIN_WORKER_THREADS, usable_cores() // workers)


def run(args: argparse.Namespace) -> int:
    with stop_requests() as stop:  # before bpy loads: a KeyboardInterrupt during its start-up can crash it
        return _run(args, stop)


def _run(args: argparse.Namespace, stop: StopRequest) -> int:
    if args.workers == "auto":
        args.workers = 1  # Cycles already uses every core in one process
    if args.workers < 1:
        raise CarprobeError(f"--workers {args.workers}: must be at least 1")
    threads = parse_threads(getattr(args, "threads", None))
    fixed = None if threads in (None, "auto") else threads  # one process: Cycles' own choice unless given
    spec = load_spec(args.spec)
    shard = parse_shard(args.shard) if args.shard is not None else shard_from_env()  # "" is an error
    indices = planned_indices(sample_count(spec), args.limit, shard)
    out = Path(args.out)

    if args.worker_slice:
        worker, count = parse_shard(args.worker_slice)
        parent = os.environ.get(PARENT_PID_ENV)
        if parent and parent.isdigit():
            stop.die_with_parent(int(parent))
        # stdout is already the worker's log file: no redirection
        return _render_here(spec, out, indices[worker - 1::count], stop, progress=False, shard=shard,
                            quiet=True, threads=fixed, verbose=True, owner=False)  # the parent owns out
    if args.workers == 1 or len(indices) <= 1:
        return _render_here(spec, out, indices, stop, progress=args.progress, shard=shard,
                            threads=fixed, verbose=getattr(args, "verbose", False))
    return _render_with_workers(args, spec, out, indices, shard, min(args.workers, len(indices)), stop, threads)


def _render_here(spec, out: Path, indices: list[int], stop: StopRequest, progress: bool, shard,
                 quiet: bool = False, threads: int | None = None, verbose: bool = False,
                 owner: bool = True) -> int:
    # Own the folder (refuse a foreign or busy one) before writing a log into it; a run that
    # fails before its first image leaves it as it was found.
    claim = render_set.FolderClaim(spec, out, shard=shard) if owner else None
    try:
        log = contextlib.nullcontext(None) if verbose else blender_output_to(out / render_set.LOG_DIR / "render.log")
        with log as progress_stream:
            _temp_files_into(out)
            from ..blender.render import render_spec  # bpy only here

            if stop.requested():  # Ctrl-C while bpy loaded
                raise KeyboardInterrupt
            result = render_spec(spec, out, indices, progress, shard=shard, threads=threads, owner=False,
                                 progress_stream=progress_stream, stop_requested=stop.requested)
    except BaseException:
        if claim is not None:
            claim.discard_if_unused()
        raise
    finally:
        if claim is not None:
            claim.release()
    if not quiet:
        print(f"{out}: {result.complete}/{result.total} images complete ({result.rendered} rendered now, "
              f"{result.skipped} already there)")
    return 0


def _temp_files_into(out: Path) -> None:
    """Point Blender's session temp folder (read once, when bpy loads) into the set's scratch
    space: a killed render then leaves nothing in the system temp folder."""
    if "bpy" not in sys.modules:
        scratch = str(render_set.scratch_dir(out))
        for name in ("TMPDIR", "TEMP", "TMP"):
            os.environ[name] = scratch


@contextlib.contextmanager
def blender_output_to(log_path: Path):
    """Send everything written to stdout and stderr, Blender's C code included, to `log_path`
    (at the file-descriptor level: Blender prints with C stdio, not through sys.stdout). Yields
    a text stream on the real stderr, for the progress bar."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(log_path, "ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        with os.fdopen(os.dup(saved[1]), "w", buffering=1) as terminal:
            yield terminal
    finally:
        _flush_c_stdio()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _flush_c_stdio() -> None:
    """Flush C's stdout buffer (Blender's prints) before fd 1 changes back."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library handle (Windows): nothing buffered to lose
        pass


def worker_command(args: argparse.Namespace, worker: int, count: int) -> list[str]:
    """The command line of worker `worker` (1-based) of `count`."""
    argv = [str(Path(args.spec).resolve()), "--out", str(Path(args.out).resolve()),
            "--worker-slice", f"{worker}/{count}"]
    if args.limit is not None:
        argv += ["--limit", str(args.limit)]
    if args.shard:
        argv += ["--shard", args.shard]
    if getattr(args, "threads", None):  # None: the worker leaves Cycles on its own choice
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


def _render_with_workers(args, spec, out: Path, indices: list[int], shard, count: int, stop: StopRequest,
                         threads: int | str | None = None) -> int:
    # own the folder (refuse a foreign or busy one) before starting anyone; the workers don't lock
    claim = render_set.FolderClaim(spec, out, shard=shard)
    try:
        return _run_workers(args, spec, out, indices, shard, count, stop, claim, threads)
    finally:
        claim.release()


def _run_workers(args, spec, out: Path, indices: list[int], shard, count: int, stop: StopRequest,
                 claim: render_set.FolderClaim, threads: int | str | None) -> int:
    log_dir = out / render_set.LOG_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_PARENT), env.get("PYTHONPATH", "")) if p)
    env[PARENT_PID_ENV] = str(os.getpid())
    for name in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"):
        env.pop(name, None)  # the parent already resolved the shard; workers get it as --shard
    shard_arg = f"{shard[0]}/{shard[1]}" if shard else None
    worker_args = argparse.Namespace(spec=args.spec, out=args.out, limit=args.limit, shard=shard_arg,
                                     threads=worker_threads(count, threads))

    workers = []

    def forward_stop() -> None:
        # A `kill -INT` of the parent alone: pass it on at once; workers stop after their current image.
        for _, proc, _ in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)

    try:
        for w in range(1, count + 1):
            log = open(log_dir / f"worker-{w}.log", "wb")
            # Our process group: a terminal's Ctrl-C or a kill of the group reaches every worker.
            proc = subprocess.Popen(worker_command(worker_args, w, count), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env)
            workers.append((w, proc, log))
            if stop.requested():
                break
        stop.on_request = forward_stop
        if stop.requested():
            forward_stop()
        kill_at = time.monotonic() + STOP_GRACE_SECONDS
        planned = set(indices)
        bar = Progress(len(planned), label=f"render {spec.name} ({count} workers)", enabled=args.progress)
        while any(proc.poll() is None for _, proc, _ in workers):
            if not stop.requested():
                kill_at = time.monotonic() + STOP_GRACE_SECONDS
            elif time.monotonic() > kill_at:
                break  # workers that did not stop in time are killed below
            bar.set(len(planned.intersection(render_set.journal_entries(out))))
            time.sleep(POLL_SECONDS)
    finally:
        for _, proc, log in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    done = len(planned.intersection(render_set.completed_indices(out)))
    bar.set(done)
    bar.close()
    failed = [(w, proc.returncode) for w, proc, _ in workers if proc.returncode != 0]
    if failed:
        w, code = failed[0]
        log_path = log_dir / f"worker-{w}.log"
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
    if (stop.requested() or failed) and claim.discard_if_unused():  # stopped before a first image
        complete, kept = 0, f"nothing was rendered, so {out} is left as it was)"
    else:
        complete = render_set.finalize(spec, out, shard=shard)
        kept = f"log {log_path}); {complete} complete images are kept, rerun to resume" if failed else ""
    if stop.requested():
        raise KeyboardInterrupt
    if failed:
        raise CarprobeError(f"{len(failed)} of {count} workers failed (worker {w}: exit code {code}; "
                            f"{kept}. Last lines of its log:\n{tail}")
    print(f"{out}: {complete}/{sample_count(spec)} images complete ({count} workers)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry of a worker process (python -m blender_addon.commands.render ARGS)."""
    from ..cli import main as cli_main

    return cli_main(["render", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
