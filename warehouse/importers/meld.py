"""MELD (Poria et al. 2019) in its public CSV format.

Columns used: ``Utterance, Speaker, Emotion, Dialogue_ID, Utterance_ID`` (others, e.g. ``Sr No.``, ``Sentiment``,
``Season``, are ignored). ``PATH`` is a folder holding ``train_sent_emo.csv``, ``dev_sent_emo.csv`` and
``test_sent_emo.csv`` (any of them; ``dev`` becomes ``validation``) or one CSV file whose split is taken from its
name or given explicitly. Emotions: neutral, anger, disgust, fear, joy, sadness, surprise (case-insensitive).

A row with a missing field, an unknown emotion, a non-integer id or a repeated (Dialogue_ID, Utterance_ID) is a
bad row, reported with file and line; its whole dialogue is left out (a dialogue with a hole would give the
utterances after it a wrong context).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

from warehouse.importers.common import (
    SPLIT_NAMES, BadRow, DialogueRows, ImportFailed, ImportReport, check_strict, drop_train_duplicates,
    files_fingerprint, write_import,
)
from warehouse.importers.labels import MELD_LABELS

SOURCE = "meld"
REQUIRED = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")


def _split_of_name(name: str) -> str | None:
    low = name.lower()
    if "train" in low:
        return "train"
    if "dev" in low or "valid" in low:
        return "validation"
    if "test" in low:
        return "test"
    return None


def _files(path: Path, split: str | None) -> dict[str, Path]:
    if path.is_file():
        sp = split or _split_of_name(path.name)
        if sp not in SPLIT_NAMES:
            raise ImportFailed(f"{path}: cannot tell the split from the file name; pass the split "
                               f"({'/'.join(SPLIT_NAMES)}) explicitly")
        return {sp: path}
    if not path.is_dir():
        raise ImportFailed(f"{path}: no such file or directory")
    found: dict[str, Path] = {}
    for csv_path in sorted(path.glob("*.csv")):
        sp = _split_of_name(csv_path.name)
        if sp is None:
            continue
        if sp in found:
            raise ImportFailed(f"{path}: two CSV files for the {sp} split: {found[sp].name}, {csv_path.name}")
        found[sp] = csv_path
    if not found:
        raise ImportFailed(f"{path}: no MELD CSV found (expected train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv)")
    return found


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")  # some MELD copies are Windows-1252


def _read_file(path: Path, split: str, bad: list[BadRow]) -> list[DialogueRows]:
    reader = csv.reader(io.StringIO(_decode(path), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFailed(f"{path}: empty file") from None
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ImportFailed(f"{path}:1: missing column(s) {missing}; MELD CSV needs {list(REQUIRED)}")
    col = {c: header.index(c) for c in REQUIRED}
    rows_by_dlg: dict[int, list[tuple[int, str, str, str]]] = defaultdict(list)
    bad_dlgs: set[int] = set()
    seen: dict[tuple[int, int], int] = {}
    allowed = set(MELD_LABELS)
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            bad.append(BadRow(str(path), line, f"unreadable CSV: {exc}"))
            break
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            bad.append(BadRow(str(path), line, f"{len(row)} fields, header has {len(header)}"))
            continue
        vals = {c: row[i].strip() for c, i in col.items()}
        dlg_txt = vals["Dialogue_ID"]
        try:
            dlg = int(dlg_txt)
        except ValueError:
            bad.append(BadRow(str(path), line, f"Dialogue_ID {dlg_txt!r} is not an integer"))
            continue
        problem = None
        try:
            utt = int(vals["Utterance_ID"])
        except ValueError:
            problem, utt = f"Utterance_ID {vals['Utterance_ID']!r} is not an integer", -1
        emotion = vals["Emotion"].lower()
        if problem is None:
            empty = [c for c in ("Utterance", "Speaker", "Emotion") if not vals[c]]
            if empty:
                problem = f"empty {', '.join(empty)}"
            elif emotion not in allowed:
                problem = f"unknown emotion {vals['Emotion']!r} (MELD labels: {', '.join(MELD_LABELS)})"
            elif (dlg, utt) in seen:
                problem = f"Dialogue_ID {dlg} Utterance_ID {utt} repeats line {seen[(dlg, utt)]}"
        if problem:
            bad.append(BadRow(str(path), line, f"{problem} (dialogue {dlg} left out)"))
            bad_dlgs.add(dlg)
            continue
        seen[(dlg, utt)] = line
        rows_by_dlg[dlg].append((utt, vals["Speaker"], vals["Utterance"], emotion))
    out = []
    for dlg in sorted(rows_by_dlg):
        if dlg in bad_dlgs:
            continue
        rows = sorted(rows_by_dlg[dlg])
        out.append(DialogueRows(split=split, key=str(dlg), speakers=[r[1] for r in rows], texts=[r[2] for r in rows],
                                labels=[r[3] for r in rows]))
    return out


def read_meld(path: str | Path, split: str | None = None) -> tuple[list[DialogueRows], list[BadRow], list[Path]]:
    files = _files(Path(path), split)
    bad: list[BadRow] = []
    out: list[DialogueRows] = []
    for sp, p in files.items():
        out += _read_file(p, sp, bad)
    return out, bad, list(files.values())


def import_meld(home: str | Path, path: str | Path, *, split: str | None = None, strict: bool = False,
                force: bool = False, drop_duplicates: bool = True) -> ImportReport:
    dialogues, bad, files = read_meld(path, split)
    report = ImportReport(source=SOURCE, bad_rows=bad)
    check_strict(report, strict)
    if drop_duplicates:
        dialogues = drop_train_duplicates(dialogues, report)
    fp = files_fingerprint(files, split, drop_duplicates)
    return write_import(home, SOURCE, dialogues, report, fp, command=f"import meld {path}", force=force)
