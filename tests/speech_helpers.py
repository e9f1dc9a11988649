"""Shared helpers for the speech tests: a home with accepted dialogues."""

from __future__ import annotations

from pathlib import Path

from schemas.records import Dialogue, Turn
from warehouse.store import Warehouse

LINES = [
    ("A", "Happy", "Guess what, I finally got the job at the museum!"),
    ("B", "Excited", "No way, that is amazing news, congratulations!"),
    ("A", "Anxious", "I am a little worried about the first day though."),
    ("B", "Hopeful", "You will be fine, they chose you for a reason."),
    ("A", "Grateful", "Thanks, that really means a lot to me."),
    ("B", "Bored", "Anyway, I spent the whole afternoon sorting old receipts."),
]


def make_home(home: Path, n: int = 2, lines=LINES, status: str = "accepted", start: int = 0) -> list[str]:
    wh = Warehouse(home)
    dialogues, turns = [], []
    for d in range(start, start + n):
        did = f"dlg_{d:04d}"
        dialogues.append(Dialogue(id=did, domain="work", model_a="m", model_b="m", n_turns=len(lines), status=status,
                                  taxonomy="deepdialogue"))
        for i, (speaker, emo, text) in enumerate(lines):
            text = text if d == 0 else f"{text} Number {d}."
            turns.append(Turn(id=Turn.make_id(did, i), dialogue_id=did, idx=i, speaker=speaker, model="m", text=text,
                              intended_emotion=emo, label=emo, n_words=len(text.split())))
    wh.upsert(dialogues)
    wh.upsert(turns)
    return [d.id for d in dialogues]
