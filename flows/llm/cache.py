"""Durable, content-addressed store of completed LLM calls (``<home>/cache/llm/calls.sqlite``).

The key covers what determines the answer (model, messages, sampling parameters, response format / schema,
prompt-template version, an optional nonce), never the post-processing, so changing a parser or a threshold
repeats no call. SQLite in WAL mode: each ``put`` is one committed transaction before the caller sees the
result, so a ``kill -9`` at any moment leaves either the whole entry or nothing (no torn entries). Several
processes may share one cache (WAL readers never block; writers wait up to ``busy_timeout``).

From an event loop, ``await put_async(...)`` does the same off the loop: a writer thread commits every entry queued
meanwhile in one transaction (group commit) and then wakes each caller, so the loop never waits on SQLite and a
caller still sees its result only once its entry is committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY_VERSION = 1
IDLE_EXIT_S = 2.0  # a writer thread with nothing to write for this long ends


def call_key(
    model: str,
    messages: list[dict],
    sampling: dict[str, Any],
    response_format: dict | None = None,
    template_version: str = "",
    nonce: str | int | None = None,
) -> str:
    """sha256 of the canonical JSON of everything that determines a completion."""
    blob = {
        "v": KEY_VERSION,
        "model": model,
        "messages": messages,
        "sampling": {k: sampling[k] for k in sorted(sampling) if sampling[k] is not None},
        "response_format": response_format,
        "template_version": template_version,
    }
    if nonce not in (None, "", 0):
        blob["nonce"] = nonce
    text = json.dumps(blob, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class CachedCall:
    key: str
    model: str
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    created: float


_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    template_version TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    created REAL NOT NULL,
    checksum TEXT NOT NULL
)
"""


def _checksum(key: str, text: str, finish_reason: str) -> str:
    return hashlib.sha256(f"{key}\0{finish_reason}\0{text}".encode("utf-8")).hexdigest()[:16]


class CallCache:
    """``get(key)`` / ``put(key, ...)`` over SQLite (WAL). Thread-safe; one connection per thread."""

    FILE = "calls.sqlite"

    def __init__(self, root: str | Path, *, readonly: bool = False):
        self.root = Path(root)
        self.path = self.root / self.FILE
        self.readonly = readonly
        self._local = threading.local()
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.commits = 0  # transactions the writer thread committed (fewer than writes: grouped)
        self._queue: queue.SimpleQueue | None = None
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        if not readonly:
            self.root.mkdir(parents=True, exist_ok=True)
            con = self._con()
            con.execute(_SCHEMA)
            con.commit()

    @classmethod
    def for_home(cls, home: str | Path) -> "CallCache":
        return cls(Path(home) / "cache" / "llm")

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            if self.readonly:
                con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
            else:
                con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                con.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode: a committed transaction survives a process kill (it is in the WAL file);
                # only an OS crash / power loss may drop the last commits, which is then just a cache miss.
                con.execute("PRAGMA synchronous=NORMAL")
                con.execute("PRAGMA busy_timeout=30000")
            self._local.con = con
        return con

    def get(self, key: str) -> CachedCall | None:
        row = self._con().execute(
            "SELECT key, model, text, finish_reason, prompt_tokens, completion_tokens, latency_s, created, checksum "
            "FROM calls WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None or row[8] != _checksum(row[0], row[2], row[3]):
            self.misses += 1
            return None
        self.hits += 1
        return CachedCall(*row[:8])

    def put(
        self,
        key: str,
        *,
        model: str,
        text: str,
        finish_reason: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        latency_s: float = 0.0,
        template_version: str = "",
    ) -> None:
        if self.readonly:
            raise PermissionError(f"cache {self.path} is opened read-only")
        self._con().execute(
            "INSERT OR REPLACE INTO calls VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                key,
                model,
                template_version,
                text,
                finish_reason,
                int(prompt_tokens),
                int(completion_tokens),
                float(latency_s),
                time.time(),
                _checksum(key, text, finish_reason),
            ),
        )
        self.writes += 1

    def put_async(self, key: str, *, model: str, text: str, finish_reason: str, prompt_tokens: int = 0,
                  completion_tokens: int = 0, latency_s: float = 0.0, template_version: str = "") -> asyncio.Future:
        """``put`` by the writer thread; the returned future (of the running loop) resolves once it is committed."""
        if self.readonly:
            raise PermissionError(f"cache {self.path} is opened read-only")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        row = (key, model, template_version, text, finish_reason, int(prompt_tokens), int(completion_tokens),
               float(latency_s), time.time(), _checksum(key, text, finish_reason))
        with self._writer_lock:
            if self._writer is None:
                self._queue = queue.SimpleQueue()
                self._writer = threading.Thread(target=self._write_loop, args=(self._queue,),
                                                name=f"llm-cache-writer-{self.path.parent.name}", daemon=True)
                self._writer.start()
            self._queue.put((row, loop, fut))
        return fut

    def _write_loop(self, q: queue.SimpleQueue) -> None:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA synchronous=NORMAL")  # as in _con: a commit survives a process kill
        con.execute("PRAGMA busy_timeout=30000")
        try:
            while True:
                try:
                    item = q.get(timeout=IDLE_EXIT_S)
                except queue.Empty:
                    with self._writer_lock:  # idle: end the thread (the next put_async starts a new one)
                        if q.empty():
                            if self._queue is q:
                                self._writer = None
                            return
                    continue
                if item is None:
                    return
                batch = [item]
                while len(batch) < 512:  # everything queued meanwhile goes into the same transaction
                    try:
                        nxt = q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        q.put(None)  # finish this batch, then stop
                        break
                    batch.append(nxt)
                error: BaseException | None = None
                try:
                    con.execute("BEGIN IMMEDIATE")
                    con.executemany("INSERT OR REPLACE INTO calls VALUES (?,?,?,?,?,?,?,?,?,?)", [b[0] for b in batch])
                    con.execute("COMMIT")
                    self.writes += len(batch)
                    self.commits += 1
                except sqlite3.Error as exc:
                    error = exc
                    if con.in_transaction:
                        con.execute("ROLLBACK")
                for _row, loop, fut in batch:
                    try:
                        loop.call_soon_threadsafe(_settle, fut, error)
                    except RuntimeError:
                        pass  # that loop is closed: nobody waits for this entry any more
        finally:
            con.close()

    def __contains__(self, key: str) -> bool:
        return self._con().execute("SELECT 1 FROM calls WHERE key = ?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        return int(self._con().execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def counts(self) -> dict[str, Any]:
        """Entries per model and this process's hits/misses/writes."""
        per_model = dict(self._con().execute("SELECT model, COUNT(*) FROM calls GROUP BY model").fetchall())
        return {"entries": sum(per_model.values()), "per_model": per_model, "hits": self.hits,
                "misses": self.misses, "writes": self.writes}

    def verify(self) -> dict[str, int]:
        """Integrity check: SQLite's own plus every entry's checksum. Returns {'entries', 'bad'}."""
        con = self._con()
        ok = con.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise RuntimeError(f"LLM cache {self.path} is corrupt: {ok}")
        bad = 0
        n = 0
        for key, text, fr, cs in con.execute("SELECT key, text, finish_reason, checksum FROM calls"):
            n += 1
            bad += cs != _checksum(key, text, fr)
        return {"entries": n, "bad": bad}

    def close(self) -> None:
        """Commit what the writer thread has queued, stop it, and close this thread's connection."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
            if writer is not None and self._queue is not None:
                self._queue.put(None)
                self._queue = None
        if writer is not None:
            writer.join(60)
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


def _settle(fut: asyncio.Future, error: BaseException | None) -> None:
    if fut.done():
        return  # the caller was cancelled meanwhile
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)
