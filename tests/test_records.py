import pyarrow as pa

from schemas.records import Dialogue, Scenario, Turn, arrow_schema, content_id, text_hash, to_table


def test_ids_are_content_hashes():
    args = ("Art", "m1", "m2", ["Happy", "Sad"], 0, 3, "tax", "gen-v1", 25)
    assert Scenario.make_id(*args) == Scenario.make_id(*args)
    assert Scenario.make_id(*args) != Scenario.make_id("Art", "m2", "m1", ["Happy", "Sad"], 0, 3, "tax", "gen-v1", 25)
    assert Scenario.make_id(*args) != Scenario.make_id(*args[:-2], "gen-v2", 25)
    assert content_id("x", {"a": 1, "b": 2}) == content_id("x", {"b": 2, "a": 1})


def test_arrow_schema_is_derived_from_the_record():
    schema = arrow_schema(Turn)
    assert schema.names == list(Turn.model_fields)
    assert schema.field("idx").type == pa.int64()
    s = arrow_schema(Dialogue)
    assert s.field("status_reason").nullable and not s.field("domain").nullable
    assert s.field("created_at").type == pa.timestamp("us", tz="UTC")
    t = to_table([Dialogue(id="d", domain="Art", model_a="a", model_b="b", n_turns=3, status="accepted")])
    assert t.schema == s and t.num_rows == 1


def test_text_hash_ignores_case_punctuation_and_spacing():
    assert text_hash(["Hello,  World!", "ok"]) == text_hash(["hello world", "OK."])
    assert text_hash(["hello world"]) != text_hash(["hello", "world"])
