"""Quality gates end to end: `emoforge gates check`, the classifier emotion judge stored in the home, and a build
against a stub that answers with JSON fragments, markup and prompt echoes publishing none of them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from emoforge.cli import app
from schemas.defects import DefectContext, audit_dialogue

GOOD = {"id": "good", "domain": "Travel", "turns": [
    {"speaker": "A", "text": "I can't believe we finally got the tickets, this trip is going to be amazing!", "emotion": "Excited"},
    {"speaker": "B", "text": "I'm so happy for us, I have wanted to see Lisbon for years.", "emotion": "Happy"}]}
BAD = {"id": "json", "turns": [
    {"speaker": "A", "text": '{"coherence": 5, "verdict": ', "emotion": "Happy"},
    {"speaker": "B", "text": "My next line, My response to you asked if you were fine.", "emotion": "Sad"}]}


def _write(tmp_path: Path, lines: list[str]) -> Path:
    f = tmp_path / "dialogues.jsonl"
    f.write_text("\n".join(lines) + "\n")
    return f


def test_gates_check_names_bad_lines_and_checks_the_rest(tmp_path, home):
    f = _write(tmp_path, [json.dumps(GOOD), json.dumps(BAD), "not json at all",
                          json.dumps({"id": "x", "turns": [{"text": "Hi.", "emotion": "Hangry"}]}),
                          json.dumps({"id": "y", "turns": []}), ""])
    r = CliRunner().invoke(app, ["gates", "check", str(f), "--home", str(home), "--json", "--no-judge"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    bad = {b["line"]: b["error"] for b in out["bad_lines"]}
    assert set(bad) == {3, 4, 5}
    assert "not JSON" in bad[3] and "'Hangry' is not in taxonomy" in bad[4] and "'turns'" in bad[5]
    res = {x["id"]: x for x in out["results"]}
    assert res["json"]["status"] == "rejected" and res["json"]["decided_by"] == "checks"
    assert any(f.startswith("markup:0:") for f in res["json"]["failures"])
    assert any(f.startswith("meta_talk:1:") for f in res["json"]["failures"])
    # without the emotion judge nothing can support the emotions: uncertain, never accepted
    assert res["good"]["status"] == "uncertain"
    # plain text output names the bad lines too
    r = CliRunner().invoke(app, ["gates", "check", str(f), "--home", str(home), "--no-judge"])
    assert r.exit_code == 0 and "line 3: skipped: not JSON" in r.output and "line 2  json  rejected" in r.output


def test_gates_check_fails_only_on_an_unusable_file(tmp_path, home):
    r = CliRunner().invoke(app, ["gates", "check", str(tmp_path / "missing.jsonl"), "--home", str(home)])
    assert r.exit_code != 0 and "no such file" in r.output
    f = _write(tmp_path, ["nope", "[1, 2]"])
    r = CliRunner().invoke(app, ["gates", "check", str(f), "--home", str(home), "--no-judge"])
    assert r.exit_code != 0 and "no usable dialogue" in r.output and "line 1" in r.output


def test_classifier_judge_trains_once_and_reuses_its_stored_head(shared_dir, home, monkeypatch):
    from flows import emotion_judge as ej
    from schemas.taxonomy import load_taxonomy

    spec = ej.TrainSpec(shared_dir / "benchdata", per_class=12, tune_limit=40)
    j1 = ej.load_or_train(home, spec)
    head = j1.path / "head.npz"
    assert head.is_file() and j1.path.parent == home / "judges" / "emotion"
    meta = json.loads((j1.path / "meta.json").read_text())
    assert meta["n_train"] > 50 and 0 < meta["support_at"] < 1 and meta["validation_pairs"] == 40
    stamp = head.stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("retrained although nothing changed")

    monkeypatch.setattr(ej, "_train", boom)
    j2 = ej.load_or_train(home, spec)
    assert j2.path == j1.path and head.stat().st_mtime_ns == stamp
    # another seed is another input: another head (not trained here)
    other = ej.TrainSpec(shared_dir / "benchdata", per_class=12, tune_limit=40, seed=1)
    assert other.fingerprint(j1.cache.embedder.fingerprint) != j1.path.name

    tax = load_taxonomy("deepdialogue")
    jdg = ej.classifier_judgement(j2, "jdg_x", "d1", [GOOD["turns"][0]["text"], GOOD["turns"][1]["text"]],
                                  ["Excited", "Happy"], tax)
    assert jdg.kind == "classifier" and jdg.judge_id.startswith("classifier:emotion-minilm-")
    assert len(jdg.emotion_fidelity) == 2 and all(1 <= s <= 5 for s in jdg.emotion_fidelity)
    assert jdg.verdict in ("accept", "uncertain")
    status, reason, _ = ej.classifier_decision(jdg)
    assert status == ("accepted" if jdg.verdict == "accept" else "uncertain") and "emotion judge" in reason


def test_decide_with_tiny_judges_never_accepts_what_the_classifier_cannot_support():
    from schemas.config.generation import JudgingConfig
    from flows.emotion_judge import unavailable_judgement
    from flows.judge import decide
    from schemas.records import Judgement

    checks = Judgement(id="c", dialogue_id="d", judge_id="checks", kind="checks", verdict="accept")
    cfg = JudgingConfig()
    unsure = Judgement(id="k", dialogue_id="d", judge_id="classifier:x", kind="classifier", verdict="uncertain",
                       emotion_fidelity=[2, 1], failures=["emotion_unsupported:0:Happy score 0.10 < 0.33"])
    assert decide(checks, [], cfg, advisory=True, classifier=unsure).status == "uncertain"
    assert decide(checks, [], cfg, advisory=True, classifier=unavailable_judgement("k", "d", "no torch")).status == "uncertain"
    sure = unsure.model_copy(update={"verdict": "accept", "failures": [], "emotion_fidelity": [4, 5]})
    d = decide(checks, [], cfg, advisory=True, classifier=sure)
    assert d.status == "accepted" and d.decided_by == "classifier" and d.score == 4.5
    rejected = checks.model_copy(update={"verdict": "reject", "failures": ["markup:0:markup '{'"]})
    assert decide(rejected, [], cfg, advisory=True, classifier=sure).status == "rejected"


def test_build_against_a_stub_answering_json_markup_and_echoes_publishes_none_of_them(home):
    import pyarrow.parquet as pq

    from flows.build import BuildConfig, run_build
    from schemas.config.models import parse_models_config
    from flows.llm.stub import CONTENT_FAULTS, StubConfig, StubServer

    cfg = BuildConfig.model_validate({"generation": {"domains": ["Travel", "Food"], "min_turns": 3, "max_turns": 4},
                                      "judging": {"accept_at": 1.0, "reject_below": 1.0, "max_spread": 4.0,
                                                  "min_safety": 1}})
    faults = StubConfig(latency_s=0.002, p_json_fragment=0.12, p_markup=0.12, p_echo=0.12, seed=11)
    with StubServer(faults) as stub:
        ep = [{"base_url": stub.url}]
        mcfg = parse_models_config({
            "models": {m: {"endpoints": ep, "timeout_s": 10} for m in ("m1", "m2", "judge")},
            "pairs": [["m1", "m2"], ["m2", "m1"]], "judges": ["judge"], "error_rate_stop": 0.95})
        summary = run_build(home, cfg, mcfg, n_dialogues=10, seed=0, publish=True, progress=False)
        outcomes = stub.stats()["outcomes"]
    assert sum(outcomes.get(k, 0) for k in CONTENT_FAULTS) >= 5, outcomes
    retried = summary["metrics"].get("retries") or {}
    rel = home / "releases" / summary["version"]
    texts_by_dialogue: dict[str, list[tuple[int, str]]] = {}
    for part in rel.glob("data/utterances/*.parquet"):
        t = pq.read_table(part).to_pylist()
        for r in t:
            texts_by_dialogue.setdefault(r["dialogue_id"], []).append((r["utterance_idx"], r["text"]))
    texts = [t for v in texts_by_dialogue.values() for _, t in v]
    assert texts, f"nothing published (retries {retried})"
    for t in texts:
        assert "{" not in t and "<" not in t and "```" not in t and "##" not in t and "**" not in t, t
        assert "My next line" not in t and "You are" not in t and "Speak naturally" not in t, t
    for did, rows in texts_by_dialogue.items():
        ordered = [t for _, t in sorted(rows)]
        assert audit_dialogue(ordered, DefectContext(word_cap=25)) == [], (did, ordered)


def test_each_model_kind_gets_its_prompt_style():
    """Base model: a transcript ending with the speaker's tag; SmolLM2 (tiny instruct): a role-play chat whose
    messages are the conversation; any other model: the chat prompt with the conversation inside."""
    from schemas.config.models import ModelSpec, load_models_config
    from flows.prompt_styles import CHAT, ROLEPLAY, TRANSCRIPT, instructions_text, prompt_style
    from flows.prompts import TURN_STAGE, TurnRow
    from schemas.records import Scenario
    from schemas.taxonomy import load_taxonomy

    tax = load_taxonomy("deepdialogue")
    mcfg = load_models_config(None)  # the embedded default pair
    assert [prompt_style(mcfg.models[m]) for m in ("gemma3-270m", "smollm2-135m")] == [TRANSCRIPT, ROLEPLAY]
    assert prompt_style(ModelSpec(name="big", endpoints=[{"base_url": "http://127.0.0.1:1/v1"}])) == CHAT
    scn = Scenario(id="s", domain=tax.domains[0].name, model_a="gemma3-270m", model_b="smollm2-135m", n_turns=4,
                   emotions=["Happy", "Worried", "Hopeful", "Angry"], seed=0, index=0, taxonomy=tax.name)
    history = ["I just got the keys to our new flat!"]
    row = TurnRow(scn, tax, tuple(history), style=prompt_style(mcfg.models["gemma3-270m"]))
    msgs, version = TURN_STAGE.prompt(row), TURN_STAGE.version(row)
    assert row.base  # generation adds flows.prompt_styles.STOP as stop sequences for a base model
    assert [m["role"] for m in msgs] == ["user"] and msgs[0]["content"].endswith("\nB (worried):")
    assert "A (happy): I just got the keys to our new flat!" in msgs[0]["content"]
    assert version.endswith("turn-completion-v3")

    row = TurnRow(scn, tax, tuple(history), (("bad", "Say it better."),),
                  style=prompt_style(mcfg.models["smollm2-135m"]))
    msgs = TURN_STAGE.prompt(row)
    assert not row.base and TURN_STAGE.version(row).endswith("turn-roleplay-v3")
    # the conversation is the chat: the other speaker's line is the user's, then the failed attempt and its guidance
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[1]["content"] == history[0] and msgs[-1] == {"role": "user", "content": "Say it better."}
    assert "worried" in msgs[0]["content"] and "at most 25 words" in msgs[0]["content"]
    assert not any(m["content"].startswith(("A:", "B:", "A (", "B (")) for m in msgs)
    # turn 2 (A again): A's own earlier line is the assistant's, B's the user's, the feeling is A's
    row = TurnRow(scn, tax, (*history, "Oh no, is the rent not too high?"), style=ROLEPLAY)
    msgs = TURN_STAGE.prompt(row)
    assert [m["role"] for m in msgs] == ["system", "assistant", "user"] and "hopeful" in msgs[0]["content"]
    # the first turn has a line to answer (a greeting that is not part of the dialogue)
    assert [m["role"] for m in TURN_STAGE.prompt(TurnRow(scn, tax, (), style=ROLEPLAY))] == ["system", "user"]

    row = TurnRow(scn, tax, tuple(history), (("bad", "Say it better."),), style=CHAT)
    msgs = TURN_STAGE.prompt(row)
    assert msgs[0]["role"] == "system" and msgs[-1] == {"role": "user", "content": "Say it better."}
    # the instructions a reply must not copy: never an earlier (assistant) reply
    assert "bad" not in instructions_text(msgs).split() and "naturally" in instructions_text(msgs)


def test_an_unavailable_emotion_judge_is_reported_once_not_per_dialogue(tmp_path, monkeypatch, caplog):
    """Without its training data the judge fails the same way for every dialogue: every dialogue gets an
    ``uncertain`` judgement naming the cause, and the log says it once (a 65,600-dialogue build logged it per
    dialogue)."""
    import asyncio

    from flows import emotion_judge as ej
    from schemas.taxonomy import load_taxonomy

    monkeypatch.setenv("EMOFORGE_BENCHDATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr(ej, "_WARNED", set())
    tax = load_taxonomy()
    with caplog.at_level("WARNING", logger="emoforge.emotion_judge"):
        out = [asyncio.run(ej.emotion_judgement(tmp_path / "home", f"j{i}", f"d{i}", ["Hi there.", "Oh no!"],
                                                ["Happy", "Sad"], tax)) for i in range(3)]
    assert [j.verdict for j in out] == ["uncertain"] * 3
    assert all("nowhere" in j.rationale and "goemotions" in j.rationale for j in out)
    warned = [r for r in caplog.records if "emotion judge unavailable" in r.getMessage()]
    assert len(warned) == 1 and "nowhere" in warned[0].getMessage()
