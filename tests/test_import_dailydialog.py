"""DailyDialog importer on the shared real data: counts, the train-duplicate drop, the real bad row."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from schemas.records import text_hash
from warehouse.importers import ImportFailed, import_dailydialog
from warehouse.importers.labels import external_label
from warehouse.store import Warehouse


def test_dailydialog_real_data(home: Path, shared_dir: Path) -> None:
    root = shared_dir / "benchdata" / "dailydialog"
    report = import_dailydialog(home, root)
    # 11,118 train lines; line 7852 has 12 turns but 11 labels (a real defect of the public files): reported
    assert [str(b) for b in report.bad_rows] == [
        f"{root / 'train' / 'dialogues_train.txt'}:7852: 12 turns but 11 emotion labels in dialogues_emotion_train.txt:7852"]
    assert report.dialogues["train"] == 11117
    # validation/test dialogues whose normalised text is also in train are dropped
    assert report.duplicates_dropped == {"validation": 118, "test": 146}
    assert report.dialogues["validation"] == 1000 - 118 and report.dialogues["test"] == 1000 - 146
    assert sum(report.utterances.values()) == 87159 + 7092 + 6654
    wh = Warehouse(home)
    rows = wh.query(
        "SELECT d.source_split, list(t.text ORDER BY t.idx) AS texts FROM dialogues d JOIN turns t ON t.dialogue_id = d.id "
        "WHERE d.source = 'dailydialog' GROUP BY d.id, d.source_split").to_pylist()
    train = {text_hash(r["texts"]) for r in rows if r["source_split"] == "train"}
    assert not [r for r in rows if r["source_split"] == "test" and text_hash(r["texts"]) in train]
    labels = {r["label"]: r["n"] for r in wh.query("SELECT label, count(*) AS n FROM turns GROUP BY 1").to_pylist()}
    assert set(labels) == {"neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise"}
    assert labels["neutral"] > labels["happiness"] > labels["surprise"]
    assert external_label("dailydialog", "happiness", "erc7") == "joy"
    first = wh.query("SELECT t.speaker, t.text, t.label FROM turns t JOIN dialogues d ON d.id = t.dialogue_id "
                     "WHERE d.source_split = 'train' AND d.id = (SELECT id FROM dialogues WHERE source_split = 'train' "
                     "AND text_hash = ?) ORDER BY t.idx", [text_hash(_first_train_dialogue(root))]).to_pylist()
    assert [t["speaker"] for t in first[:3]] == ["A", "B", "A"]
    assert first[0]["text"].startswith("Say , Jim , how about going for a few beers")
    assert [t["label"] for t in first][-4:] == ["happiness"] * 4


def _first_train_dialogue(root: Path) -> list[str]:
    line = (root / "train" / "dialogues_train.txt").open(encoding="utf-8").readline()
    return [u.strip() for u in line.split("__eou__") if u.strip()]


def test_dailydialog_bad_rows_named_with_file_and_line(home: Path, tmp_path: Path) -> None:
    root = tmp_path / "dd"
    for split, texts, emos in [
        ("train", ["Hi . __eou__ Hello ! __eou__", "Bad one . __eou__ Yes . __eou__", "Ok . __eou__  __eou__ Fine . __eou__"],
         ["0 4", "0 9", "0 0 0"]),
        ("test", ["Hi . __eou__ Hello ! __eou__", "New here . __eou__ Welcome . __eou__", "Extra . __eou__"],
         ["0 4", "0 4"]),
    ]:
        (root / split).mkdir(parents=True)
        (root / split / f"dialogues_{split}.txt").write_text("\n".join(texts) + "\n")
        (root / split / f"dialogues_emotion_{split}.txt").write_text("\n".join(emos) + "\n")
    with pytest.raises(ImportFailed, match="3 bad row"):
        import_dailydialog(home, root, strict=True)
    report = import_dailydialog(home, root)
    found = {(Path(b.file).name, b.line): b.problem for b in report.bad_rows}
    assert found.keys() == {("dialogues_train.txt", 2), ("dialogues_train.txt", 3), ("dialogues_test.txt", 3)}
    assert "'9'" in found[("dialogues_train.txt", 2)] and "turn 2 is empty" in found[("dialogues_train.txt", 3)]
    assert "no matching line" in found[("dialogues_test.txt", 3)]
    assert report.dialogues == {"train": 1, "test": 1} and report.duplicates_dropped == {"test": 1}
    shutil.rmtree(root / "test")
    (root / "train" / "dialogues_emotion_train.txt").unlink()
    with pytest.raises(ImportFailed, match="dialogues_emotion_train.txt: missing"):
        import_dailydialog(home, root)
