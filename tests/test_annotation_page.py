"""The review page's config, task data and predictions (no server): what the annotator sees is decided here."""

from __future__ import annotations

import json
import socket
import time
import xml.etree.ElementTree as ET

import pytest

from annotation.config import (EMOTION_PREFIX, config_slots, labeling_config, prediction_result, slots_for,
                               task_data)
from annotation.labelstudio_view import LABELS_MODEL, hidden_columns, list_all, view_data
from annotation.pull import config_labels, parse_annotation
from annotation.push import judge_predictions
from schemas.procs import port_free

EMOTIONS = ["Happy", "Sad", "Angry", "Curious", "Proud"]
DIALOGUE = {"id": "d0", "domain": "Art", "model_a": "a", "model_b": "b", "status": "uncertain", "text_hash": "h"}
JUDGES = [{"judge_id": "llm:j", "kind": "llm", "verdict": "accept", "coherence": 4, "naturalness": 2,
           "domain_fit": None, "safety": None, "emotion_fidelity": [3, 4], "failures": []},
          {"judge_id": "checks", "kind": "checks", "verdict": "reject", "emotion_fidelity": [], "failures": ["loop"]}]


def turns(n: int) -> list[dict]:
    return [{"idx": i, "speaker": "AB"[i % 2], "text": f"line {i}", "intended_emotion": EMOTIONS[i % 5],
             "label": EMOTIONS[i % 5]} for i in range(n)]


def test_controls_are_named_explicitly_one_single_choice_per_turn():
    root = ET.fromstring(labeling_config(EMOTIONS, slots=16))
    assert root.find(".//Repeater") is None
    emo = [c for c in root.iter("Choices") if c.get("name", "").startswith(EMOTION_PREFIX)]
    assert [c.get("name") for c in emo] == [f"{EMOTION_PREFIX}{i}" for i in range(16)]
    assert all(c.get("choice") == "single" and c.get("layout") == "select" for c in emo)
    assert [c.get("toName") for c in emo] == [f"turn_{i}" for i in range(16)]
    paras = [p for p in root.iter("Paragraphs")]
    assert all(p.get("nameKey") == "speaker" and p.get("layout") == "dialogue" for p in paras)
    names = [e.get("name") for e in root.iter() if e.get("name")]
    assert len(names) == len(set(names))  # every control and object has its own name
    for name in ("verdict", "rating"):  # required, with a message in the annotator's words
        tag = next(e for e in root.iter() if e.get("name") == name)
        assert tag.get("required") == "true" and not tag.get("requiredMessage", "").startswith(name)
    comment = next(e for e in root.iter("TextArea"))
    assert comment.get("showSubmitButton") == "false" and comment.get("transcription") == "true"  # typed text is kept
    assert config_slots(labeling_config(EMOTIONS, slots=24)) == 24 and config_slots("<View/>") == 0
    assert slots_for(4) == 16 and slots_for(16) == 16 and slots_for(17) == 24


def test_audio_controls_only_with_speech():
    silent = labeling_config(EMOTIONS)
    assert "<Audio" not in silent and "audioUrl" not in silent
    assert '.emo-turn [class*="time--"], ' in silent  # Label Studio's 00:00:00 stamps are hidden without audio
    spoken = labeling_config(EMOTIONS, slots=16, audio=True)
    root = ET.fromstring(spoken)
    assert [a.get("value") for a in root.iter("Audio")] == ["$audio"]  # the mixed dialogue
    assert [p.get("audioUrl") for p in root.iter("Paragraphs")] == [f"$turn_{i}_audio" for i in range(16)]
    assert '.emo-turn [class*="time--"], ' not in spoken  # time stamps stay where a clip plays ...
    assert ':not(:has(button[aria-label="play"]' in spoken  # ... and go where a turn has no clip


def test_task_data_fills_every_slot_and_keeps_speakers():
    data = task_data(DIALOGUE, turns(3), JUDGES, slots=16, reason="uncertain")
    assert data["turn_0"] == [{"speaker": "A", "text": "line 0"}] and data["turn_1"][0]["speaker"] == "B"
    assert "Turn 2" in data["intended_1"] and "intended: Sad" in data["intended_1"]
    for i in range(3, 16):  # rows the dialogue does not have: present (Label Studio checks keys), marked absent
        assert data[f"turn_{i}"] == [{"speaker": "", "text": ""}] and "emo-absent" in data[f"intended_{i}"]
    assert data["review_reason"] == "uncertain" and data["n_turns"] == 3 and data["domain"] == "Art"
    assert data["judge_verdict"] == "llm:j accept · checks reject"
    assert data["judge_score"] == pytest.approx(0.6)  # mean rubric score 3 of 5 (no deciding score stored)
    assert "information only" in data["meta"] and "llm:j (llm): accept" in data["meta"]
    assert "audio" not in data and "turn_0_audio" not in data
    assert task_data(DIALOGUE | {"judge_score": 0.91}, turns(3), JUDGES, slots=16)["judge_score"] == 0.91
    with pytest.raises(ValueError, match="3 turns, the config only 2"):
        task_data(DIALOGUE, turns(3), JUDGES, slots=2)
    spoken = task_data(DIALOGUE, turns(2), JUDGES, slots=16,
                       audio={"mix": "/m.wav", "turns": {0: ("/t0.wav", 1.5), 1: ("/t1.wav", 2.0)}})
    assert spoken["audio"] == "/m.wav" and spoken["turn_1_audio"] == "/t1.wav"
    assert spoken["turn_0"][0] == {"speaker": "A", "text": "line 0", "start": 0.0, "end": 1.5}


def test_prefill_helps_without_deciding():
    preds = judge_predictions(JUDGES, ["Happy", "Sad"])
    assert [p["model_version"] for p in preds] == ["llm:j", "checks", LABELS_MODEL]
    prefill = preds[-1]["result"]
    assert {r["from_name"] for r in prefill} == {"emotion_0", "emotion_1"}  # labels only: no verdict, no rating
    decided = judge_predictions(JUDGES, ["Happy", "Sad"], prefill_verdict=True)[-1]["result"]
    assert {r["from_name"]: r["value"] for r in decided if r["from_name"] in ("verdict", "rating")} == {
        "verdict": {"choices": ["accept"]}, "rating": {"rating": 3}}
    # what the page submits maps back with the taxonomy of the config
    fields, problems = parse_annotation(prefill + prediction_result([], "reject", 2), 2,
                                        config_labels(labeling_config(EMOTIONS)))
    assert problems == [] and fields["turn_labels"] == ["Happy", "Sad"] and fields["verdict"] == "reject"


def test_task_list_hides_internals_and_shows_what_reviewers_sort_by():
    hidden = hidden_columns(16)
    for key in ("emoforge_text_hash", "emoforge_config", "emoforge_dialogue_id", "meta", "turn_0", "intended_15"):
        assert f"tasks:data.{key}" in hidden
    for key in ("review_reason", "judge_verdict", "judge_score", "domain", "n_turns", "dialogue"):
        assert f"tasks:data.{key}" not in hidden
    assert view_data(16)["ordering"] == ["tasks:data.review_reason"]


class _Pager:
    def __init__(self, items, total):
        self.items, self.response = items, type("R", (), {"total": total})()


def test_list_all_stops_at_the_last_page_without_asking_for_one_more():
    calls = []

    def fake_list(page, page_size, **kw):  # fault injection: Label Studio answers 404 past the last page
        calls.append(page)
        items = list(range(250))[(page - 1) * page_size: page * page_size]
        if not items:
            raise AssertionError("asked for a page past the end (Label Studio logs an ERROR for it)")
        return _Pager(items, 250)

    assert list_all(fake_list, page_size=100) == list(range(250)) and calls == [1, 2, 3]
    calls.clear()
    exact = lambda page, page_size: _Pager(list(range(100))[(page - 1) * page_size: page * page_size], 100)  # noqa: E731
    assert len(list_all(exact, page_size=100)) == 100


def test_port_in_time_wait_counts_as_free_a_listening_one_does_not():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    assert not port_free(port)
    conn.close()  # the server side closes first: its end stays in TIME-WAIT
    srv.close()
    time.sleep(0.2)
    cli.close()
    assert port_free(port)


def test_review_json_errors_are_json(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from emoforge.cli import app

    monkeypatch.delenv("EMOFORGE_LS_URL", raising=False)
    for cmd in (["review", "pull"], ["review", "push"]):
        r = CliRunner().invoke(app, [*cmd, "--home", str(tmp_path / "h"), "--json"])
        assert r.exit_code != 0
        err = json.loads(r.stdout.strip().splitlines()[-1])
        assert "Label Studio" in err["error"]
