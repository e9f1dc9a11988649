"""Review loop pieces that need no server: merge policy (effective views), validation, selection, agreement."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from warehouse.agreement import agreement_summary, cohen_kappa, fleiss_kappa, spearman
from annotation.config import config_fingerprint, labeling_config, prediction_result
from annotation.pull import config_labels, parse_annotation
from annotation.push import ReviewPolicy, PushError, audit_draw, judges_disagree, select_for_review
from schemas.records import Dialogue, Judgement, Review, Turn, text_hash
from warehouse.effective import effective_views
from warehouse.store import Warehouse

EMOTIONS = ["Happy", "Excited", "Curious", "Proud", "Amused", "Sad", "Angry"]
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


# distinct lines: turns that copy each other would be quarantined at publish (defect turn_copy)
_LINES = ["I really think this painting says something about us.", "Do you mean the colours or the faces in it?",
          "The faces, they look so tired and hopeful at once.", "Maybe that is why the museum hung it by the door.",
          "I would love to see it again next weekend.", "Then let us go early, before the crowds arrive.",
          "Deal, and I will bring my old sketchbook along.", "Good, you can show me how you draw hands."]


def seed_warehouse(home: Path, statuses: list[str], n_turns: int = 4) -> list[str]:
    """Dialogues ``d0..`` (status per entry) with turns labelled by their intended emotion and two judges each:
    an llm judge whose verdict follows the status, and a checks judge that disagrees on the last dialogue."""
    wh = Warehouse(home)
    ds, ts, js = [], [], []
    verdict = {"accepted": "accept", "rejected": "reject", "uncertain": "uncertain"}
    for i, st in enumerate(statuses):
        did = f"d{i}"
        texts = [f"Dialogue {i} turn {j}: {_LINES[j % len(_LINES)]}" for j in range(n_turns)]
        emos = [EMOTIONS[(i + j) % 5] for j in range(n_turns)]
        ds.append(Dialogue(id=did, domain="Art", model_a="m1", model_b="m2", n_turns=n_turns, status=st,
                           decided_by="judge", text_hash=text_hash(texts), taxonomy="deepdialogue"))
        ts += [Turn(id=Turn.make_id(did, j), dialogue_id=did, idx=j, speaker="AB"[j % 2], model="m1", text=texts[j],
                    intended_emotion=emos[j], label=emos[j], n_words=len(texts[j].split())) for j in range(n_turns)]
        js.append(Judgement(id=f"jl{i}", dialogue_id=did, judge_id="llm:judge", kind="llm", coherence=2 + i % 4,
                            naturalness=3, domain_fit=4, safety=5, emotion_fidelity=[5 - (j % 3) for j in range(n_turns)],
                            verdict=verdict.get(st, "uncertain")))
        checks = "reject" if st == "rejected" else "accept"
        if i == len(statuses) - 1:  # the checks judge disagrees with the llm judge on the last dialogue
            checks = "accept" if st == "rejected" else "reject"
        js.append(Judgement(id=f"jc{i}", dialogue_id=did, judge_id="checks", kind="checks", verdict=checks))
    wh.upsert(ds)
    wh.upsert(ts)
    wh.upsert(js)
    return [d.id for d in ds]


def review(did: str, who: str, verdict: str | None, labels: list[str] | None = None, ann: int = 1,
           minutes: int = 0, rating: int | None = None) -> Review:
    return Review(id=f"r-{did}-{who}-{ann}", dialogue_id=did, task_id=1, annotation_id=ann, annotator=who,
                  verdict=verdict, rating=rating, turn_labels=labels or [], updated_at=T0 + timedelta(minutes=minutes))


def effective(home: Path) -> tuple[dict, dict]:
    con = Warehouse(home).connect()
    try:
        effective_views(con)
        d = {r["id"]: r for r in con.sql("SELECT * FROM effective_dialogues").to_arrow_table().to_pylist()}
        t = {(r["dialogue_id"], r["idx"]): r for r in con.sql("SELECT * FROM effective_turns").to_arrow_table().to_pylist()}
    finally:
        con.close()
    return d, t


# ---- merge policy -----------------------------------------------------------------------------------
def test_effective_views_pass_through_without_reviews(home):
    seed_warehouse(home, ["accepted", "rejected", "uncertain"])
    d, t = effective(home)
    assert {k: v["status"] for k, v in d.items()} == {"d0": "accepted", "d1": "rejected", "d2": "uncertain"}
    assert all(v["decided_by"] == "judge" and v["review_accepts"] == 0 for v in d.values())
    assert all(v["label_source"] == "intended" and v["label"] == v["intended_emotion"] for v in t.values())


def test_human_verdict_overrides_judges_and_corrections_become_labels(home):
    seed_warehouse(home, ["accepted", "rejected", "uncertain", "accepted", "generated"])
    Warehouse(home).upsert([
        review("d0", "ann1", "reject", ["", "Sad", "", ""], rating=2),
        review("d1", "ann1", "accept"),
        review("d2", "ann1", "accept", ["Curious", "Proud", "Amused", "Angry"]),  # turns 0-2 confirmed, 3 corrected
        review("d2", "ann2", "accept", ["Curious", "Proud", "Amused", "Angry"], rating=5),
        review("d3", "ann1", "accept", ["Sad"]), review("d3", "ann2", "reject", ["Angry"]),  # split: tie
        review("d4", "ann1", None, ["", "", "Sad"]),  # no verdict: does not vote, label still counts
    ])
    d, t = effective(home)
    assert (d["d0"]["status"], d["d0"]["decided_by"]) == ("rejected", "human")
    assert (d["d1"]["status"], d["d1"]["decided_by"]) == ("accepted", "human")
    assert d["d2"]["status"] == "accepted" and d["d2"]["review_accepts"] == 2 and d["d2"]["review_rating"] == 5.0
    assert d["d3"]["status"] == "uncertain" and "split" in d["d3"]["status_reason"]
    assert (d["d4"]["status"], d["d4"]["decided_by"]) == ("generated", "judge")
    # corrections: label changes, intended kept, source human; confirmations change nothing
    assert (t[("d0", 1)]["label"], t[("d0", 1)]["label_source"], t[("d0", 1)]["intended_emotion"]) == ("Sad", "human", "Excited")
    assert t[("d0", 0)]["label_source"] == "intended"
    assert t[("d2", 0)]["label_source"] == "intended"  # both humans confirmed the current label
    assert (t[("d2", 3)]["label"], t[("d2", 3)]["label_source"]) == ("Angry", "human")
    assert t[("d3", 0)]["label_source"] == "intended"  # Sad vs Angry tie: label kept
    assert (t[("d4", 2)]["label"], t[("d4", 2)]["label_source"]) == ("Sad", "human")


def test_latest_review_per_annotator_counts_once(home):
    seed_warehouse(home, ["accepted"])
    Warehouse(home).upsert([review("d0", "ann1", "accept", ann=1, minutes=0),
                            review("d0", "ann1", "reject", ["Sad"], ann=2, minutes=5)])
    d, t = effective(home)
    assert d["d0"]["status"] == "rejected" and d["d0"]["review_rejects"] == 1 and d["d0"]["review_accepts"] == 0
    assert t[("d0", 0)]["label"] == "Sad"


def test_failed_dialogues_stay_failed(home):
    seed_warehouse(home, ["accepted"])
    wh = Warehouse(home)
    wh.upsert([Dialogue(id="dx", domain="Art", model_a="m1", model_b="m2", n_turns=1, status="failed",
                        status_reason="generation error")])
    wh.upsert([review("dx", "ann1", "accept")])
    d, _ = effective(home)
    assert d["dx"]["status"] == "failed" and d["dx"]["decided_by"] is None


# ---- validation of annotation results -------------------------------------------------------------------
def test_parse_annotation_reports_each_problem_and_keeps_the_rest():
    labels = set(EMOTIONS)
    result = prediction_result(["Happy", "", "Sad"], None, None) + [
        {"from_name": "emotion_1", "to_name": "turn_1", "type": "choices", "value": {"choices": ["Bogus"]}},
        {"from_name": "emotion_7", "to_name": "turn_7", "type": "choices", "value": {"choices": ["Sad"]}},
        {"from_name": "verdict", "to_name": "dialogue", "type": "choices", "value": {"choices": ["maybe"]}},
        {"from_name": "rating", "to_name": "dialogue", "type": "rating", "value": {"rating": 9}},
        {"from_name": "mystery", "to_name": "dialogue", "type": "choices", "value": {"choices": ["x"]}},
        {"from_name": "comment", "to_name": "dialogue", "type": "textarea", "value": {"text": ["too", "short"]}},
    ]
    fields, problems = parse_annotation(result, 4, labels)
    assert fields["turn_labels"] == ["Happy", "", "Sad", ""]
    assert fields["verdict"] is None and fields["rating"] is None and fields["comment"] == "too\nshort"
    text = "\n".join(problems)
    for needle in ("unknown label 'Bogus'", "extra turn 8", "unknown verdict", "rating 9", "unknown control 'mystery'",
                   "missing turn label(s) for turn(s) 4"):
        assert needle in text, (needle, problems)


def test_parse_annotation_clean():
    fields, problems = parse_annotation(prediction_result(["Happy", "Sad"], "accept", 4), 2, set(EMOTIONS))
    assert problems == []
    assert fields == {"verdict": "accept", "rating": 4, "turn_labels": ["Happy", "Sad"], "comment": ""}


def test_labeling_config_lists_the_taxonomy_and_is_stable():
    xml = labeling_config(EMOTIONS)
    assert config_labels(xml) == set(EMOTIONS)
    assert config_fingerprint(xml) == config_fingerprint(labeling_config(EMOTIONS))
    assert 'name="verdict"' in xml and "<Rating" in xml and "<Paragraphs" in xml and "<Repeater" not in xml
    with pytest.raises(ValueError):
        labeling_config([])


# ---- selection --------------------------------------------------------------------------------------
def test_selection_reasons_rates_and_determinism(home):
    statuses = ["uncertain"] + ["accepted"] * 60 + ["rejected"] * 40
    seed_warehouse(home, statuses)
    none = select_for_review(home, ReviewPolicy(audit_accepted=0, audit_rejected=0))
    reasons = dict(none)
    assert reasons["d0"] == "uncertain"
    assert reasons[f"d{len(statuses) - 1}"] == "disagreement"  # checks judge disagrees on the last one
    assert len(none) == 2
    some = select_for_review(home, ReviewPolicy(audit_accepted=0.3, audit_rejected=0.5, seed=7))
    n_acc = sum(r == "audit-accepted" for _, r in some)
    n_rej = sum(r == "audit-rejected" for _, r in some)
    assert 5 <= n_acc <= 35 and 8 <= n_rej <= 32
    assert some == select_for_review(home, ReviewPolicy(audit_accepted=0.3, audit_rejected=0.5, seed=7))
    more = select_for_review(home, ReviewPolicy(audit_accepted=0.6, audit_rejected=0.5, seed=7))
    assert set(some) <= set(more)  # a higher rate only adds
    assert len(select_for_review(home, ReviewPolicy(audit_accepted=1, audit_rejected=1, limit=5))) == 5
    with pytest.raises(PushError, match="rate"):
        ReviewPolicy(audit_accepted=1.5)


def test_disagreement_by_score_spread():
    a = {"verdict": "accept", "coherence": 5}
    b = {"verdict": "accept", "coherence": 2}
    assert judges_disagree([a, b], score_spread=2) and not judges_disagree([a, b], score_spread=4)
    assert 0 <= audit_draw(0, "x") < 1 and audit_draw(0, "x") != audit_draw(1, "x")


# ---- agreement ----------------------------------------------------------------------------------------
def test_kappa_values_match_textbook_examples():
    # Cohen (1960)-style 2x2: po = 0.7, pe = 0.5 -> 0.4
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["x", "x"], ["x", "x"]) == 1.0
    # Fleiss (1971) example on Wikipedia: 10 items, 14 raters, 5 categories -> 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    items = [[c for c, n in enumerate(row) for _ in range(n)] for row in table]
    assert fleiss_kappa(items) == pytest.approx(0.210, abs=5e-4)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1], [2, 3]) is None


def test_agreement_summary_on_reviews(home):
    seed_warehouse(home, ["accepted", "rejected", "uncertain", "accepted"])
    Warehouse(home).upsert([
        review("d0", "ann1", "accept", ["Happy", "Excited", "Curious", "Proud"], rating=4),
        review("d0", "ann2", "accept", ["Happy", "Excited", "Curious", "Sad"], rating=5),
        review("d1", "ann1", "reject", rating=1), review("d1", "ann2", "reject", rating=2),
        review("d2", "ann1", "accept", rating=3), review("d2", "ann2", "reject", rating=3),
        review("d3", "ann1", "accept", rating=5),
    ])
    s = agreement_summary(home)
    assert s["reviewed_dialogues"] == 4 and s["annotators"] == 2 and s["reviews"] == 7
    assert s["verdict_agreement"]["items_multi_rated"] == 3
    assert s["verdict_agreement"]["percent_agreement"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["human_decisions"] == {"accept": 2, "reject": 1, "tied": 1}
    assert s["turn_label_agreement"]["items_multi_rated"] == 4
    assert s["turn_label_agreement"]["percent_agreement"] == pytest.approx(0.75)
    llm = s["judge_vs_human"]["llm:judge"]
    assert llm["verdict"]["n"] == 3 and llm["verdict"]["agreement"] == pytest.approx(1.0)
    assert llm["criteria"]["coherence"]["n"] == 4
    only = agreement_summary(home, dialogue_ids=["d1"])
    assert only["reviewed_dialogues"] == 1 and only["human_decisions"]["reject"] == 1


# ---- server guard rails (no server needed) -------------------------------------------------------------------
def test_credentials_from_env_only_and_never_printed(monkeypatch):
    from annotation.server import LabelStudioError, credentials

    for name in ("EMOFORGE_LS_USERNAME", "EMOFORGE_LS_PASSWORD", "EMOFORGE_LS_TOKEN", "LABEL_STUDIO_USERNAME",
                 "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN", "LABEL_STUDIO_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(LabelStudioError, match="EMOFORGE_LS_USERNAME.*EMOFORGE_LS_PASSWORD.*EMOFORGE_LS_TOKEN"):
        credentials()
    monkeypatch.setenv("EMOFORGE_LS_USERNAME", "admin@example.com")
    monkeypatch.setenv("LABEL_STUDIO_PASSWORD", "pw-secret-123")
    monkeypatch.setenv("EMOFORGE_LS_TOKEN", "short")
    with pytest.raises(LabelStudioError, match="too short"):
        credentials()
    monkeypatch.setenv("EMOFORGE_LS_TOKEN", "t0k3n-very-secret-value")
    creds = credentials()
    assert "t0k3n" not in repr(creds) and "pw-secret" not in repr(creds)


def test_busy_port_is_refused_before_starting(home, monkeypatch):
    from annotation.server import LabelStudioError, start

    monkeypatch.setenv("EMOFORGE_LS_USERNAME", "admin@example.com")
    monkeypatch.setenv("EMOFORGE_LS_PASSWORD", "pw-secret-123")
    monkeypatch.setenv("EMOFORGE_LS_TOKEN", "t0k3n-very-secret-value")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(LabelStudioError, match=f"port {port} .* in use"):
            start(home, port=port)
    assert not (home / "labelstudio" / "server.json").exists()


def test_poll_until_stops_when_done_or_at_deadline():
    from flows.review_flow import poll_until

    clock = [T0]
    waits = iter([3, 2, 0])
    reports = poll_until("h", T0 + timedelta(hours=1), 60, poll=lambda h, url=None, project=None: {"tasks_waiting": next(waits)},
                         sleep=lambda s: clock.__setitem__(0, clock[0] + timedelta(seconds=s)), now=lambda: clock[0])
    assert [r["tasks_waiting"] for r in reports] == [3, 2, 0]
    clock = [T0]
    reports = poll_until("h", T0 + timedelta(seconds=150), 60, poll=lambda h, url=None, project=None: {"tasks_waiting": 5},
                         sleep=lambda s: clock.__setitem__(0, clock[0] + timedelta(seconds=s)), now=lambda: clock[0])
    assert len(reports) == 4  # t = 0, 60, 120, 150


# ---- judge calibration scoring (the judge itself runs in bench/judge_calibration.py) -----------------------
def test_calibration_sets_and_scores(shared_dir):
    import importlib.util

    spec = importlib.util.spec_from_file_location("judge_calibration", Path(__file__).parent.parent / "bench" / "judge_calibration.py")
    jc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(jc)
    sets = jc.load_sets(shared_dir / "benchdata")
    assert set(sets) == {"fed-dialog", "fed-turn", "usr-topicalchat", "usr-personachat", "grade", "esconv-vs-failed"}
    assert all(len(v) >= 50 for v in sets.values())
    assert {it["human"]["overall"] for it in sets["esconv-vs-failed"]} == {0.0, 1.0}
    assert all(2 <= len(it["texts"]) <= jc.MAX_TURNS for v in sets.values() for it in v)
    picked = jc.sample(sets["esconv-vs-failed"], 6, seed=0, balanced=True)
    assert sorted(it["human"]["overall"] for it in picked) == [0.0] * 3 + [1.0] * 3
    assert jc.auc([3, 4, 5], [1, 2]) == 1.0 and jc.auc([1], [1]) == 0.5
    hint = jc.threshold_hint([(1, 0.1), (1.5, 0.2), (2, 0.3), (3, 0.6), (4, 0.8), (4.5, 0.9), (5, 1.0)])
    assert hint["youden_j"] == 1.0 and 2 < hint["judge_score"] <= 4
