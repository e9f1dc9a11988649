"""How each kind of model is asked for a turn: instruction-tuned models as a chat, base models as a transcript.

Gemma 3 270M (the embedded ``gemma3-270m``) is a *base* model: asked in chat it loops or writes instructions back.
It continues text better, so it gets a transcript to continue (:func:`completion_messages`): a few example
dialogues written for this project (speaker + feeling tags), the conversation so far, and the speaker's tag with
the target feeling, e.g. ``B (worried):``. The transcript is the one user message of a chat call (llama.cpp's
legacy ``gemma`` template does not continue a final assistant message, so no prefill), and the stop sequences end
the line at the next newline or a new "Topic", so the reply is one spoken line or empty (then retried). Instruction-tuned models (SmolLM2-Instruct and every remote model)
keep the chat prompt of :func:`flows.prompts.turn_messages`.

The turn stage (:data:`flows.prompts.TURN_STAGE`) asks a base model through :func:`completion_messages` with
:data:`STOP` as stop sequences (``TurnRow.base``).
"""

from __future__ import annotations

from typing import Any, Sequence

from schemas.records import Scenario
from schemas.taxonomy import Taxonomy

COMPLETION_TEMPLATE_VERSION = "turn-completion-v2"
BASE_MODELS = frozenset({"gemma3-270m"})  # embedded keys of base (not instruction-tuned) models
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


def speaker_of(idx: int) -> str:
    """The speaker of turn ``idx``: A opens, then they alternate."""
    return "A" if idx % 2 == 0 else "B"


def is_base_model(spec: Any) -> bool:
    """Whether a model (a ``ModelSpec``) is a base model to prompt as a transcript (the embedded server fills in
    its endpoints, so the ``embedded`` key alone decides)."""
    return getattr(spec, "embedded", None) in BASE_MODELS


def _tag(speaker: str, emotion: str) -> str:
    return f"{speaker} ({emotion.lower()}):"


def completion_messages(scenario: Scenario, tax: Taxonomy, history: Sequence[str]) -> list[dict[str, str]]:
    """The transcript of turn ``len(history)``, ending with the speaker's tag, as one user message."""
    idx = len(history)
    domain = tax.domain[scenario.domain]
    blocks = []
    for topic, lines in EXAMPLES:
        body = "\n".join(f"{_tag(speaker_of(i), emo)} {text}" for i, (emo, text) in enumerate(lines))
        blocks.append(f"Topic: {topic}\n{body}")
    so_far = "\n".join(f"{_tag(speaker_of(i), scenario.emotions[i])} {t}" for i, t in enumerate(history))
    current = f"Topic: {domain.name} ({domain.description.rstrip('.')})\n" + (so_far + "\n" if so_far else "")
    transcript = "\n\n".join(blocks) + "\n\n" + current + _tag(speaker_of(idx), scenario.emotions[idx])
    # one user message: llama.cpp's built-in "gemma" template closes a final assistant message instead of letting the
    # model continue it (measured: no prefill with the legacy template), and a separate header was echoed back
    return [{"role": "user", "content": transcript}]


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


__all__ = ["BASE_MODELS", "COMPLETION_TEMPLATE_VERSION", "EXAMPLES", "completion_messages", "instructions_text",
           "is_base_model", "model_spec", "speaker_of"]
