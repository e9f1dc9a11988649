"""TTS benchmark: real-time factor per core of the embedded engine and the speed-up of parallel workers.

    python bench/tts.py [--quick] [--workers 2]

``rtf_per_core``: synthesis seconds per second of audio in one process on one core (Piper joe + espeak-ng voices
of the default pool, round robin, emotions varied, post-processing included). ``parallel_speedup``: wall time of
the same clips with 1 warm worker process / with ``--workers`` warm worker processes. ``rtf_<engine>``: the same
per engine (the headline mixes Piper with the much cheaper espeak-ng voices): ``rtf_piper`` is the default int8
voice, ``rtf_piper_fp32`` the same clips with the voice as shipped (``ratio_piper_int8_vs_fp32``), ``rtf_espeak``
the espeak-ng voices. ``asr_s_per_audio_s``: the ASR round trip (faster-whisper base, int8, one thread: the check
that a clip says its text) in CPU seconds per audio second, with its word error rate ``asr_wer``. Ends with one JSON
line.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import soundfile as sf  # noqa: E402

from flows.speech.asr import transcribe, wer, whisper_model_dir  # noqa: E402
from flows.speech.prosody import Prosody, prosody_table  # noqa: E402
from flows.speech.render import Renderer  # noqa: E402
from flows.speech.synthesis import ClipJob, _init_worker, render_job  # noqa: E402
from flows.speech.voices import POOLS, Voice  # noqa: E402
from schemas.config.speech import PiperSection, SpeechConfig  # noqa: E402
from schemas.taxonomy import load_taxonomy  # noqa: E402

SENTENCES = [
    "Guess what, I finally got the job at the museum!",
    "No way, that is amazing news, congratulations!",
    "I am a little worried about the first day though.",
    "You will be fine, they chose you for a reason, and everybody there already likes you.",
    "Thanks, that really means a lot to me.",
    "Anyway, I spent the whole afternoon sorting old receipts into boxes.",
    "Could you tell me where the nearest train station is?",
    "Nobody told me the meeting had been moved to Friday, so I missed it completely.",
]


def make_jobs(n: int, tag: str) -> list[ClipJob]:
    tax = load_taxonomy("deepdialogue")
    table = prosody_table(tax)
    emotions = tax.emotion_names
    pool = POOLS["default"]
    jobs = []
    for i in range(n):
        v, emo = pool[i % len(pool)], emotions[(i * 7) % len(emotions)]
        text = SENTENCES[i % len(SENTENCES)]
        key = f"{tag}{i:05d}"
        jobs.append(ClipJob(key=key, relpath=f"{tag}/{key}.wav", text=text, voice=v.model_dump(), emotion=emo,
                            prosody=table[emo].model_dump(), dialogue_id="d", turn_id=key, idx=i, speaker="A"))
    return jobs


def single_core_rtf(jobs: list[ClipJob], cfg: SpeechConfig) -> dict:
    r = Renderer(cfg, threads=1)
    warm = {Voice.model_validate(j.voice).id: j for j in jobs}.values()  # load every engine once
    for j in warm:
        r.render(j.text, Voice.model_validate(j.voice), j.emotion, Prosody.model_validate(j.prosody))
    total_t = total_a = 0.0
    by_engine: dict[str, list[float]] = {}
    for j in jobs:
        v = Voice.model_validate(j.voice)
        t0 = time.process_time()
        x = r.render(j.text, v, j.emotion, Prosody.model_validate(j.prosody))
        dt = time.process_time() - t0  # CPU seconds of this process (one thread): per-core cost
        a = x.size / cfg.sample_rate
        total_t += dt
        total_a += a
        acc = by_engine.setdefault(v.engine, [0.0, 0.0])
        acc[0] += dt
        acc[1] += a
    return {"rtf_per_core": round(total_t / total_a, 4), "audio_s": round(total_a, 1),
            **{f"rtf_{k}": round(t / a, 4) for k, (t, a) in by_engine.items()}}


def piper_fp32_baseline(jobs: list[ClipJob], cfg: SpeechConfig, rtf_piper: float) -> dict:
    """The same Piper clips with the voice as shipped (fp32): the baseline of the default int8 voice."""
    piper = [j for j in jobs if j.voice["engine"] == "piper"]
    fp32 = single_core_rtf(piper, cfg.model_copy(update={"piper": PiperSection(precision="fp32")}))["rtf_piper"]
    return {"rtf_piper_fp32": fp32, "ratio_piper_int8_vs_fp32": round(rtf_piper / fp32, 3)}


def asr_round_trip(jobs: list[ClipJob], cfg: SpeechConfig, root: Path) -> dict:
    """CPU seconds of transcribing each rendered clip per second of its audio, and the mean word error rate."""
    r = Renderer(cfg, threads=1)
    model_dir = whisper_model_dir()
    clips = []
    for j in jobs:
        x = r.render(j.text, Voice.model_validate(j.voice), j.emotion, Prosody.model_validate(j.prosody))
        path = root / f"asr-{j.key}.wav"
        sf.write(path, x, cfg.sample_rate)
        clips.append((path, j.text, x.size / cfg.sample_rate))
    transcribe(clips[0][0], model_dir)  # warm-up: the model loads once
    cpu = audio = 0.0
    errors = []
    for path, text, secs in clips:
        t0 = time.process_time()
        heard = transcribe(path, model_dir, threads=1)
        cpu += time.process_time() - t0
        audio += secs
        errors.append(wer(text, heard))
    return {"asr_s_per_audio_s": round(cpu / audio, 4), "asr_wer": round(sum(errors) / len(errors), 4),
            "asr_clips": len(clips)}


def pool_wall(jobs: list[ClipJob], cfg: SpeechConfig, root: Path, workers: int) -> float:
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                initargs=(cfg.model_dump_json(), str(root), 1)) as pool:
        warm = make_jobs(len(POOLS["default"]) * workers, f"warm{workers}")
        list(pool.map(render_job, warm))  # engines loaded in every worker
        t0 = time.perf_counter()
        list(pool.map(render_job, jobs, chunksize=2))
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run (under a minute)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    n = 24 if args.quick else 96
    cfg = SpeechConfig()
    res = {"bench": "tts", "quick": args.quick, "clips": n, "cpus": os.cpu_count(),
           "load_avg_1m": round(os.getloadavg()[0], 2)}
    jobs = make_jobs(n, "s")
    res.update(single_core_rtf(jobs, cfg))
    res.update(piper_fp32_baseline(jobs, cfg, res["rtf_piper"]))
    with tempfile.TemporaryDirectory() as tmp:
        res.update(asr_round_trip(make_jobs(8 if args.quick else 32, "a"), cfg, Path(tmp)))
        one = pool_wall(make_jobs(n, "p1_"), cfg, Path(tmp), 1)
        many = pool_wall(make_jobs(n, "p2_"), cfg, Path(tmp), args.workers)
    res.update({"workers": args.workers, "wall_1_worker_s": round(one, 2),
                f"wall_{args.workers}_workers_s": round(many, 2), "parallel_speedup": round(one / many, 2),
                "target_rtf_per_core": 0.05, "target_rtf_piper": 0.05, "meets_target_piper": res["rtf_piper"] <= 0.05})
    print(json.dumps(res))


if __name__ == "__main__":
    main()
