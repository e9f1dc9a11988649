"""Live progress of a build on stderr: dialogues done / failed, turns, tokens/s per model, acceptance so far.

On a terminal it is a rich live table; elsewhere (CI logs, pipes) one summary line every ``interval_s``.
Counters are updated from the shard event loops (threads of the task runner) under a lock; tokens come from the
client pools attached with :meth:`BuildProgress.attach_pool`. Tasks running on remote Dask workers do not report
here (their results are summed at the end).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

_REGISTRY: dict[str, "BuildProgress"] = {}


def get_progress(run_id: str) -> "BuildProgress | None":
    return _REGISTRY.get(run_id)


class BuildProgress:
    def __init__(self, run_id: str, total: int, *, console: Console | None = None, interval_s: float = 10.0,
                 enabled: bool = True):
        self.run_id = run_id
        self.total = total
        self.console = console or Console(stderr=True)
        self.interval_s = interval_s
        self.enabled = enabled
        self.started = time.monotonic()
        self.status: Counter = Counter()
        self.turns: Counter = Counter()
        self.judged_by: Counter = Counter()
        self.errors: Counter = Counter()
        self.pools: list[Any] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None

    # ---- updates (any thread) ------------------------------------------------------------------------------
    def dialogue_done(self, scenario: Any, status: str) -> None:
        with self._lock:
            self.status[status] += 1

    def turn_done(self, model: str) -> None:
        with self._lock:
            self.turns[model] += 1

    def judged(self, model: str) -> None:
        with self._lock:
            self.judged_by[model] += 1

    def call_error(self, model: str) -> None:
        with self._lock:
            self.errors[model] += 1

    def attach_pool(self, pool: Any) -> None:
        with self._lock:
            self.pools.append(pool)

    # ---- rendering -----------------------------------------------------------------------------------------
    def _model_rows(self) -> dict[str, dict]:
        rows: dict[str, dict] = {}
        for pool in list(self.pools):
            try:
                stats = pool.stats()
            except Exception:  # noqa: BLE001 - a pool being torn down
                continue
            for m, s in stats.items():
                r = rows.setdefault(m, {"calls": 0, "cached": 0, "tokens": 0, "retries": 0})
                r["calls"] += s.get("calls", 0)
                r["cached"] += s.get("cached", 0)
                r["tokens"] += s.get("completion_tokens", 0)
                r["retries"] += s.get("retries", 0)
        return rows

    def snapshot(self) -> dict:
        with self._lock:
            done = sum(self.status.values())
            decided = self.status["accepted"] + self.status["rejected"] + self.status["uncertain"]
            return {
                "done": done, "total": self.total, "status": dict(self.status), "turns": dict(self.turns),
                "acceptance": (self.status["accepted"] / decided) if decided else None,
                "elapsed_s": time.monotonic() - self.started,
            }

    def render(self) -> Table:
        snap = self.snapshot()
        elapsed = max(snap["elapsed_s"], 1e-6)
        st = snap["status"]
        acc = f"{snap['acceptance']:.0%}" if snap["acceptance"] is not None else "-"
        t = Table(title=f"emoforge build {self.run_id}: {snap['done']}/{self.total} dialogues, {elapsed:.0f}s",
                  title_justify="left", expand=False)
        t.add_column("model")
        t.add_column("turns", justify="right")
        t.add_column("calls", justify="right")
        t.add_column("cached", justify="right")
        t.add_column("retries", justify="right")
        t.add_column("tok/s", justify="right")
        for m, r in sorted(self._model_rows().items()):
            t.add_row(m, str(snap["turns"].get(m, 0)), str(r["calls"]), str(r["cached"]), str(r["retries"]),
                      f"{r['tokens'] / elapsed:.1f}")
        t.caption = (f"accepted {st.get('accepted', 0)}  rejected {st.get('rejected', 0)}  "
                     f"uncertain {st.get('uncertain', 0)}  failed {st.get('failed', 0)}  acceptance {acc}")
        return t

    def line(self) -> str:
        snap = self.snapshot()
        st = snap["status"]
        elapsed = max(snap["elapsed_s"], 1e-6)
        toks = ", ".join(f"{m} {r['tokens'] / elapsed:.1f} tok/s" for m, r in sorted(self._model_rows().items()) if r["tokens"])
        acc = f"{snap['acceptance']:.0%}" if snap["acceptance"] is not None else "-"
        return (f"[build {snap['done']}/{self.total}] accepted {st.get('accepted', 0)} rejected {st.get('rejected', 0)} "
                f"uncertain {st.get('uncertain', 0)} failed {st.get('failed', 0)} | turns {sum(snap['turns'].values())} "
                f"| acceptance {acc} | {toks or 'no tokens yet'} | {elapsed:.0f}s")

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def __enter__(self) -> "BuildProgress":
        _REGISTRY[self.run_id] = self
        if not self.enabled:
            return self
        if self.console.is_terminal:
            self._live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
            self._thread = threading.Thread(target=self._loop_live, daemon=True)
        else:
            self._thread = threading.Thread(target=self._loop_lines, daemon=True)
        self._thread.start()
        return self

    def _loop_live(self) -> None:
        while not self._stop.wait(0.5):
            if self._live is not None:
                self._live.update(self.render())

    def _loop_lines(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.console.print(self.line(), highlight=False, soft_wrap=True)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(None, None, None)
        elif self.enabled:
            self.console.print(self.line(), highlight=False, soft_wrap=True)
        _REGISTRY.pop(self.run_id, None)
