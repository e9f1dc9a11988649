"""The release's data files from a store as a build leaves it (many parts, every dialogue row written twice): the
dialogue files' turns and emotions are exactly the utterance rows of that dialogue in order, and the gate still names
the rows it fails on after running at GX's BASIC format first."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from flows.synthetic import synthetic_dialogues
from schemas.config import load_config
from schemas.expectations import validate_release
from schemas.taxonomy import load_taxonomy
from warehouse.publish import publish_release
from warehouse.release_files import dialogue_rows
from warehouse.store import Warehouse

CFG = load_config(publish={"sources": ["synthetic"], "report": False})


def _load_as_build(home, n, per_part=7, seed=3):
    """Turns and dialogue rows in small parts; each dialogue first as 'generated', later as 'accepted'."""
    wh = Warehouse(home)
    made = list(synthetic_dialogues(load_taxonomy(), n, seed=seed))
    for i in range(0, n, per_part):
        chunk = made[i:i + per_part]
        wh.upsert([t for _, ts in chunk for t in ts])
        wh.upsert([d.model_copy(update={"status": "generated"}) for d, _ in chunk])
    for i in range(0, n, per_part):
        wh.upsert([d for d, _ in made[i:i + per_part]])
    return wh, made


def _read(folder):
    return pa.concat_tables([pq.read_table(f) for f in sorted(folder.glob("*.parquet"))])


def test_dialogue_turns_are_the_utterances_in_order(home):
    wh, made = _load_as_build(home, 45)
    assert len(wh._parts("turns")) >= 7 and len(wh._parts("dialogues")) >= 14
    out = publish_release(home, CFG, evaluate=False)
    rel = home / "releases" / out["version"] / "data"
    utt, dlg = _read(rel / "utterances"), _read(rel / "dialogues")
    assert dlg.num_rows == 45 and utt.num_rows == sum(len(ts) for _, ts in made)
    by_dialogue = {}
    for u in utt.to_pylist():
        by_dialogue.setdefault(u["dialogue_id"], []).append(u)
    stored = {d.id: ts for d, ts in made}
    for d in dlg.to_pylist():
        us = sorted(by_dialogue[d["dialogue_id"]], key=lambda u: u["utterance_idx"])
        assert d["turns"] == [{"idx": u["utterance_idx"], "speaker": u["speaker"], "text": u["text"],
                               "emotion": u["emotion"]} for u in us]
        assert d["emotions"] == [u["emotion"] for u in us] == [t.label for t in stored[d["dialogue_id"]]]
        assert d["n_turns"] == len(us) and {u["split"] for u in us} == {d["split"]}
        assert d["difficulty"] == us[0]["difficulty"] and d["bucket"] == us[0]["bucket"]
    for split in ("train", "validation", "test"):  # every file sorted by dialogue (then index)
        for kind, key in (("dialogues", ["dialogue_id"]), ("utterances", ["dialogue_id", "utterance_idx"])):
            rows = [tuple(r[k] for k in key) for r in _read_split(rel / kind, split).to_pylist()]
            assert rows == sorted(rows)
    schema = pq.read_schema(next((rel / "dialogues").glob("train-*.parquet")))
    assert schema.field("turns").type.value_type == pa.struct(
        [("idx", pa.int64()), ("speaker", pa.string()), ("text", pa.string()), ("emotion", pa.string())])
    assert schema.names[:9] == ["dialogue_id", "source", "domain", "model_a", "model_b", "pair_type", "n_turns",
                                "emotions", "turns"]


def _read_split(folder, split):
    return pq.read_table(next(folder.glob(f"{split}-*.parquet")))


def test_a_dialogue_without_utterances_is_left_out():
    base = pa.table({"dialogue_id": ["a", "b", "c"], "n_turns": [1, 1, 2], "split": ["train"] * 3})
    utt = pa.table({"dialogue_id": ["a", "c", "c"], "utterance_idx": [0, 0, 1], "speaker": ["A", "A", "B"],
                    "text": ["x", "y", "z"], "emotion": ["joy", "fear", "anger"]})
    out = dialogue_rows(base, utt)
    assert out.column("dialogue_id").to_pylist() == ["a", "c"]
    assert out.column("emotions").to_pylist() == [["joy"], ["fear", "anger"]]
    assert [[t["text"] for t in ts] for ts in out.column("turns").to_pylist()] == [["x"], ["y", "z"]]
    assert out.schema.names == ["dialogue_id", "n_turns", "emotions", "turns", "split"]


def test_the_gate_names_failing_rows_and_keeps_every_result(home, tmp_path):
    """A release-level failure (text leakage across splits) after the BASIC pass: the COMPLETE re-run names the
    rows; every expectation keeps its summary in the stored result."""
    _load_as_build(home, 30)
    out = publish_release(home, CFG, evaluate=False)
    data = home / "releases" / out["version"] / "data"
    result = json.loads((data.parent / "validation" / "result.json").read_text())
    assert result["success"] and len(result["results"]) >= 20 and not result["failures"]
    copy = tmp_path / "data"
    for kind in ("utterances", "dialogues"):
        (copy / kind).mkdir(parents=True)
        for f in (data / kind).glob("*.parquet"):
            t = pq.read_table(f)
            if kind == "dialogues" and f.name.startswith("test-"):  # the same text hash as a train dialogue
                train = pq.read_table(next((data / kind).glob("train-*.parquet")))
                t = t.set_column(t.schema.get_field_index("text_hash"), "text_hash",
                                 pa.array([train.column("text_hash")[0].as_py()] * t.num_rows))
            pq.write_table(t, copy / kind / f.name)
    gate = validate_release(copy, load_taxonomy(), CFG.publish)
    assert not gate.success
    (leak,) = [f for f in gate.failures if f.kwargs.get("column") == "split_text_hash"]
    assert leak.rows and all(r.startswith("dlg_") for r in leak.rows)
    assert leak.unexpected_count >= 2
    assert len(gate.results) == len(result["results"])


def test_the_gate_on_the_written_tables_equals_the_gate_on_the_files(home, tmp_path):
    """Publish validates the Arrow tables its files were written from; on a broken release (text leakage across
    splits, an emotion outside the taxonomy) that gives the file gate's result: the same failures, the same rows."""
    _load_as_build(home, 30)
    out = publish_release(home, CFG, evaluate=False)
    data = home / "releases" / out["version"] / "data"
    copy = tmp_path / "data"
    for kind in ("utterances", "dialogues"):
        (copy / kind).mkdir(parents=True)
        for f in (data / kind).glob("*.parquet"):
            t = pq.read_table(f)
            if kind == "dialogues" and f.name.startswith("test-"):
                train = pq.read_table(next((data / kind).glob("train-*.parquet")))
                t = t.set_column(t.schema.get_field_index("text_hash"), "text_hash",
                                 pa.array([train.column("text_hash")[0].as_py()] * t.num_rows))
            if kind == "utterances" and f.name.startswith("train-"):
                emotions = t.column("emotion").to_pylist()
                emotions[3] = emotions[7] = "not-an-emotion"
                t = t.set_column(t.schema.get_field_index("emotion"), "emotion", pa.array(emotions))
            pq.write_table(t, copy / kind / f.name)
    files = {k: sorted((copy / k).glob("*.parquet")) for k in ("utterances", "dialogues")}
    tables = ([pq.read_table(f) for f in files["utterances"]],
              [pq.read_table(f).drop_columns(["turns"]) for f in files["dialogues"]])
    on_files = validate_release(copy, load_taxonomy(), CFG.publish, chunk_rows=40)
    on_tables = validate_release(copy / "nowhere", load_taxonomy(), CFG.publish, chunk_rows=40, tables=tables)
    assert not on_files.success
    assert {f.kwargs.get("column") for f in on_files.failures} >= {"emotion", "split_text_hash"}
    (bad,) = [f for f in on_files.failures if f.kwargs.get("column") == "emotion"]
    assert bad.unexpected_count == 2 and len(bad.rows) == 2
    assert on_tables.to_json() == on_files.to_json()


def test_the_report_from_the_written_tables_equals_the_report_from_the_files(home, tmp_path):
    """Publish writes the report from the tables its files were written from; the report read back from the files
    (``emoforge report``) has the same figures and the same plots, byte for byte."""
    from warehouse.report import write_report

    _load_as_build(home, 40)
    out = publish_release(home, load_config(publish={"sources": ["synthetic"], "report": True}), evaluate=False)
    rel = home / "releases" / out["version"]
    again = write_report(rel, home=home, out_dir=tmp_path / "again").parent
    published = sorted(p.name for p in (rel / "report").iterdir())
    assert "stats.json" in published and len([p for p in published if p.endswith(".png")]) >= 5
    assert published == sorted(p.name for p in again.iterdir())
    for name in published:
        assert (rel / "report" / name).read_bytes() == (again / name).read_bytes(), name


def test_a_file_depends_on_its_rows_not_on_how_they_are_chunked(tmp_path):
    """The release's tables come from DuckDB in chunks of its choosing; a file's row groups (and its bytes, which
    the manifest's checksums hold) are the same for the same rows however they are chunked."""
    from warehouse.release_files import write_parquet

    n = 2500
    whole = pa.table({"dialogue_id": [f"dlg_{i // 7:05d}" for i in range(n)], "utterance_idx": [i % 7 for i in range(n)],
                      "text": [f"turn {i} " + "word " * (i % 13) for i in range(n)]})
    cuts = [0, 1, 999, 1000, 1001, 1777, n]
    chunked = pa.Table.from_batches([b for a, b_ in zip(cuts, cuts[1:]) for b in whole.slice(a, b_ - a).to_batches()])
    assert chunked.column(0).num_chunks == 6
    write_parquet(whole.combine_chunks(), tmp_path / "a.parquet", 1000)
    write_parquet(chunked, tmp_path / "b.parquet", 1000)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    meta = pq.ParquetFile(tmp_path / "b.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 500]
    assert pq.read_table(tmp_path / "b.parquet").equals(whole)
