"""Seconds per stage of a run, for the bench children: the plain functions a flow calls are wrapped in place, so
every call adds its wall time (and the process's CPU time meanwhile) under the stage's key. Thread-safe: a build's
shards and a publish's overlapping stages run in threads."""

from __future__ import annotations

import threading
import time
from typing import Any, Iterable


def time_calls(targets: Iterable[tuple[Any, str, str]], wall: dict[str, float],
               cpu: dict[str, float] | None = None) -> None:
    """Wrap ``module.fn`` for every ``(module, fn, key)`` of ``targets``: each call adds its wall seconds to
    ``wall[key]`` and, with ``cpu``, the process CPU seconds meanwhile to ``cpu[key]`` (a stage overlapping another
    in a thread counts the other's CPU too)."""
    lock = threading.Lock()

    def wrap(key: str, real):
        def timed(*args, **kwargs):
            t, c = time.perf_counter(), time.process_time()
            try:
                return real(*args, **kwargs)
            finally:
                with lock:
                    wall[key] = wall.get(key, 0.0) + time.perf_counter() - t
                    if cpu is not None:
                        cpu[key] = cpu.get(key, 0.0) + time.process_time() - c
        return timed

    for module, fn, key in targets:
        setattr(module, fn, wrap(key, getattr(module, fn)))
