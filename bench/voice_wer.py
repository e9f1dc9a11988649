"""Benchmark: intelligibility of every voice of a pool under each emotion's prosody (the audio gate's ASR round trip).

    python bench/voice_wer.py            # the default pool, all 20 DeepDialogue emotions, 10 sentences
    python bench/voice_wer.py --quick    # 4 emotions (calm, high and low arousal, anger), 6 sentences (~1-2 min)

Each sentence is rendered by the speech stage's renderer (the voice, the emotion's prosody from the default table),
written as WAV and transcribed by the gate's Whisper model; the word error rate is the gate's (``flows.speech.asr``).
The sentences are the kind the embedded models write (some taken from a build's turns that the gate quarantined).
Reports the mean WER per voice and per (voice, emotion), and the share of clips over the gate's per-clip bound
(all, and per voice: the chance that a clip of that voice fails the gate).
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SENTENCES = [
    "It was a beautiful day for dogs to play outside.",
    "I'm sure there are some that have had their teeth pulled out!",
    "As a whole, I can't say.",
    "That was a fun one too (just as any amazing choice of books!",
    "Are there any special needs dogs you know?",
    "Thanks for listening.",
    "Could you tell me where the nearest train station is, please?",
    "My grandmother used to bake bread every Sunday afternoon.",
    "Nobody told me the meeting had been moved to Friday.",
    "We should probably leave before the rain starts.",
]
QUICK_EMOTIONS = ["Relaxed", "Excited", "Sad", "Angry"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 emotions, 6 sentences")
    ap.add_argument("--pool", default="default", help="voice pool (flows.speech.voices.POOLS)")
    args = ap.parse_args()

    import soundfile as sf
    from rich.progress import Progress

    from flows.speech.asr import transcribe, wer, whisper_model_dir
    from flows.speech.prosody import ProsodyConfig, prosody_table
    from flows.speech.render import Renderer
    from flows.speech.voices import POOLS
    from schemas.config.speech import AudioBounds, SpeechConfig
    from schemas.taxonomy import load_taxonomy

    table = prosody_table(load_taxonomy("deepdialogue"), ProsodyConfig())
    emotions = QUICK_EMOTIONS if args.quick else sorted(table)
    sentences = SENTENCES[:6] if args.quick else SENTENCES
    bound = AudioBounds().max_clip_wer
    voices = POOLS[args.pool]
    cfg = SpeechConfig()
    renderer = Renderer(cfg)
    model_dir, asr = whisper_model_dir(cfg.asr.model_dir), cfg.asr  # the gate's model and settings
    per: dict[str, dict[str, float]] = {}
    over: dict[str, int] = {}
    total: dict[str, int] = {}
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="emoforge-voice-wer-") as tmp, Progress() as bar:
            task = bar.add_task("render + transcribe", total=len(voices) * len(emotions) * len(sentences))
            for voice in voices:
                per[voice.id] = {}
                for emo in emotions:
                    errs = []
                    for i, text in enumerate(sentences):
                        path = Path(tmp) / f"{voice.id}-{emo}-{i}.wav"
                        audio = renderer.render(text, voice, emo, table[emo])
                        sf.write(path, audio, cfg.sample_rate)
                        errs.append(wer(text, transcribe(path, model_dir, asr.compute_type, asr.beam_size,
                                                         asr.language)))
                        bar.advance(task)
                    per[voice.id][emo] = round(sum(errs) / len(errs), 3)
                    over[voice.id] = over.get(voice.id, 0) + sum(e > bound for e in errs)
                    total[voice.id] = total.get(voice.id, 0) + len(errs)
    finally:
        renderer.close()
    means = {v: round(sum(e.values()) / len(e), 3) for v, e in per.items()}
    for v, e in per.items():
        print(f"{v:14s} mean WER {means[v]:.3f}  " + "  ".join(f"{k} {x:.2f}" for k, x in e.items()), file=sys.stderr)
    print(json.dumps({"bench": "voice_wer", "pool": args.pool, "quick": args.quick, "emotions": len(emotions),
                      "sentences": len(sentences), "mean_wer_by_voice": means, "wer_by_voice_emotion": per,
                      "clip_wer_bound": bound,
                      "share_over_bound": round(sum(over.values()) / sum(total.values()), 3) if total else None,
                      "share_over_bound_by_voice": {v: round(over[v] / total[v], 3) for v in total},
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
