"""Reading the stub's request count after a client was killed.

A request the killed process wrote just before SIGKILL can still sit in the server's socket buffer and be counted a
moment later; a count taken at once then makes the rerun look as if it repeated that call (CI saw exactly one)."""

from __future__ import annotations

import time
from typing import Callable


def settled_requests(stats: Callable[[], dict], quiet_s: float = 0.5, timeout_s: float = 15.0) -> int:
    """The stub's request count once nothing is in flight and neither figure has moved for ``quiet_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        snap = stats()
        now = (snap["requests"], snap["in_flight"])
        if now != last:
            last, since = now, time.monotonic()
        elif snap["in_flight"] == 0 and time.monotonic() - since >= quiet_s:
            return snap["requests"]
        time.sleep(0.05)
    raise AssertionError(f"the stub did not settle after the kill (requests, in flight): {last}")
