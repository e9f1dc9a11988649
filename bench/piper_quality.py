"""Quality of Piper precision variants against fp32, measured objectively on real sentences (used by
``bench/piper_engine.py``; issue 13 item 6).

Sentences: DailyDialog **test** utterances (``../shared/benchdata/dailydialog``, 6-20 words, detokenised), each
rendered by the whole ``Renderer`` (piper-joe, an emotion of the DeepDialogue taxonomy in turn, so every prosody
setting is exercised). The int8 recipe is calibrated on other text (``piper_int8.CALIBRATION``) and was chosen on
the bench sentences of ``bench/tts.py``: nothing is tuned on the sentences reported here.

Per variant: ``wer`` (ASR round trip, faster-whisper base, mean over clips), ``gate_pass`` (share of clips that
pass every per-clip check of the release audio gate: readable, level, clipping, sample rate, duration, WER),
``f0_diff_st`` / ``dur_ratio`` against the fp32 render of the same sentence. ``fp32_rerun`` renders fp32 again:
Piper samples noise, so two fp32 runs differ too; that difference is the noise floor a variant is judged against.
A variant is ``within_noise`` when its paired WER difference to fp32 is at most max(the rerun's, 2 standard
errors of the paired difference) and its gate pass rate is not lower than the rerun's by more than one clip.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from flows.speech import dsp
from flows.speech.asr import transcribe, wer, whisper_model_dir
from flows.speech.engines.piper import PiperEngine
from flows.speech.prosody import prosody_table
from flows.speech.render import Renderer
from flows.speech.voices import PIPER_JOE
from schemas.audio import turn_clip_id
from schemas.config.speech import SpeechConfig
from schemas.expectations_audio import validate_audio
from schemas.taxonomy import load_taxonomy
from schemas.text import count_words
from warehouse.importers.dailydialog import read_dailydialog

DD = Path(__file__).resolve().parent.parent.parent / "shared" / "benchdata" / "dailydialog"
NOT_ENGINE_CHECKS = {"voices", "missing_mix"}  # casting and mixing, not what a voice variant changes


def detokenise(text: str) -> str:
    text = re.sub(r"\s*[’']\s*", "'", text)
    text = re.sub(r"\s+([,.!?;:%])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def eval_sentences(n: int, root: Path = DD) -> list[str]:
    """``n`` DailyDialog test utterances of 6-20 words, plain text, spread over the split (deterministic)."""
    if not root.is_dir():
        raise SystemExit(f"DailyDialog not found at {root} (../shared/benchdata/dailydialog)")
    rows, _bad, _files = read_dailydialog(root)
    texts = [detokenise(t) for r in rows if r.split == "test" for t in r.texts]
    ok = [t for t in texts if 6 <= count_words(t) <= 20 and re.fullmatch(r"[A-Za-z0-9 ,.!?;:'$%-]+", t)]
    step = max(1, len(ok) // n)
    return ok[::step][:n]


def render_variant(precision: str, sentences: list[str], root: Path) -> dict:
    """Render every sentence with ``precision`` (CPU of the whole render per audio second) and write the WAVs."""
    tax = load_taxonomy("deepdialogue")
    table, emotions = prosody_table(tax), tax.emotion_names
    cfg = SpeechConfig()
    r = Renderer(cfg, threads=1, engines={"piper": PiperEngine(threads=1, precision=precision)})
    r.render(sentences[0], PIPER_JOE, emotions[0], table[emotions[0]])  # load (and quantise) outside the timing
    root.mkdir(parents=True, exist_ok=True)
    cpu = audio = 0.0
    clips = []
    for k, text in enumerate(sentences):
        emo = emotions[(k * 7) % len(emotions)]
        t0 = time.process_time()
        x = r.render(text, PIPER_JOE, emo, table[emo])
        cpu += time.process_time() - t0
        secs = x.size / cfg.sample_rate
        audio += secs
        path = root / f"{k:03d}.wav"
        sf.write(path, x, cfg.sample_rate)
        m = dsp.measure(x, cfg.sample_rate, with_f0=True)
        clips.append({"path": path, "text": text, "secs": secs, "speech_s": m.speech_s, "f0": m.f0_median})
    return {"rtf": cpu / audio, "clips": clips, "sample_rate": cfg.sample_rate}


def gate_pass_rate(run: dict, wers: list[float]) -> float:
    """Share of the clips that pass every per-clip check of the release audio gate (schemas.expectations_audio)."""
    turns, clips = [], []
    for k, (c, w) in enumerate(zip(run["clips"], wers)):
        tid = f"t{k:03d}"
        turns.append({"id": tid, "dialogue_id": "d", "speaker": "A", "text": c["text"],
                      "n_words": count_words(c["text"])})
        clips.append({"id": turn_clip_id(tid), "dialogue_id": "d", "turn_id": tid, "kind": "turn",
                      "path": c["path"].name, "voice": PIPER_JOE.id, "sample_rate": run["sample_rate"],
                      "duration_s": c["secs"], "wer": w})
    result = validate_audio(clips, turns, {"check_voice_acoustics": False}, audio_root=run["clips"][0]["path"].parent)
    failed = {cid for f in result.failures if f.check not in NOT_ENGINE_CHECKS for cid in f.clip_ids}
    return 1.0 - len(failed) / len(clips)


def _paired(run: dict, ref: dict) -> tuple[float, float]:
    """Median |median-F0 difference| in semitones and mean speech-duration ratio against ``ref``, clip by clip."""
    st = [abs(12 * np.log2(a["f0"] / b["f0"])) for a, b in zip(run["clips"], ref["clips"]) if a["f0"] and b["f0"]]
    dur = [a["speech_s"] / b["speech_s"] for a, b in zip(run["clips"], ref["clips"]) if b["speech_s"] > 0]
    return float(np.median(st)) if st else float("nan"), float(np.mean(dur))


def compare(variants: list[str], n: int, tmp: Path) -> dict:
    """Render ``n`` sentences with fp32, fp32 again and every variant; ASR, gate, pitch and duration per variant."""
    sentences = eval_sentences(n)
    model_dir = whisper_model_dir()
    runs: dict[str, dict] = {}
    for name in ["fp32", "fp32_rerun", *variants]:
        runs[name] = render_variant("fp32" if name == "fp32_rerun" else name, sentences, tmp / name)
        runs[name]["wer"] = [wer(c["text"], transcribe(c["path"], model_dir, threads=1)) for c in runs[name]["clips"]]
    ref = runs["fp32"]
    out: dict = {"quality_sentences": len(sentences)}
    floor_dwer = None
    for name, run in runs.items():
        w = np.array(run["wer"])
        d = w - np.array(ref["wer"])
        f0, dur = _paired(run, ref)
        row = {"rtf_renderer": round(run["rtf"], 4), "wer": round(float(w.mean()), 4),
               "gate_pass": round(gate_pass_rate(run, run["wer"]), 4)}
        if name != "fp32":
            row.update(dwer=round(float(d.mean()), 4), dwer_se=round(float(d.std(ddof=1) / np.sqrt(len(d))), 4),
                       f0_diff_st=round(f0, 2), dur_ratio=round(dur, 3))
        if name == "fp32_rerun":
            floor_dwer, floor_gate = abs(row["dwer"]), row["gate_pass"]
        elif name != "fp32":
            row["within_noise"] = bool(abs(row["dwer"]) <= max(floor_dwer, 2 * row["dwer_se"])
                                       and row["gate_pass"] >= floor_gate - 1.0 / len(sentences) - 1e-9)
        out[f"q_{name}"] = row
    return out
