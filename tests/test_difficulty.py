import math

import pytest

from schemas.difficulty import bucket_edges, bucket_of, difficulty, max_difficulty
from schemas.taxonomy import load_taxonomy


def table_sim(pairs):
    def sim(a, b):
        return pairs.get((a, b), pairs.get((b, a), 0.0))
    return sim


def test_no_label_change_gives_speakers_over_utterances_plus_speakers():
    # 4 utterances, 2 speakers, same label throughout: (0 + 0 + 2) / (4 + 2)
    assert difficulty("ABAB", ["x"] * 4, table_sim({})) == pytest.approx(2 / 6)


def test_hand_computed_dialogue():
    # A:x  B:y  A:y  B:y   with s(x,y) = 0.5, k = 1, b = 0.4
    # WES_same: A x->y (0.5+0.4) = 0.9; B y->y none          => 0.9
    # WES_diff: (A x,B y) 0.9; (B y,A y) none; (A y,B y) none => 0.9
    # DIF = (0.9 + 0.9 + 2) / (4 + 2) = 3.8 / 6
    sim = table_sim({("x", "y"): 0.5})
    assert difficulty("ABAB", ["x", "y", "y", "y"], sim) == pytest.approx(3.8 / 6)
    # k and b are honoured: k=2, b=0 -> each change adds 1.0
    assert difficulty("ABAB", ["x", "y", "y", "y"], sim, k=2, b=0) == pytest.approx((1 + 1 + 2) / 6)


def test_opposite_valence_changes_add_only_b():
    tax = load_taxonomy("deepdialogue")
    assert tax.similarity("Happy", "Sad") == 0.0
    # A:Happy B:Sad A:Happy -> WES_same: A Happy->Happy none; WES_diff: 2 changes * 0.4
    assert difficulty("ABA", ["Happy", "Sad", "Happy"], tax.similarity) == pytest.approx((0.8 + 2) / 5)


def test_similarity_on_the_valence_arousal_circle():
    tax = load_taxonomy("erc")
    h, e = tax.emotion["Happy"], tax.emotion["Excited"]
    cos = (h.valence * e.valence + h.arousal * e.arousal) / (math.hypot(h.valence, h.arousal) * math.hypot(e.valence, e.arousal))
    assert tax.similarity("Happy", "Excited") == pytest.approx(cos)
    assert tax.similarity("Neutral", "Angry") == pytest.approx(1 / len(tax.emotions))
    assert tax.similarity("Angry", "Happy") == 0.0


def test_difficulty_stays_within_its_bound():
    tax = load_taxonomy("deepdialogue")
    worst = difficulty("AB" * 5, ["Happy", "Excited"] * 5, tax.similarity)
    assert 0 < worst <= max_difficulty()


def test_quantile_buckets():
    edges = bucket_edges([0.1, 0.2, 0.3, 0.4], 2)
    assert edges == [0.3]
    assert [bucket_of(v, edges) for v in (0.1, 0.2, 0.3, 0.4)] == [0, 0, 1, 1]
    assert bucket_edges([1.0, 2.0], 1) == []
    with pytest.raises(ValueError):
        difficulty("AB", ["x"], table_sim({}))
