"""DailyDialog side by side with a release: its dialogues read by the importer's reader
(``warehouse.importers.dailydialog``), labels on the 7 ERC classes, contractions joined back for word counts."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from schemas.stats import quantiles
from schemas.text import count_words
from warehouse.importers.common import ImportFailed
from warehouse.importers.dailydialog import read_dailydialog as read_dailydialog_rows
from warehouse.importers.labels import ERC7, LABEL_SETS
from warehouse.report.data import ReportError


def _dd_detok(text: str) -> str:
    # DailyDialog is tokenised with spaces around punctuation ("I ’ ll", "don ' t"): join contractions back
    return re.sub(r"\s*(['’])\s*", r"\1", text)


def read_dailydialog(path: Path, skipped: list | None = None) -> list[tuple[list[str], list[str]]]:
    """DailyDialog dialogues as ``(texts, erc7 labels)`` (train/validation/test folders or the folder of one
    split). Dialogues that occur in several splits are counted once. The original files have a few dialogues whose
    label count differs from their turn count: they are left out and listed in ``skipped`` (``"file:line"``)."""
    try:
        rows, bad, _ = read_dailydialog_rows(path)
    except ImportFailed as exc:
        raise ReportError(str(exc)) from None
    if skipped is not None:
        skipped.extend(f"{Path(b.file).name}:{b.line}" for b in bad)
    labels = LABEL_SETS["dailydialog"]
    seen: set[tuple[str, ...]] = set()
    out: list[tuple[list[str], list[str]]] = []
    for r in rows:
        key = tuple(r.texts)
        if key in seen:
            continue
        seen.add(key)
        out.append(([_dd_detok(t) for t in r.texts], [labels.map(lab, "erc7") for lab in r.labels]))
    return out


def dailydialog_stats(path: Path) -> dict:
    skipped: list[str] = []
    dialogues = read_dailydialog(path, skipped)
    if not dialogues:
        raise ReportError(f"{path}: no usable DailyDialog dialogue")
    turns = [len(t) for t, _ in dialogues]
    words = [count_words(x) for t, _ in dialogues for x in t]
    labels = Counter(lab for _, labs in dialogues for lab in labs)
    changes = sum(1 for _, labs in dialogues for a, b in zip(labs, labs[1:]) if a != b)
    pairs = sum(max(0, len(labs) - 1) for _, labs in dialogues)
    return {
        "source": str(path),
        "n_dialogues": len(dialogues),
        "n_utterances": len(words),
        "skipped_label_mismatch": len(skipped),
        "turns_per_dialogue": quantiles([float(x) for x in turns]),
        "turns_hist": dict(sorted(Counter(turns).items())),
        "words_per_turn": quantiles([float(x) for x in words]),
        "words_values": words,
        "turns_values": turns,
        "emotions_erc7": {lab: labels.get(lab, 0) for lab in ERC7},
        "emotion_change_rate": round(changes / pairs, 4) if pairs else None,
        "distinct_emotions_per_dialogue": quantiles([float(len(set(labs))) for _, labs in dialogues]),
    }
