"""Live progress of a build on stderr: dialogues done / failed, turns, tokens/s per model, acceptance so far.

On a terminal it is a rich live table; elsewhere (CI logs, pipes) one summary line every ``interval_s``.
Every shard, in a thread or on a Dask worker, writes its counters to a file in the run directory
(:class:`flows.executor.ShardProgress`); this sums them, so remote shards show up like local ones.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from flows.executor import RunControl


class BuildProgress:
    """Sums the shards' progress files (:class:`flows.executor.ShardProgress`) of one run and shows them."""

    def __init__(self, control: RunControl, total: int, *, console: Console | None = None, interval_s: float = 10.0,
                 enabled: bool = True):
        self.control = control
        self.run_id = control.run_id
        self.total = total
        self.console = console or Console(stderr=True)
        self.interval_s = interval_s
        self.enabled = enabled
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None

    def _sum(self) -> tuple[Counter, Counter, dict[str, Counter]]:
        status, turns, models = Counter(), Counter(), {}
        for snap in self.control.progress_snapshots():
            status.update(snap.get("status") or {})
            turns.update(snap.get("turns") or {})
            for m, s in (snap.get("models") or {}).items():
                models.setdefault(m, Counter()).update(s)
        return status, turns, models

    # ---- rendering -----------------------------------------------------------------------------------------
    def _model_rows(self) -> dict[str, dict]:
        return {m: {"calls": c["calls"], "cached": c["cached"], "tokens": c["completion_tokens"],
                    "retries": c["retries"]} for m, c in self._sum()[2].items()}

    def snapshot(self) -> dict:
        status, turns, _ = self._sum()
        done = sum(status.values())
        decided = status["accepted"] + status["rejected"] + status["uncertain"]
        return {
            "done": done, "total": self.total, "status": dict(status), "turns": dict(turns),
            "acceptance": (status["accepted"] / decided) if decided else None,
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
