"""The call cache's writer thread: entries awaited through put_async are committed (another connection reads them)
before the caller resumes, concurrent puts share transactions (group commit), an idle writer ends, close() flushes."""

from __future__ import annotations

import asyncio
import threading

import flows.llm.cache as cache_mod
from flows.llm.cache import CallCache


def _writers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("llm-cache-writer-")]


def test_concurrent_puts_are_committed_before_callers_resume_and_grouped(tmp_path):
    cache = CallCache(tmp_path / "c")
    reader = CallCache(tmp_path / "c", readonly=True)

    async def one(i: int) -> bool:
        await cache.put_async(f"k{i}", model="m", text=f"reply {i}", finish_reason="stop", prompt_tokens=3)
        hit = reader.get(f"k{i}")  # another connection: only committed rows are visible to it
        return hit is not None and hit.text == f"reply {i}"

    async def main() -> list[bool]:
        return await asyncio.gather(*(one(i) for i in range(300)))

    assert all(asyncio.run(main()))
    assert len(reader) == 300 and cache.writes == 300
    assert 1 <= cache.commits < 300  # grouped: fewer transactions than entries
    assert reader.verify() == {"entries": 300, "bad": 0}
    cache.close()
    assert not _writers()


def test_an_idle_writer_thread_ends_and_a_later_put_starts_another(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "IDLE_EXIT_S", 0.1)
    cache = CallCache(tmp_path / "c")

    async def put(k: str) -> None:
        await cache.put_async(k, model="m", text="x", finish_reason="stop")

    asyncio.run(put("a"))
    assert len(_writers()) == 1
    for _ in range(100):
        if not _writers():
            break
        threading.Event().wait(0.05)
    assert not _writers()  # one thread per busy cache, none per idle one (a build opens one cache per shard)
    asyncio.run(put("b"))
    assert cache.get("a") is not None and cache.get("b") is not None
    cache.close()
    assert not _writers()
