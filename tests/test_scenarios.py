"""The scenario grid: deterministic from the seed, balanced for any N, emotions that follow the taxonomy."""

from __future__ import annotations

from collections import Counter

import pytest

from flows.scenarios import GridSpec, ScenarioError, build_scenarios, grid_size, summarise
from schemas.taxonomy import load_taxonomy

TAX = load_taxonomy("deepdialogue")
MODELS = [f"m{i}" for i in range(9)]
# DeepDialogue: 9 same-model pairs + 7 cross-model pairs
DD_PAIRS = tuple((m, m) for m in MODELS) + tuple((MODELS[i], MODELS[i + 1]) for i in range(7))
EMB_PAIRS = (("s", "s"), ("g", "g"), ("s", "g"), ("g", "s"))


def test_default_grid_reproduces_deepdialogue_size():
    spec = GridSpec(pairs=DD_PAIRS)
    assert len(TAX.domains) == 41 and len(DD_PAIRS) == 16
    assert grid_size(TAX, spec) == 41 * 16 * 100 == 65_600


def test_same_seed_same_scenarios_other_seed_differs():
    a = build_scenarios(TAX, GridSpec(pairs=EMB_PAIRS, seed=7), 50)
    b = build_scenarios(TAX, GridSpec(pairs=EMB_PAIRS, seed=7), 50)
    c = build_scenarios(TAX, GridSpec(pairs=EMB_PAIRS, seed=8), 50)
    assert [s.model_dump() for s in a] == [s.model_dump() for s in b]
    assert [s.id for s in a] != [s.id for s in c]
    assert len({s.id for s in a}) == 50


def test_prefix_property_asking_for_more_extends_the_run():
    small = build_scenarios(TAX, GridSpec(pairs=EMB_PAIRS, seed=3), 12)
    big = build_scenarios(TAX, GridSpec(pairs=EMB_PAIRS, seed=3), 200)
    assert [s.id for s in small] == [s.id for s in big[:12]]


@pytest.mark.parametrize("n", [12, 41, 100, 164, 333])
def test_any_n_is_balanced_over_domains_and_pairs(n):
    scns = build_scenarios(TAX, GridSpec(pairs=EMB_PAIRS, seed=1), n)
    dom = Counter(s.domain for s in scns)
    pairs = Counter((s.model_a, s.model_b) for s in scns)
    assert max(dom.values()) - min(dom.values()) <= 1
    assert len(dom) == min(n, 41)
    assert max(pairs.values()) - min(pairs.values()) <= 2, pairs
    assert len(pairs) == 4


def test_every_cell_once_per_round_with_deepdialogue_pairs():
    spec = GridSpec(pairs=DD_PAIRS, per_cell=2)
    scns = build_scenarios(TAX, spec, 41 * 16)
    cells = Counter((s.domain, s.model_a, s.model_b) for s in scns)
    assert len(cells) == 41 * 16 and set(cells.values()) == {1}
    s = summarise(scns)
    assert s["pair_types"] == {"same": 41 * 9, "cross": 41 * 7}


def test_turns_and_emotions_follow_the_taxonomy():
    scns = build_scenarios(TAX, GridSpec(pairs=EMB_PAIRS, seed=0), 400)
    assert {s.n_turns for s in scns} == set(range(3, 11))
    for s in scns:
        assert len(s.emotions) == s.n_turns
        dom = TAX.domain[s.domain]
        assert s.emotions[0] in dom.emotions
        for prev, nxt in zip(s.emotions, s.emotions[1:]):
            assert nxt in TAX.successors(s.domain, prev)


def test_bad_requests_are_named():
    with pytest.raises(ScenarioError, match="grid has 8"):
        build_scenarios(TAX, GridSpec(pairs=(("a", "a"),), domains=("Art", "Books"), per_cell=4), 9)
    with pytest.raises(ScenarioError, match="unknown domain 'Nope'"):
        build_scenarios(TAX, GridSpec(pairs=EMB_PAIRS, domains=("Nope",)), 1)
    with pytest.raises(ScenarioError, match="no model pairs"):
        build_scenarios(TAX, GridSpec(pairs=()), 1)
