"""Plan and run clip synthesis: which clips a home needs, which already exist, and parallel rendering.

Resume: a clip file exists only when complete (atomic rename), and its name is its content key, so a rerun after
a kill renders just the clips whose files are missing; records for files that exist but were not yet recorded are
rebuilt from the files.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from flows.speech import store
from schemas.config.speech import SpeechConfig
from flows.speech.prosody import Prosody
from flows.speech.render import Renderer
from flows.speech.voices import Voice


@dataclass(frozen=True)
class ClipJob:
    key: str
    relpath: str
    text: str
    voice: dict
    emotion: str
    prosody: dict
    dialogue_id: str
    turn_id: str
    idx: int
    speaker: str


@dataclass(frozen=True)
class ClipResult:
    key: str
    sample_rate: int
    duration_s: float
    sha256: str
    synthesised: bool
    seconds: float = 0.0


# ---- worker side ---------------------------------------------------------------------------------
_RENDERER = None
_ROOT: Path | None = None


def _init_worker(cfg_json: str, root: str, threads: int) -> None:
    global _RENDERER, _ROOT
    _RENDERER = Renderer(SpeechConfig.model_validate_json(cfg_json), threads=threads)
    _ROOT = Path(root)


def render_job(job: ClipJob) -> ClipResult:
    assert _RENDERER is not None and _ROOT is not None, "worker not initialised"
    path = _ROOT / job.relpath
    if path.is_file():  # another run (or worker) finished it meanwhile
        sr, dur, sha = store.file_info(path)
        return ClipResult(job.key, sr, dur, sha, synthesised=False)
    t0 = time.perf_counter()
    samples = _RENDERER.render(job.text, Voice.model_validate(job.voice), job.emotion,
                               Prosody.model_validate(job.prosody))
    if os.environ.get("EMOFORGE_FAULT") == f"silent-clip:{job.turn_id}":  # fault injection: an engine gone silent
        samples = samples * 0
    sha = store.write_wav(path, samples, _RENDERER.cfg.sample_rate)
    return ClipResult(job.key, _RENDERER.cfg.sample_rate, samples.size / _RENDERER.cfg.sample_rate, sha,
                      synthesised=True, seconds=time.perf_counter() - t0)


# ---- parent side ---------------------------------------------------------------------------------
def run_jobs(jobs: list[ClipJob], cfg: SpeechConfig, root: Path, workers: int,
             on_result: Callable[[ClipJob, ClipResult], None], threads: int = 1) -> None:
    """Render ``jobs`` (none of which has a file yet) with ``workers`` processes (1: in this process)."""
    if not jobs:
        return
    by_key = {j.key: j for j in jobs}
    if workers <= 1:
        _init_worker(cfg.model_dump_json(), str(root), threads)
        for job in jobs:
            on_result(job, render_job(job))
        return
    ctx = mp.get_context("spawn")  # the parent holds DuckDB/rich threads: never fork it
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                initargs=(cfg.model_dump_json(), str(root), threads)) as pool:
        pending: set[cf.Future] = set()
        it: Iterable[ClipJob] = iter(jobs)
        try:
            for job in it:  # keep a bounded number in flight so a kill loses little and memory stays flat
                pending.add(pool.submit(render_job, job))
                if len(pending) >= workers * 4:
                    done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        res = fut.result()
                        on_result(by_key[res.key], res)
            for fut in cf.as_completed(pending):
                res = fut.result()
                on_result(by_key[res.key], res)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise

