"""Periodic progress lines (count, percent, speed as x real time) for long per-utterance jobs."""
from __future__ import annotations

import logging
import time
from typing import Optional

# A line every N seconds reads well in job log files, where tqdm's carriage-return
# redraws turn into one very long line.


class ProgressLog:
    """Log ``name: i/total (p%), elapsed, x real time`` at most every ``every`` seconds, and at the end."""

    def __init__(self, name: str, total: int, every: float = 10.0, logger: Optional[logging.Logger] = None):
        self.name, self.total, self.every = name, total, every
        self.log = logger or logging.getLogger(name)
        self.done = 0
        self.audio_seconds = 0.0
        self.t0 = self.last = time.monotonic()

    def update(self, n: int = 1, audio_seconds: float = 0.0) -> None:
        self.done += n
        self.audio_seconds += audio_seconds
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.log.info("%s", self.line())

    def line(self) -> str:
        el = max(time.monotonic() - self.t0, 1e-9)
        pct = 100.0 * self.done / self.total if self.total else 100.0
        speed = f", {self.audio_seconds / el:.0f}x real time" if self.audio_seconds else ""
        return f"{self.name}: {self.done}/{self.total} ({pct:.0f}%), {el:.1f} s{speed}"

    def finish(self) -> str:
        line = self.line()
        self.log.info("%s (done)", line)
        return line
