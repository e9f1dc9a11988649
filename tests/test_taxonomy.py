import copy
import json
import random

import pytest

from schemas.taxonomy import PRESET_DIR, TaxonomyError, load_taxonomy, parse_taxonomy


def preset(name="deepdialogue"):
    return json.loads((PRESET_DIR / f"{name}.json").read_text())


def test_deepdialogue_preset_matches_the_reference(shared_dir):
    ref = json.loads((shared_dir / "reference" / "deepdialogue-taxonomy.json").read_text())
    tax = load_taxonomy("deepdialogue")
    assert tax.emotion_names == ref["emotions"]
    assert tax.n_edges == 105 == sum(len(v) for v in ref["transition_graph"].values())
    assert {d.name: d.emotions for d in tax.domains} == {k: v["allowed_emotions"] for k, v in ref["domains"].items()}
    assert len(tax.domains) == 41
    assert all(d.description for d in tax.domains)


def test_erc_preset_covers_all_seven_classes_at_realistic_rates():
    tax = load_taxonomy("erc")
    erc7 = tax.mappings["erc7"]
    assert set(erc7.map.values()) == set(erc7.labels) == {"neutral", "anger", "disgust", "fear", "joy", "sadness", "surprise"}
    rng = random.Random(0)
    labels = []
    for i in range(400):
        d = tax.domains[i % len(tax.domains)].name
        labels += [erc7.map[e] for e in tax.sample_path(d, 8, rng)]
    share = {lab: labels.count(lab) / len(labels) for lab in erc7.labels}
    assert 0.30 <= share["neutral"] <= 0.60, share  # MELD ~47% neutral
    assert all(share[lab] > 0 for lab in erc7.labels), share
    # the deepdialogue preset alone cannot teach neutral or disgust
    dd = load_taxonomy("deepdialogue").mappings["erc7"]
    assert "disgust" not in dd.map.values()


def test_sampling_follows_graph_and_domain_and_is_deterministic():
    tax = load_taxonomy("deepdialogue")
    for i, dom in enumerate(tax.domains):
        p1 = tax.sample_path(dom.name, 10, random.Random(i))
        assert p1 == tax.sample_path(dom.name, 10, random.Random(i))
        assert p1[0] in dom.emotions
        for a, b in zip(p1, p1[1:]):
            assert b in tax.successors(dom.name, a)
            assert b in dom.emotions or b == a


def test_successors_fallback_when_graph_and_domain_do_not_meet():
    data = preset()
    data["domains"].append({"name": "Tiny", "description": "x", "emotions": ["Happy", "Sad"]})
    data["transitions"]["Happy"] = ["Excited"]
    data["transitions"]["Excited"] = ["Sad"]
    tax = parse_taxonomy(data)
    # Happy -> (Excited not in domain) -> nearest domain emotion two hops away
    assert tax.successors("Tiny", "Happy") == ["Sad"]
    data["transitions"]["Sad"] = []
    tax = parse_taxonomy(data)
    assert tax.successors("Tiny", "Sad") == ["Sad"]  # nothing reachable: the emotion stays


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["transitions"]["Happy"].append("Ecstatic"), "'Happy' -> 'Ecstatic' names unknown emotion 'Ecstatic'"),
        (lambda d: d["transitions"].__setitem__("Gloomy", ["Happy"]), "source emotion 'Gloomy'"),
        (lambda d: d["domains"][0].__setitem__("emotions", []), "domain 'Art' allows no emotion"),
        (lambda d: d["domains"][0].__setitem__("emotions", ["Happy", "Blissful"]), "domain 'Art' allows unknown emotion 'Blissful'"),
        (lambda d: d["domains"][0].__setitem__("emotions", ["Bored", "Embarrassed"]), "domain 'Art': no emotion of the domain is reachable"),
        (lambda d: d["mappings"]["erc7"]["map"].pop("Happy"), "label mapping 'erc7' misses emotion(s) ['Happy']"),
        (lambda d: d["mappings"]["erc7"]["map"].__setitem__("Happy", "glee"), "maps onto label(s) ['glee']"),
        (lambda d: d["emotions"].append(dict(d["emotions"][0])), "emotion 'Amused' is listed twice"),
        (lambda d: d["emotions"][0].__setitem__("valence", 3), "emotions.0.valence"),
        (lambda d: d["domains"].append(dict(d["domains"][0])), "domain 'Art' is listed twice"),
    ],
)
def test_bad_taxonomies_are_refused_naming_the_entry(mutate, message):
    data = copy.deepcopy(preset())
    mutate(data)
    with pytest.raises(TaxonomyError) as err:
        parse_taxonomy(data, "bad.json")
    assert message in str(err.value)
    assert "bad.json" in str(err.value)


def test_unknown_preset_or_unreadable_file(tmp_path):
    with pytest.raises(TaxonomyError, match="neither a preset"):
        load_taxonomy("nope")
    bad = tmp_path / "t.json"
    bad.write_text("{not json")
    with pytest.raises(TaxonomyError, match="cannot read taxonomy"):
        load_taxonomy(bad)
    yml = tmp_path / "t.yaml"
    yml.write_text("- a list\n")
    with pytest.raises(TaxonomyError, match="must be a mapping"):
        load_taxonomy(yml)
