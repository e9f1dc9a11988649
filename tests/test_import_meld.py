"""MELD CSV importer: real CSV quirks (quoted commas and newlines), named speakers, bad rows with file:line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from warehouse.importers import ImportFailed, import_meld, read_meld
from warehouse.store import Warehouse

HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
          "Episode", "StartTime", "EndTime"]

# (dialogue, speaker, utterance, emotion)
TRAIN = [
    (0, "Chandler", "Also I was the point person on my company's transition from the KL-5 to GR-6 system.", "neutral"),
    (0, "The Interviewer", "You must've had your hands full.", "neutral"),
    (0, "Chandler", "That I did. That I did.", "neutral"),
    (0, "The Interviewer", "So let's talk a little bit about your duties.", "neutral"),
    (0, "Chandler", "My duties?  All right.", "surprise"),
    (1, "Joey", "Oh my God, this is the best day of my life!", "joy"),
    (1, "Rachel", "Joey, calm down, it's just a sandwich.", "neutral"),
    (1, "Joey", "Just a sandwich?! Just a sandwich?!", "anger"),
    (2, "Monica", "Who left the milk out again? It's disgusting.", "disgust"),
    (2, "Ross", "Not me, I swear.", "fear"),
    (2, "Monica", "Then who, Ross?\nWho?", "anger"),
    (3, "Phoebe", "I miss my grandmother so much.", "sadness"),
    (3, "Ross", "I know, Pheebs, I know.", "sadness"),
    (3, "Phoebe", "Hey, but she left me her guitar, so, yay!", "joy"),
]
TEST = [
    (0, "Rachel", "Wait, you got the job? That's amazing!", "joy"),
    (0, "Monica", "I did! I start on Monday.", "joy"),
    (0, "Rachel", "Oh no, Monday? That's my birthday.", "sadness"),
    (1, "Ross", "We were on a break!", "anger"),
    (1, "Rachel", "Oh, here we go again.", "disgust"),
    (1, "Chandler", "Wait, what break?", "surprise"),
]
DEV = [
    (0, "Joey", "Oh my God, this is the best day of my life!", "joy"),  # duplicate of train dialogue 1 ...
    (0, "Rachel", "Joey, calm down, it's just a sandwich.", "neutral"),
    (0, "Joey", "Just a sandwich?! Just a sandwich?!", "anger"),
    (1, "Ross", "Is anybody home?", "neutral"),
    (1, "Monica", "In here! Hurry!", "happy"),  # ... and a bad label: "happy" is not a MELD emotion
    (2, "Chandler", "Could this BE any more awkward?", "neutral"),
]


def _write(path: Path, rows) -> dict[tuple[int, int], int]:
    """Write MELD-format rows; returns (dialogue, utterance) -> the line the row starts on."""
    lines = {}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        line = 2
        counters: dict[int, int] = {}
        for n, (dlg, spk, text, emo) in enumerate(rows, 1):
            utt = counters.get(dlg, 0)
            counters[dlg] = utt + 1
            lines[(dlg, utt)] = line
            w.writerow([n, text, spk, emo, "neutral", dlg, utt, 1, 1, "00:00:01,000", "00:00:02,000"])
            line += 1 + text.count("\n")
    return lines


def write_meld_fixture(folder: Path) -> dict[str, dict[tuple[int, int], int]]:
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "train": _write(folder / "train_sent_emo.csv", TRAIN),
        "validation": _write(folder / "dev_sent_emo.csv", DEV),
        "test": _write(folder / "test_sent_emo.csv", TEST),
    }


def test_meld_import_counts_speakers_labels_and_bad_rows(home: Path, tmp_path: Path) -> None:
    lines = write_meld_fixture(tmp_path / "meld")
    report = import_meld(home, tmp_path / "meld")
    assert report.dialogues == {"train": 4, "test": 2, "validation": 1}
    assert report.duplicates_dropped == {"validation": 1}
    assert report.utterances["train"] == len(TRAIN)
    # the bad row names its file and the line the row is on, and its dialogue is left out, not half-imported
    assert len(report.bad_rows) == 1
    bad = report.bad_rows[0]
    assert bad.file.endswith("dev_sent_emo.csv") and bad.line == lines["validation"][(1, 1)]
    assert "happy" in bad.problem and "dialogue 1 left out" in bad.problem
    wh = Warehouse(home)
    turns = wh.query(
        "SELECT t.idx, t.speaker, t.speaker_name, t.text, t.label, t.label_source, d.source, d.source_split "
        "FROM turns t JOIN dialogues d ON d.id = t.dialogue_id "
        "WHERE d.source_split = 'train' ORDER BY d.id, t.idx").to_pylist()
    assert {t["source"] for t in turns} == {"meld"} and {t["label_source"] for t in turns} == {"import"}
    multi = [t for t in turns if t["text"] == "Then who, Ross?\nWho?"]
    assert multi and multi[0]["label"] == "anger" and multi[0]["speaker_name"] == "Monica"
    chandler = [t for t in turns if t["speaker_name"] == "The Interviewer"]
    assert chandler and all(t["speaker"] == "B" for t in chandler)
    run = json.loads(wh.query("SELECT metrics_json FROM runs WHERE id = ?", [report.run_id]).column(0)[0].as_py())
    assert run["bad_rows"] == [str(bad)]
    assert (home / "runs" / report.run_id / "bad_rows.tsv").read_text().count("\n") == 2
    # same files again: skipped; the store is unchanged
    again = import_meld(home, tmp_path / "meld")
    assert again.skipped and wh.count("dialogues") == 7


def test_meld_strict_missing_column_and_single_file(home: Path, tmp_path: Path) -> None:
    write_meld_fixture(tmp_path / "meld")
    with pytest.raises(ImportFailed, match=r"dev_sent_emo.csv:\d+: unknown emotion 'happy'"):
        import_meld(home, tmp_path / "meld", strict=True)
    assert Warehouse(home).count("dialogues") == 0  # strict: nothing written
    broken = tmp_path / "broken_train.csv"
    broken.write_text("Utterance,Speaker,Dialogue_ID,Utterance_ID\nhi,Joey,0,0\n")
    with pytest.raises(ImportFailed, match=r"broken_train.csv:1: missing column\(s\) \['Emotion'\]"):
        import_meld(home, broken)
    odd = tmp_path / "friends.csv"
    odd.write_bytes((tmp_path / "meld" / "test_sent_emo.csv").read_bytes())
    with pytest.raises(ImportFailed, match="cannot tell the split"):
        read_meld(odd)
    dialogues, bad, _ = read_meld(odd, split="test")
    assert len(dialogues) == 2 and not bad and dialogues[1].speakers == ["Ross", "Rachel", "Chandler"]


def test_meld_cli(home: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from emoforge.cli import app

    write_meld_fixture(tmp_path / "meld")
    res = CliRunner().invoke(app, ["import", "meld", str(tmp_path / "meld"), "--home", str(home)])
    assert res.exit_code == 0, res.output
    assert "dev_sent_emo.csv:" in res.output and "bad row" in res.output
    res = CliRunner().invoke(app, ["import", "meld", str(tmp_path / "meld"), "--home", str(home), "--strict",
                                   "--force"])
    assert res.exit_code == 2 and "unknown emotion 'happy'" in res.output
