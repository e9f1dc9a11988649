"""What every importer shares: bad-row reports, the import report, and the idempotent write to the warehouse."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from schemas.digest import file_sha256
from schemas.records import Dialogue, Run, Turn, content_id, text_hash, utcnow
from schemas.text import count_words
from warehouse.store import Warehouse

IMPORTER_VERSION = "import-v1"
SPLIT_NAMES = ("train", "validation", "test")


class ImportFailed(ValueError):
    """The input cannot be imported (missing files or columns, or bad rows under ``strict``)."""


@dataclass(frozen=True)
class BadRow:
    file: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.problem}"


@dataclass
class ImportReport:
    source: str
    run_id: str = ""
    dialogues: dict[str, int] = field(default_factory=dict)  # per split, imported
    utterances: dict[str, int] = field(default_factory=dict)
    duplicates_dropped: dict[str, int] = field(default_factory=dict)  # per split: dialogues also in train
    bad_rows: list[BadRow] = field(default_factory=list)
    skipped: bool = False  # the same files were imported before (same fingerprint): nothing written
    fingerprint: str = ""

    def summary(self) -> dict:
        d = asdict(self)
        d["bad_rows"] = [str(b) for b in self.bad_rows]
        return d


@dataclass
class DialogueRows:
    """One dialogue read from a file, before it becomes records."""

    split: str
    key: str  # stable key inside the split (line number, Dialogue_ID)
    speakers: list[str]  # real speaker names (DailyDialog: A/B alternating)
    texts: list[str]
    labels: list[str]


def files_fingerprint(paths: Iterable[Path], *extra: object) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(f"{p.name}\0{file_sha256(p)}\n".encode())
    h.update(json.dumps([IMPORTER_VERSION, *extra], default=str).encode())
    return h.hexdigest()[:20]


def drop_train_duplicates(dialogues: list[DialogueRows], report: ImportReport) -> list[DialogueRows]:
    """Drop validation/test dialogues whose normalised text (case, punctuation, spacing ignored) is also in train."""
    train_hashes = {text_hash(d.texts) for d in dialogues if d.split == "train"}
    kept = []
    for d in dialogues:
        if d.split != "train" and text_hash(d.texts) in train_hashes:
            report.duplicates_dropped[d.split] = report.duplicates_dropped.get(d.split, 0) + 1
            continue
        kept.append(d)
    return kept


def to_records(source: str, rows: DialogueRows, run_id: str) -> tuple[Dialogue, list[Turn]]:
    did = content_id("dlg", source, rows.split, rows.key)
    first = rows.speakers[0]
    turns = [
        Turn(id=Turn.make_id(did, i), dialogue_id=did, idx=i, speaker="A" if spk == first else "B", model="human",
             text=text, intended_emotion=label, label=label, label_source="import", n_words=count_words(text),
             speaker_name=spk)
        for i, (spk, text, label) in enumerate(zip(rows.speakers, rows.texts, rows.labels))
    ]
    dlg = Dialogue(id=did, run_id=run_id, source=source, domain=source, model_a="human", model_b="human",
                   n_turns=len(turns), status="accepted", decided_by="import", text_hash=text_hash(rows.texts),
                   taxonomy=source, source_split=rows.split)
    return dlg, turns


def write_import(home: str | Path, source: str, dialogues: list[DialogueRows], report: ImportReport,
                 fingerprint: str, command: str, force: bool = False) -> ImportReport:
    """Upsert the dialogues as records. Idempotent: ids derive from (source, split, key); an import of files with
    the same fingerprint that already finished is skipped unless ``force``. Turns are written before their
    dialogues, so a kill in between leaves no dialogue without its turns (a re-run rewrites both)."""
    wh = Warehouse(home)
    run_id = content_id("run", "import", source, fingerprint)
    report.run_id, report.fingerprint = run_id, fingerprint
    if not force and wh.count("runs", f"id = '{run_id}' AND status = 'finished'"):
        report.skipped = True
        return report
    started = utcnow()
    wh.upsert([Run(id=run_id, command=command, started_at=started, config_fingerprint=fingerprint)])
    dlg_records, turn_records = [], []
    for rows in dialogues:
        d, ts = to_records(source, rows, run_id)
        dlg_records.append(d)
        turn_records.extend(ts)
        report.dialogues[rows.split] = report.dialogues.get(rows.split, 0) + 1
        report.utterances[rows.split] = report.utterances.get(rows.split, 0) + len(ts)
    run_dir = wh.runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "bad_rows.tsv").write_text(
        "file\tline\tproblem\n" + "".join(f"{b.file}\t{b.line}\t{b.problem}\n" for b in report.bad_rows))
    for start in range(0, len(turn_records), 200_000):
        wh.upsert(turn_records[start:start + 200_000])
    wh.upsert(dlg_records)
    wh.upsert([Run(id=run_id, command=command, started_at=started, finished_at=utcnow(), status="finished",
                   config_fingerprint=fingerprint, metrics_json=json.dumps(report.summary()))])
    return report


def check_strict(report: ImportReport, strict: bool) -> None:
    if strict and report.bad_rows:
        shown = "\n".join(f"  {b}" for b in report.bad_rows[:20])
        more = f"\n  ... and {len(report.bad_rows) - 20} more" if len(report.bad_rows) > 20 else ""
        raise ImportFailed(f"{len(report.bad_rows)} bad row(s); nothing imported (strict):\n{shown}{more}")
