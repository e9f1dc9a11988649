"""Label sets of imported ERC datasets and how they map onto emoforge's named label mappings.

Imported turns keep the dataset's own label names (DailyDialog says ``happiness``, MELD says ``joy``). A named
mapping (``erc7``: neutral, anger, disgust, fear, joy, sadness, surprise; the same name as the taxonomy mapping
that releases carry as ``label_erc7``) maps them consistently: DailyDialog ``happiness`` -> ``joy``; every other
DailyDialog/MELD label keeps its name. The dataset's own name (``dailydialog``, ``meld``) is also a mapping: the
native labels unchanged. Imported data has no mapping onto a 20-emotion taxonomy; asking for one is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ERC7 = ["neutral", "anger", "disgust", "fear", "joy", "sadness", "surprise"]


@dataclass(frozen=True)
class LabelSet:
    name: str
    labels: list[str]
    mappings: dict[str, dict[str, str]] = field(default_factory=dict)

    def map(self, label: str, mapping: str) -> str | None:
        """``label`` under ``mapping``; ``None`` when this label set has no such mapping."""
        if mapping == self.name:
            return label
        table = self.mappings.get(mapping)
        if table is None:
            return None
        return table[label]

    def supports(self, mapping: str) -> bool:
        return mapping == self.name or mapping in self.mappings


DAILYDIALOG_LABELS = ["neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise"]  # codes 0..6
MELD_LABELS = ["neutral", "anger", "disgust", "fear", "joy", "sadness", "surprise"]

LABEL_SETS: dict[str, LabelSet] = {
    "dailydialog": LabelSet(
        "dailydialog", DAILYDIALOG_LABELS,
        {"erc7": {lab: ("joy" if lab == "happiness" else lab) for lab in DAILYDIALOG_LABELS}},
    ),
    "meld": LabelSet("meld", MELD_LABELS, {"erc7": {lab: lab for lab in MELD_LABELS}}),
}


def external_label(source: str, label: str, mapping: str) -> str | None:
    ls = LABEL_SETS.get(source)
    return None if ls is None else ls.map(label, mapping)
