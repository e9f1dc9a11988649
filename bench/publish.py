"""Benchmark: publish (validation, report, everything) vs a plain pyarrow write of the same rows; peak memory.

    python bench/publish.py            # 40,150 dialogues as a build leaves them; audio variant at 1,000
    python bench/publish.py --quick    # 2,000 dialogues; audio variant at 200 (a few minutes on a loaded machine)
    python bench/publish.py --tenx     # also 10x the dialogues (memory growth)

The store is left the way a build leaves it: ``flows.synthetic`` dialogues written the way ``flows.generate``'s
``RecordSink`` writes them (a part per flush of ``--flush`` dialogues: their turns, then their dialogue rows as
``generated``; the judge's decision rewrites each dialogue row as ``accepted`` in a later part), so the store holds
hundreds of small parts with every dialogue id twice and the store's own compaction threshold applies — nothing is
compacted by the bench; ``home.json`` is written first, as a build's start does. The audio variant adds the clips a speech stage writes (a turn clip per turn, a mix per
dialogue, in parts of 32 clip records) over small WAV files (8 kHz, speaker A ~130 Hz, B ~260 Hz, durations within
the audio bounds); clip rows of the same speaker and word count share one file, so the disk holds a few hundred
files while every row's bytes are read and embedded.

Each measurement runs in its own child process (its peak RSS is its own); modules are imported before the clock
starts in both:

* ``publish`` = ``warehouse.publish.publish_release`` with the report on (selection, dialogue gates, splits,
  difficulty, Parquet per split, the GX gate, report, checksums, manifest, card; the evaluation is off: no real test
  set is imported);
* ``bare`` = the same joined rows read from the same store by DuckDB and streamed into Parquet by
  ``pyarrow.parquet.ParquetWriter`` (utterances and dialogues; with audio: each row's clip bytes read from its file).

The publish child also times each stage (``stages_s``: wall seconds per stage function of ``warehouse.publish`` and
of the report, wrapped the way ``bench/build_throughput.py`` wraps the build's; stages that overlap in threads each
count their own wall time, so the stages may add up to more than ``publish_s``).

The text-only run is repeated (``--repeats``, default 5, ``--quick`` 3): each pair of runs on a fresh copy of the
store, the order alternating; ``ratio_vs_pyarrow`` is the median publish time over the median bare time (the bare
write alone moved between 0.68 and 0.83 s from one run to the next on a quiet machine, publish 3.76-3.90 s);
``ratio_runs`` and ``runs_s`` list every pair; ``stages_s`` are the median pair's.

Ends with one JSON line: ``ratio_vs_pyarrow`` (text only) and ``ratio_vs_pyarrow_audio`` (audio variant), with
``stages_s`` of each.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SAMPLE_RATE = 8000
# (module, function) of every stage timed in the publish child; a stage missing from a tree is skipped
STAGES = (("warehouse.publish", "_select"), ("warehouse.publish", "_quarantine"), ("warehouse.publish", "dialogue_gates"),
          ("warehouse.publish", "_audio_pass"), ("warehouse.publish", "_splits"),
          ("warehouse.publish", "_difficulty"), ("warehouse.publish", "write_splits"), ("warehouse.publish", "_stats"),
          ("warehouse.publish", "_gate"), ("warehouse.publish", "_agreement"), ("warehouse.publish", "_report"),
          ("warehouse.publish", "_figures"), ("warehouse.release_files", "write_parquet"),
          ("warehouse.publish", "hash_file"), ("warehouse.publish", "fsync_tree"),
          ("warehouse.report", "load_release"), ("warehouse.report", "release_stats"),
          ("warehouse.report", "plot_all"), ("warehouse.report", "extra_sections"))


def _timed_stages(stages: dict, cpu: dict) -> None:
    """Wall time and process CPU time per stage of a publish (summed over calls), by wrapping the functions
    ``publish_release`` calls."""
    import importlib

    from bench.stage_timing import time_calls

    targets = []
    for mod_name, fn in STAGES:
        mod = importlib.import_module(mod_name)
        if hasattr(mod, fn):
            prefix = {"warehouse.publish": "", "warehouse.report": "report.", "warehouse.release_files": "files."}
            targets.append((mod, fn, prefix[mod_name] + fn.lstrip("_")))
    time_calls(targets, stages, cpu)


def child(kind: str, home: str, audio: bool) -> None:
    import great_expectations  # noqa: F401  (import cost is not publish cost)
    import matplotlib.pyplot  # noqa: F401  (same: the report's plotting library)
    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas.config import load_config
    from warehouse.publish import publish_release
    from warehouse.store import Warehouse

    if audio:
        import datasets  # noqa: F401  (same: the Audio feature metadata)
    cfg = load_config(publish={"sources": ["synthetic"], "report": True, "audio": "require" if audio else "off"})
    wh = Warehouse(home)
    stages: dict[str, float] = {}
    stages_cpu: dict[str, float] = {}
    if kind == "publish":
        _timed_stages(stages, stages_cpu)
    t0, cpu0 = time.perf_counter(), _cpu()
    if kind == "publish":
        out = publish_release(home, cfg, evaluate=False)
        rows = out["n_utterances"]
    else:
        con = wh.connect()
        clip = (", c.path AS audio FROM turns t JOIN dialogues d ON d.id = t.dialogue_id "
                "LEFT JOIN (SELECT turn_id, path FROM clips WHERE kind = 'turn') c ON c.turn_id = t.id") if audio else \
            " FROM turns t JOIN dialogues d ON d.id = t.dialogue_id"
        mix = (", c.path AS audio_mix FROM dialogues d LEFT JOIN (SELECT dialogue_id, path FROM clips "
               "WHERE kind = 'mix') c ON c.dialogue_id = d.id") if audio else " FROM dialogues d"
        out_dir = Path(home) / "bare"
        out_dir.mkdir(exist_ok=True)
        rows = _bare_write(con, f"SELECT t.*, d.domain, d.model_a, d.model_b{clip} WHERE d.status = 'accepted'",
                           out_dir / "utterances.parquet", Path(home) / "audio" if audio else None, pa, pq)
        _bare_write(con, f"SELECT d.*{mix} WHERE d.status = 'accepted'", out_dir / "dialogues.parquet",
                    Path(home) / "audio" if audio else None, pa, pq)
    seconds = time.perf_counter() - t0
    cpu_s = _cpu() - cpu0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "rows": rows, "cpu_s": round(cpu_s, 3),
                      "stages_s": {k: round(v, 3) for k, v in stages.items()},
                      "stages_cpu_s": {k: round(v, 3) for k, v in stages_cpu.items()}}))


def _cpu() -> float:
    """CPU seconds of this process and of its waited-for children (the report's plot workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _bare_write(con, sql: str, path: Path, audio_root: Path | None, pa, pq) -> int:
    """Stream the query into one Parquet file; with ``audio_root``, columns named audio* become the bytes of the
    file they name (a binary column)."""
    reader = con.sql(sql).to_arrow_reader(256 if audio_root else 100_000)
    n = 0
    writer = None
    for batch in reader:
        if audio_root is not None:
            cols, names = [], []
            for name in batch.schema.names:
                col = batch.column(name)
                if name.startswith("audio"):
                    col = pa.array([None if p is None else (audio_root / p).read_bytes() for p in col.to_pylist()],
                                   pa.binary())
                cols.append(col)
                names.append(name)
            batch = pa.RecordBatch.from_arrays(cols, names=names)
        if writer is None:
            writer = pq.ParquetWriter(path, batch.schema, compression="zstd")
        writer.write_batch(batch)
        n += batch.num_rows
    if writer is not None:
        writer.close()
    return n


def measure(kind: str, home: str, audio: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--home", home] + (["--audio"] if audio else [])
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _wav(freq: float, seconds: float, seed: int) -> bytes:
    """A voiced-like tone (fundamental + harmonics, a little noise) at -12 dBFS or so, as WAV bytes."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = sum(0.25 / k * np.sin(2 * np.pi * freq * k * t) for k in range(1, 6))
    x = x + np.random.default_rng(seed).normal(0, 0.01, t.size)
    buf = io.BytesIO()
    sf.write(buf, x.astype("float32"), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class ClipFiles:
    """A small pool of WAV files under ``<home>/audio/bench``: one per (speaker, words) and one mix per turn count."""

    VOICE = {"A": ("bench-low", 130.0), "B": ("bench-high", 260.0)}

    def __init__(self, home: Path):
        self.root = home / "audio"
        (self.root / "bench").mkdir(parents=True, exist_ok=True)
        self.made: dict[str, float] = {}

    def get(self, key: str, freq: float, seconds: float) -> tuple[str, float]:
        rel = f"bench/{key}.wav"
        if rel not in self.made:
            (self.root / rel).write_bytes(_wav(freq, seconds, len(self.made)))
            self.made[rel] = round(int(seconds * SAMPLE_RATE) / SAMPLE_RATE, 4)
        return rel, self.made[rel]

    def turn(self, speaker: str, n_words: int) -> tuple[str, float]:
        return self.get(f"{speaker}-{n_words}", self.VOICE[speaker][1], 0.2 + 0.2 * n_words)

    def mix(self, n_turns: int, words: int) -> tuple[str, float]:
        return self.get(f"mix-{n_turns}-{words}", 180.0, 0.2 * words + 0.3 * n_turns)


def _clips(files: ClipFiles, dlg, turns) -> list:
    from schemas.audio import mix_clip_id, turn_clip_id
    from schemas.records import AudioClip

    out = []
    for t in turns:
        rel, dur = files.turn(t.speaker, t.n_words)
        out.append(AudioClip(id=turn_clip_id(t.id), dialogue_id=dlg.id, turn_id=t.id, kind="turn", path=rel,
                             engine="bench", voice=files.VOICE[t.speaker][0], emotion=t.label,
                             sample_rate=SAMPLE_RATE, duration_s=dur, sha256=""))
    rel, dur = files.mix(len(turns), min(sum(t.n_words for t in turns) // 10 * 10, 200))
    out.append(AudioClip(id=mix_clip_id(dlg.id), dialogue_id=dlg.id, kind="mix", path=rel, engine="bench",
                         voice="mix", sample_rate=SAMPLE_RATE, duration_s=dur, sha256=""))
    return out


def load_as_build(home: Path, n: int, flush: int, audio: bool, seed: int = 7) -> dict:
    """Write ``n`` synthetic dialogues the way a build does (see the module docstring); returns the part counts."""
    from flows.synthetic import synthetic_dialogues
    from schemas.config import load_config
    from schemas.taxonomy import load_taxonomy
    from warehouse.home_meta import remember
    from warehouse.store import Warehouse

    wh = Warehouse(home)
    remember(home, load_config())  # a build records the home's settings (home.json) before it writes anything
    files = ClipFiles(home) if audio else None
    turns, generated, decided, clips = [], [], [], []
    for dlg, ts in synthetic_dialogues(load_taxonomy(), n, seed=seed):
        turns.extend(ts)
        generated.append(dlg.model_copy(update={"status": "generated"}))
        decided.append(dlg)
        if files is not None:
            clips.extend(_clips(files, dlg, ts))
            while len(clips) >= 32:  # speech.flush_every
                wh.upsert(clips[:32])
                clips = clips[32:]
        if len(generated) >= flush:
            wh.upsert(turns)
            wh.upsert(generated)
            if len(decided) >= 2 * flush:  # the judge decides a flush behind generation
                wh.upsert(decided[:flush])
                decided = decided[flush:]
            turns, generated = [], []
    for batch in (turns, generated, decided, clips):
        wh.upsert(batch)
    return {t: len(wh._parts(t)) for t in wh.tables()}


def run_scale(n: int, flush: int, audio: bool, repeats: int = 1) -> dict:
    """Publish and the bare write of one store, ``repeats`` times each, alternating which goes first, every run on
    a fresh copy of the store as the build left it; the ratio is median publish time over median bare time (single
    pairs moved between 4.5x and 5.6x on this 2-core machine, quiet or not)."""
    with tempfile.TemporaryDirectory(prefix="emoforge-bench-") as tmp:
        store = Path(tmp) / "store"
        t0 = time.perf_counter()
        parts = load_as_build(store, n, flush, audio)
        load_s = time.perf_counter() - t0
        runs = []
        for r in range(repeats):
            pair = {}
            for kind in (("bare", "publish") if r % 2 == 0 else ("publish", "bare")):
                home = Path(tmp) / f"{kind}-{r}"
                shutil.copytree(store, home)
                pair[kind] = measure(kind, str(home), audio)
                shutil.rmtree(home)
            runs.append(pair)
    ratios = [p["publish"]["seconds"] / p["bare"]["seconds"] for p in runs]
    mid = runs[sorted(range(len(runs)), key=ratios.__getitem__)[len(runs) // 2]]  # the median run: its stages
    pub, bare = mid["publish"], mid["bare"]
    pub_s = statistics.median(p["publish"]["seconds"] for p in runs)
    bare_s = statistics.median(p["bare"]["seconds"] for p in runs)
    return {"dialogues": n, "audio": audio, "utterances": pub["rows"], "parts": parts, "load_s": round(load_s, 2),
            "bare_s": round(bare_s, 3), "publish_s": round(pub_s, 3), "ratio_vs_pyarrow": round(pub_s / bare_s, 2),
            "ratio_runs": [round(x, 2) for x in ratios],
            "runs_s": [[round(p["publish"]["seconds"], 3), round(p["bare"]["seconds"], 3)] for p in runs],
            "peak_rss_mb": round(max(p["publish"]["peak_rss_mb"] for p in runs)),
            "bare_peak_rss_mb": round(max(p["bare"]["peak_rss_mb"] for p in runs)),
            "cpu_s": pub.get("cpu_s"), "bare_cpu_s": bare.get("cpu_s"),
            "cpu_ratio_vs_pyarrow": round(pub["cpu_s"] / bare["cpu_s"], 2) if bare.get("cpu_s") else None,
            "stages_s": pub.get("stages_s", {}), "stages_cpu_s": pub.get("stages_cpu_s", {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 dialogues, audio variant 200 (a few minutes)")
    ap.add_argument("--dialogues", type=int, default=None, help="text-only size (default 40,150; --quick 2,000)")
    ap.add_argument("--audio-dialogues", type=int, default=None,
                    help="audio variant size (default 1,000; --quick 200; 0 = skip). The audio gate measures every "
                         "clip and each speaker's voice (pitch track, MFCCs): seconds per dialogue on 2 cores")
    ap.add_argument("--repeats", type=int, default=None,
                    help="publish/bare pairs of the text-only run (default 5; --quick 3): the ratio of the medians "
                         "is reported; the audio variant runs once")
    ap.add_argument("--flush", type=int, default=40, help="dialogues per part, as a build's record sink flushes")
    ap.add_argument("--tenx", action="store_true", help="also publish 10x the dialogues (memory growth)")
    ap.add_argument("--child", choices=["publish", "bare"])
    ap.add_argument("--home")
    ap.add_argument("--audio", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.home, args.audio)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base = args.dialogues or (2000 if args.quick else 40150)
    n_audio = args.audio_dialogues if args.audio_dialogues is not None else (200 if args.quick else 1000)
    repeats = args.repeats or (3 if args.quick else 5)
    results = [run_scale(base, args.flush, False, max(1, repeats))]
    if n_audio:
        results.append(run_scale(n_audio, args.flush, True))
    if args.tenx:
        results.append(run_scale(base * 10, args.flush, False))
    for r in results:
        print(f"{r['dialogues']:>7} dialogues{' + audio' if r['audio'] else ''} / {r['utterances']:>8} utterances "
              f"(parts {r['parts']}): publish {r['publish_s']:.2f}s, bare pyarrow {r['bare_s']:.2f}s, "
              f"ratio {r['ratio_vs_pyarrow']:.2f}x (runs {r['ratio_runs']}), peak RSS {r['peak_rss_mb']} MB "
              f"(bare {r['bare_peak_rss_mb']} MB)",
              file=sys.stderr)
    text = results[0]
    line = {"bench": "publish", "dialogues": text["dialogues"], "ratio_vs_pyarrow": text["ratio_vs_pyarrow"],
            "ratio_runs": text["ratio_runs"], "runs_s": text["runs_s"], "peak_rss_mb": text["peak_rss_mb"],
            "publish_s": text["publish_s"], "bare_s": text["bare_s"],
            "cpu_ratio_vs_pyarrow": text["cpu_ratio_vs_pyarrow"], "parts": text["parts"],
            "stages_s": text["stages_s"], "stages_cpu_s": text["stages_cpu_s"], "quick": args.quick}
    if n_audio:
        a = results[1]
        line |= {"dialogues_audio": a["dialogues"], "ratio_vs_pyarrow_audio": a["ratio_vs_pyarrow"],
                 "peak_rss_mb_audio": a["peak_rss_mb"], "publish_s_audio": a["publish_s"], "bare_s_audio": a["bare_s"],
                 "cpu_ratio_vs_pyarrow_audio": a["cpu_ratio_vs_pyarrow"], "stages_s_audio": a["stages_s"]}
    if args.tenx:
        t = results[-1]
        line |= {"dialogues_10x": t["dialogues"], "ratio_vs_pyarrow_10x": t["ratio_vs_pyarrow"],
                 "peak_rss_mb_10x": t["peak_rss_mb"], "rss_growth_10x": round(t["peak_rss_mb"] / text["peak_rss_mb"], 2)}
    print(json.dumps(line))


if __name__ == "__main__":
    main()
