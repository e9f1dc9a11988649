"""``emoforge evaluate VERSION``: does a release teach emotion recognition that transfers to real conversation?

A linear probe, no LLM. Every utterance becomes the frozen all-MiniLM-L6-v2 embedding of its text concatenated
with the embedding of the previous utterance of its dialogue (zeros for a first turn); embeddings are cached by
text hash under the home (:class:`warehouse.embeddings.EmbeddingCache`), so a text is embedded once. A seeded
multinomial logistic regression is trained on the release's train split under the ``erc7`` mapping (column
``label_erc7``) and scored on every imported real test set (DailyDialog test; MELD test when imported), next to

* the **ceiling**: the same probe trained on that real source's own train split (cached per data fingerprint);
* the **majority baseline**: always the most frequent class of the source's train split (else of its test set);
* the release's own test split (in-domain; it says little about transfer, shown for contrast).

Scores: weighted-F1 (PRC-Emo's figure), macro-F1 over the classes present in the test set (rare emotions count as
much as neutral) and accuracy. The result goes to ``<release>/evaluation.json`` (a side file outside the manifest's
checksums, :mod:`warehouse.evaluation_file`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from warehouse.embeddings import Embedder, EmbeddingCache
from warehouse.evaluation_file import write_evaluation
from warehouse.importers.labels import ERC7, LABEL_SETS
from warehouse.utterances import (
    DataError, Utterance, by_dialogue, cap_dialogues, imported_sources, imported_utterances, majority_label, open_release,
    release_utterances, supports_mapping,
)

MAPPING = "erc7"
PROBE_VERSION = "probe-v1"  # bump when the features or the classifier change (invalidates cached ceilings)
IMPORT_COMMANDS = {
    "dailydialog": "emoforge import dailydialog PATH  (the public DailyDialog folder, e.g. ../shared/benchdata/dailydialog)",
    "meld": "emoforge import meld PATH  (the folder with MELD's train/dev/test_sent_emo.csv)",
}


class EvaluationError(ValueError):
    """The release cannot be evaluated; the message says why and what to do."""


@dataclass(frozen=True)
class ProbeOptions:
    seed: int = 0
    C: float = 1.0
    max_iter: int = 1000
    max_test: int | None = None  # utterances per real test set (whole dialogues, deterministic); None: all
    sets: tuple[str, ...] | None = None  # imported sources to score on; None: every one with a test split

    def describe(self) -> dict[str, Any]:
        return {"version": PROBE_VERSION, "classifier": "LogisticRegression(multinomial, lbfgs)", "C": self.C,
                "max_iter": self.max_iter, "seed": self.seed,
                "features": "all-MiniLM-L6-v2(utterance) ++ all-MiniLM-L6-v2(previous utterance)"}


# ---- features and the probe ------------------------------------------------------------------------------
def features(utts: list[Utterance], cache: EmbeddingCache, label: str = "embedding") -> np.ndarray:
    """[emb(text), emb(previous text in the dialogue) or zeros] per utterance, in the order given."""
    prev: dict[str, str | None] = {}
    for turns in by_dialogue(utts).values():
        for before, u in zip([None, *turns[:-1]], turns):
            prev[u.uid] = before.text if before is not None and before.idx == u.idx - 1 else None
    texts = sorted({u.text for u in utts} | {t for t in prev.values() if t is not None})
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    emb = cache.get(texts, label=label)
    row = {t: i for i, t in enumerate(texts)}
    zero = np.zeros(emb.shape[1], dtype=np.float32)
    cur = emb[[row[u.text] for u in utts]]
    before = np.stack([emb[row[prev[u.uid]]] if prev[u.uid] is not None else zero for u in utts])
    return np.concatenate([cur, before], axis=1)


def fit_probe(x: np.ndarray, y: list[str], opts: ProbeOptions) -> LogisticRegression:
    clf = LogisticRegression(C=opts.C, max_iter=opts.max_iter, random_state=opts.seed)
    return clf.fit(x, y)


def scores(gold: list[str], pred: list[str]) -> dict[str, Any]:
    present = sorted(set(gold))
    return {
        "n": len(gold),
        "weighted_f1": round(float(f1_score(gold, pred, labels=present, average="weighted", zero_division=0)), 4),
        "macro_f1": round(float(f1_score(gold, pred, labels=present, average="macro", zero_division=0)), 4),
        "accuracy": round(float(accuracy_score(gold, pred)), 4),
        "predicted": dict(sorted(Counter(pred).items())),
    }


def _data_fingerprint(*groups: list[Utterance]) -> str:
    h = hashlib.sha256()
    for g in groups:
        for u in g:
            h.update(f"{u.uid}\t{u.label}\t{u.text}\n".encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


# ---- real test sets --------------------------------------------------------------------------------------
def real_test_sets(home: str | Path, opts: ProbeOptions) -> dict[str, list[Utterance]]:
    """Imported test sets that map onto erc7; a missing one names the import command that brings it."""
    available = imported_sources(home)
    if opts.sets is not None:
        for src in opts.sets:
            if src not in LABEL_SETS:
                raise EvaluationError(f"unknown real test set {src!r}; known: {', '.join(sorted(LABEL_SETS))}")
            if "test" not in available.get(src, []):
                raise EvaluationError(f"the {src} test split is not imported in {home}; bring it with:\n  "
                                      f"{IMPORT_COMMANDS[src]}")
        wanted = list(opts.sets)
    else:
        wanted = [s for s in sorted(available) if "test" in available[s] and supports_mapping(s, MAPPING)]
    if not wanted:
        cmds = "\n  ".join(IMPORT_COMMANDS.values())
        raise EvaluationError(f"no imported real test set in {home} to score on; bring one with:\n  {cmds}")
    return {src: cap_dialogues(imported_utterances(home, src, "test", MAPPING), opts.max_test) for src in wanted}


def _ceiling(home: Path, src: str, test: list[Utterance], cache: EmbeddingCache, x_test: np.ndarray,
             opts: ProbeOptions, log: Callable[[str], None]) -> tuple[dict | None, dict]:
    """(ceiling scores or None, majority scores): the probe trained on ``src``'s own train split."""
    gold = [u.label for u in test]
    if "train" not in imported_sources(home).get(src, []):
        label = majority_label(gold)
        return None, {**scores(gold, [label] * len(gold)), "label": label, "prior": "test"}
    train = imported_utterances(home, src, "train", MAPPING)
    label = majority_label(u.label for u in train)
    majority = {**scores(gold, [label] * len(gold)), "label": label, "prior": "train"}
    key = hashlib.sha256(json.dumps([PROBE_VERSION, cache.embedder.fingerprint, opts.describe(),
                                     _data_fingerprint(train, test)], sort_keys=True).encode()).hexdigest()[:20]
    path = Path(home) / "evaluation" / "ceilings" / f"{src}-{key}.json"
    if path.is_file():
        return json.loads(path.read_text()), majority
    log(f"ceiling: training the probe on {src} train ({len(train)} utterances); cached afterwards")
    clf = fit_probe(features(train, cache, f"{src} train embeddings"), [u.label for u in train], opts)
    ceiling = {**scores(gold, clf.predict(x_test).tolist()), "n_train": len(train)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ceiling, sort_keys=True))
    return ceiling, majority


# ---- the evaluation --------------------------------------------------------------------------------------
def evaluate_release(home: str | Path, version: str, opts: ProbeOptions | None = None, *,
                     embedder: Embedder | None = None, write: bool = True,
                     log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Score release ``version`` of ``home`` on every imported real test set; writes ``evaluation.json``."""
    opts = opts or ProbeOptions()
    home = Path(home)
    t0 = time.perf_counter()
    try:
        release = open_release(home, version)
        release.labels(MAPPING)
    except DataError as exc:
        raise EvaluationError(str(exc)) from None
    tests = real_test_sets(home, opts)
    train = release_utterances(release, MAPPING, ("train",))
    counts = Counter(u.label for u in train)
    if len(counts) < 2:
        only = next(iter(counts), "nothing")
        raise EvaluationError(f"release {release.version}: its train split has {'only the class ' + repr(only) if counts else 'no utterances'} "
                              f"under {MAPPING}; a classifier needs at least two classes, so the release cannot be "
                              f"evaluated (publish dialogues with more than one emotion)")
    cache = EmbeddingCache(home, embedder or Embedder())
    x_train = features(train, cache, "release train embeddings")
    t_embed = time.perf_counter() - t0
    clf = fit_probe(x_train, [u.label for u in train], opts)
    t_fit = time.perf_counter() - t0 - t_embed
    result: dict[str, Any] = {
        "version": release.version, "mapping": MAPPING, "labels": ERC7, "probe": opts.describe(),
        "embedder": cache.embedder.fingerprint,
        "train": {"n": len(train), "labels": dict(sorted(counts.items()))},
        "release_test": None, "sets": {},
    }
    own = release_utterances(release, MAPPING, ("test",))
    if own:
        result["release_test"] = scores([u.label for u in own], clf.predict(features(own, cache)).tolist())
    for src, test in tests.items():
        x_test = features(test, cache, f"{src} test embeddings")
        ceiling, majority = _ceiling(home, src, test, cache, x_test, opts, log)
        result["sets"][f"{src}_test"] = {
            "source": src, "n": len(test),
            "probe": scores([u.label for u in test], clf.predict(x_test).tolist()),
            "ceiling": ceiling, "majority": majority,
        }
    result["timing"] = {"seconds": round(time.perf_counter() - t0, 2), "embed_train_s": round(t_embed, 2),
                        "fit_s": round(t_fit, 2), "embedded_now": cache.computed,
                        "utterances_scored": len(train) + len(own) + sum(len(t) for t in tests.values())}
    if write:
        write_evaluation(release.path, result)
    return result


def has_real_test_sets(home: str | Path) -> bool:
    available = imported_sources(home)
    return any("test" in splits and supports_mapping(src, MAPPING) for src, splits in available.items())


def evaluate_after_publish(home: str | Path, version: str, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The publish hook: score the new release when the home has imported real test sets. Informative only: a
    release that cannot be scored (one class, no erc7 mapping) is published all the same, with the reason logged."""
    if not has_real_test_sets(home):
        return None
    try:
        return evaluate_release(home, version, log=log)
    except (EvaluationError, DataError) as exc:
        log(f"release {version} not evaluated: {exc}")
        return {"error": str(exc)}
