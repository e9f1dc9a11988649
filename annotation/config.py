"""The Label Studio labeling config for reviewing one dialogue, and the task data it reads.

Layout for the annotator:

* the whole dialogue as ``Paragraphs`` (speaker + turn number + intended emotion as the name, the text);
* the judges' scores and verdicts as read-only text;
* per turn (a ``Repeater`` over ``$turns``): the turn again and an emotion ``Choices`` over the taxonomy,
  pre-filled from the predictions with the current label; picking another emotion corrects the label;
* the dialogue verdict (accept / reject), a 1–5 rating and a free comment.

Control names used in annotation results (and validated on pull): ``emotion_<turn index>``, ``verdict``,
``rating``, ``comment``.
"""

from __future__ import annotations

import hashlib
from xml.sax.saxutils import quoteattr

CONFIG_VERSION = "dialogue-review-v1"
VERDICTS = ("accept", "reject")
EMOTION_PREFIX = "emotion_"


def labeling_config(emotions: list[str], title: str = "Review this dialogue") -> str:
    """The XML config; ``emotions`` are the taxonomy's names (the choices for correcting a turn's label)."""
    if not emotions:
        raise ValueError("the taxonomy has no emotions")
    choices = "\n".join(f"        <Choice value={quoteattr(e)}/>" for e in emotions)
    return f"""<View>
  <!-- emoforge {CONFIG_VERSION} -->
  <Header value={quoteattr(title)}/>
  <Text name="meta" value="$meta"/>
  <Paragraphs name="dialogue" value="$paragraphs" layout="dialogue" nameKey="speaker" textKey="text"/>
  <Header value="What the judges said" size="5"/>
  <Text name="judges" value="$judges"/>
  <Header value="Emotion of each turn (pre-filled with the current label: change it to correct)" size="5"/>
  <Repeater on="$turns" indexFlag="{{{{idx}}}}">
    <View style="border-top: 1px solid #ddd; padding-top: 4px">
      <Text name="turn_{{{{idx}}}}" value="$turns[{{{{idx}}}}].display"/>
      <Choices name="{EMOTION_PREFIX}{{{{idx}}}}" toName="turn_{{{{idx}}}}" choice="single" showInline="true" required="true">
{choices}
      </Choices>
    </View>
  </Repeater>
  <Header value="Keep this dialogue in the dataset?" size="5"/>
  <Choices name="verdict" toName="dialogue" choice="single-radio" showInline="true" required="true">
    <Choice value="accept"/>
    <Choice value="reject"/>
  </Choices>
  <Header value="Overall quality (1 = unusable, 5 = excellent)" size="5"/>
  <Rating name="rating" toName="dialogue" maxRating="5" icon="star" size="medium"/>
  <TextArea name="comment" toName="dialogue" rows="2" editable="true" maxSubmissions="1" placeholder="Why? (optional)"/>
</View>"""


def config_fingerprint(xml: str) -> str:
    return hashlib.sha256(xml.encode()).hexdigest()[:12]


def task_data(dialogue: dict, turns: list[dict], judgements: list[dict]) -> dict:
    """Task ``data`` for one dialogue. ``turns`` sorted by idx; keys are those of the warehouse tables."""
    paragraphs = [
        {"speaker": f"{t['idx'] + 1} · {t['speaker']} · intended: {t['intended_emotion']}", "text": t["text"]}
        for t in turns
    ]
    rows = [
        {"idx": t["idx"], "speaker": t["speaker"], "text": t["text"], "intended_emotion": t["intended_emotion"],
         "label": t["label"],
         "display": f"Turn {t['idx'] + 1} ({t['speaker']}, intended {t['intended_emotion']}, current label {t['label']}): {t['text']}"}
        for t in turns
    ]
    return {
        "emoforge_dialogue_id": dialogue["id"],
        "emoforge_text_hash": dialogue.get("text_hash") or "",
        "emoforge_n_turns": len(turns),
        "emoforge_config": CONFIG_VERSION,
        "meta": f"{dialogue['id']} · domain {dialogue['domain']} · {dialogue['model_a']} ↔ {dialogue['model_b']} · "
                f"judge status {dialogue['status']}",
        "paragraphs": paragraphs,
        "turns": rows,
        "judges": judges_summary(judgements) or "no judgements",
    }


def judges_summary(judgements: list[dict]) -> str:
    lines = []
    for j in judgements:
        scores = ", ".join(f"{k} {j[k]}" for k in ("coherence", "naturalness", "domain_fit", "safety") if j.get(k) is not None)
        fid = j.get("emotion_fidelity") or []
        if fid:
            scores += (", " if scores else "") + "emotion fidelity per turn " + " ".join(str(x) for x in fid)
        fails = "; failures: " + ", ".join(j["failures"]) if j.get("failures") else ""
        lines.append(f"{j['judge_id']} ({j['kind']}): {j['verdict']}" + (f" — {scores}" if scores else "") + fails)
    return "\n".join(lines)


def prediction_result(turn_labels: list[str], verdict: str | None, rating: int | None) -> list[dict]:
    """An annotation/prediction ``result`` list in this config's control names."""
    result: list[dict] = []
    for i, label in enumerate(turn_labels):
        if label:
            result.append({"from_name": f"{EMOTION_PREFIX}{i}", "to_name": f"turn_{i}", "type": "choices",
                           "value": {"choices": [label]}})
    if verdict in VERDICTS:
        result.append({"from_name": "verdict", "to_name": "dialogue", "type": "choices", "value": {"choices": [verdict]}})
    if rating is not None:
        result.append({"from_name": "rating", "to_name": "dialogue", "type": "rating", "value": {"rating": int(rating)}})
    return result
