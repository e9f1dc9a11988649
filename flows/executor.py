"""The one executor of a build's sharded stage: sharding, cancellation and progress, the same on threads and on Dask.

Everything a shard needs to coordinate with the run lives in the run's directory under the home
(``<home>/runs/<run_id>/``), which every worker sees (a Dask cluster needs the same home on every worker anyway):

- **cancellation**: the file ``CANCEL`` (its text is the reason). :meth:`RunControl.cancel` writes it (a failed
  shard, Ctrl-C / SIGTERM in the driver); every shard polls :meth:`RunControl.cancelled` and stops. No process
  global: a thread in the driver and a process on another machine read the same file.
- **progress**: each shard writes its counters to ``progress/shard-NNNNN.json`` (atomically, at most once a
  second and when it ends); the driver's :class:`flows.progress.BuildProgress` sums them.
- **sharding**: :func:`shard_slices` cuts the planned scenarios into contiguous slices; each shard task gets its
  slice (nothing is recomputed where it runs). :func:`run_shards` submits one task per slice to the flow's task
  runner and collects the results; the first shard that stops the run early cancels the others.

Early stop has one mechanism: the share of failed dialogues of a shard (``generation.max_error_rate``, see
:func:`flows.generate.check_error_rate`), which raises :class:`flows.generate.BuildAborted` and cancels the run.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from warehouse.locations import worker_home

T = TypeVar("T")

CANCEL_FILE = "CANCEL"
PROGRESS_DIR = "progress"


@dataclass(frozen=True)
class RunControl:
    """Cancellation and progress of one run, through files in its run directory (picklable: two strings)."""

    home: str
    run_id: str
    home_id: str | None = None  # the home's identity (warehouse.locations): a worker checks it sees the same home

    def on_worker(self) -> "RunControl":
        """This control as a (possibly remote) worker sees the home: ``$EMOFORGE_WORKER_HOME`` when it mounts the
        home elsewhere than the scheduler (checked against ``home_id``)."""
        return replace(self, home=str(worker_home(self.home, self.home_id)))

    @property
    def dir(self) -> Path:
        return Path(self.home) / "runs" / self.run_id

    # ---- cancellation ---------------------------------------------------------------------------------------
    def cancel(self, reason: str) -> None:
        """Ask every shard of the run to stop (idempotent; the first reason stays)."""
        path = self.dir / CANCEL_FILE
        if path.exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{CANCEL_FILE}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(reason or "cancelled")
        os.replace(tmp, path)

    def cancelled(self) -> str | None:
        """The reason the run was cancelled, or None while it goes on."""
        try:
            return (self.dir / CANCEL_FILE).read_text() or "cancelled"
        except FileNotFoundError:
            return None

    # ---- progress -------------------------------------------------------------------------------------------
    def shard_progress(self, shard: int) -> "ShardProgress":
        return ShardProgress(self.dir / PROGRESS_DIR / f"shard-{shard:05d}.json")

    def progress_snapshots(self) -> list[dict]:
        out = []
        for p in sorted((self.dir / PROGRESS_DIR).glob("shard-*.json")):
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, ValueError):  # being replaced right now: next time
                continue
        return out

    def clear_progress(self) -> None:
        for p in (self.dir / PROGRESS_DIR).glob("*"):
            p.unlink(missing_ok=True)
        try:
            (self.dir / PROGRESS_DIR).rmdir()
        except OSError:
            pass


class ShardProgress:
    """Counters of one shard (dialogues by status, turns and judgements by model, call errors, per-model call
    stats of the attached client pool), written to a JSON file at most every ``every_s`` seconds."""

    def __init__(self, path: Path, every_s: float = 1.0):
        self.path = path
        self.every_s = every_s
        self.status: Counter = Counter()
        self.turns: Counter = Counter()
        self.judged_by: Counter = Counter()
        self.errors: Counter = Counter()
        self.pool: Any = None
        self._last = 0.0
        self._lock = threading.Lock()

    def dialogue_done(self, scenario: Any, status: str) -> None:
        self.status[status] += 1
        self.flush()

    def turn_done(self, model: str) -> None:
        self.turns[model] += 1
        self.flush()

    def judged(self, model: str) -> None:
        self.judged_by[model] += 1
        self.flush()

    def call_error(self, model: str) -> None:
        self.errors[model] += 1
        self.flush()

    def attach_pool(self, pool: Any) -> None:
        self.pool = pool

    def snapshot(self) -> dict:
        models: dict[str, dict] = {}
        if self.pool is not None:
            try:
                stats = self.pool.stats()
            except Exception:  # noqa: BLE001 - a pool being torn down
                stats = {}
            for m, s in stats.items():
                models[m] = {k: s.get(k, 0) or 0 for k in ("calls", "cached", "retries", "completion_tokens")}
        return {"status": dict(self.status), "turns": dict(self.turns), "judged": dict(self.judged_by),
                "errors": dict(self.errors), "models": models}

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        with self._lock:
            self._last = now
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}")
                tmp.write_text(json.dumps(self.snapshot()))
                os.replace(tmp, self.path)
            except OSError:  # progress is best effort: a full disk must not fail the shard here
                pass


# ---- sharding ---------------------------------------------------------------------------------------------------
def shard_slices(items: Sequence[T], size: int) -> list[list[T]]:
    """Contiguous slices of at most ``size`` items, in order."""
    if size < 1:
        raise ValueError(f"shard size must be >= 1, got {size}")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def run_shards(submit: Callable[[int, list], Any], slices: Sequence[list], control: RunControl,
               on_abort: Callable[[BaseException], None], stops_run: tuple[type[BaseException], ...],
               fold: Callable[[Any, Any], Any] | None = None) -> list:
    """Submit one task per slice (``submit(index, slice)`` returns a Prefect future) and wait for all of them.
    Returns the shards' results in order, or with ``fold(acc, result)`` (``acc`` None at first) one folded result
    (``[acc]``): each result and its future are let go as soon as they are folded, so the driver's memory does not
    grow with the number of shards.

    A shard that raises one of ``stops_run`` cancels the run (``on_abort(exc)``, which writes the cancel file): the
    other shards stop within a fraction of a second. Ctrl-C / SIGTERM while waiting cancels the run too, so the
    task runner's shutdown does not wait for the shards to finish their work. The first error is raised once
    every shard has ended; what finished is on disk."""
    futures = [submit(i, sl) for i, sl in enumerate(slices)]
    results: list = []
    errors: list = []
    acc = None
    try:
        for i in range(len(futures)):
            f, futures[i] = futures[i], None
            try:
                if fold is None:
                    results.append(f.result())
                else:
                    acc = fold(acc, f.result())
            except Exception as exc:  # noqa: BLE001 - wait for the other shards before failing
                errors.append(exc)
                if isinstance(exc, stops_run):
                    on_abort(exc)
    except BaseException as exc:
        control.cancel(f"interrupted: {type(exc).__name__}")
        raise
    if errors:
        raise errors[0]
    return results if fold is None else [acc] if acc is not None else []


__all__ = ["CANCEL_FILE", "RunControl", "ShardProgress", "run_shards", "shard_slices"]
