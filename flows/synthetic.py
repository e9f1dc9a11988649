"""Dialogues shaped like DeepDialogue's, made locally without any LLM (for benchmarks, tests and a first look).

Each dialogue follows the taxonomy: a domain, a model pair, 3-10 turns whose emotions are sampled from the
transition graph, turns of at most 25 words built from small templates. Deterministic from a seed. The records go
through the same warehouse tables as generated dialogues (source ``synthetic``).
"""

from __future__ import annotations

import random
from typing import Iterator

from schemas.records import Dialogue, Turn, content_id, text_hash
from schemas.taxonomy import Taxonomy
from schemas.text import count_words

_OPENERS = ["Honestly,", "You know,", "Well,", "I think", "Wow,", "Hmm,", "So", "Oh,", "Really,", "Look,"]
_FEEL = {
    "pos": ["this is wonderful", "I love how this turned out", "that sounds great to me", "it makes my day"],
    "neg": ["this is getting to me", "I can't believe it went this way", "that really bothers me", "it feels wrong"],
    "neu": ["it is what it is", "let's see how it goes", "that seems fine", "I will think about it"],
}
_TAIL = ["about {d}.", "when it comes to {d}.", "with all this {d} stuff.", "in {d} lately.", "for our {d} plans."]
_SYNTH_MODELS = ("synth-small", "synth-large")


def _turn_text(rng: random.Random, domain: str, emotion: str, valence: float, n: int) -> str:
    tone = "pos" if valence > 0.1 else "neg" if valence < -0.1 else "neu"
    words = f"{rng.choice(_OPENERS)} {rng.choice(_FEEL[tone])} {rng.choice(_TAIL).format(d=domain.lower())}".split()
    words.insert(rng.randrange(1, len(words)), f"(feeling {emotion.lower()}, turn {n + 1})")
    extra = rng.randint(0, 8)
    filler = ["and", "really", "still", "just", "maybe", "again", "today", "now", "too", "though"]
    words = words + [rng.choice(filler) for _ in range(extra)]
    return " ".join(words[:25])


def synthetic_dialogues(
    taxonomy: Taxonomy, n: int, seed: int = 0, models: tuple[str, str] = _SYNTH_MODELS, status: str = "accepted"
) -> Iterator[tuple[Dialogue, list[Turn]]]:
    rng = random.Random(seed)
    domains = [d.name for d in taxonomy.domains]
    pairs = [(models[0], models[0]), (models[1], models[1]), (models[0], models[1]), (models[1], models[0])]
    for i in range(n):
        domain = domains[i % len(domains)]
        model_a, model_b = pairs[(i // len(domains)) % len(pairs)]
        n_turns = rng.randint(3, 10)
        emotions = taxonomy.sample_path(domain, n_turns, rng)
        did = content_id("dlg", "synthetic", seed, i, domain, model_a, model_b, emotions)
        turns = []
        for t, emo in enumerate(emotions):
            speaker = "A" if t % 2 == 0 else "B"
            text = _turn_text(rng, domain, emo, taxonomy.emotion[emo].valence, t)
            turns.append(
                Turn(id=Turn.make_id(did, t), dialogue_id=did, idx=t, speaker=speaker,
                     model=model_a if speaker == "A" else model_b, text=text, intended_emotion=emo, label=emo,
                     n_words=count_words(text))
            )
        dlg = Dialogue(id=did, source="synthetic", domain=domain, model_a=model_a, model_b=model_b, n_turns=n_turns,
                       status=status, decided_by="synthetic", text_hash=text_hash([t.text for t in turns]),
                       taxonomy=taxonomy.fingerprint)
        yield dlg, turns


def load_synthetic(warehouse, taxonomy: Taxonomy, n: int, seed: int = 0, batch: int = 20_000) -> int:
    """Write ``n`` synthetic dialogues into the warehouse in batches; returns the number written."""
    dialogues: list[Dialogue] = []
    turns: list[Turn] = []
    written = 0
    for dlg, ts in synthetic_dialogues(taxonomy, n, seed):
        dialogues.append(dlg)
        turns.extend(ts)
        if len(dialogues) >= batch:
            warehouse.upsert(dialogues)
            warehouse.upsert(turns)
            written += len(dialogues)
            dialogues, turns = [], []
    if dialogues:
        warehouse.upsert(dialogues)
        warehouse.upsert(turns)
        written += len(dialogues)
    return written
