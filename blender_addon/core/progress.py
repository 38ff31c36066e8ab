"""Progress reporting, stdlib only (core also runs inside Blender, which has no tqdm).

On a terminal: one bar redrawn in place with count, percentage, elapsed time and ETA.
Otherwise (logs, CI, SLURM): a plain line every ``log_every`` seconds and at the end.
Every long-running carprobe command reports through this class (render, merge, embed, train,
saliency), so a log file never fills with carriage-return fragments.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Progress:
    """Counts finished items of `total`; `enabled=False` prints nothing."""

    def __init__(self, total: int, label: str = "render", enabled: bool = True,
                 stream: TextIO | None = None, log_every: float = 10.0, bar_width: int = 30,
                 clock=time.monotonic):
        self.total = total
        self.label = label
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.log_every = log_every
        self.bar_width = bar_width
        self.clock = clock
        self.done = 0
        self.start = clock()
        self._last_print = -float("inf")
        self._closed = False
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.set(self.done + n)

    def set_postfix(self, **values) -> None:
        """Values shown after the counts (e.g. loss=0.1234), from the next line on (as tqdm's)."""
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def set(self, done: int) -> None:
        """Set the finished count (used by a parent that polls its workers)."""
        changed = done != self.done
        self.done = done
        now = self.clock()
        if not self.enabled:
            return
        if self.tty:
            if changed or now - self._last_print >= 1.0:
                self._write("\r" + self.line(now), end="")
                self._last_print = now
        elif now - self._last_print >= self.log_every or (changed and done >= self.total):
            self._write(self.line(now))
            self._last_print = now

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        elapsed = now - self.start
        fraction = self.done / self.total if self.total else 1.0
        if 0 < self.done < self.total:
            eta = "ETA " + format_duration(elapsed / self.done * (self.total - self.done))
        else:
            eta = "ETA --:--" if self.done < self.total else "done"
        text = (f"{self.label}: {self.done}/{self.total} ({fraction:4.0%}) "
                f"elapsed {format_duration(elapsed)} {eta}" + (f" {self.postfix}" if self.postfix else ""))
        if self.tty:
            filled = int(round(self.bar_width * fraction))
            text = f"{self.label} [{'#' * filled}{'.' * (self.bar_width - filled)}] " + text.split(": ", 1)[1]
        return text

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self.tty:
            self._write("\r" + self.line())
        elif self._last_print != self.clock() and self.done < self.total:
            self._write(self.line())

    def _write(self, text: str, end: str = "\n") -> None:
        try:
            self.stream.write(text + end)
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe must not stop the render
            pass
