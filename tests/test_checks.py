"""Cleaning of raw model replies and the deterministic gates, on replies like those small models really give."""

from __future__ import annotations

import pytest

from flows.checks import (
    check_dialogue, clean_turn, is_repetitive, is_truncated, near_duplicates, repeats_earlier, trim_to_sentences,
    turn_problem,
)
from flows.judge import agreement, decide
from schemas.config.generation import JudgingConfig
from flows.prompts import JudgeParseError, judge_schema, parse_judgement
from schemas.records import Judgement


@pytest.mark.parametrize("raw, clean", [
    ("A: I love this painting, the colours are so bright!", "I love this painting, the colours are so bright!"),
    ("Speaker B: \"Oh really? I never noticed that.\"", "Oh really? I never noticed that."),
    ("**A:** That's wonderful news!<|im_end|>", "That's wonderful news!"),
    ("Sure thing! I'm so excited for the trip.<end_of_turn>\n<start_of_turn>user", "Sure thing! I'm so excited for the trip."),
    ("(excitedly) We finally got the tickets!", "We finally got the tickets!"),
    ("[Happy] What a lovely morning for a walk.", "What a lovely morning for a walk."),
    ("I can't believe it. *sighs* It's gone.", "I can't believe it. It's gone."),
    ("That sounds great to me!\nB: I agree, let's go.\nA: Okay!", "That sounds great to me!"),
    ("Assistant: Well, I guess we could try again tomorrow.", "Well, I guess we could try again tomorrow."),
    ("“I miss the old garden,” she said softly", "I miss the old garden,” she said softly"),
    ("  \n\n", ""),
])
def test_clean_turn(raw, clean):
    assert clean_turn(raw, 25) == clean


def test_clean_keeps_a_lone_apostrophe_and_cuts_at_a_blank_line():
    assert clean_turn("Rock 'n' roll is the best, isn't it?\n\nNote: this reply is happy.", 25) == \
        "Rock 'n' roll is the best, isn't it?"


def test_trim_to_whole_sentences_within_the_cap():
    text = "I am so proud of you. You worked hard all year long and it shows in every single page of this book you wrote."
    assert trim_to_sentences(text, 10) == "I am so proud of you."
    assert clean_turn(text, 10) == "I am so proud of you."
    # no whole sentence fits: left as is, so the word-cap gate rejects it
    long_one = " ".join(["word"] * 30)
    assert clean_turn(long_one, 25) == long_one
    assert turn_problem(long_one, [], 25).gate == "over_word_cap"


@pytest.mark.parametrize("text, gate", [
    ("", "empty_turn"),
    ("...", "empty_turn"),
    ("I think the the the the answer is yes.", "repetition_within_turn"),
    ("I love it, I love it, I love it, I love it so much.", "repetition_within_turn"),
    ("Sure! Here is my reply: I am happy today.", "leaked_instruction"),
    ("Your feeling: happy. I'm glad we met!", "leaked_instruction"),
    ("As an AI language model, I cannot feel happy.", "leaked_instruction"),
    ("Great idea. User: what next?", "leaked_role_tag"),
    ("Это очень интересная картина, правда?", "wrong_script"),
    ("Das Wetter heute schön sonnig warm perfekt Spaziergang Park Freunde", "wrong_language"),
    ("I was going to tell you about the", "truncated_turn"),
    ("We should talk about the budget,", "truncated_turn"),
])
def test_turn_gates(text, gate):
    p = turn_problem(text, [], 25)
    assert p is not None and p.gate == gate, p
    assert p.guidance(25)


def test_good_turns_pass():
    for t in ("Oh wow, I never thought I'd see that painting in person!",
              "Honestly? I'm a bit worried the weather will ruin our picnic.",
              "Thanks so much, that really means a lot to me."):
        assert turn_problem(t, [], 25) is None, t


def test_repetition_across_turns_and_truncation_by_length():
    earlier = ["I really love the new museum downtown, it is amazing.", "Me too, the paintings are great."]
    assert repeats_earlier("I really love the new museum downtown, it's amazing!", earlier) == 0
    assert turn_problem("Me too, the paintings are great.", earlier, 25).gate == "repetition_across_turns"
    assert repeats_earlier("Have you seen the sculpture garden yet?", earlier) is None
    assert is_truncated("We went to the park and", None)
    assert is_truncated("We went to the park and played", "length")
    assert not is_truncated("We went to the park.", "length")
    assert is_repetitive("yes yes yes I agree with you") is not None


def test_check_dialogue_records_every_gate_with_its_turn():
    texts = ["Hello there, how are you doing today?", "", "B: I'm fine thanks.", "Hello there, how are you doing today?"]
    res = check_dialogue(texts, 25, expected_turns=5)
    assert not res.passed
    assert set(res.gates) == {"turn_count", "empty_turn", "leaked_role_tag", "repetition_across_turns"}
    assert "empty_turn:1" in res.failures and any(f.startswith("repetition_across_turns:3") for f in res.failures)
    good = ["I just finished the most amazing book about the ocean!", "Oh really? What was it about?",
            "It follows a sailor lost at sea for a whole year."]
    assert check_dialogue(good, 25, expected_turns=3).passed


def test_the_audit_skips_only_turns_that_passed_generation_and_finds_the_same():
    texts = ["I just finished the most amazing book about the ocean!", "Oh really? What was it about?",
             "It follows a sailor lost at sea for a whole year.", "It follows a sailor lost at sea for a whole year."]
    # what generation does: a turn is kept only when turn_problem passes it with the earlier turns and the call's cap
    passed = 0
    while passed < len(texts) and turn_problem(texts[passed], texts[:passed], 25) is None:
        passed += 1
    assert passed == 3  # the copy of turn 2 fails generation's gates
    full = check_dialogue(texts, 25, expected_turns=4)
    skipping = check_dialogue(texts, 25, expected_turns=4, passed_turns=passed)
    assert full.failures == skipping.failures and any(f.startswith("repetition_across_turns:3") for f in full.failures)
    # the dialogue gates still run when every turn is skipped
    assert check_dialogue(texts[:3], 25, expected_turns=5, passed_turns=3).gates == ["turn_count"]


def test_near_duplicates_are_found_in_order():
    a = ["I love painting landscapes in the morning light.", "Me too, the colours are softer then.",
         "Let's go to the hills tomorrow and paint together."]
    b = list(a[:2]) + ["Let's go to the hills tomorrow and paint together!"]  # same text, other punctuation
    c = ["The stock market dropped again today.", "That makes me anxious about my savings.", "Same here, honestly."]
    dups = near_duplicates([("d1", a), ("d2", c), ("d3", b)])
    assert set(dups) == {"d3"} and dups["d3"][0] == "d1" and dups["d3"][1] >= 0.9


def _j(kind="llm", **kw):
    base = dict(id="j", dialogue_id="d", judge_id=f"{kind}:x", kind=kind, verdict="accept")
    base.update(kw)
    return Judgement(**base)


def test_decision_rules_and_agreement():
    cfg = JudgingConfig()
    ok = _j("checks", judge_id="checks")
    good = _j(coherence=5, naturalness=4, domain_fit=5, safety=5, emotion_fidelity=[4, 5, 4])
    bad = _j(coherence=1, naturalness=2, domain_fit=1, safety=5, emotion_fidelity=[1, 2, 1], verdict="reject")
    mid = _j(coherence=3, naturalness=3, domain_fit=3, safety=5, emotion_fidelity=[3, 3, 3], verdict="uncertain")
    unsafe = _j(coherence=5, naturalness=5, domain_fit=5, safety=1, emotion_fidelity=[5, 5, 5])
    assert decide(ok, [good], cfg).status == "accepted"
    assert decide(ok, [bad], cfg).status == "rejected"
    assert decide(ok, [mid], cfg).status == "uncertain"
    assert decide(ok, [unsafe], cfg).status == "rejected"
    assert decide(ok, [good, bad], cfg).status == "uncertain"  # judges disagree: spread > 1.5
    failed_checks = _j("checks", judge_id="checks", verdict="reject", failures=["empty_turn:1"])
    d = decide(failed_checks, [good], cfg)
    assert (d.status, d.decided_by, d.gates) == ("rejected", "checks", ["empty_turn"])
    assert decide(ok, [], cfg, ["judge: timeout"]).status == "failed"
    assert agreement(["accept", "accept", "reject"]) == pytest.approx(2 / 3)
    strict = JudgingConfig(accept_at=4.9)
    assert decide(ok, [good], strict).status == "uncertain"


def test_judge_schema_and_parser():
    schema = judge_schema(3)
    assert schema["properties"]["emotion_fidelity"]["minItems"] == 3
    answer = {"coherence": 4, "naturalness": 3, "domain_fit": 5, "safety": 5, "emotion_fidelity": [4, 4, 2],
              "verdict": "accept", "rationale": "fine", "coherence_rationale": "flows"}
    assert parse_judgement(answer, 3)["emotion_fidelity"] == [4, 4, 2]
    with pytest.raises(JudgeParseError, match="3 turns"):
        parse_judgement({**answer, "emotion_fidelity": [4]}, 3)
    with pytest.raises(JudgeParseError, match="coherence"):
        parse_judgement({**answer, "coherence": 9}, 3)
    with pytest.raises(JudgeParseError, match="verdict"):
        parse_judgement({**answer, "verdict": "maybe"}, 3)


def test_tiny_judges_are_advisory_by_default():
    from types import SimpleNamespace

    from flows.judge import judges_decide

    ok = _j("checks", judge_id="checks")
    bad = _j(coherence=1, naturalness=1, domain_fit=1, safety=5, emotion_fidelity=[1, 1, 1], verdict="reject")
    d = decide(ok, [bad], JudgingConfig(), advisory=True)
    assert (d.status, d.decided_by) == ("accepted", "checks") and "advisory" in d.reason and d.score == 1.0
    failed_checks = _j("checks", judge_id="checks", verdict="reject", failures=["over_word_cap:0:30>25"])
    assert decide(failed_checks, [], JudgingConfig(), advisory=True).status == "rejected"
    tiny, big = SimpleNamespace(embedded="smollm2-135m"), SimpleNamespace(embedded=None)
    assert not judges_decide(JudgingConfig(), [tiny])
    assert judges_decide(JudgingConfig(), [tiny, big])
    assert judges_decide(JudgingConfig(judges_decide="always"), [tiny])
    assert not judges_decide(JudgingConfig(judges_decide="never"), [big])


# replies SmolLM2-135M-Instruct gave to flows.prompts.turn_messages on the embedded default (word cap 25)
REAL = [
    ("B: Hey I'm Jamie, a tech blogger, I've been working on a new gadget for 3 years now. It's amazing, but I'm "
     "just starting to understand how it works. I need some advice, I'm so frustrated.\n\n(Sender's f", None,
     "Hey I'm Jamie, a tech blogger, I've been working on a new gadget for 3 years now."),
    ("You're a, a person talking with B in a, a conversation about the weather.\n\nWhat's the next thing you've "
     "done to me?", "leaked_instruction", None),
    ("I'm so glad to be here, I'm so glad to be here and I'm having fun, I'm having fun, I'm having fun, I'm "
     "having fun, I'm having fun, I'm having fun, I'm", "repetition_within_turn", None),  # cut at a clause, still a loop
    ("I'm so frustrated with how fast technology has changed my life. I love how it can make everything seem so "
     "amazing, but I'm not sure if it's really worth my time.", None,
     "I'm so frustrated with how fast technology has changed my life."),
    ("B: I've always wanted to try out some new makeup that makes my hair so pretty, you know? But I'm having fun "
     "with it.", None, "I've always wanted to try out some new makeup that makes my hair so pretty, you know? But "
     "I'm having fun with it."),
]


@pytest.mark.parametrize("raw, gate, clean", REAL)
def test_real_small_model_replies(raw, gate, clean):
    text = clean_turn(raw, 25)
    p = turn_problem(text, [], 25)
    assert (p.gate if p else None) == gate, (text, p)
    if clean is not None:
        assert text == clean


def test_gemma_base_echoing_the_system_prompt_is_a_leak():
    # Gemma 3 270M (base) through the chat template, a real reply
    raw = "You are A and want to ask him/her about current affairs (e.g., what is next) from a business meeting"
    assert turn_problem(clean_turn(raw, 25), [], 25).gate == "leaked_instruction"
