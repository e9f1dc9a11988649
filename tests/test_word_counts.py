"""One word count (``schemas.text.count_words``) from import to release: importers store it, publish recounts it
from the text whatever the store holds (homes imported before the importers used it stored whitespace tokens), the
gates and the report read that one figure, and a wordless human turn ("...") is a valid imported turn."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow.parquet as pq

from schemas.config import load_config
from schemas.text import count_words
from warehouse.importers import import_dailydialog
from warehouse.publish import publish_release
from warehouse.store import Warehouse

DIALOGUES = {
    "train": [("Say , Jim , how about going for a few beers after dinner ?", "You know that is tempting but "
               "is really not good for our fitness .", "What do you mean ? It will help us to relax .", "..."),
              ("Can you do push-ups ?", "Of course I can . It's a piece of cake ! Believe it or not , I can do "
               "30 push-ups a minute .", "Really ? I think that's impossible !")],
    "validation": [("Good morning , sir . Is there a bank near here ?", "There is one . 5 blocks away from here ?",
                    "Well , that's too far.Can you change some money for me ?")],
    "test": [("Hey man , you wanna buy some weed ?", "Some what ?", "Weed ! You know ? Pot , Ganja , Mary Jane "
              "some chronic !", "Oh , umm , no thanks .")],
}


def _write_dailydialog(root: Path) -> None:
    for split, dialogues in DIALOGUES.items():
        (root / split).mkdir(parents=True)
        (root / split / f"dialogues_{split}.txt").write_text(
            "".join(" __eou__ ".join(d) + " __eou__\n" for d in dialogues), encoding="utf-8")
        (root / split / f"dialogues_emotion_{split}.txt").write_text(
            "".join(" ".join(["0"] * len(d)) + "\n" for d in dialogues))


def test_import_publish_and_report_share_one_word_count(home: Path, tmp_path: Path) -> None:
    _write_dailydialog(tmp_path / "dd")
    import_dailydialog(home, tmp_path / "dd")
    wh = Warehouse(home)
    stored = wh.query("SELECT text, n_words FROM turns").to_pylist()
    assert stored and all(r["n_words"] == count_words(r["text"]) for r in stored)
    hello = next(r for r in stored if r["text"].startswith("Say , Jim"))
    assert hello["n_words"] == 11 != len(hello["text"].split())  # punctuation tokens are not words

    # a home imported by older code: whitespace tokens stored as n_words
    old = wh.query("SELECT * FROM turns").to_pylist()
    wh.upsert_arrow("turns", wh.query("SELECT * REPLACE (len(string_split(text, ' ')) AS n_words) FROM turns"))
    assert wh.query("SELECT sum(n_words) AS n FROM turns").to_pylist()[0]["n"] > sum(r["n_words"] for r in old)

    out = publish_release(home, load_config(publish={"sources": ["dailydialog"], "report": True}), evaluate=False)
    rel = Path(out["path"])
    assert out["quarantine"]["quarantined"] == 0  # the "..." turn (0 words) is a real turn of imported data
    rows = [r for split in ("train", "validation", "test") for r in datasets.load_dataset(str(rel), split=split)]
    assert len(rows) == sum(len(d) for ds in DIALOGUES.values() for d in ds)
    assert all(r["n_words"] == count_words(r["text"]) for r in rows)
    assert [r["n_words"] for r in rows if r["text"] == "..."] == [0]
    stats = json.loads((rel / "report" / "stats.json").read_text())
    words = sorted(r["n_words"] for r in rows)
    assert stats["words_per_turn"]["max"] == words[-1] and stats["words_per_turn"]["min"] == words[0] == 0
    table = pq.read_table(rel / "data" / "utterances", columns=["n_words"])
    assert table.column("n_words").to_pylist() and table.column("n_words").null_count == 0
