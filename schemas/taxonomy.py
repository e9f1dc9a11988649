"""The emotion taxonomy as validated data: emotions, domains, transition graph, label mappings.

A taxonomy is loaded from a preset name (``deepdialogue``, ``erc``) or a JSON/YAML file and refused with a
:class:`TaxonomyError` naming the offending entry when it is inconsistent.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import deque
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Iterable

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PRESET_DIR = Path(__file__).parent / "presets"
PRESETS = ("deepdialogue", "erc")
DEFAULT_PRESET = "deepdialogue"


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


class TaxonomyError(ValueError):
    """A taxonomy that cannot be used; the message names the offending entry."""


class Emotion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    valence: float = Field(ge=-1.0, le=1.0)
    arousal: float = Field(ge=-1.0, le=1.0)
    weight: float = Field(default=1.0, gt=0.0, description="relative sampling weight among the candidates")

    @property
    def is_neutral(self) -> bool:
        return self.valence == 0.0 and self.arousal == 0.0


class Domain(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    emotions: list[str]


class LabelMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    labels: list[str] = Field(min_length=1)
    map: dict[str, str]


class Taxonomy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    emotions: list[Emotion] = Field(min_length=2)
    transitions: dict[str, list[str]]
    domains: list[Domain] = Field(min_length=1)
    mappings: dict[str, LabelMapping] = Field(default_factory=dict)

    @field_validator("emotions")
    @classmethod
    def _unique_emotions(cls, v: list[Emotion]) -> list[Emotion]:
        seen: set[str] = set()
        for e in v:
            if e.name in seen:
                raise ValueError(f"emotion {e.name!r} is listed twice")
            seen.add(e.name)
        return v

    # ---- derived views -------------------------------------------------------------------------
    @cached_property
    def emotion(self) -> dict[str, Emotion]:
        return {e.name: e for e in self.emotions}

    @cached_property
    def domain(self) -> dict[str, Domain]:
        return {d.name: d for d in self.domains}

    @property
    def emotion_names(self) -> list[str]:
        return [e.name for e in self.emotions]

    @property
    def n_edges(self) -> int:
        return sum(len(v) for v in self.transitions.values())

    @cached_property
    def fingerprint(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def map_label(self, emotion: str, mapping: str | None) -> str:
        """The label of ``emotion`` under a named mapping (``None`` or ``"identity"`` keeps it)."""
        if mapping in (None, "identity", self.name):
            return emotion
        if mapping not in self.mappings:
            raise TaxonomyError(f"unknown label mapping {mapping!r}; known: {sorted(self.mappings)}")
        return self.mappings[mapping].map[emotion]

    def labels(self, mapping: str | None) -> list[str]:
        if mapping in (None, "identity", self.name):
            return self.emotion_names
        if mapping not in self.mappings:
            raise TaxonomyError(f"unknown label mapping {mapping!r}; known: {sorted(self.mappings)}")
        return list(self.mappings[mapping].labels)

    # ---- PRC-Emo label similarity ------------------------------------------------------------
    def similarity(self, a: str, b: str) -> float:
        """Similarity of two labels on the valence-arousal circle.

        Cosine of the angle between the two (valence, arousal) points when both valences have the same sign;
        0 when the signs are opposite; ``1/N`` (N = number of emotions) when either label is neutral
        (the origin, which has no angle). Negative cosines are clamped to 0.
        """
        ea, eb = self.emotion[a], self.emotion[b]
        if ea.is_neutral or eb.is_neutral:
            return 1.0 / len(self.emotions)
        if _sign(ea.valence) != _sign(eb.valence):
            return 0.0
        dot = ea.valence * eb.valence + ea.arousal * eb.arousal
        norm = math.hypot(ea.valence, ea.arousal) * math.hypot(eb.valence, eb.arousal)
        return max(0.0, min(1.0, dot / norm))

    # ---- emotion paths -------------------------------------------------------------------------
    def successors(self, domain: str, current: str) -> list[str]:
        """Next-turn candidates: graph successors of ``current`` that the domain allows.

        When that intersection is empty, the domain emotions closest to ``current`` in the graph (fewest hops,
        breadth first) are used; when no domain emotion is reachable at all, the emotion stays ``current``.
        """
        allowed = self.domain[domain].emotions
        direct = [e for e in self.transitions.get(current, []) if e in allowed]
        if direct:
            return direct
        return self._nearest_in_domain(domain, current) or [current]

    def _nearest_in_domain(self, domain: str, current: str) -> list[str]:
        allowed = set(self.domain[domain].emotions)
        seen = {current}
        frontier = deque([(current, 0)])
        found: list[str] = []
        best = None
        while frontier:
            node, depth = frontier.popleft()
            if best is not None and depth >= best:
                break
            for nxt in self.transitions.get(node, []):
                if nxt in seen:
                    continue
                seen.add(nxt)
                if nxt in allowed:
                    best = depth + 1
                    found.append(nxt)
                frontier.append((nxt, depth + 1))
        return found

    def sample_path(self, domain: str, n_turns: int, rng: random.Random) -> list[str]:
        """Emotion of every turn: the first from the domain's emotions, the next ones from ``successors``.
        Choices are weighted by the emotions' ``weight``; deterministic for a seeded ``rng``."""
        if domain not in self.domain:
            raise TaxonomyError(f"unknown domain {domain!r}")
        path = [self._weighted(self.domain[domain].emotions, rng)]
        while len(path) < n_turns:
            path.append(self._weighted(self.successors(domain, path[-1]), rng))
        return path

    def _weighted(self, candidates: list[str], rng: random.Random) -> str:
        weights = [self.emotion[c].weight for c in candidates]
        return rng.choices(candidates, weights=weights, k=1)[0]


def _reachable(tax: Taxonomy, start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for nxt in tax.transitions.get(stack.pop(), []):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _check(tax: Taxonomy) -> Taxonomy:
    names = set(tax.emotion_names)
    for src, dsts in tax.transitions.items():
        if src not in names:
            raise TaxonomyError(f"transition graph: source emotion {src!r} is not in the taxonomy's emotions")
        for dst in dsts:
            if dst not in names:
                raise TaxonomyError(f"transition graph: edge {src!r} -> {dst!r} names unknown emotion {dst!r}")
        if len(set(dsts)) != len(dsts):
            raise TaxonomyError(f"transition graph: {src!r} lists a successor twice")
    seen_domains: set[str] = set()
    for d in tax.domains:
        if d.name in seen_domains:
            raise TaxonomyError(f"domain {d.name!r} is listed twice")
        seen_domains.add(d.name)
        if not d.emotions:
            raise TaxonomyError(f"domain {d.name!r} allows no emotion")
        for e in d.emotions:
            if e not in names:
                raise TaxonomyError(f"domain {d.name!r} allows unknown emotion {e!r}")
        allowed = set(d.emotions)
        if len(allowed) > 1 and not any(_reachable(tax, e) & (allowed - {e}) for e in allowed):
            raise TaxonomyError(
                f"domain {d.name!r}: no emotion of the domain is reachable from another through the transition "
                "graph, so every dialogue would repeat its first emotion"
            )
    for mname, m in tax.mappings.items():
        missing = [e for e in tax.emotion_names if e not in m.map]
        if missing:
            raise TaxonomyError(f"label mapping {mname!r} misses emotion(s) {missing}")
        extra = [e for e in m.map if e not in names]
        if extra:
            raise TaxonomyError(f"label mapping {mname!r} maps unknown emotion(s) {extra}")
        bad = sorted({t for t in m.map.values() if t not in m.labels})
        if bad:
            raise TaxonomyError(f"label mapping {mname!r} maps onto label(s) {bad} that are not in its labels")
    return tax


def parse_taxonomy(data: dict, source: str = "<taxonomy>") -> Taxonomy:
    try:
        tax = Taxonomy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise TaxonomyError(f"{source}: {problems}") from None
    try:
        return _check(tax)
    except TaxonomyError as exc:
        raise TaxonomyError(f"{source}: {exc}") from None


@lru_cache(maxsize=1)
def _preset_fingerprints() -> dict[str, str]:
    """Fingerprint -> preset name (records store the fingerprint of the taxonomy they were made with)."""
    return {load_taxonomy(name).fingerprint: name for name in PRESETS}


def load_taxonomy(spec: str | Path | None = None) -> Taxonomy:
    """Load a preset by name (``deepdialogue``, ``erc``) or fingerprint, or a taxonomy file (.json/.yaml)."""
    spec = spec or DEFAULT_PRESET
    if isinstance(spec, str) and spec in PRESETS:
        path = PRESET_DIR / f"{spec}.json"
    elif isinstance(spec, str) and spec in _preset_fingerprints():
        path = PRESET_DIR / f"{_preset_fingerprints()[spec]}.json"
    else:
        path = Path(spec)
        if not path.is_file():
            raise TaxonomyError(f"taxonomy {str(spec)!r} is neither a preset {list(PRESETS)} nor a readable file")
    try:
        text = path.read_text()
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise TaxonomyError(f"{path}: cannot read taxonomy: {exc}") from None
    if not isinstance(data, dict):
        raise TaxonomyError(f"{path}: a taxonomy must be a mapping, got {type(data).__name__}")
    return parse_taxonomy(data, str(path))


def edges(tax: Taxonomy) -> Iterable[tuple[str, str]]:
    for src, dsts in tax.transitions.items():
        for dst in dsts:
            yield src, dst
