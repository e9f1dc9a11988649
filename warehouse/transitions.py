"""Emotion dynamics of real conversation, learned from an imported corpus, for scenarios that move like it.

DeepDialogue's graph has no self-loops: a scenario walked on it changes emotion on almost every turn (82 % of
consecutive turns for a 300-dialogue ``erc`` release), while people mostly stay (DailyDialog changes on 18 % of
consecutive turns, MELD on 60 %). :class:`LearnedTransitions` keeps the configured graph and adds what the real
corpus says, on the ``erc7`` classes both share:

* **stay**: after an emotion whose erc7 class is ``c``, the next turn keeps the same emotion with probability
  ``P_real(next class = c | class c)`` (a self-loop the graph does not have);
* **move**: otherwise the next emotion is one of the graph's successors (as :meth:`Taxonomy.successors`), weighted
  by the emotion's configured weight times ``P_real(next class = class(b) | class c, the class changed)``
  (add-one smoothed, so no configured edge becomes impossible).

Learned from the source's **train** split only (so the figures it is compared with on test are not used) and
cached under ``<home>/transitions/``. Config: ``generation.transitions: graph`` (default, unchanged) or
``learned:<source>`` (``learned:dailydialog``, ``learned:meld``).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from schemas.taxonomy import Taxonomy
from warehouse.importers.labels import ERC7
from warehouse.utterances import by_dialogue, imported_sources, imported_utterances

MAPPING = "erc7"
GRAPH = "graph"


class TransitionsError(ValueError):
    pass


def transition_counts(sequences: list[list[str]], labels: list[str] = ERC7) -> list[list[int]]:
    """``counts[i][j]``: consecutive turn pairs going from ``labels[i]`` to ``labels[j]`` (other labels ignored)."""
    index = {lab: i for i, lab in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for seq in sequences:
        for a, b in zip(seq, seq[1:]):
            if a in index and b in index:
                counts[index[a]][index[b]] += 1
    return counts


def change_rate(sequences: list[list[str]]) -> float | None:
    pairs = [(a, b) for seq in sequences for a, b in zip(seq, seq[1:])]
    return round(sum(a != b for a, b in pairs) / len(pairs), 4) if pairs else None


def real_sequences(home: str | Path, source: str, split: str = "train") -> list[list[str]]:
    """The erc7 label sequence of every dialogue of an imported source's split."""
    utts = imported_utterances(home, source, split, MAPPING)
    return [[u.label for u in turns] for turns in by_dialogue(utts).values()]


@dataclass(frozen=True)
class Dynamics:
    """Real-corpus emotion dynamics on erc7: per class the stay probability and the move distribution."""

    source: str
    stay: dict[str, float]
    move: dict[str, dict[str, float]]
    change_rate: float
    n_pairs: int

    def to_json(self) -> dict:
        return {"source": self.source, "stay": self.stay, "move": self.move, "change_rate": self.change_rate,
                "n_pairs": self.n_pairs}


def learn_dynamics(source: str, sequences: list[list[str]]) -> Dynamics:
    counts = transition_counts(sequences)
    n_pairs = sum(map(sum, counts))
    if not n_pairs:
        raise TransitionsError(f"{source}: no consecutive turns to learn transitions from")
    overall_stay = sum(counts[i][i] for i in range(len(ERC7))) / n_pairs
    stay, move = {}, {}
    for i, a in enumerate(ERC7):
        row = counts[i]
        total = sum(row)
        stay[a] = round(row[i] / total, 4) if total else round(overall_stay, 4)
        others = {b: row[j] + 1 for j, b in enumerate(ERC7) if j != i}  # add-one: no configured edge impossible
        z = sum(others.values())
        move[a] = {b: round(v / z, 4) for b, v in others.items()}
    return Dynamics(source, stay, move, round(1 - overall_stay, 4), n_pairs)


def load_dynamics(home: str | Path, source: str) -> Dynamics:
    """The dynamics of ``source``'s train split (cached per data fingerprint under ``<home>/transitions/``)."""
    available = imported_sources(home)
    if "train" not in available.get(source, []):
        raise TransitionsError(f"generation.transitions learned:{source} needs {source}'s train split imported in "
                               f"{home}: run `emoforge import {source} PATH` first (imported: {available or 'nothing'})")
    seqs = real_sequences(home, source)
    fp = hashlib.sha256(json.dumps(seqs).encode()).hexdigest()[:16]
    path = Path(home) / "transitions" / f"{source}-{fp}.json"
    if path.is_file():
        d = json.loads(path.read_text())
        return Dynamics(d["source"], d["stay"], d["move"], d["change_rate"], d["n_pairs"])
    dyn = learn_dynamics(source, seqs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dyn.to_json(), indent=1, sort_keys=True))
    return dyn


class LearnedTransitions:
    """Emotion paths on the configured graph plus self-loops, with stay/move weights from real conversation."""

    def __init__(self, tax: Taxonomy, dynamics: Dynamics):
        if MAPPING not in tax.mappings:
            raise TransitionsError(f"taxonomy {tax.name!r} has no {MAPPING} mapping: learned transitions need one")
        self.tax, self.dyn = tax, dynamics
        self.name = f"learned:{dynamics.source}"

    def _class(self, emotion: str) -> str:
        return self.tax.map_label(emotion, MAPPING)

    def next_emotion(self, domain: str, current: str, rng: random.Random) -> str:
        c = self._class(current)
        if rng.random() < self.dyn.stay[c]:
            return current
        candidates = [e for e in self.tax.successors(domain, current) if e != current] or [current]
        weights = [self.tax.emotion[e].weight * self.dyn.move[c].get(self._class(e), self.dyn.stay[c])
                   for e in candidates]
        return rng.choices(candidates, weights=weights, k=1)[0]

    def sample_path(self, domain: str, n_turns: int, rng: random.Random) -> list[str]:
        """Same contract as :meth:`Taxonomy.sample_path`: deterministic for a seeded ``rng``."""
        path = self.tax.sample_path(domain, 1, rng)
        while len(path) < n_turns:
            path.append(self.next_emotion(domain, path[-1], rng))
        return path


def path_model(home: str | Path | None, tax: Taxonomy, spec: str):
    """What samples scenario emotion paths for ``generation.transitions``: the taxonomy itself for ``graph``."""
    if spec in (None, GRAPH):
        return None
    if not spec.startswith("learned:") or not spec.split(":", 1)[1]:
        raise TransitionsError(f"generation.transitions must be 'graph' or 'learned:<source>', got {spec!r}")
    if home is None:
        raise TransitionsError(f"generation.transitions {spec} needs an emoforge home with the imported corpus")
    return LearnedTransitions(tax, load_dynamics(home, spec.split(":", 1)[1]))


def compare_with_real(home: str | Path, release_sequences: list[list[str]]) -> dict:
    """erc7 change rate and transition matrix of a release next to every imported real corpus (test split when
    imported, else train), for the report."""
    out = {"release": {"change_rate": change_rate(release_sequences),
                       "counts": transition_counts(release_sequences)}, "real": {}, "labels": ERC7}
    for src, splits in sorted(imported_sources(home).items()):
        split = "test" if "test" in splits else splits[0]
        try:
            seqs = real_sequences(home, src, split)
        except Exception:  # noqa: BLE001 - a source without an erc7 mapping is simply not compared
            continue
        out["real"][src] = {"split": split, "change_rate": change_rate(seqs), "counts": transition_counts(seqs)}
    return out

