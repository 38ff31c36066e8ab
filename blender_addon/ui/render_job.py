"""A dataset render cut into steps, for the GUI's modal operator; bpy-free.

There is one render loop, ``core.render_set.RenderLoop`` (what ``render_samples`` runs to the
end); a job holds one loop and steps it an image at a time so the operator can return to
Blender's event loop (progress, Esc) between images; ``close()`` finishes the loop, which
rewrites the index files (metadata.csv, dataset.json) once. The journals are read once, when the job is
created, so a whole job costs linear time in its size. Resume, atomic writes and the journal
stay the loop's business.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..core import render_set
from ..core.sampling import sample_count


class RenderJob:
    """Render ``indices`` (default: all) of ``spec`` into ``out_dir`` a few images per ``step()``.

    Creating a job checks the folder (a different spec's render set is refused with a
    CarprobeError) and counts the images already complete, which a rerun skips.
    """

    def __init__(self, spec, out_dir: str | Path, render_image: Callable, indices: Iterable[int] | None = None,
                 blender_version: str | None = None):
        self.spec = spec
        self.out_dir = Path(out_dir)
        wanted = list(range(sample_count(spec)) if indices is None else indices)
        self._loop = render_set.RenderLoop(spec, self.out_dir, render_image, wanted, progress=False,
                                           blender_version=blender_version)
        self.pending = self._loop.pending  # the loop's queue: the failing index stays first
        self.skipped = self._loop.skipped
        self.total = self.skipped + len(self.pending)
        self.cancelled = False
        self.closed = False

    @property
    def rendered(self) -> int:
        """Images this job rendered."""
        return self._loop.rendered

    @property
    def done(self) -> int:
        """Images of this job that are complete (rendered now or earlier)."""
        return self.skipped + self.rendered

    @property
    def finished(self) -> bool:
        return self.cancelled or not self.pending

    @property
    def progress(self) -> float:
        return self.done / self.total if self.total else 1.0

    def step(self, budget_s: float = 0.25, clock: Callable[[], float] = time.monotonic) -> bool:
        """Render pending images until ``budget_s`` seconds have passed (at least one image).

        Returns True when the job is finished (all done or cancelled). On an exception the
        failing index stays pending; completed images are kept and a rerun resumes.
        """
        start = clock()
        while self.pending and not self.cancelled:
            self._loop.step()
            if clock() - start >= budget_s:
                break
        return self.finished

    def cancel(self) -> None:
        self.cancelled = True

    def close(self) -> int:
        """Rewrite metadata.csv and dataset.json from the complete images; returns their count."""
        self.closed = True
        return self._loop.finish().complete  # closes this process's journal, then the index files

    def run(self) -> int:
        """Render everything now (scripts and background mode); returns the complete count."""
        try:
            self.step(budget_s=math.inf)
        finally:
            complete = self.close()
        return complete

    def status(self) -> str:
        if self.cancelled:
            verb = "cancelled after"
        elif not self.pending:
            verb = "done:"
        else:
            verb = "rendering"
        resumed = f" ({self.skipped} already complete)" if self.skipped else ""
        return f"carprobe: {verb} {self.done}/{self.total} images{resumed} in {self.out_dir}"
