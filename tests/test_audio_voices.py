"""The voice checks' acoustics (pitch track, MFCCs per speaker) are computed in threads: the same distances, in the
same dialogue order, as one speaker after another in a loop."""

import numpy as np
import pandas as pd
import soundfile as sf

from schemas.audio import voice_distance, voice_features
from schemas.config.speech import AudioBounds
from schemas.expectations_audio import _voice_rows

SR = 8000


def _tone(path, freq, seconds, seed):
    t = np.arange(int(seconds * SR)) / SR
    x = sum(0.25 / k * np.sin(2 * np.pi * freq * k * t) for k in range(1, 6))
    x = x + np.random.default_rng(seed).normal(0, 0.01, t.size)
    sf.write(path, x.astype("float32"), SR, subtype="PCM_16")


def test_threaded_voice_distances_equal_the_serial_ones(tmp_path):
    rows = []
    for d in range(7):
        b_freq = 130.0 if d == 3 else 260.0 + 10 * d  # dialogue 3: B sounds like A
        for i in range(4):
            speaker, freq = ("A", 130.0) if i % 2 == 0 else ("B", b_freq)
            name = f"d{d}-{i}.wav"
            _tone(tmp_path / name, freq, 0.6 + 0.1 * i, seed=10 * d + i)
            rows.append({"dialogue_id": f"dlg_{d}", "speaker": speaker, "voice": f"v{speaker}{d}", "path": name,
                         "clip_id": f"clip_{d}_{i}"})
    present = pd.DataFrame(rows)
    bounds = AudioBounds()
    got = _voice_rows(present, bounds, tmp_path, measure=True)
    expected = []
    for d in range(7):
        g = present[present["dialogue_id"] == f"dlg_{d}"]
        fa = voice_features([tmp_path / p for p in g.loc[g["speaker"] == "A", "path"]])
        fb = voice_features([tmp_path / p for p in g.loc[g["speaker"] == "B", "path"]])
        expected.append(voice_distance(fa, fb, bounds.min_voice_mfcc, bounds.min_voice_pitch_st))
    assert [r["dialogue_id"] for r in got] == [f"dlg_{d}" for d in range(7)]
    assert [r["voice_distance"] for r in got] == expected
    assert got[3]["voice_distance"] < 1 <= min(r["voice_distance"] for i, r in enumerate(got) if i != 3)
