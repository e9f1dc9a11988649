"""``synthesise_home``: voice every accepted dialogue of a home that lacks up-to-date clips.

Steps: select accepted dialogues (``warehouse.effective``: human reviews win over the judges) → cast voices
(recorded in ``casts``) → plan one clip per turn (content keys) → render the missing files in parallel workers →
write ``clips`` records (kind ``turn``) → mix each dialogue (kind ``mix``) → ASR round trip (``wer`` per turn clip).
Every step reads what is on disk first, so a rerun after a kill does only what is left.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from flows.speech import mixing, store
from flows.speech.asr import ASRError, transcribe, wer, whisper_model_dir
from flows.speech.casting import cast_dialogues
from schemas.config.speech import SpeechConfig, load_speech_config
from flows.speech.engines import EngineError
from flows.speech.prosody import prosody_table
from flows.speech.render import Renderer, clip_key
from flows.speech.synthesis import ClipJob, ClipResult, run_jobs
from flows.speech.voices import POOLS, Voice, check_pool
from schemas.audio import mix_clip_id, turn_clip_id
from schemas.records import AudioClip
from schemas.taxonomy import Taxonomy, load_taxonomy
from warehouse.effective import effective_views
from warehouse.store import Warehouse

# what a release would take: human reviews applied over the judges (warehouse.effective), corrected labels included
ACCEPTED_SQL = "SELECT id AS dialogue_id, taxonomy FROM effective_dialogues WHERE status = 'accepted'"


class SpeechError(RuntimeError):
    pass


def voice_pool(cfg: SpeechConfig) -> list[Voice]:
    if cfg.voices:
        pool = list(cfg.voices)
    elif cfg.engine == "xtts":
        raise SpeechError("engine 'xtts' needs speech.voices: one entry per reference speaker "
                          "({id, engine: xtts, model: <folder under speech.xtts.references>, gender})")
    else:
        pool = list(POOLS[cfg.engine])
    try:
        return check_pool(pool)
    except ValueError as exc:
        raise SpeechError(f"engine {cfg.engine!r}: {exc}") from None


def _console(progress: bool) -> Console:
    return Console(stderr=True, quiet=not progress)


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, disable=console.quiet)


def synthesise_home(home: Path, *, engine: str = "default", workers: int = 2, progress: bool = True,
                    config: SpeechConfig | dict | str | Path | None = None, asr: bool | None = None,
                    dialogue_ids: list[str] | None = None, tax: Taxonomy | None = None) -> dict[str, Any]:
    """Voice every accepted dialogue of ``home`` lacking clips; returns counts. ``tax``: a taxonomy the caller
    already loaded (a build), used for the dialogues of that taxonomy instead of loading it again.

    ``engine``/``workers``/``asr`` override the config (``engine="default"`` keeps the config's engine).
    """
    t_start = time.perf_counter()
    cfg = load_speech_config(config)
    updates: dict[str, Any] = {"workers": workers}
    if engine and engine != "default":
        updates["engine"] = engine
    cfg = cfg.model_copy(update=updates)
    if asr is not None:
        cfg = cfg.model_copy(update={"asr": cfg.asr.model_copy(update={"enabled": asr})})
    counts: dict[str, Any] = {"dialogues": 0, "turn_clips": 0, "synthesised": 0, "reused": 0, "recorded": 0,
                              "mixes": 0, "mixes_made": 0, "asr": 0, "engine": cfg.engine}
    if not cfg.enabled:
        return counts
    home = Path(home)
    wh = Warehouse(home)
    root = store.audio_root(home)
    console = _console(progress)

    # -- what to voice
    acc, turns, old_clips, old_casts = _read_accepted(wh, dialogue_ids)
    if not acc:
        counts["seconds"] = round(time.perf_counter() - t_start, 2)
        return counts
    ids = [r["dialogue_id"] for r in acc]
    taxonomies = {r["taxonomy"] or "deepdialogue" for r in acc}

    # -- prosody (per taxonomy) and casting
    tables = {}
    for tname in taxonomies:
        t = tax if tax is not None and tax.name == tname else load_taxonomy(tname)
        tables[tname] = (t, prosody_table(t, cfg.prosody, cfg.intensity))
    tax_of = {r["dialogue_id"]: r["taxonomy"] or "deepdialogue" for r in acc}
    pool = voice_pool(cfg)
    by_voice = {v.id: v for v in pool}
    casts = cast_dialogues(ids, pool, old_casts, engine=cfg.engine)
    new_casts = [c for did, c in casts.items() if old_casts.get(did) != (c.voice_a, c.voice_b)]
    if new_casts:
        wh.upsert(new_casts)

    # -- plan + engine checks before any work
    jobs, versions = _plan_jobs(cfg, pool, by_voice, turns, tables, tax_of, casts)

    counts["dialogues"] = len(ids)
    counts["turn_clips"] = len(jobs)
    rec = _ClipRecorder(wh, versions, old_clips, counts, cfg.flush_every)
    todo = _reuse_files(jobs, root, rec)
    rec.flush(force=True)
    _render_missing(todo, cfg, root, rec, console)
    results = rec.results

    # -- dialogue mixes
    counts["mixes"], counts["mixes_made"] = _mix_dialogues(wh, root, cfg, jobs, results, old_clips, tables, tax_of,
                                                           casts, console)
    # -- ASR round trip
    if cfg.asr.enabled:
        counts["asr"] = run_asr(home, cfg, dialogue_ids=ids, progress=progress)
    counts["seconds"] = round(time.perf_counter() - t_start, 2)
    return counts


@dataclass
class _ClipRecorder:
    """Each turn clip's result, and the ``clips`` rows of the new or changed ones, flushed every ``flush_every``."""
    wh: Warehouse
    versions: dict[str, str]
    old_clips: dict[str, dict]
    counts: dict[str, Any]
    flush_every: int
    results: dict[str, ClipResult] = field(default_factory=dict)
    rows: list[AudioClip] = field(default_factory=list)

    def record(self, job: ClipJob, res: ClipResult) -> None:
        self.results[job.key] = res
        cid = turn_clip_id(job.turn_id)
        prev = self.old_clips.get(cid)
        if prev and prev["path"] == job.relpath and prev["sha256"] == res.sha256:
            return  # already recorded as is
        self.rows.append(AudioClip(
            id=cid, dialogue_id=job.dialogue_id, turn_id=job.turn_id, kind="turn", path=job.relpath,
            engine=self.versions[job.voice["id"]], voice=job.voice["id"], emotion=job.emotion,
            sample_rate=res.sample_rate, duration_s=round(res.duration_s, 4), wer=None, sha256=res.sha256))

    def flush(self, force: bool = False) -> None:
        if self.rows and (force or len(self.rows) >= self.flush_every):
            self.wh.upsert(self.rows)
            self.counts["recorded"] += len(self.rows)
            self.rows.clear()


def _reuse_files(jobs: list[ClipJob], root: Path, rec: _ClipRecorder) -> list[ClipJob]:
    """Record the clips whose files are on disk already (read from disk, not from the plan: a rerun after a kill
    redoes nothing); returns the jobs still to render."""
    todo: list[ClipJob] = []
    for job in jobs:
        path = root / job.relpath
        if not path.is_file():
            todo.append(job)
            continue
        prev = rec.old_clips.get(turn_clip_id(job.turn_id))
        if prev and prev["path"] == job.relpath:
            rec.results[job.key] = ClipResult(job.key, prev["sample_rate"], prev["duration_s"], prev["sha256"], False)
        else:
            sr, dur, sha = store.file_info(path)
            rec.record(job, ClipResult(job.key, sr, dur, sha, False))
        rec.counts["reused"] += 1
    return todo


def _render_missing(todo: list[ClipJob], cfg: SpeechConfig, root: Path, rec: _ClipRecorder,
                    console: Console) -> None:
    """Render each distinct clip of ``todo`` once in the workers (same text, voice and emotion twice in a run:
    rendered once, recorded for both turns), with a progress bar; rows are flushed as results arrive."""
    first: dict[str, ClipJob] = {}
    dupes = []
    for job in todo:
        if job.key in first:
            dupes.append(job)
        else:
            first[job.key] = job
    with _progress(console) as prog:
        task = prog.add_task("synthesising", total=len(first), info="")
        audio_s = 0.0

        def on_result(job: ClipJob, res: ClipResult) -> None:
            nonlocal audio_s
            rec.record(job, res)
            rec.counts["synthesised" if res.synthesised else "reused"] += 1
            audio_s += res.duration_s
            prog.update(task, advance=1, info=f"{audio_s / 60:.1f} min audio")
            rec.flush()

        try:
            run_jobs(list(first.values()), cfg, root, cfg.workers, on_result)
        finally:
            rec.flush(force=True)
    for job in dupes:
        rec.record(job, rec.results[job.key])
        rec.counts["reused"] += 1
    rec.flush(force=True)


def _read_accepted(wh: Warehouse, dialogue_ids: list[str] | None) -> tuple[list[dict], list[dict], dict, dict]:
    """The accepted dialogues to voice (all, or ``dialogue_ids``), their turns, the clips and casts on record."""
    con = wh.connect()
    try:
        effective_views(con)
        acc = con.sql(ACCEPTED_SQL).to_arrow_table().to_pylist()
        if dialogue_ids is not None:
            wanted = set(dialogue_ids)
            acc = [r for r in acc if r["dialogue_id"] in wanted]
        if not acc:
            return [], [], {}, {}
        con.register("_want", pa.table({"dialogue_id": [r["dialogue_id"] for r in acc]}))
        turns = con.sql("SELECT t.* FROM effective_turns t JOIN _want w USING (dialogue_id) ORDER BY dialogue_id, idx") \
            .to_arrow_table().to_pylist()
        old_clips = {r["id"]: r for r in con.sql("SELECT * FROM clips").to_arrow_table().to_pylist()}
        old_casts = {}
        if "casts" in wh.tables():
            old_casts = {r["dialogue_id"]: (r["voice_a"], r["voice_b"])
                         for r in con.sql("SELECT * FROM casts").to_arrow_table().to_pylist()}
    finally:
        con.close()
    return acc, turns, old_clips, old_casts


def _plan_jobs(cfg: SpeechConfig, pool: list[Voice], by_voice: dict[str, Voice], turns: list[dict], tables: dict,
               tax_of: dict[str, str], casts: dict) -> tuple[list[ClipJob], dict[str, str]]:
    """One clip job per turn (content-addressed key), and every engine checked for its voices and emotions before
    any work. Returns (jobs, engine version by voice id)."""
    renderer = Renderer(cfg)
    try:
        versions = {v.id: renderer.version(v) for v in pool}
        emotions_by_voice: dict[str, set[str]] = {}
        jobs: list[ClipJob] = []
        for t in turns:
            tax, ptable = tables[tax_of[t["dialogue_id"]]]
            emo = t["label"] or t["intended_emotion"]
            if emo not in ptable:
                raise SpeechError(f"turn {t['id']}: emotion {emo!r} is not in taxonomy {tax.name!r}")
            cast = casts[t["dialogue_id"]]
            voice = by_voice[cast.voice_a if t["speaker"] == "A" else cast.voice_b]
            emotions_by_voice.setdefault(voice.id, set()).add(emo)
            key = clip_key(t["text"], voice, emo, ptable[emo], versions[voice.id], cfg)
            jobs.append(ClipJob(key=key, relpath=store.clip_relpath(key), text=t["text"], voice=voice.model_dump(),
                                emotion=emo, prosody=ptable[emo].model_dump(), dialogue_id=t["dialogue_id"],
                                turn_id=t["id"], idx=int(t["idx"]), speaker=t["speaker"]))
        for vid, emos in emotions_by_voice.items():
            renderer.engine(by_voice[vid].engine).check_voice(by_voice[vid], sorted(emos))
    except EngineError as exc:
        raise SpeechError(str(exc)) from None
    finally:
        renderer.close()
    return jobs, versions


def _mix_dialogues(wh, root, cfg, jobs, results, old_clips, tables, tax_of, casts, console) -> tuple[int, int]:
    by_dialogue: dict[str, list[ClipJob]] = {}
    for job in jobs:
        by_dialogue.setdefault(job.dialogue_id, []).append(job)
    recs: list[AudioClip] = []
    made = 0
    for did, djobs in sorted(by_dialogue.items()):
        djobs.sort(key=lambda j: j.idx)
        tax = tables[tax_of[did]][0]
        gap_list = mixing.gaps(did, [tax.emotion[j.emotion].arousal for j in djobs], cfg.mix)
        key = mixing.mix_key([j.key for j in djobs], gap_list, cfg.mix, cfg.sample_rate)
        rel = store.clip_relpath(key, kind="mix")
        path = root / rel
        cid = mix_clip_id(did)
        prev = old_clips.get(cid)
        if path.is_file() and prev and prev["path"] == rel:
            continue
        if path.is_file():
            sr, dur, sha = store.file_info(path)
        else:
            clips = []
            for j in djobs:
                x, sr = store.read(root / j.relpath)
                clips.append(x)
            samples = mixing.mix(clips, gap_list, cfg.mix, cfg.sample_rate)
            sha = store.write_wav(path, samples, cfg.sample_rate)
            sr, dur = cfg.sample_rate, samples.size / cfg.sample_rate
            made += 1
        cast = casts[did]
        recs.append(AudioClip(id=cid, dialogue_id=did, turn_id=None, kind="mix", path=rel, engine=cfg.engine,
                              voice=f"{cast.voice_a}|{cast.voice_b}", emotion=None, sample_rate=sr,
                              duration_s=round(dur, 4), wer=None, sha256=sha))
        if len(recs) >= 256:
            wh.upsert(recs)
            recs.clear()
    if recs:
        wh.upsert(recs)
    return len(by_dialogue), made


# ---- ASR -----------------------------------------------------------------------------------------
_ASR_CFG: tuple | None = None


def _asr_init(model_dir: str, compute_type: str, beam: int, language: str, threads: int) -> None:
    global _ASR_CFG
    _ASR_CFG = (Path(model_dir), compute_type, beam, language, threads)


def _asr_job(item: tuple[str, str, str]) -> tuple[str, float, str]:
    cid, path, text = item
    model_dir, compute_type, beam, language, threads = _ASR_CFG
    hyp = transcribe(Path(path), model_dir, compute_type, beam, language, threads)
    return cid, wer(text, hyp), hyp


def selected_for_asr(clip_id: str, fraction: float) -> bool:
    if fraction >= 1.0:
        return True
    return int(hashlib.sha256(clip_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def run_asr(home: Path, cfg: SpeechConfig, dialogue_ids: list[str] | None = None, progress: bool = True) -> int:
    """Transcribe turn clips without a WER (a ``fraction`` of them) and record ``wer``; returns how many."""
    wh = Warehouse(home)
    rows = wh.query("SELECT c.*, t.text FROM clips c JOIN turns t ON t.id = c.turn_id "
                    "WHERE c.kind = 'turn' AND c.wer IS NULL ORDER BY c.id").to_pylist()
    if dialogue_ids is not None:
        keep = set(dialogue_ids)
        rows = [r for r in rows if r["dialogue_id"] in keep]
    rows = [r for r in rows if selected_for_asr(r["id"], cfg.asr.fraction)]
    if not rows:
        return 0
    try:
        model_dir = whisper_model_dir(cfg.asr.model_dir)
    except ASRError as exc:
        raise SpeechError(str(exc)) from None
    root = store.audio_root(home)
    items = [(r["id"], str(root / r["path"]), r["text"]) for r in rows]
    by_id = {r["id"]: r for r in rows}
    out: list[AudioClip] = []
    done = 0
    init = (str(model_dir), cfg.asr.compute_type, cfg.asr.beam_size, cfg.asr.language, 1)

    def take(cid: str, w: float) -> None:
        nonlocal done
        r = dict(by_id[cid])
        r.pop("text")
        r["wer"] = round(w, 4)
        out.append(AudioClip.model_validate(r))
        done += 1
        if len(out) >= cfg.flush_every:
            wh.upsert(out)
            out.clear()

    console = _console(progress)
    with _progress(console) as prog:
        task = prog.add_task("ASR round trip", total=len(items), info="")
        total_w = 0.0
        try:
            if cfg.workers <= 1 or len(items) < 4:
                _asr_init(*init)
                for item in items:
                    cid, w, _ = _asr_job(item)
                    total_w += w
                    take(cid, w)
                    prog.update(task, advance=1, info=f"mean WER {total_w / done:.3f}")
            else:
                ctx = mp.get_context("spawn")
                with cf.ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_asr_init,
                                            initargs=init) as pool:
                    for cid, w, _ in pool.map(_asr_job, items, chunksize=4):
                        total_w += w
                        take(cid, w)
                        prog.update(task, advance=1, info=f"mean WER {total_w / done:.3f}")
        finally:
            if out:
                wh.upsert(out)
    return done

