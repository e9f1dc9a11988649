"""The scenario grid: domains x model pairs x N per cell, each scenario with its number of turns and the emotion
of every turn. Deterministic from a seed.

Ordering (what ``--dialogues N`` takes): grid position ``j`` maps to
``domain = D[j % n_domains]``, ``pair = P[(j % n_domains + j // n_domains) % n_pairs]``, replicate
``j // (n_domains * n_pairs)``, with the domain order ``D`` shuffled by the seed. Every run of ``n_domains``
consecutive positions visits every domain once and spreads the pairs evenly, every ``n_domains * n_pairs``
positions cover every (domain, pair) cell exactly once, so the first N positions are a balanced subset of the
grid for any N, and the first N of a larger request are the same N scenarios (asking for more extends a run).

The turn count and emotions of position ``j`` come from a generator seeded by ``(seed, j)`` only, so a
scenario does not change when N, the pair list or the per-cell count change.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from schemas.records import PROMPT_VERSION, Scenario
from schemas.taxonomy import Taxonomy

DEEPDIALOGUE_PER_CELL = 100
MIN_TURNS, MAX_TURNS = 3, 10


class ScenarioError(ValueError):
    pass


@dataclass(frozen=True)
class GridSpec:
    pairs: tuple[tuple[str, str], ...]
    domains: tuple[str, ...] | None = None  # None: every domain of the taxonomy
    per_cell: int = DEEPDIALOGUE_PER_CELL
    min_turns: int = MIN_TURNS
    max_turns: int = MAX_TURNS
    seed: int = 0
    word_cap: int = 25
    prompt_version: str = PROMPT_VERSION
    path_model: Any = None  # None: the taxonomy's graph; else e.g. warehouse.transitions.LearnedTransitions

    def validate(self, tax: Taxonomy) -> None:
        if not self.pairs:
            raise ScenarioError("no model pairs configured: the models config must name at least one pair")
        if self.per_cell < 1:
            raise ScenarioError(f"per_cell must be >= 1, got {self.per_cell}")
        if not (1 <= self.min_turns <= self.max_turns <= 64):
            raise ScenarioError(f"turn range must satisfy 1 <= min <= max <= 64, got {self.min_turns}..{self.max_turns}")
        if self.word_cap < 1:
            raise ScenarioError(f"word cap must be >= 1, got {self.word_cap}")
        for d in self.domains or ():
            if d not in tax.domain:
                raise ScenarioError(f"unknown domain {d!r}; the taxonomy {tax.name!r} has {len(tax.domains)} domains")
        if self.domains is not None and not self.domains:
            raise ScenarioError("an empty domain list was given")


def _rng(seed: int, *parts: object) -> random.Random:
    digest = hashlib.sha256(repr((seed,) + parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def domain_order(tax: Taxonomy, spec: GridSpec) -> list[str]:
    domains = list(spec.domains) if spec.domains else [d.name for d in tax.domains]
    _rng(spec.seed, "domain-order").shuffle(domains)
    return domains


def grid_size(tax: Taxonomy, spec: GridSpec) -> int:
    return len(domain_order(tax, spec)) * len(spec.pairs) * spec.per_cell


def scenario_at(tax: Taxonomy, spec: GridSpec, j: int, domains: list[str] | None = None) -> Scenario:
    domains = domains or domain_order(tax, spec)
    nd, npair = len(domains), len(spec.pairs)
    d = j % nd
    domain = domains[d]
    model_a, model_b = spec.pairs[(d + j // nd) % npair]
    rng = _rng(spec.seed, "scenario", j)
    n_turns = rng.randint(spec.min_turns, spec.max_turns)
    emotions = (spec.path_model or tax).sample_path(domain, n_turns, rng)
    sid = Scenario.make_id(domain, model_a, model_b, emotions, spec.seed, j, tax.name, spec.prompt_version, spec.word_cap)
    return Scenario(
        id=sid, domain=domain, model_a=model_a, model_b=model_b, n_turns=n_turns, emotions=emotions,
        seed=spec.seed, index=j, taxonomy=tax.name, prompt_version=spec.prompt_version, word_cap=spec.word_cap,
    )


def iter_scenarios(tax: Taxonomy, spec: GridSpec, n: int | None = None) -> Iterator[Scenario]:
    """The first ``n`` scenarios of the grid (all of it when ``n`` is None)."""
    spec.validate(tax)
    total = grid_size(tax, spec)
    if n is None:
        n = total
    if n < 1:
        raise ScenarioError(f"--dialogues must be >= 1, got {n}")
    if n > total:
        raise ScenarioError(
            f"asked for {n} dialogues but the grid has {total} "
            f"({len(domain_order(tax, spec))} domains x {len(spec.pairs)} pairs x {spec.per_cell} per cell); "
            "raise per_cell or add pairs/domains"
        )
    domains = domain_order(tax, spec)
    for j in range(n):
        yield scenario_at(tax, spec, j, domains)


def build_scenarios(tax: Taxonomy, spec: GridSpec, n: int | None = None) -> list[Scenario]:
    return list(iter_scenarios(tax, spec, n))


def pair_type(model_a: str, model_b: str) -> str:
    return "same" if model_a == model_b else "cross"


def summarise(scenarios: Sequence[Scenario]) -> dict:
    """Counts per domain, pair, pair type and turn count (for ``emoforge scenarios --dry-run``)."""
    return {
        "n": len(scenarios),
        "domains": dict(Counter(s.domain for s in scenarios)),
        "pairs": dict(Counter(f"{s.model_a}|{s.model_b}" for s in scenarios)),
        "pair_types": dict(Counter(pair_type(s.model_a, s.model_b) for s in scenarios)),
        "turns": dict(sorted(Counter(s.n_turns for s in scenarios).items())),
        "total_turns": sum(s.n_turns for s in scenarios),
    }
