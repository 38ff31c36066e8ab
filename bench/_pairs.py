"""Paired rounds for the benches: two sides timed alternately in the same run, a ratio per round
(min / median / max), CPU time per side, the load average, and a verdict that says when the
machine was too loaded to conclude.

A ratio per round, not a ratio of per-side medians: load on a shared machine comes and goes, and
both sides of one round see about the same load, so their ratio is what survives it.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


@dataclass
class Timing:
    wall: float
    cpu: float


def measure(fn: Callable[[], Any]) -> tuple[Timing, Any]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    out = fn()
    return Timing(time.perf_counter() - wall, cpu_seconds() - cpu), out


@dataclass
class Pairs:
    """Rounds of two sides. ratio = wall(numerator) / wall(denominator) per round; the goal holds
    when ratio >= goal (`at_least`) or ratio <= goal (not `at_least`).

    own_load: busy processes this bench starts on purpose (a CPU burner), not counted as
    outside load in the verdict.
    """

    numerator: str
    denominator: str
    goal: float
    at_least: bool = True
    own_load: int = 0
    times: dict[str, list[Timing]] = field(default_factory=dict)
    loads: list[float] = field(default_factory=list)

    def round(self, sides: dict[str, Callable[[], Any]], index: int) -> dict[str, Any]:
        """Time every side once, the order alternating with `index` (the second of a pair is often
        slower on a shared machine); returns each side's result."""
        names = list(sides) if index % 2 == 0 else list(sides)[::-1]
        results = {}
        self.loads.append(load_average()[0])
        for name in names:
            timing, results[name] = measure(sides[name])
            self.times.setdefault(name, []).append(timing)
        self.loads.append(load_average()[0])
        return results

    @property
    def ratios(self) -> list[float]:
        return [n.wall / d.wall for n, d in zip(self.times[self.numerator], self.times[self.denominator])]

    def meets(self, ratio: float) -> bool:
        return ratio >= self.goal if self.at_least else ratio <= self.goal

    def report(self, label: str, out=sys.stdout) -> str:
        """Print the per-round ratios, CPU time per side, load and verdict; returns the verdict."""
        ratios = self.ratios
        lo, med, hi = min(ratios), statistics.median(ratios), max(ratios)
        sign = ">=" if self.at_least else "<="
        print(f"{label}: ratio {self.numerator}/{self.denominator} per round "
              f"min {lo:.3f}  median {med:.3f}  max {hi:.3f}  over {len(ratios)} round(s); goal {sign} {self.goal:g}",
              file=out)
        for name, timings in self.times.items():
            wall = statistics.median(t.wall for t in timings)
            cpu = statistics.median(t.cpu for t in timings)
            print(f"  {name:>12s}: median wall {wall:.3f} s, CPU {cpu:.3f} s ({cpu / wall:.2f} cores busy)", file=out)
        verdict = self.verdict()
        print(f"  load average {min(self.loads):.2f}..{max(self.loads):.2f} on {cores()} cores"
              f"{f' ({self.own_load} burner processes ours)' if self.own_load else ''}; verdict: {verdict}", file=out)
        return verdict

    def verdict(self) -> str:
        ratios = self.ratios
        met = sum(self.meets(r) for r in ratios)
        # Outside load: the load average beyond our own burners and this process. Above half the
        # cores, the two sides no longer see the same machine and no ratio can be trusted.
        outside = max(self.loads) - self.own_load - 1
        if outside > 0.5 * cores():
            return (f"TOO LOADED TO CONCLUDE ({met}/{len(ratios)} rounds meet the goal, outside load about "
                    f"{outside:.1f} on {cores()} cores); rerun on a quieter machine")
        if met == len(ratios):
            return "MEETS the goal in every round"
        if met == 0:
            return "MISSES the goal in every round"
        return f"INCONCLUSIVE: {met}/{len(ratios)} rounds meet the goal; rerun with more rounds"


class CpuBurner:
    """`count` processes that spin on a core each until stopped (a machine kept busy by others)."""

    def __init__(self, count: int):
        self.count = count
        self._procs: list[subprocess.Popen] = []

    def __enter__(self) -> "CpuBurner":
        for _ in range(self.count):
            self._procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        time.sleep(0.5)  # let them reach full speed before the first timing
        return self

    def __exit__(self, *exc) -> None:
        for proc in self._procs:
            proc.kill()
        for proc in self._procs:
            proc.wait()
        self._procs.clear()
