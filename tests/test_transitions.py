"""Learned scenario transitions: stay probability and move weights from the real DailyDialog train split."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from schemas.taxonomy import load_taxonomy
from test_evaluate import small_dailydialog
from warehouse.importers import import_dailydialog
from warehouse.transitions import (
    LearnedTransitions, TransitionsError, change_rate, learn_dynamics, load_dynamics, path_model, real_sequences,
)


def test_learned_paths_stay_like_real_conversation_and_keep_to_the_graph(home: Path, shared_dir: Path,
                                                                       tmp_path: Path) -> None:
    import_dailydialog(home, small_dailydialog(shared_dir, tmp_path / "dd", n_train=300, n_test=100))
    real = real_sequences(home, "dailydialog", "train")
    dyn = load_dynamics(home, "dailydialog")
    assert dyn.change_rate == change_rate(real) and dyn.n_pairs == sum(len(s) - 1 for s in real)
    assert dyn.stay["neutral"] > 0.7  # people mostly stay neutral
    assert load_dynamics(home, "dailydialog") == dyn  # cached, same figures
    tax = load_taxonomy("erc")
    model = path_model(home, tax, "learned:dailydialog")
    assert isinstance(model, LearnedTransitions) and path_model(home, tax, "graph") is None
    domains = [d.name for d in tax.domains]

    def paths(sampler, seed: int) -> list[list[str]]:
        rng = random.Random(seed)
        return [sampler.sample_path(domains[i % len(domains)], 8, rng) for i in range(300)]

    graph_paths, learned_paths = paths(tax, 1), paths(model, 1)
    assert paths(model, 1) == learned_paths  # deterministic for a seed
    g, lrn = change_rate(graph_paths), change_rate(learned_paths)
    real_test = change_rate(real_sequences(home, "dailydialog", "test"))
    # the learned paths change emotion far less often than the graph walk, and land near the real (held-out) rate
    assert lrn < g - 0.3 and abs(lrn - real_test) < abs(g - real_test)
    # every change is an edge of the configured graph (or the nearest-in-domain fallback the graph walk also uses)
    for domain_i, p in enumerate(learned_paths):
        domain = domains[domain_i % len(domains)]
        for a, b in zip(p, p[1:]):
            assert a == b or b in tax.successors(domain, a)


def test_learned_transitions_need_the_imported_corpus(home: Path) -> None:
    with pytest.raises(TransitionsError, match="emoforge import meld PATH"):
        path_model(home, load_taxonomy("erc"), "learned:meld")
    with pytest.raises(TransitionsError, match="'graph' or 'learned:<source>'"):
        path_model(home, load_taxonomy("erc"), "markov")
    dyn = learn_dynamics("toy", [["neutral", "neutral", "joy", "joy", "joy"], ["anger", "neutral"]])
    assert dyn.stay["joy"] == 1.0 and dyn.stay["neutral"] == 0.5 and dyn.change_rate == round(2 / 5, 4)
    assert sum(dyn.move["neutral"].values()) == pytest.approx(1.0, abs=1e-3)
