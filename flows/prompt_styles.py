"""How each kind of model is asked for a turn: a base model as a transcript to continue, a tiny instruction-tuned
model as a role-play chat, every other model with the chat prompt of :func:`flows.prompts.turn_messages`.

* ``transcript`` (Gemma 3 270M base, the embedded ``gemma3-270m``): asked in chat it loops, answers the transcript
  or writes nothing. Its server renders the messages as raw text (``flows.llm.embedded.CONTINUATION_TEMPLATE``: no
  turn markers), so :func:`completion_messages` is a text to continue: a few example dialogues written for this
  project (speaker + feeling tags), the conversation so far and the speaker's tag with the target feeling, e.g.
  ``B (worried):``; the stop sequences (:data:`STOP`) end the line at the next newline or a new "Topic", so the
  reply is one spoken line or empty (then retried with a new seed; guidance means nothing to a base model).
* ``roleplay`` (SmolLM2-135M-Instruct, the embedded ``smollm2-135m``): given the conversation as a transcript about
  "A" and "B" inside one instruction, it wrote "A (Gadgets) are amazing", "Here is a sample response", or rambled
  to max_tokens. :func:`roleplay_messages` makes the conversation the chat itself (the other speaker's lines are
  the user's, its own the assistant's) under a short system message with the topic, the feeling and the word cap
  (no speaker names: they were written back as third parties).
* ``chat``: every other (remote, larger) model.

The turn stage (:data:`flows.prompts.TURN_STAGE`) picks the style from ``TurnRow.style`` (:func:`prompt_style`).
"""

from __future__ import annotations

from typing import Any, Sequence

from schemas.records import Scenario
from schemas.taxonomy import Taxonomy

COMPLETION_TEMPLATE_VERSION = "turn-completion-v3"  # v3: served as raw text (no chat turn markers around it)
ROLEPLAY_TEMPLATE_VERSION = "turn-roleplay-v3"  # v2: no speaker names; v3: "never offer help"
CHAT, TRANSCRIPT, ROLEPLAY = "chat", "transcript", "roleplay"
# the prompt style of each embedded model as a turn writer (keys of flows.llm.embedded.EMBEDDED_MODELS)
EMBEDDED_STYLES = {"gemma3-270m": TRANSCRIPT, "smollm2-135m": ROLEPLAY}
BASE_MODELS = frozenset(k for k, v in EMBEDDED_STYLES.items() if v == TRANSCRIPT)  # base (not instruction-tuned)
STOP = ["\n", "<end_of_turn>", "<start_of_turn>", "Topic:", "Topic "]  # a new "Topic" = a new transcript: empty, retried

# Short example dialogues written for this project (not taken from any dataset): everyday topics, one feeling per
# line, lines of 6-20 words that end with a full stop, question or exclamation mark.
EXAMPLES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("Travel", (
        ("excited", "I finally booked the train tickets to the coast for next weekend!"),
        ("worried", "That sounds lovely, but did you check whether the storm is still coming?"),
        ("hopeful", "The forecast says it should clear up by Saturday morning."),
        ("relieved", "Good, then I'll pack my swimsuit after all."),
    )),
    ("Work", (
        ("frustrated", "My manager moved the deadline up again, and nobody asked me first."),
        ("curious", "Did she say why it suddenly has to be done by Friday?"),
        ("disappointed", "Only that the client wants it early, so my weekend is gone."),
        ("grateful", "Thanks for listening, honestly, it helps to say it out loud."),
    )),
    ("Family", (
        ("nostalgic", "I found the old photo album with pictures from Grandma's farm."),
        ("amused", "Is that the one where Dad fell into the duck pond?"),
        ("happy", "Yes, and he is still laughing about it in the picture!"),
    )),
)


OPENER = "Hi! What's new?"  # the line a role-play chat's first turn answers (not part of the dialogue)


def speaker_of(idx: int) -> str:
    """The speaker of turn ``idx``: A opens, then they alternate."""
    return "A" if idx % 2 == 0 else "B"


def prompt_style(spec: Any) -> str:
    """How a model (a ``ModelSpec``) is asked for a turn: :data:`TRANSCRIPT`, :data:`ROLEPLAY` or :data:`CHAT` (the
    embedded server fills in its endpoints, so the ``embedded`` key alone decides)."""
    return EMBEDDED_STYLES.get(getattr(spec, "embedded", None) or "", CHAT)


def is_base_model(spec: Any) -> bool:
    """Whether a model (a ``ModelSpec``) is a base model to prompt as a transcript."""
    return prompt_style(spec) == TRANSCRIPT


def _tag(speaker: str, emotion: str) -> str:
    return f"{speaker} ({emotion.lower()}):"


def completion_messages(scenario: Scenario, tax: Taxonomy, history: Sequence[str]) -> list[dict[str, str]]:
    """The transcript of turn ``len(history)``, ending with the speaker's tag, as one user message (rendered raw by
    the base model's server: the model continues the tag's line)."""
    idx = len(history)
    domain = tax.domain[scenario.domain]
    blocks = []
    for topic, lines in EXAMPLES:
        body = "\n".join(f"{_tag(speaker_of(i), emo)} {text}" for i, (emo, text) in enumerate(lines))
        blocks.append(f"Topic: {topic}\n{body}")
    so_far = "\n".join(f"{_tag(speaker_of(i), scenario.emotions[i])} {t}" for i, t in enumerate(history))
    current = f"Topic: {domain.name} ({domain.description.rstrip('.')})\n" + (so_far + "\n" if so_far else "")
    transcript = "\n\n".join(blocks) + "\n\n" + current + _tag(speaker_of(idx), scenario.emotions[idx])
    # one message, rendered as is (no turn markers): the model continues the speaker's line after the tag
    return [{"role": "user", "content": transcript}]


def roleplay_messages(scenario: Scenario, tax: Taxonomy, history: Sequence[str],
                      retries: Sequence[tuple[str, str]] = ()) -> list[dict[str, str]]:
    """Turn ``len(history)`` as a role-play chat for a small instruction-tuned model: the instructions and the
    feeling in the system message, the conversation as the chat itself (the other speaker's lines are the user's,
    the speaker's own earlier lines the assistant's), so the model answers the last line instead of writing a
    transcript about speakers "A" and "B". No names: given "You are Sam, chatting with Alex", SmolLM2 wrote "Hey
    Sam" as Sam and "our adventure with Alex" to Alex. ``retries``: (raw reply, guidance) of failed attempts."""
    idx = len(history)
    domain = tax.domain[scenario.domain]
    feeling = scenario.emotions[idx].lower()
    # "your own life ... never offer help": without it, SmolLM2 slid into "What can I do for you today?"
    system = (f"You are chatting with a friend about {domain.name.lower()} ({domain.description.rstrip('.').lower()}). "
              "Talk about your own life, plans and opinions, like a friend; never offer help. "
              f"Reply with one or two short sentences, at most {scenario.word_cap} words, exactly as you would say "
              f"them out loud. Right now you feel {feeling}: let your words show it.")
    messages = [{"role": "system", "content": system}]
    if not history:
        messages.append({"role": "user", "content": OPENER})
    for i, text in enumerate(history):
        messages.append({"role": "assistant" if i % 2 == idx % 2 else "user", "content": text})
    for raw, guidance in retries:
        messages.append({"role": "assistant", "content": raw})
        messages.append({"role": "user", "content": guidance})
    return messages


def instructions_text(messages: Sequence[dict[str, Any]]) -> str:
    """The instruction part of a turn prompt (system + first user message; never an earlier reply or a
    assistant reply): what a reply must not copy (``schemas.defects.copy_of_prompt``)."""
    out = []
    for m in messages:
        if m.get("role") == "system" or (m.get("role") == "user" and not any(x.get("role") == "user" for x in out)):
            out.append(m)
    return "\n".join(str(m.get("content", "")) for m in out)


def model_spec(pool: Any, model: str) -> Any:
    """The ``ModelSpec`` of ``model`` in the pool's config (None for a pool without one)."""
    models = getattr(getattr(pool, "config", None), "models", None) or {}
    return models.get(model)


__all__ = ["BASE_MODELS", "CHAT", "COMPLETION_TEMPLATE_VERSION", "EMBEDDED_STYLES", "EXAMPLES", "OPENER", "ROLEPLAY",
           "ROLEPLAY_TEMPLATE_VERSION", "TRANSCRIPT", "completion_messages", "instructions_text", "is_base_model",
           "model_spec", "prompt_style", "roleplay_messages", "speaker_of"]
