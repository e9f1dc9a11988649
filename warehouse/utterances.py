"""Utterances for ERC, read from a published release or from imported real data, with labels under a named mapping.

Shared by the trainer (:mod:`trainer`) and the release evaluation (:mod:`warehouse.evaluation`).

A *mapping* is a name: ``identity`` (the release's own emotions, column ``emotion``), a taxonomy mapping the release
carries (``erc7`` -> column ``label_erc7``), or an imported dataset's own label set (``dailydialog``, ``meld``).
Imported data maps through :mod:`warehouse.importers.labels` (DailyDialog ``happiness`` -> ``joy`` under ``erc7``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.importers.labels import LABEL_SETS
from warehouse.releases import hash_file, read_manifest, resolve_release
from warehouse.store import Warehouse

SPLITS = ("train", "validation", "test")
IDENTITY = "identity"


class DataError(ValueError):
    """Data that cannot be used for ERC; the message names the release, mapping or source."""


@dataclass(frozen=True)
class Utterance:
    uid: str  # "<dialogue_id>:<utterance_idx>"
    dialogue_id: str
    idx: int
    speaker: str
    text: str
    label: str  # under the mapping
    split: str
    source: str  # "release" or the imported dataset's name
    bucket: int | None = None
    difficulty: float | None = None


@dataclass(frozen=True)
class ReleaseRef:
    version: str
    path: Path
    manifest: dict

    def labels(self, mapping: str) -> list[str]:
        tax = self.manifest.get("taxonomy", {})
        if mapping in (IDENTITY, tax.get("name")):
            return list(tax["emotions"])
        maps = tax.get("mappings", {})
        if mapping not in maps:
            raise DataError(
                f"release {self.version} has no label mapping {mapping!r}; it has: "
                f"{', '.join([IDENTITY, *sorted(maps)])}")
        return list(maps[mapping])

    @property
    def n_buckets(self) -> int:
        return int(self.manifest.get("difficulty", {}).get("buckets", 2))


def _split_files(manifest: dict, split: str) -> list[str]:
    """The manifest's utterance files of ``split``: ``data/utterances/<split>.parquet`` or ``<split>-<id>.parquet``."""
    prefix = "data/utterances/"
    return sorted(rel for rel in manifest.get("files", {})
                  if rel.startswith(prefix) and rel.endswith(".parquet")
                  and (rel[len(prefix):] == f"{split}.parquet" or rel[len(prefix):].startswith(f"{split}-")))


def open_release(home: str | Path, version: str) -> ReleaseRef:
    """The registered release ``version`` (refused when unknown); the utterance files are checked against the
    manifest's sha256 so a corrupted release is refused before training on it."""
    path = resolve_release(home, version)
    manifest = read_manifest(path)
    files = manifest.get("files", {})
    for split in SPLITS:
        rels = _split_files(manifest, split)
        if not rels:
            raise DataError(f"release {version}: its manifest lists no {split} utterance file")
        for rel in rels:
            if not (path / rel).is_file():
                raise DataError(f"release {version}: {rel} is missing")
            if hash_file(path / rel) != files[rel]["sha256"]:
                raise DataError(f"release {version}: {rel} does not match its manifest checksum (corrupted?)")
    return ReleaseRef(version=manifest.get("version", version), path=path, manifest=manifest)


def release_fingerprint(release: ReleaseRef) -> str:
    files = release.manifest.get("files", {})
    return json.dumps({s: [files[r]["sha256"] for r in _split_files(release.manifest, s)] for s in SPLITS},
                      sort_keys=True)


def release_utterances(release: ReleaseRef, mapping: str, splits: tuple[str, ...] = SPLITS) -> list[Utterance]:
    release.labels(mapping)  # refuses an unknown mapping
    column = "emotion" if mapping in (IDENTITY, release.manifest["taxonomy"].get("name")) else f"label_{mapping}"
    out: list[Utterance] = []
    for split in splits:
        wanted = ["dialogue_id", "utterance_idx", "speaker", "text", column, "difficulty", "bucket"]
        tables = []
        for rel in _split_files(release.manifest, split):
            names = pq.read_schema(release.path / rel).names
            if column not in names:
                raise DataError(f"release {release.version}: {rel} has no column {column!r}")
            tables.append(pq.read_table(release.path / rel, columns=wanted))  # never the audio bytes
        table = pa.concat_tables(tables)
        cols = {c: table.column(c).to_pylist() for c in
                ("dialogue_id", "utterance_idx", "speaker", "text", column, "difficulty", "bucket")}
        for i in range(table.num_rows):
            label = cols[column][i]
            if label is None:
                raise DataError(
                    f"release {release.version}: utterance {cols['dialogue_id'][i]}:{cols['utterance_idx'][i]} "
                    f"has no label under mapping {mapping!r}")
            did, idx = cols["dialogue_id"][i], int(cols["utterance_idx"][i])
            out.append(Utterance(uid=f"{did}:{idx}", dialogue_id=did, idx=idx, speaker=cols["speaker"][i],
                                 text=cols["text"][i], label=label, split=split, source="release",
                                 bucket=cols["bucket"][i], difficulty=cols["difficulty"][i]))
    out.sort(key=lambda u: (u.dialogue_id, u.idx))
    return out


def imported_sources(home: str | Path) -> dict[str, list[str]]:
    """Imported datasets in the warehouse and their splits, e.g. ``{'dailydialog': ['test', 'train', ...]}``."""
    wh = Warehouse(home)
    stored = wh.stored_rows_sql("dialogues") if "dialogues" in wh.tables() else None
    if stored is None or not _any_split(wh, stored):
        return {}
    rows = wh.query("SELECT DISTINCT source, source_split FROM dialogues WHERE source_split IS NOT NULL "
                    "ORDER BY 1, 2")
    out: dict[str, list[str]] = {}
    for src, split in zip(rows.column("source").to_pylist(), rows.column("source_split").to_pylist()):
        out.setdefault(src, []).append(split)
    return out


def _any_split(wh: Warehouse, stored: str) -> bool:
    """Whether any stored dialogue row has a source split: generated data has none, so a home without imports is
    answered by one scan of that column, without connecting to every table and deduplicating the dialogues."""
    for attempt in range(5):
        con = duckdb.connect()
        try:
            if "source_split" not in [r[0] for r in con.execute(f"DESCRIBE {stored}").fetchall()]:
                return False
            return bool(con.execute(f"SELECT count(*) FROM ({stored}) WHERE source_split IS NOT NULL").fetchall()[0][0])
        except duckdb.IOException:
            if attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))  # a compaction replaced the parts listed: list them again
            stored = wh.stored_rows_sql("dialogues") or "SELECT NULL::VARCHAR AS source_split WHERE false"
        finally:
            con.close()
    raise AssertionError("unreachable")


def supports_mapping(source: str, mapping: str) -> bool:
    ls = LABEL_SETS.get(source)
    return ls is not None and ls.supports(mapping)


def imported_utterances(home: str | Path, source: str, split: str, mapping: str) -> list[Utterance]:
    """Turns of the imported dataset ``source`` in its own ``split``, labels under ``mapping``."""
    ls = LABEL_SETS.get(source)
    if ls is None:
        raise DataError(f"unknown imported source {source!r}; known: {sorted(LABEL_SETS)}")
    if not ls.supports(mapping):
        raise DataError(f"imported source {source!r} has no mapping onto {mapping!r} "
                               f"(it maps onto: {', '.join([ls.name, *sorted(ls.mappings)])})")
    known = imported_sources(home)
    if split not in known.get(source, []):
        raise DataError(f"no {split} split of {source!r} imported in {Path(home)}; "
                               f"run `emoforge import {source} PATH` first (imported: {known or 'nothing'})")
    table = Warehouse(home).query(
        "SELECT t.dialogue_id, t.idx, coalesce(t.speaker_name, t.speaker) AS speaker, t.text, t.label "
        "FROM turns t JOIN dialogues d ON d.id = t.dialogue_id "
        "WHERE d.source = ? AND d.source_split = ? AND d.status = 'accepted' ORDER BY t.dialogue_id, t.idx",
        [source, split])
    cols = [table.column(c).to_pylist() for c in ("dialogue_id", "idx", "speaker", "text", "label")]
    return [Utterance(uid=f"{d}:{i}", dialogue_id=d, idx=int(i), speaker=s, text=t, label=ls.map(lab, mapping),
                      split=split, source=source) for d, i, s, t, lab in zip(*cols)]


def cap_dialogues(utts: list[Utterance], max_utterances: int | None) -> list[Utterance]:
    """A deterministic subset of whole dialogues (ordered by a hash of their id) with at most ``max_utterances``."""
    if max_utterances is None or len(utts) <= max_utterances:
        return utts
    by_dlg: dict[str, list[Utterance]] = {}
    for u in utts:
        by_dlg.setdefault(u.dialogue_id, []).append(u)
    order = sorted(by_dlg, key=lambda d: hashlib.sha256(d.encode()).hexdigest())
    keep: set[str] = set()
    n = 0
    for d in order:
        if n + len(by_dlg[d]) > max_utterances and keep:
            continue
        keep.add(d)
        n += len(by_dlg[d])
        if n >= max_utterances:
            break
    return [u for u in utts if u.dialogue_id in keep]


def majority_label(labels: Iterable[str]) -> str:
    """The most frequent label (ties: the first by name): the majority-class baseline's answer."""
    counts = Counter(labels)
    if not counts:
        raise DataError("no labels to take a majority of")
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def by_dialogue(utts: list[Utterance]) -> dict[str, list[Utterance]]:
    out: dict[str, list[Utterance]] = {}
    for u in utts:
        out.setdefault(u.dialogue_id, []).append(u)
    for v in out.values():
        v.sort(key=lambda u: u.idx)
    return out
