"""Byte-level progress for pushes and pulls: a rich bar with MB and MB/s on a terminal, a line every few seconds
otherwise (logs, CI), nothing when disabled. Plugs into fsspec bulk transfers as a callback."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any, Callable

from fsspec.callbacks import Callback
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

MB = 1_000_000


class TransferMeter:
    """``with TransferMeter("push 0.2.0", total_bytes) as m: fs.put(..., callback=m.callback())``."""

    def __init__(self, label: str, total: int, *, enabled: bool = True, console: Console | None = None,
                 interval_s: float = 5.0):
        self.label, self.total, self.enabled = label, total, enabled
        self.console = console or Console(stderr=True)
        self.interval_s = interval_s
        self.done = 0
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._t1: float | None = None  # set when the transfer ends: its rate stays the transfer's
        self._prog: Progress | None = None
        self._task: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n
        if self._prog is not None:
            self._prog.update(self._task, completed=self.done)

    def callback(self, on_file: Callable[[int], None] | None = None) -> Callback:
        """For ``fs.put``/``fs.get`` of many files; ``on_file(n)`` runs as the n-th file completes."""
        return _Bulk(self, on_file)

    def rate_mb_s(self) -> float:
        dt = (self._t1 or time.monotonic()) - self._t0
        return self.done / MB / dt if dt > 0 else 0.0

    def line(self) -> str:
        return (f"{self.label}: {self.done / MB:.1f}/{self.total / MB:.1f} MB "
                f"({self.rate_mb_s():.1f} MB/s, {(self._t1 or time.monotonic()) - self._t0:.0f}s)")

    def __enter__(self) -> "TransferMeter":
        self._t0 = time.monotonic()
        if not self.enabled:
            return self
        if self.console.is_terminal:
            self._prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TimeRemainingColumn(), console=self.console)
            self._prog.__enter__()
            self._task = self._prog.add_task(self.label, total=self.total)
        else:
            self._thread = threading.Thread(target=self._lines, daemon=True)
            self._thread.start()
        return self

    def _lines(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.console.print(self.line(), highlight=False, soft_wrap=True)

    def __exit__(self, *exc: Any) -> None:
        self._t1 = time.monotonic()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self.console.print(self.line(), highlight=False, soft_wrap=True)
        if self._prog is not None:
            self._prog.update(self._task, completed=self.done)
            self._prog.__exit__(None, None, None)


class _Bulk(Callback):
    """The parent callback of an fsspec bulk put/get (it counts files); each file's child counts bytes."""

    def __init__(self, meter: TransferMeter, on_file: Callable[[int], None] | None):
        super().__init__()
        self.meter, self.on_file, self.files = meter, on_file, 0

    def relative_update(self, inc: int = 1) -> None:
        self.files += inc
        if self.on_file is not None:
            self.on_file(self.files)

    def branched(self, path_1: Any, path_2: Any, **kwargs: Any) -> Callback:
        return _Bytes(self.meter)


class _Bytes(Callback):
    def __init__(self, meter: TransferMeter):
        super().__init__()
        self.meter = meter

    def relative_update(self, inc: int = 1) -> None:
        self.meter.advance(inc)

    def absolute_update(self, value: int) -> None:
        self.meter.advance(value - (self.value or 0))
        self.value = value


# ---- local digests -------------------------------------------------------------------------------------------
def file_digests(path: Path, part_size: int, chunk: int = 1 << 20) -> dict[str, str]:
    """sha256 and the two ETags S3 can give the file, in one read: a single PUT's (md5 of the bytes) and a multipart
    upload's in ``part_size`` parts (md5 of the parts' md5s, then ``-<parts>``)."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    part, part_left, part_md5s = hashlib.md5(), part_size, []
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            sha.update(block)
            md5.update(block)
            view = memoryview(block)
            while view:
                take = view[:part_left]
                part.update(take)
                part_left -= len(take)
                view = view[len(take):]
                if part_left == 0:
                    part_md5s.append(part.digest())
                    part, part_left = hashlib.md5(), part_size
    if part_left != part_size or not part_md5s:
        part_md5s.append(part.digest())
    multi = f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"
    return {"sha256": sha.hexdigest(), "etag": md5.hexdigest(), "etag_multipart": multi}
