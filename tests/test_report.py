"""Release reports: figures computed from what the release really holds, HTML escaping, audio durations, DailyDialog
side by side, determinism, the `emoforge report` command on a release made by the real publish."""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
import wave
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.text import count_words
from warehouse.report import ReportError, read_dailydialog, write_report
from flows.synthetic import synthetic_dialogues
from schemas.taxonomy import load_taxonomy

EVIL = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'


def make_release(root: Path, n: int = 40, seed: int = 0, audio: bool = False, manifest_extra: dict | None = None) -> Path:
    """A release folder laid out as docs/architecture.md says (what publish writes), from synthetic dialogues."""
    tax = load_taxonomy("deepdialogue")
    rel = root / "releases" / "0.1.0"
    dl: dict[str, list] = {"train": [], "validation": [], "test": []}
    ut: dict[str, list] = {"train": [], "validation": [], "test": []}
    made = list(synthetic_dialogues(tax, n, seed))
    first = min(d.id for d, _ in made)  # the report shows the first dialogues by id as samples
    for i, (d, turns) in enumerate(made):
        split = ("train", "train", "train", "validation", "test")[i % 5]
        diff = round((i % 7) * 0.5, 3)
        if d.id == first:
            turns[0].text = EVIL
        row = dict(dialogue_id=d.id, domain=d.domain, model_a=d.model_a, model_b=d.model_b,
                   pair_type="same" if d.model_a == d.model_b else "cross", n_turns=d.n_turns,
                   emotions=[t.label for t in turns],
                   turns=[dict(idx=t.idx, speaker=t.speaker, text=t.text, emotion=t.label) for t in turns],
                   difficulty=diff, bucket=int(diff >= 1.5), split=split, judge_score=2.0 + (i % 4) * 0.75,
                   decided_by="judge", text_hash=d.text_hash)
        if audio:
            row["audio_mix"] = f"audio/{d.id}/mix.wav"
        dl[split].append(row)
        for t in turns:
            u = dict(dialogue_id=d.id, utterance_idx=t.idx, speaker=t.speaker, text=t.text, emotion=t.label,
                     intended_emotion=t.intended_emotion, label_source="intended",
                     label_erc7=tax.map_label(t.label, "erc7"), domain=d.domain, model=t.model, model_a=d.model_a,
                     model_b=d.model_b, n_turns=d.n_turns, difficulty=diff, bucket=int(diff >= 1.5), split=split)
            if audio:
                u["audio"] = f"audio/{d.id}/{t.idx}.wav"
                _write_wav(rel / u["audio"], 0.5 + 0.25 * t.idx)
            ut[split].append(u)
        if audio:
            _write_wav(rel / row["audio_mix"], sum(0.5 + 0.25 * t.idx for t in turns))
    for kind, rows in (("dialogues", dl), ("utterances", ut)):
        (rel / "data" / kind).mkdir(parents=True, exist_ok=True)
        for split, r in rows.items():
            pq.write_table(pa.Table.from_pylist(r), rel / "data" / kind / f"{split}.parquet")
    manifest = {"version": "0.1.0", "taxonomy": {"name": "deepdialogue"}, "created_at": "2025-01-01T00:00:00+00:00"}
    manifest.update(manifest_extra or {})
    (rel / "manifest.json").write_text(json.dumps(manifest))
    return rel


def _write_wav(path: Path, seconds: float, rate: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * rate)
    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 220 * i / rate))) for i in range(n))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.imgs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def _parse(html_path: Path) -> _Text:
    p = _Text()
    p.feed(html_path.read_text())
    return p


def test_report_figures_match_the_release_and_text_is_escaped(tmp_path):
    rel = make_release(tmp_path, n=40, manifest_extra={"agreement": {"verdict": {"kappa": 0.61, "n": 30},
                                                                      "labels": {"alpha": 0.42}}})
    html_path = write_report(rel, taxonomy=None, home=None)
    assert html_path == rel / "report" / "index.html"
    page = html_path.read_text()
    # dialogue text is escaped: the script tag shows as text, never as markup
    parsed = _parse(html_path)
    assert "script" not in parsed.tags and parsed.tags.count("img") == len(parsed.imgs)
    assert all(not src.startswith("x") for src in parsed.imgs)
    assert EVIL in "".join(parsed.text)
    assert "&lt;script&gt;" in page
    # every plot the page shows exists and is a PNG
    assert {"emotions.png", "transitions.png", "turns_per_dialogue.png", "words_per_turn.png", "judge_scores.png",
            "acceptance.png", "difficulty.png", "agreement.png"} <= set(parsed.imgs)
    for src in parsed.imgs:
        assert (rel / "report" / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the numbers are those of the parquet files
    stats = json.loads((rel / "report" / "stats.json").read_text())
    utt = pa.concat_tables([pq.read_table(p) for p in sorted((rel / "data" / "utterances").glob("*.parquet"))])
    dlg = pa.concat_tables([pq.read_table(p) for p in sorted((rel / "data" / "dialogues").glob("*.parquet"))])
    assert stats["n_dialogues"] == dlg.num_rows == 40 and stats["n_utterances"] == utt.num_rows
    emo = Counter(utt.column("emotion").to_pylist())
    assert {k: v for k, v in stats["emotions"]["final"].items() if v} == dict(emo)
    assert stats["splits"] == dict(Counter(dlg.column("split").to_pylist()))
    turns = dlg.column("n_turns").to_pylist()
    assert stats["turns_per_dialogue"]["mean"] == pytest.approx(sum(turns) / len(turns), abs=1e-3)
    words = [count_words(t) for t in utt.column("text").to_pylist()]
    assert stats["words_per_turn"]["max"] == max(words)
    seqs = [e for e in dlg.column("emotions").to_pylist()]
    pairs = sum(len(s) - 1 for s in seqs)
    changes = sum(a != b for s in seqs for a, b in zip(s, s[1:]))
    assert stats["transitions"]["pairs"] == pairs and stats["transitions"]["changes"] == changes
    tax = load_taxonomy("deepdialogue")
    on = sum(a != b and b in tax.transitions.get(a, []) for s in seqs for a, b in zip(s, s[1:]))
    assert stats["transitions"]["on_graph_share"] == pytest.approx(on / changes, abs=1e-4)
    assert stats["transitions"]["graph_edges"] == tax.n_edges
    assert stats["difficulty"]["buckets"] == {str(k): v for k, v in sorted(Counter(dlg.column("bucket").to_pylist()).items())}
    by_pair = Counter(f"{a} × {b}" for a, b in zip(dlg.column("model_a").to_pylist(), dlg.column("model_b").to_pylist()))
    assert {r["key"]: r["accepted"] for r in stats["acceptance"]["by_pair"]} == dict(by_pair)
    assert stats["agreement"]["verdict"]["kappa"] == 0.61 and "0.61" in page
    assert stats["audio"] == {}  # no speech in this release: no audio section
    assert "Audio durations" not in page


def test_report_is_deterministic_and_replaces_atomically(tmp_path):
    rel = make_release(tmp_path, n=12)
    a = write_report(rel, out_dir=tmp_path / "a").parent
    b = write_report(rel, out_dir=tmp_path / "b").parent
    digest = lambda d: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}  # noqa: E731
    assert digest(a) == digest(b) and len(digest(a)) >= 8
    assert not (rel / "report").exists()  # out_dir leaves the release untouched
    # a failure while writing keeps the previous report and leaves no temporary folder
    (rel / "data" / "dialogues" / "train.parquet").write_bytes(b"not parquet")
    with pytest.raises(ReportError, match="train.parquet"):
        write_report(rel, out_dir=a)
    assert digest(a) == digest(b)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_audio_durations_come_from_the_clips(tmp_path):
    rel = make_release(tmp_path, n=6, audio=True)
    write_report(rel)
    stats = json.loads((rel / "report" / "stats.json").read_text())
    utt = pa.concat_tables([pq.read_table(p) for p in sorted((rel / "data" / "utterances").glob("*.parquet"))])
    expected = [0.5 + 0.25 * i for i in utt.column("utterance_idx").to_pylist()]
    a = stats["audio"]
    assert a["turn_seconds"]["n"] == len(expected) and a["unreadable"] == 0
    assert a["turn_seconds"]["max"] == pytest.approx(max(expected), abs=1e-3)
    assert a["mix_seconds"]["n"] == 6
    assert a["total_seconds"] == pytest.approx(sum(expected), abs=0.01)
    assert "audio_durations.png" in (rel / "report" / "index.html").read_text()


def test_side_by_side_with_dailydialog(tmp_path, shared_dir):
    dd_path = shared_dir / "benchdata" / "dailydialog"
    rel = make_release(tmp_path, n=20)
    html_path = write_report(rel, compare_dailydialog=dd_path, out_dir=tmp_path / "cmp")
    stats = json.loads((html_path.parent / "stats.json").read_text())
    dd = stats["dailydialog"]
    # DailyDialog as published: 13,118 dialogues (some repeated verbatim, counted once), 7.9 turns on average
    assert 12_000 < dd["n_dialogues"] <= 13_118
    assert 7.5 < dd["turns_per_dialogue"]["mean"] < 8.5
    assert max(dd["emotions_erc7"], key=dd["emotions_erc7"].get) == "neutral"
    assert sum(dd["emotions_erc7"].values()) == dd["n_utterances"]
    # our erc7 projection is there too, and the page shows both columns
    assert sum(stats["emotions"]["erc7"].values()) == stats["n_utterances"]
    page = html_path.read_text()
    assert "Compared with DailyDialog" in page and "compare_emotions.png" in page
    assert (html_path.parent / "compare_emotions.png").is_file()


def test_dailydialog_reader_handles_the_format(tmp_path):
    d = tmp_path / "dd" / "train"
    d.mkdir(parents=True)
    (d / "dialogues_train.txt").write_text("Hi , how ' s it going ? __eou__ I ’ m fine . __eou__\nBad line __eou__ x __eou__\n")
    (d / "dialogues_emotion_train.txt").write_text("0 4 \n0\n")
    skipped: list = []
    rows = read_dailydialog(tmp_path / "dd", skipped)
    assert rows == [(["Hi , how's it going ?", "I’m fine ."], ["neutral", "joy"])]
    assert skipped == ["dialogues_train.txt:2"]
    assert count_words(rows[0][0][0]) == 4  # Hi how's it going
    with pytest.raises(ReportError, match="no DailyDialog files"):
        read_dailydialog(tmp_path)


def test_missing_release_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="does not exist"):
        write_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no data/dialogues"):
        write_report(tmp_path / "empty")


# ---- with the real publish ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def published(tmp_path_factory):
    from schemas.config import load_config
    from flows.synthetic import load_synthetic
    from schemas.records import Judgement
    from warehouse.publish import publish_release
    from warehouse.store import Warehouse

    home = tmp_path_factory.mktemp("pub") / "home"
    wh = Warehouse(home)
    tax = load_taxonomy("deepdialogue")
    load_synthetic(wh, tax, 45, seed=3)
    ids = [r["id"] for r in wh.query("SELECT id FROM dialogues ORDER BY id").to_pylist()]
    wh.upsert([Judgement(id=f"j{i}", dialogue_id=d, judge_id="llm:judge-a", kind="llm", coherence=2 + i % 4,
                         naturalness=3, domain_fit=4, safety=5, emotion_fidelity=[1, 0, 1], verdict="accept")
               for i, d in enumerate(ids)])
    cfg = load_config(None)
    cfg = cfg.model_copy(update={"publish": cfg.publish.model_copy(update={"sources": ["synthetic"]})})
    summary = publish_release(home, cfg)
    return home, Path(summary["path"])


def test_publish_writes_the_report_and_the_card_links_it(published):
    home, rel = published
    page = rel / "report" / "index.html"
    assert page.is_file()
    assert "report/index.html" in (rel / "README.md").read_text()
    stats = json.loads((rel / "report" / "stats.json").read_text())
    assert stats["version"] == rel.name  # not the temporary build folder's name
    assert stats["n_dialogues"] == 45
    assert "llm:judge-a" in stats["judges"] and stats["judges"]["llm:judge-a"]["coherence"]["n"] == 45
    from warehouse.releases import verify_release

    assert verify_release(rel) == []


def test_report_command_regenerates_outside_the_release(published, tmp_path):
    from typer.testing import CliRunner

    from emoforge.cli import app
    from warehouse.releases import verify_release

    home, rel = published
    res = CliRunner().invoke(app, ["report", rel.name, "--home", str(home), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert Path(res.output.strip().splitlines()[-1]) == tmp_path / "r" / "index.html"
    assert re.search(r"<h1>Release " + re.escape(rel.name), (tmp_path / "r" / "index.html").read_text())
    assert verify_release(rel) == []  # the immutable release was not touched
    res = CliRunner().invoke(app, ["report", "9.9.9", "--home", str(home)])
    assert res.exit_code != 0 and "unknown release 9.9.9" in res.output
    res = CliRunner().invoke(app, ["report", rel.name, "--home", str(home), "--out", str(rel / "report")])
    assert res.exit_code != 0 and "immutable" in res.output
