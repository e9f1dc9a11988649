"""The int8 Piper voice: quantised once and cached, versioned apart from fp32, intelligible, prosody kept, and the
gate that silences its noise floor (real models, real ASR; bench/piper_engine.py measures cost and quality)."""

from __future__ import annotations

import math
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf
from onnx import TensorProto, helper

from flows.speech import dsp
from flows.speech.asr import transcribe, wer, whisper_model_dir
from flows.speech.engines import piper_int8
from flows.speech.engines.piper import PiperEngine
from flows.speech.prosody import prosody_table
from flows.speech.render import Renderer, clip_key
from flows.speech.voices import PIPER_JOE
from schemas.config.speech import SpeechConfig, SpeechConfigError, load_speech_config
from schemas.taxonomy import load_taxonomy

SR = 22050
SENTENCES = ["Could you tell me where the nearest train station is, please?",
             "I honestly did not expect the results to come back so quickly this morning.",
             "We should probably leave before the rain starts."]


def _tiny_model(path) -> None:
    """A Piper-shaped graph (input, input_lengths, scales) whose two Conv nodes sit under /dec/."""
    rng = np.random.default_rng(0)
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [4, 1, 3], rng.normal(size=12).astype(np.float32).tolist())
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [1, 4, 3], rng.normal(size=12).astype(np.float32).tolist())
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [helper.make_node("Cast", ["input"], ["xf"], to=TensorProto.FLOAT, name="/enc/Cast"),
             helper.make_node("Unsqueeze", ["xf", "axes"], ["x3"], name="/enc/Unsqueeze"),
             helper.make_node("Conv", ["x3", "w1"], ["h"], pads=[1, 1], name="/dec/conv_pre/Conv"),
             helper.make_node("LeakyRelu", ["h"], ["a"], alpha=0.1, name="/dec/LeakyRelu"),
             helper.make_node("Conv", ["a", "w2"], ["output"], pads=[1, 1], name="/dec/conv_post/Conv")]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.INT64, [1, "T"]),
                        helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
                        helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "T"])], initializer=[w1, w2, axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_concurrent_first_uses_quantise_once_and_share_the_cached_file(tmp_path, monkeypatch):
    model = tmp_path / "tiny.onnx"
    _tiny_model(model)
    monkeypatch.setenv("EMOFORGE_PIPER_DIR", str(tmp_path / "cache"))
    calls, real = [], piper_int8.quantise
    monkeypatch.setattr(piper_int8, "quantise", lambda *a, **k: calls.append(1) or real(*a, **k))
    ids = [list(range(1, 30)), list(range(5, 60)), [3, 9, 27, 81 % 50]]
    scales = np.array([0.667, 1.0, 0.8], np.float32)
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(piper_int8.int8_model(model, ids, scales)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(out)) == 1, (calls, out)
    target = out[0]
    assert target.parent == tmp_path / "cache" and piper_int8.QUANT_VERSION in target.name
    assert not [p for p in target.parent.iterdir() if ".tmp" in p.name]  # no half-written file left
    ops = {n.op_type for n in onnx.load(str(target)).graph.node}
    assert "QLinearConv" in ops and "Conv" not in ops, ops  # the /dec/ convolutions are int8 now
    feed = {"input": np.array([list(range(1, 40))], np.int64), "input_lengths": np.array([39], np.int64),
            "scales": scales}
    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    got = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.99  # the same function, in int8
    mtime = target.stat().st_mtime_ns
    assert piper_int8.int8_model(model, ids, scales) == target and target.stat().st_mtime_ns == mtime
    assert len(calls) == 1  # reused, not quantised again


def test_a_model_without_decoder_nodes_is_a_clear_error(tmp_path, monkeypatch):
    model = tmp_path / "tiny.onnx"
    _tiny_model(model)
    monkeypatch.setenv("EMOFORGE_PIPER_DIR", str(tmp_path / "cache"))
    other = piper_int8.Variant(ops=("Conv",), prefixes=("/nowhere/",))
    monkeypatch.setitem(piper_int8.VARIANTS, "nowhere", other)
    with pytest.raises(piper_int8.QuantisationError, match="precision: fp32"):
        piper_int8.int8_model(model, [[1, 2, 3]], np.ones(3, np.float32), variant="nowhere")


def test_precision_is_configured_versioned_and_checked():
    assert SpeechConfig().piper.precision == "int8"
    with pytest.raises(SpeechConfigError, match="precision"):
        load_speech_config({"piper": {"precision": "int4"}})
    fp32, int8 = PiperEngine(precision="fp32"), PiperEngine(precision="int8")
    assert int8.version() != fp32.version() and int8.version().startswith(fp32.version())
    table = prosody_table(load_taxonomy("deepdialogue"))
    cfg = SpeechConfig()
    keys = {clip_key(SENTENCES[0], PIPER_JOE, "Happy", table["Happy"], e.version(), cfg) for e in (fp32, int8)}
    assert len(keys) == 2  # an fp32 clip is never taken for an int8 one (or back)


def test_gate_silences_a_quiet_floor_but_keeps_speech_and_its_edges():
    rng = np.random.default_rng(1)
    t = np.arange(SR) / SR
    burst = 0.5 * np.sin(2 * np.pi * 220 * t) * ((t > 0.4) & (t < 0.6))
    x = (burst + 10 ** (-50 / 20) * 0.5 * rng.normal(size=t.size)).astype(np.float32)
    y = dsp.gate(x, SR, -40.0, hold_s=0.04)
    inside = (t > 0.4) & (t < 0.6)
    assert np.allclose(y[inside], x[inside])  # the loud part untouched
    far = (t < 0.3) | (t > 0.7)
    assert np.max(np.abs(y[far])) == 0.0  # the floor far from it is silence
    near = (t > 0.37) & (t < 0.4)
    assert np.allclose(y[near], x[near])  # the hold keeps the onset region
    assert dsp.gate(np.zeros(100, np.float32), SR, -40.0).size == 100


@pytest.fixture(scope="module")
def rendered():
    table = prosody_table(load_taxonomy("deepdialogue"))
    out = {}
    for precision in ("fp32", "int8"):
        r = Renderer(SpeechConfig(piper={"precision": precision}))
        out[precision] = {emo: [r.render(s, PIPER_JOE, emo, table[emo]) for s in SENTENCES]
                          for emo in ("Excited", "Bored")}
    return out


def test_int8_speech_is_heard_as_its_text(rendered, tmp_path):
    model_dir = whisper_model_dir()
    errors = []
    for k, (text, x) in enumerate(zip(SENTENCES, rendered["int8"]["Bored"])):
        path = tmp_path / f"{k}.wav"
        sf.write(path, x, SR)
        errors.append(wer(text, transcribe(path, model_dir)))
    assert np.mean(errors) <= 0.15, errors


def test_int8_keeps_the_emotion_prosody_and_the_clip_length_of_fp32(rendered):
    for emo in ("Excited", "Bored"):
        for a, b in zip(rendered["int8"][emo], rendered["fp32"][emo]):
            ma, mb = dsp.measure(a, SR, with_f0=True), dsp.measure(b, SR, with_f0=True)
            assert abs(12 * math.log2(ma.f0_median / mb.f0_median)) < 1.0, (emo, ma.f0_median, mb.f0_median)
            assert 0.85 < a.size / b.size < 1.15, (emo, a.size, b.size)  # edges trimmed like fp32's
            # Piper samples its noise on every run: fp32 against itself moves a sentence's level by up to ~0.7 dB
            assert abs(ma.rms_dbfs - mb.rms_dbfs) < 2.0, (emo, ma.rms_dbfs, mb.rms_dbfs)
        level = [np.mean([dsp.measure(x, SR).rms_dbfs for x in rendered[p][emo]]) for p in ("int8", "fp32")]
        assert abs(level[0] - level[1]) < 0.75, (emo, level)  # the loudness of the emotion, over its sentences
    ex = np.mean([dsp.measure(x, SR, with_f0=True).f0_median for x in rendered["int8"]["Excited"]])
    bo = np.mean([dsp.measure(x, SR, with_f0=True).f0_median for x in rendered["int8"]["Bored"]])
    assert 12 * math.log2(ex / bo) > 2.0  # Excited still clearly higher than Bored
