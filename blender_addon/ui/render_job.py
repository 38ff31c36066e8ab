"""A dataset render cut into steps, for the GUI's modal operator; bpy-free.

There is one render loop, ``core.render_set.render_samples``; a job calls it with one index at
a time so the operator can return to Blender's event loop (progress, Esc) between images.
Resume, atomic writes and the journal are the loop's business, not the job's.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path


class RenderJob:
    """Render ``indices`` of ``spec`` into ``out_dir`` a few images per ``step()``."""

    def __init__(self, spec, out_dir: Path, render_image: Callable, indices: Iterable[int],
                 render_samples: Callable | None = None):
        if render_samples is None:
            from ..core.render_set import render_samples
        self.spec = spec
        self.out_dir = Path(out_dir)
        self.render_image = render_image
        self.render_samples = render_samples
        self.pending = deque(indices)
        self.total = len(self.pending)
        self.done = 0
        self.cancelled = False

    @property
    def finished(self) -> bool:
        return self.cancelled or not self.pending

    @property
    def progress(self) -> float:
        return self.done / self.total if self.total else 1.0

    def step(self, budget_s: float = 0.25, clock: Callable[[], float] = time.monotonic) -> bool:
        """Render pending images until ``budget_s`` seconds have passed (at least one image).

        Returns True when the job is finished (all done or cancelled). An exception leaves the
        failing index pending, so a later run retries it.
        """
        start = clock()
        while self.pending and not self.cancelled:
            index = self.pending[0]
            self.render_samples(self.spec, self.out_dir, self.render_image, [index], progress=False)
            self.pending.popleft()
            self.done += 1
            if clock() - start >= budget_s:
                break
        return self.finished

    def run(self) -> None:
        """Render everything now (scripts and background mode)."""
        self.step(budget_s=math.inf)

    def cancel(self) -> None:
        self.cancelled = True

    def status(self) -> str:
        verb = "cancelled" if self.cancelled else ("done" if not self.pending else "rendering")
        return f"carprobe: {verb} {self.done}/{self.total} images to {self.out_dir}"
