"""Progress of a training run: per phase and per evaluation, samples, loss, samples/s and ETA.

On a terminal a rich bar (kept on screen when it finishes); elsewhere (``nohup``, a scheduled job, a pipe) one log
line every ``interval_s`` seconds and one at the end, so a run that writes to a log file is never silent.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class TrainProgress:
    """``advance(samples, loss)`` after every step; ``close()`` at the end of the phase or evaluation."""

    def __init__(self, description: str, total_samples: int, *, enabled: bool = True,
                 log: Callable[[str], None] | None = None, interval_s: float = 30.0, tty: bool | None = None):
        self.description, self.total = description, max(int(total_samples), 1)
        self.enabled, self.interval_s = enabled, interval_s
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.done, self.loss = 0, None
        self.t0 = self._last = time.monotonic()
        self._prog = None
        if enabled and self.tty:
            self._prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
                                  TimeElapsedColumn(), TimeRemainingColumn())
            self._prog.start()
            self._task = self._prog.add_task(description, total=self.total, loss="-", rate="")

    def rate(self) -> float | None:
        dt = time.monotonic() - self.t0
        return self.done / dt if dt > 0 and self.done else None

    def line(self) -> str:
        r = self.rate()
        eta = (self.total - self.done) / r if r else None
        loss = f", loss {self.loss:.4f}" if self.loss is not None else ""
        return (f"{self.description}: {self.done}/{self.total} samples{loss}, "
                f"{r:.2f} samples/s, ETA {_eta(eta)}" if r else f"{self.description}: {self.done}/{self.total} samples")

    def advance(self, samples: int, loss: float | None = None) -> None:
        self.done += samples
        if loss is not None:
            self.loss = loss
        if not self.enabled:
            return
        if self._prog is not None:
            r = self.rate()
            self._prog.update(self._task, advance=samples, loss=f"{self.loss:.4f}" if self.loss is not None else "-",
                              rate=f"{r:.2f} samples/s" if r else "")
        elif time.monotonic() - self._last >= self.interval_s:
            self._last = time.monotonic()
            self.log(self.line())

    def close(self) -> None:
        if self._prog is not None:
            self._prog.stop()
        elif self.enabled:
            self.log(self.line().split(", ETA")[0] + f" in {time.monotonic() - self.t0:.1f} s")
