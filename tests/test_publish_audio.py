"""Publish with real speech: clips embedded as HF Audio, the audio gate blocking a release with a missing clip."""

import io

import datasets
import pytest
import soundfile as sf

from emoforge.config import load_config
from flows.speech import synthesise_home
from flows.synthetic import load_synthetic, synthetic_dialogues
from schemas.taxonomy import load_taxonomy
from warehouse.publish import GateFailed, publish_release
from warehouse.store import Warehouse

CFG = load_config(publish={"sources": ["synthetic"], "report": False})


def test_release_embeds_turn_audio_and_mixes(home):
    wh = Warehouse(home)
    load_synthetic(wh, load_taxonomy(), 3, seed=11)
    counts = synthesise_home(home, workers=2, progress=False, asr=False)
    assert counts["turn_clips"] == counts["synthesised"] > 0
    out = publish_release(home, CFG)
    utt = datasets.load_dataset(out["path"], split="train")
    assert isinstance(utt.features["audio"], datasets.Audio)
    raw = utt.cast_column("audio", datasets.Audio(decode=False))
    n_words = raw["n_words"]
    # what a user of the release does: datasets decodes the Audio column itself (torchcodec + FFmpeg's libraries)
    decoded = utt[0]["audio"]
    reference, sr = sf.read(io.BytesIO(raw[0]["audio"]["bytes"]), dtype="float32")
    assert decoded["sampling_rate"] == sr == 22050
    assert decoded["array"].shape == reference.shape and abs(decoded["array"] - reference).max() < 1e-3
    for i, row in enumerate(raw):
        samples, sr = sf.read(io.BytesIO(row["audio"]["bytes"]))
        assert sr == 22050 and samples.ndim == 1
        assert 0.1 * n_words[i] < len(samples) / sr < 2.5 + 1.2 * n_words[i]  # speech, not silence or garbage
    dlg = datasets.load_dataset(out["path"], "dialogues", split="train").cast_column("audio_mix", datasets.Audio(decode=False))
    mix, sr = sf.read(io.BytesIO(dlg[0]["audio_mix"]["bytes"]))
    turns = [r for r in raw if r["dialogue_id"] == dlg[0]["dialogue_id"]]
    total = sum(len(sf.read(io.BytesIO(r["audio"]["bytes"]))[0]) for r in turns)
    assert len(mix) > total  # the mix holds every turn plus the gaps between them


def test_a_turn_without_its_clip_blocks_the_release(home):
    wh = Warehouse(home)
    tax = load_taxonomy()
    load_synthetic(wh, tax, 2, seed=12)
    synthesise_home(home, workers=1, progress=False, asr=False)
    dlg, turns = next(synthetic_dialogues(tax, 1, seed=77))  # accepted, never voiced
    wh.upsert([dlg])
    wh.upsert(turns)
    with pytest.raises(GateFailed) as err:
        publish_release(home, CFG)
    assert "missing_clip" in str(err.value)
    assert turns[0].id in (home / "runs").joinpath("publish-0.1.0", "validation-audio-0.1.0.json").read_text()
    assert not [p for p in (home / "releases").iterdir() if not p.name.startswith(".")]
