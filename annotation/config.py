"""The Label Studio labeling config for reviewing one dialogue, and the task data it reads.

The page reads like a conversation (Label Studio's own dialogue templates): one row per turn, the speaker's bubble
(``Paragraphs`` with ``nameKey="speaker"``: A and B keep one colour each, the colour is seeded by the name) with the
intended emotion and a single-choice dropdown for the emotion the turn expresses right beside it. Above: a short
instruction panel and a one-line summary with the judges' verdicts and scores *as information*. Below: the dialogue
verdict, the 1-5 rating and a comment in one compact bar.

Controls are named explicitly (``emotion_0`` … ``emotion_<n-1>``; no ``Repeater``, whose generated names Label
Studio's prediction validator does not know). A project's config has ``slots`` turn rows (enough for its longest
dialogue, at least 16). Task data always carries every slot's keys (Label Studio checks them); a row the dialogue
does not have carries a marker that the page's style hides (a ``visibleWhen`` on the row would need the row's own
choice, which Label Studio evaluates as a cycle). The per-turn dropdowns are not ``required``: every real turn is
pre-filled, a dropdown cannot be emptied, and ``review pull`` names a turn left without a label ("turn 2"); the
verdict and the rating are required, with messages in the annotator's words.

With speech (``audio=True``): the mixed dialogue has a player above the turns, and each turn's bubble has a play
button for its own clip. Without speech no audio control appears at all (the paragraph time stamps and the
"Label whole utterance" buttons Label Studio 1.23 draws by default are hidden).

Control names used in annotation results (and validated on pull): ``emotion_<turn index>``, ``verdict``,
``rating``, ``comment``.
"""

from __future__ import annotations

import hashlib
import html
from xml.sax.saxutils import quoteattr

CONFIG_VERSION = "dialogue-review-v2"
VERDICTS = ("accept", "reject")
EMOTION_PREFIX = "emotion_"
TURN_PREFIX = "turn_"
MIN_SLOTS = 16  # turn rows in a project's config; more when a longer dialogue is pushed

INSTRUCTIONS = (
    "1. Read the dialogue. Each turn shows the emotion it was meant to express (intended). "
    "2. The dropdown beside a turn is pre-filled with its current label: if the turn expresses another emotion, "
    "pick that one. 3. Accept the dialogue if it belongs in the dataset, reject it otherwise; rate its overall "
    "quality (1 = unusable, 5 = excellent). 4. Say why in the comment when you reject or correct. "
    "The judges' opinion above is information only: decide for yourself."
)

# Label Studio 1.23 draws a time range and a "Label whole utterance" button in every dialogue bubble (feature flags
# on by default) and an author filter above every Paragraphs; none of them mean anything here.
_STYLE_COMMON = """
    .emo-help { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 4px 10px; margin-bottom: 6px; font-size: 13px; }
    .emo-help .lsf-richtext, .emo-meta .lsf-richtext { font-size: 13px !important; line-height: 1.4; padding: 0 !important; }
    .emo-meta { margin-bottom: 6px; }
    .emo-turn { display: flex; gap: 12px; align-items: center; border-bottom: 1px solid #eee; padding: 0; }
    .emo-turn > div:first-child { flex: 1 1 0; min-width: 0; margin: 0 !important; }
    .emo-turn [class*="wrapper_header--"] { display: none !important; }
    .emo-turn [class*="phrase--"] { margin: 3px 0 !important; padding-top: 2px !important; padding-bottom: 3px !important; }
    .emo-side { flex: 0 0 240px; margin-left: auto; display: flex; flex-direction: column; gap: 2px; }
    .emo-side .lsf-richtext, .emo-side .htx-richtext { font-size: 12px !important; color: #57606a; padding: 0 !important; }
    .emo-turn:has(.emo-absent) { display: none !important; }
    .emo-bar { display: flex; gap: 24px; align-items: flex-start; border-top: 2px solid #d0d7de; margin-top: 6px; padding-top: 6px; }
    .emo-bar > div { flex: 0 0 auto; }
    .emo-bar > div:last-child { flex: 1 1 auto; }
    .emo-bar textarea { min-width: 420px; }
    [class*="selectAllBtnWrapper--"] { display: none !important; }
    .emo-turn [class*="filterContainer"], .emo-turn .lsf-paragraphs-filter, .emo-turn [class*="authorFilter"] { display: none !important; }
"""
_STYLE_AUDIO = """
    .emo-turn [class*="phraseContainer--"]:not(:has(button[aria-label="play"], button[aria-label="pause"])) [class*="time--"] { display: none !important; }
"""
_STYLE_NO_AUDIO = """
    .emo-turn [class*="time--"], .emo-turn [class*="play--"], .emo-turn [class*="playNewUi--"] { display: none !important; }
"""


def slots_for(n_turns: int) -> int:
    """Turn rows a config needs for a dialogue of ``n_turns`` turns (at least MIN_SLOTS, in steps of 8)."""
    return max(MIN_SLOTS, -(-n_turns // 8) * 8)


def _turn_row(i: int, choices: str, audio: bool) -> str:
    audio_attrs = f' audioUrl="${TURN_PREFIX}{i}_audio" showPlayer="false"' if audio else ""
    return f"""  <View className="emo-turn">
    <Paragraphs name="{TURN_PREFIX}{i}" value="${TURN_PREFIX}{i}" layout="dialogue" nameKey="speaker" textKey="text"{audio_attrs}/>
    <View className="emo-side">
      <HyperText name="intended_{i}" value="$intended_{i}" inline="true"/>
      <Choices name="{EMOTION_PREFIX}{i}" toName="{TURN_PREFIX}{i}" choice="single" layout="select">
{choices}
      </Choices>
    </View>
  </View>"""


def labeling_config(emotions: list[str], slots: int = MIN_SLOTS, audio: bool = False,
                    title: str = "Review this dialogue") -> str:
    """The XML config; ``emotions`` are the taxonomy's names (the choices for correcting a turn's label)."""
    if not emotions:
        raise ValueError("the taxonomy has no emotions")
    if slots < 1:
        raise ValueError(f"a config needs at least one turn row, got {slots}")
    choices = "\n".join(f"        <Choice value={quoteattr(e)}/>" for e in emotions)
    rows = "\n".join(_turn_row(i, choices, audio) for i in range(slots))
    style = _STYLE_COMMON + (_STYLE_AUDIO if audio else _STYLE_NO_AUDIO)  # turns without a clip: no time stamp
    mix = ('  <Header value="Whole dialogue (mixed audio)" size="6"/>\n'
           '  <Audio name="mix" value="$audio" hotkey="ctrl+space"/>\n') if audio else ""
    return f"""<View>
  <!-- emoforge {CONFIG_VERSION} -->
  <Style>{style}</Style>
  <Header value={quoteattr(title)} size="4"/>
  <View className="emo-help">
    <Text name="instructions" value={quoteattr(INSTRUCTIONS)}/>
  </View>
  <View className="emo-meta">
    <Text name="dialogue" value="$meta"/>
  </View>
{mix}{rows}
  <View className="emo-bar">
    <View>
      <Header value="Keep this dialogue?" size="6"/>
      <Choices name="verdict" toName="dialogue" choice="single-radio" showInline="true" required="true"
               requiredMessage="Choose accept or reject for the dialogue (Keep this dialogue?).">
        <Choice value="accept" hotkey="a"/>
        <Choice value="reject" hotkey="r"/>
      </Choices>
    </View>
    <View>
      <Header value="Overall quality (1-5)" size="6"/>
      <Rating name="rating" toName="dialogue" maxRating="5" icon="star" size="medium" required="true"
              requiredMessage="Rate the overall quality of the dialogue (1 = unusable, 5 = excellent)."/>
    </View>
    <View>
      <Header value="Comment (why?)" size="6"/>
      <TextArea name="comment" toName="dialogue" rows="2" editable="true" transcription="true"
                showSubmitButton="false" maxSubmissions="1" placeholder="What is wrong, or what you corrected (optional)"/>
    </View>
  </View>
</View>"""


def config_fingerprint(xml: str) -> str:
    return hashlib.sha256(xml.encode()).hexdigest()[:12]


def config_slots(xml: str) -> int:
    """How many turn rows a config made by :func:`labeling_config` has (0 for any other config)."""
    n = 0
    while f'name="{EMOTION_PREFIX}{n}"' in xml:
        n += 1
    return n


def task_data(dialogue: dict, turns: list[dict], judgements: list[dict], *, slots: int, reason: str = "",
              audio: dict | None = None) -> dict:
    """Task ``data`` for one dialogue. ``turns`` sorted by idx; keys are those of the warehouse tables.

    ``audio`` (only when the dialogue has speech): ``{"mix": url, "turns": {idx: (url, duration_s)}}``. The first keys
    are what the task list shows; ``emoforge_*`` keys and the per-turn keys are hidden there (see push.task_columns).
    """
    if len(turns) > slots:
        raise ValueError(f"dialogue {dialogue['id']} has {len(turns)} turns, the config only {slots} rows")
    verdicts = judge_verdicts(judgements)
    data: dict = {
        "dialogue": dialogue["id"],
        "review_reason": reason,
        "judge_verdict": verdicts,
        "judge_score": judge_score(dialogue, judgements),
        "domain": dialogue.get("domain") or "",
        "n_turns": len(turns),
        "emoforge_dialogue_id": dialogue["id"],
        "emoforge_text_hash": dialogue.get("text_hash") or "",
        "emoforge_n_turns": len(turns),
        "emoforge_config": CONFIG_VERSION,
        "meta": meta_line(dialogue, judgements),
    }
    turn_audio = (audio or {}).get("turns", {})
    for i in range(slots):
        t = turns[i] if i < len(turns) else None
        if t is None:
            # one empty phrase, not []: Label Studio's Paragraphs reads the first item's keys (the row stays hidden)
            data[f"{TURN_PREFIX}{i}"] = [{"speaker": "", "text": ""}]
            data[f"intended_{i}"] = '<span class="emo-absent"></span>'  # the page hides rows with this marker
        else:
            item = {"speaker": str(t["speaker"]), "text": t["text"]}
            if i in turn_audio:
                item.update(start=0.0, end=float(turn_audio[i][1]))
            data[f"{TURN_PREFIX}{i}"] = [item]
            data[f"intended_{i}"] = (f'<span class="emo-intended"><b>Turn {i + 1}</b> · intended: '
                                     f'{html.escape(str(t["intended_emotion"]))}</span>')
        if audio is not None:
            data[f"{TURN_PREFIX}{i}_audio"] = turn_audio[i][0] if i in turn_audio else ""
    if audio is not None:
        data["audio"] = audio.get("mix") or ""
    return data


def judge_verdicts(judgements: list[dict]) -> str:
    """``"llm:judge accept · checks reject"``: what the task list shows for the judges' verdicts."""
    return " · ".join(f"{j['judge_id']} {j['verdict']}" for j in judgements) or "none"


def judge_score(dialogue: dict, judgements: list[dict]) -> float | None:
    """The score that decided (``Dialogue.judge_score``), else the mean rubric score of the judges scaled to 0-1."""
    if dialogue.get("judge_score") is not None:
        return round(float(dialogue["judge_score"]), 3)
    scores = [j[c] for j in judgements for c in ("coherence", "naturalness", "domain_fit", "safety") if j.get(c) is not None]
    return round(sum(scores) / (5 * len(scores)), 3) if scores else None


def meta_line(dialogue: dict, judgements: list[dict]) -> str:
    head = (f"{dialogue['id']} · domain {dialogue.get('domain', '')} · {len(judgements)} judge(s), "
            f"status {dialogue['status']}")
    summary = judges_summary(judgements)
    return head + (" — judges (information only): " + " | ".join(summary.splitlines()) if summary else "")


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
            result.append({"from_name": f"{EMOTION_PREFIX}{i}", "to_name": f"{TURN_PREFIX}{i}", "type": "choices",
                           "value": {"choices": [label]}})
    if verdict in VERDICTS:
        result.append({"from_name": "verdict", "to_name": "dialogue", "type": "choices", "value": {"choices": [verdict]}})
    if rating is not None:
        result.append({"from_name": "rating", "to_name": "dialogue", "type": "rating", "value": {"rating": int(rating)}})
    return result
