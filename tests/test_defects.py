"""The defect catalogue (schemas/defects.py): each class refuses its defect and keeps real speech."""

from __future__ import annotations

import pytest

from schemas.defects import DEFECT_NAMES, DefectContext, audit_dialogue, first_defect, guidance, turn_defects

# (class, defective text, context overrides) - the defects seen in generated data (issue 11) and their kin
BAD = [
    ("empty", "", {}),
    ("empty", " ... ", {}),
    ("special_token", "Sounds good to me.<|im_end|>", {}),
    ("special_token", "<end_of_turn> I am fine, thanks.", {}),
    ("markup", '{"coherence": 5, "verdict": ', {}),
    ("markup", "<p>I think we should go.</p>", {}),
    ("markup", "## Reply\nThat is great news.", {}),
    ("markup", '"reply": "That is great news."', {}),
    ("url", "You can book it at https://example.com/tickets today.", {}),
    ("url", "Just look at www.example.org for the times.", {}),
    ("role_prefix", "A: I can't wait for the trip!", {}),
    ("role_prefix", "User: what time is it?", {}),
    ("role_prefix", "Speaker 2: That is fine with me.", {}),
    ("role_prefix", "Sure, see you then.\nB: Bye!", {}),
    ("stage_direction", "*smiles* That is so kind of you.", {}),
    ("stage_direction", "(laughs) You are right about that.", {}),
    ("stage_direction", "I can't believe it. [sighs]", {}),
    ("stage_direction", "[Happy] We won the game!", {"emotions": ("Happy", "Sad")}),
    ("meta_talk", "You are a student or worker looking for employment in a spoken conversation.", {}),
    ("meta_talk", "My next line, My response to you asked if you were fine.", {}),
    ("meta_talk", "As an AI, I don't have feelings about holidays.", {}),
    ("meta_talk", "Here is my reply: I love that song too.", {}),
    ("meta_talk", "I will respond with a short happy sentence.", {}),
    ("meta_talk", "Let me know what the user wants next.", {}),
    # seen in accepted dialogues of the embedded default before the catalogue
    ("meta_talk", "You are a teacher (you have just graduated from college and want some advice).", {}),
    ("meta_talk", "Bethleye (A) says the show is awesome and I'll be happy with it!", {}),
    ("meta_talk", "A is going upstairs - in Sydney!", {}),
    ("meta_talk", "This conversation was about something else entirely.", {}),
    # seen in the accepted dialogue of the embedded default after the catalogue (added after that measurement)
    ("meta_talk", "This conversation can be rephrased as a short dialogue in text where each message is short.", {}),
    ("meta_talk", "This is another conversation on how I love experimenting with new things.", {}),
    ("prompt_copy", "Speak naturally, like a real person, in plain English.",
     {"prompt": "You are A, a person talking with B. Speak naturally, like a real person, in plain English. "
                "Answer with only the words you say out loud."}),
    ("turn_copy", "I really love this little cafe by the river.",
     {"earlier": ("I really love this little cafe by the river.", "Me too, the coffee is great.")}),
    ("turn_copy", "I REALLY love this little cafe by the river!",
     {"earlier": ("I really love this little cafe by the river.", "Me too.")}),
    ("truncated", "I was thinking that we could go to the", {}),
    ("truncated", "Well, I would like to book a table for tw", {}),
    ("truncated", "That sounds like a great idea,", {}),
    ("truncated", "We could meet at the station at nine", {"finish_reason": "length"}),
    ("charset", "I am so happy 我很高兴见到你", {}),
    ("charset", "That\u200bis fine.", {}),
    ("charset", "I donâ€™t know what to say.", {}),
    # written by the embedded pair and accepted before emoji were a charset defect
    ("charset", "🕺RiIJY!", {}),
    ("empty", "🎉🎉🎉", {}),  # no words at all: refused as empty before the charset check
    ("charset", "That is so sweet of you 😊", {}),
    ("language", "Je pense que nous devrions partir avant que la pluie commence.", {}),
    ("language", "Saya tidak tahu apakah kita bisa datang ke kantor.", {}),
    ("language", "Bako lumi tasa pero vinu kalo desi muta rano.", {}),
    ("over_long", "This is a long line. " * 8, {"word_cap": 25}),
]

# real speech the catalogue must keep (written like DailyDialog / ESConv turns, including their quirks)
GOOD = [
    ("Here is your change . Please wait for your receipt .", {}),
    ("You are welcome .", {}),
    ("You are right, I should have called her first.", {}),
    ("It may not be true , but the first impression is important .", {}),
    ("Hi! How are you today?", {}),
    ("I'm okay, a little bit sad though", {"punctuated": False}),
    ("and i have no car to escape it", {"punctuated": False}),
    ("You too :) Thanks", {"punctuated": False}),
    ("I can't help thinking about it all day.", {}),
    ("It was wise of you to listen to your feelings.", {}),
    ("That's what the user manual says, right?", {}),
    ("OK .", {"earlier": ("OK .", "Fine .", "Good .", "Bye .")}),
    ("Calm down! Shouting won't help.", {}),
    ("My response would be the same as yours, honestly.", {}),
    ("It stands 320m ( 1050ft ) high .", {}),
    ("Café au lait for me, please.", {}),
    ("You are a genius!", {}),
    ("I got an A in math, can you believe it?", {}),
    ("Plan B is better than nothing.", {}),
    ("It's 30° outside and the price went up 5% – can you believe it?", {}),
]


@pytest.mark.parametrize("cls,text,over", BAD, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(BAD)])
def test_each_defect_class_refuses_its_defect(cls, text, over):
    found = turn_defects(text, DefectContext(**over))
    assert cls in [c for c, _ in found], found
    reason = dict(found)[cls]
    assert reason and isinstance(reason, str)


@pytest.mark.parametrize("text,over", GOOD)
def test_real_speech_passes_every_class(text, over):
    assert turn_defects(text, DefectContext(word_cap=60, **over)) == []


def test_every_class_has_a_bad_example_and_guidance():
    assert {c for c, _, _ in BAD} == set(DEFECT_NAMES)
    for name in DEFECT_NAMES:
        assert guidance(name) and "Write one short" not in guidance(name) or name == "empty"


def test_first_defect_follows_the_catalogue_order():
    assert first_defect("A: {\"verdict\": ") == ("markup", "markup '{'")
    assert first_defect("Fine, thanks.") is None


def test_audit_dialogue_names_turn_class_and_reason():
    texts = ["Hello, how was your trip to Rome?", '{"coherence": 5, "verdict": ', "It was lovely, thank you.",
             "Hello, how was your trip to Rome?", "My next line is about the food."]
    found = audit_dialogue(texts, DefectContext(word_cap=25))
    by_turn = {}
    for i, cls, reason in found:
        by_turn.setdefault(i, []).append(cls)
        assert reason
    assert set(by_turn) == {1, 3, 4}
    assert "markup" in by_turn[1] and "turn_copy" in by_turn[3] and "meta_talk" in by_turn[4]
    assert audit_dialogue(["Hi there!", "Hello, nice to meet you."]) == []


def test_checks_retry_names_the_defect_with_guidance():
    from flows.checks import check_dialogue, turn_problem

    p = turn_problem('{"coherence": 5, "verdict": "accept"}', [], 25)
    assert p is not None and p.gate == "markup" and "JSON" in p.guidance(25)
    p = turn_problem("Speak naturally, like a real person.", [], 25,
                     prompt="You are A. Speak naturally, like a real person, in plain English.")
    assert p is not None and p.gate == "prompt_copy"
    res = check_dialogue(["Hi there, how are you?", "*smiles* Fine, thanks."], 25, expected_turns=2)
    assert res.gates == ["stage_direction"] and res.failures[0].startswith("stage_direction:1:")


def test_false_rejects_on_real_dailydialog_validation_stay_low(shared_dir):
    """Held-out real data (the catalogue's patterns were written against the test splits)."""
    from flows.emotion_judge import dailydialog_dialogues

    dialogues = dailydialog_dialogues(shared_dir / "benchdata", "validation")[:300]
    n = bad = 0
    for d in dialogues:
        texts = [t for t, _ in d]
        flagged = {i for i, _, _ in audit_dialogue(texts, DefectContext(word_cap=120))}
        n += len(texts)
        bad += len(flagged)
    assert n > 1000 and bad / n <= 0.03, (bad, n)
