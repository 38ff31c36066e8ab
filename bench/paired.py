"""Paired, interleaved A/B measurements on a shared machine: the helpers benches print with.

A bench runs both sides once per round, alternating which goes first, and keeps one ratio per
round (the two sides saw the same machine load). It prints the ratios' min / median / max, the
CPU time of each side and the load average, and concludes only what every round agrees on:
on a loaded machine, rounds that disagree mean "too loaded to conclude", not a pass or a fail.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from dataclasses import dataclass, field

from blender_addon.commands.render import usable_cores  # one definition of "cores this process may use"


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def is_loaded(load_before: float, cores: int | None = None) -> bool:
    """Other work on the machine before the bench started: a 1-minute load average above half
    its cores (the bench's own load is not in it yet)."""
    return load_before > 0.5 * (cores or usable_cores())


def load_line(load_before: float, cores: int | None = None) -> str:
    cores = cores or usable_cores()
    state = "LOADED" if is_loaded(load_before, cores) else "quiet"
    return (f"load average (1 min) before {load_before:.2f}, now {load_average():.2f} on {cores} cores: "
            f"{state} machine")


@dataclass
class Timed:
    """Wall and CPU seconds of one side, over its rounds. `children=True` counts the CPU of
    finished child processes (a command run with subprocess), else this process's own."""

    children: bool = False
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    system: list[float] = field(default_factory=list)

    def _usage(self):
        return resource.getrusage(resource.RUSAGE_CHILDREN if self.children else resource.RUSAGE_SELF)

    def run(self, fn, *args, **kwargs):
        before, t = self._usage(), time.perf_counter()
        result = fn(*args, **kwargs)
        wall = time.perf_counter() - t
        after = self._usage()
        self.wall.append(wall)
        self.cpu.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        self.system.append(after.ru_stime - before.ru_stime)
        return result


def spread(ratios: list[float]) -> str:
    return (f"min {min(ratios):.3f} / median {statistics.median(ratios):.3f} / max {max(ratios):.3f} "
            f"over {len(ratios)} rounds")


def verdict(ratios: list[float], goal: float, higher_is_better: bool, loaded: bool) -> str:
    """What the per-round ratios say about `goal` (e.g. speed-up >= 1.8, or time ratio <= 1.05)."""
    meets = [r >= goal if higher_is_better else r <= goal for r in ratios]
    if all(meets):
        return "MEETS the goal in every round"
    if not any(meets):
        return "MISSES the goal in every round"
    if loaded:
        return "TOO LOADED TO CONCLUDE (rounds disagree on a loaded machine)"
    median_meets = statistics.median(ratios) >= goal if higher_is_better else statistics.median(ratios) <= goal
    return f"{'meets' if median_meets else 'misses'} the goal at the median (rounds disagree)"


def compare(label: str, numerator: str, num: Timed, denominator: str, den: Timed, goal: float,
            higher_is_better: bool, load_before: float) -> str:
    """Print the per-round ratios numerator/denominator (wall and CPU), each side's median wall
    and CPU time, the load and the verdict on the wall ratios; returns the verdict."""
    wall = [n / d for n, d in zip(num.wall, den.wall)]
    cpu = [n / d for n, d in zip(num.cpu, den.cpu) if d > 0]
    said = verdict(wall, goal, higher_is_better, is_loaded(load_before))
    print(f"{label}: {numerator}/{denominator} wall time per round {spread(wall)}; goal "
          f"{'>=' if higher_is_better else '<='} {goal:g}: {said}")
    if cpu:
        print(f"  CPU time ratio per round {spread(cpu)}")
    for name, t in ((numerator, num), (denominator, den)):
        wall_s, cpu_s = statistics.median(t.wall), statistics.median(t.cpu)
        print(f"  {name}: median {wall_s:.3f} s wall, {cpu_s:.3f} s CPU ({cpu_s / wall_s:.2f} cores busy)")
    print(f"  {load_line(load_before)}")
    return said


class CpuBurner:
    """`count` processes that each keep a core busy until the block ends: the machine as other
    jobs share it (start it after reading `load_before`, so that its load is not "other work")."""

    def __init__(self, count: int):
        self.count, self._procs = count, []

    def __enter__(self) -> "CpuBurner":
        import subprocess
        import sys

        self._procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.count)]
        time.sleep(0.5 if self.count else 0)  # up to speed before the first timing
        return self

    def __exit__(self, *exc) -> None:
        for proc in self._procs:
            proc.kill()
        for proc in self._procs:
            proc.wait()
        self._procs = []
