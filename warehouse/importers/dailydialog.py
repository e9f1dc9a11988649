"""DailyDialog (Li et al. 2017) in its public format.

``PATH/{train,validation,test}/dialogues_<split>.txt`` hold one dialogue per line, turns separated by ``__eou__``;
``dialogues_emotion_<split>.txt`` hold one emotion code per turn (0 no emotion -> ``neutral``, 1 anger,
2 disgust, 3 fear, 4 happiness, 5 sadness, 6 surprise). The two speakers alternate (A, B, A, ...).

Validation and test dialogues whose normalised text also occurs in train are dropped (DailyDialog has such
duplicates; scoring on them measures memorisation). Lines whose turn and label counts differ, unknown codes and
empty turns are bad rows, reported with file and line.
"""

from __future__ import annotations

from pathlib import Path

from warehouse.importers.common import (
    SPLIT_NAMES, BadRow, DialogueRows, ImportFailed, ImportReport, check_strict, drop_train_duplicates,
    files_fingerprint, write_import,
)
from warehouse.importers.labels import DAILYDIALOG_LABELS

SOURCE = "dailydialog"
EOU = "__eou__"


def _split_files(root: Path) -> dict[str, tuple[Path, Path]]:
    if not root.is_dir():
        raise ImportFailed(f"{root}: not a directory; expected DailyDialog's train/ validation/ test/ folders")
    found: dict[str, tuple[Path, Path]] = {}
    for split in SPLIT_NAMES:
        for folder in (root / split, root):
            text, emo = folder / f"dialogues_{split}.txt", folder / f"dialogues_emotion_{split}.txt"
            if text.is_file() and emo.is_file():
                found[split] = (text, emo)
                break
            if text.is_file() != emo.is_file():
                missing = emo if text.is_file() else text
                raise ImportFailed(f"{missing}: missing (DailyDialog needs both dialogues_{split}.txt and "
                                   f"dialogues_emotion_{split}.txt)")
    if not found:
        raise ImportFailed(f"{root}: no DailyDialog files found (expected <split>/dialogues_<split>.txt and "
                           f"dialogues_emotion_<split>.txt for split in {list(SPLIT_NAMES)})")
    return found


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ImportFailed(f"{path}: not UTF-8 text ({exc})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_dailydialog(root: str | Path) -> tuple[list[DialogueRows], list[BadRow], list[Path]]:
    root = Path(root)
    out: list[DialogueRows] = []
    bad: list[BadRow] = []
    files: list[Path] = []
    for split, (text_path, emo_path) in _split_files(root).items():
        files += [text_path, emo_path]
        texts, emos = _read_lines(text_path), _read_lines(emo_path)
        for n in range(max(len(texts), len(emos))):
            line = n + 1
            if n >= len(emos):
                bad.append(BadRow(str(text_path), line, f"no matching line in {emo_path.name}"))
                continue
            if n >= len(texts):
                bad.append(BadRow(str(emo_path), line, f"no matching line in {text_path.name}"))
                continue
            if not texts[n].strip():
                bad.append(BadRow(str(text_path), line, "empty line"))
                continue
            parts = [u.strip() for u in texts[n].split(EOU)]
            if parts and parts[-1] == "":
                parts.pop()
            codes = emos[n].split()
            problem = None
            if len(parts) != len(codes):
                problem = f"{len(parts)} turns but {len(codes)} emotion labels in {emo_path.name}:{line}"
            elif any(not p for p in parts):
                problem = f"turn {[i for i, p in enumerate(parts) if not p][0] + 1} is empty"
            else:
                bad_codes = [c for c in codes if c not in {str(i) for i in range(len(DAILYDIALOG_LABELS))}]
                if bad_codes:
                    problem = f"emotion code {bad_codes[0]!r} in {emo_path.name}:{line} is not one of 0-6"
            if problem:
                bad.append(BadRow(str(text_path), line, problem))
                continue
            out.append(DialogueRows(
                split=split, key=str(line), speakers=["A" if i % 2 == 0 else "B" for i in range(len(parts))],
                texts=parts, labels=[DAILYDIALOG_LABELS[int(c)] for c in codes]))
    return out, bad, files


def import_dailydialog(home: str | Path, path: str | Path, *, strict: bool = False, force: bool = False,
                       drop_duplicates: bool = True) -> ImportReport:
    """Import DailyDialog into ``home``. Bad rows are reported in the returned report (and in
    ``runs/<run>/bad_rows.tsv``); with ``strict`` any bad row aborts the import before anything is written."""
    dialogues, bad, files = read_dailydialog(path)
    report = ImportReport(source=SOURCE, bad_rows=bad)
    check_strict(report, strict)
    if drop_duplicates:
        dialogues = drop_train_duplicates(dialogues, report)
    fp = files_fingerprint(files, drop_duplicates)
    return write_import(home, SOURCE, dialogues, report, fp, command=f"import dailydialog {path}", force=force)
