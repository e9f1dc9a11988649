"""The classifier emotion judge: does a turn read as its target emotion? No LLM.

Frozen all-MiniLM-L6-v2 sentence embeddings (:mod:`warehouse.embeddings`, cached by text hash under the home) and
a linear head (scikit-learn ``LogisticRegression``, multinomial) over the seven ERC classes (neutral, anger,
disgust, fear, joy, sadness, surprise), trained on labelled real data: GoEmotions (28 labels mapped with the
GoEmotions authors' Ekman map, single-label comments only) and DailyDialog train. A taxonomy emotion is scored
through the taxonomy's ``erc7`` mapping:

* ``fidelity`` = p(the target's ERC class);
* ``region`` = probability mass of the classes in the target's valence region (positive: joy; negative: anger,
  disgust, fear, sadness; neutral: neutral, surprise), ``opposite`` = mass of the opposite region;
* a turn's score = (fidelity + region) / 2.

The head is stored in ``<home>/judges/emotion/<fingerprint>/`` (``head.npz`` + ``meta.json``) where the
fingerprint covers the data files, the label map, the embedder, the sample sizes and the seed: it is trained once
and retrained only when one of them changes. Thresholds are tuned on DailyDialog *validation* (true label vs a
label of opposite valence) and stored with the head: ``support_at`` (a swapped label reaches it on at most 10% of
turns) and ``contradict_at`` (a true label's opposite-region mass passes it on at most 5% of turns).

Decision rule when every LLM judge is a tiny embedded model (:func:`classifier_decision`, called by
``flows.judge.decide``): checks reject -> rejected; a turn that reads as the opposite valence -> uncertain; at
least ``min_support`` of the turns supported -> accepted; otherwise uncertain. Never accepted on less.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from schemas.records import Judgement
from schemas.taxonomy import Taxonomy
from warehouse.embeddings import Embedder, EmbedderMissing, EmbeddingCache

log = logging.getLogger("emoforge.emotion_judge")

HEAD_VERSION = "emotion-head-v1"
ERC7 = ("neutral", "anger", "disgust", "fear", "joy", "sadness", "surprise")
REGION = {"joy": "positive", "anger": "negative", "disgust": "negative", "fear": "negative", "sadness": "negative",
          "neutral": "neutral", "surprise": "neutral"}
OPPOSITE = {"positive": "negative", "negative": "positive", "neutral": None}
# GoEmotions -> Ekman (the dataset authors' ekman_mapping.json); "neutral" stays neutral
GOEMOTIONS_EKMAN = {
    "anger": ["anger", "annoyance", "disapproval"],
    "disgust": ["disgust"],
    "fear": ["fear", "nervousness"],
    "joy": ["joy", "amusement", "approval", "excitement", "gratitude", "love", "optimism", "relief", "pride",
            "admiration", "desire", "caring"],
    "sadness": ["sadness", "disappointment", "embarrassment", "grief", "remorse"],
    "surprise": ["surprise", "realization", "confusion", "curiosity"],
    "neutral": ["neutral"],
}
DAILYDIALOG_ERC7 = ("neutral", "anger", "disgust", "fear", "joy", "sadness", "surprise")  # codes 0..6 (happiness=joy)
JUDGE_KIND = "classifier"


class EmotionJudgeError(RuntimeError):
    """The judge cannot be built (data missing, embedder missing); the message names what and where."""


def default_data_dir() -> Path:
    env = os.environ.get("EMOFORGE_BENCHDATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "benchdata"


# ---- labelled data ---------------------------------------------------------------------------------------------
def goemotions_examples(data_dir: Path, split: str = "train") -> list[tuple[str, str]]:
    """(text, erc7 class) of the single-label comments of a GoEmotions split."""
    base = data_dir / "goemotions"
    names = (base / "labels.txt").read_text().split()
    to_erc = {fine: ek for ek, fines in GOEMOTIONS_EKMAN.items() for fine in fines}
    out = []
    for line in (base / f"{split}.tsv").read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or "," in parts[1]:
            continue
        out.append((parts[0], to_erc[names[int(parts[1])]]))
    return out


def dailydialog_dialogues(data_dir: Path, split: str) -> list[list[tuple[str, str]]]:
    """DailyDialog ``split`` (train/validation/test) as dialogues of (text, erc7 class)."""
    base = data_dir / "dailydialog" / split
    texts = (base / f"dialogues_{split}.txt").read_text(encoding="utf-8").splitlines()
    emos = (base / f"dialogues_emotion_{split}.txt").read_text().splitlines()
    out = []
    for t, e in zip(texts, emos):
        turns = [x.strip() for x in t.split("__eou__")[:-1]]
        codes = e.split()
        if len(turns) == len(codes):
            out.append([(tt, DAILYDIALOG_ERC7[int(c)]) for tt, c in zip(turns, codes)])
    return out


def _order_key(seed: int, text: str) -> str:
    return hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()


def balanced_sample(examples: Sequence[tuple[str, str]], per_class: int, seed: int) -> list[tuple[str, str]]:
    """At most ``per_class`` examples of each class, chosen deterministically (hash order), deduplicated."""
    by: dict[str, dict[str, str]] = {}
    for text, lab in examples:
        by.setdefault(lab, {}).setdefault(text, lab)
    out = []
    for lab in sorted(by):
        texts = sorted(by[lab], key=lambda t: _order_key(seed, t))[:per_class]
        out.extend((t, lab) for t in texts)
    return out


# ---- the stored head -------------------------------------------------------------------------------------------
@dataclass
class TrainSpec:
    data_dir: Path
    per_class: int = 400  # per class and source: ~5k texts, under 2 minutes on 2 cores with a cold cache
    seed: int = 0
    C: float = 2.0
    min_support: float = 0.5
    tune_limit: int = 0  # validation pairs used to tune the thresholds (0: all; tests use a few)

    def files(self) -> list[Path]:
        d = self.data_dir
        return [d / "goemotions" / "train.tsv", d / "goemotions" / "labels.txt",
                d / "dailydialog" / "train" / "dialogues_train.txt",
                d / "dailydialog" / "train" / "dialogues_emotion_train.txt",
                d / "dailydialog" / "validation" / "dialogues_validation.txt",
                d / "dailydialog" / "validation" / "dialogues_emotion_validation.txt"]

    def fingerprint(self, embedder_fp: str) -> str:
        h = hashlib.sha256(HEAD_VERSION.encode())
        for f in self.files():
            if not f.is_file():
                raise EmotionJudgeError(f"emotion judge training data missing: {f} (set EMOFORGE_BENCHDATA to the "
                                        "folder holding goemotions/ and dailydialog/)")
            h.update(f.name.encode() + hashlib.sha256(f.read_bytes()).digest())
        h.update(json.dumps([GOEMOTIONS_EKMAN, DAILYDIALOG_ERC7, embedder_fp, self.per_class, self.seed, self.C,
                             self.min_support, self.tune_limit], sort_keys=True).encode())
        return h.hexdigest()[:16]


@dataclass
class TurnScore:
    emotion: str
    erc: str
    fidelity: float
    region: float
    opposite: float
    top: str

    @property
    def score(self) -> float:
        return (self.fidelity + self.region) / 2


class EmotionJudge:
    """A trained head: ``probs(texts)`` and ``score(texts, emotions, taxonomy)``."""

    def __init__(self, path: Path, cache: EmbeddingCache):
        self.path = path
        self.cache = cache
        z = np.load(path / "head.npz")
        self.coef, self.intercept = z["coef"], z["intercept"]
        self.meta = json.loads((path / "meta.json").read_text())
        self.classes = list(self.meta["classes"])
        self.support_at = float(self.meta["support_at"])
        self.contradict_at = float(self.meta["contradict_at"])
        self.min_support = float(self.meta["min_support"])

    @property
    def judge_id(self) -> str:
        return f"classifier:emotion-minilm-{self.path.name[:8]}"

    def probs(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.classes)))
        x = self.cache.get(list(texts), label="emotion judge")
        logits = x @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def score(self, texts: Sequence[str], emotions: Sequence[str], tax: Taxonomy) -> list[TurnScore]:
        return [self.score_row(p, emo, tax) for p, emo in zip(self.probs(texts), emotions)]

    def score_row(self, p: np.ndarray, emotion: str, tax: Taxonomy) -> TurnScore:
        erc = erc_class(emotion, tax)
        region = REGION[erc]
        opp = OPPOSITE[region]
        mass = {r: float(sum(p[i] for i, c in enumerate(self.classes) if REGION[c] == r)) for r in set(REGION.values())}
        return TurnScore(emotion, erc, float(p[self.classes.index(erc)]), mass[region], mass[opp] if opp else 0.0,
                         self.classes[int(np.argmax(p))])


def erc_class(emotion: str, tax: Taxonomy) -> str:
    """The ERC class of a taxonomy emotion (its ``erc7`` mapping); an ERC class name maps to itself."""
    if emotion.lower() in ERC7:
        return emotion.lower()
    if "erc7" not in tax.mappings:
        raise EmotionJudgeError(f"taxonomy {tax.name!r} has no erc7 mapping: the emotion judge cannot score it")
    if emotion not in tax.emotion:
        raise EmotionJudgeError(f"emotion {emotion!r} is not in taxonomy {tax.name!r}")
    return tax.map_label(emotion, "erc7")


def _swap(erc: str, i: int) -> str:
    """A class of the opposite valence (negatives -> joy; joy and the neutral region -> a negative, cycling)."""
    neg = ["sadness", "anger", "fear", "disgust"]
    return "joy" if REGION[erc] == "negative" else neg[i % len(neg)]


def swap_pairs(dialogues: Sequence[Sequence[tuple[str, str]]]) -> list[tuple[str, str, str]]:
    """(text, true class, swapped class) of every emotional (non-neutral) turn."""
    out = []
    for d in dialogues:
        for text, lab in d:
            if lab != "neutral":
                out.append((text, lab, _swap(lab, len(out))))
    return out


def auroc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(score of a positive > score of a negative), ties counting half (Mann-Whitney)."""
    allv = np.concatenate([np.asarray(pos, float), np.asarray(neg, float)])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sv = allv[order]
    i = 0
    while i < len(sv):
        j = i
        while j + 1 < len(sv) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n1, n0 = len(pos), len(neg)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)) if n1 and n0 else float("nan")


def _train(spec: TrainSpec, cache: EmbeddingCache, out: Path) -> None:
    from sklearn.linear_model import LogisticRegression  # only when a head is (re)trained  # noqa: PLC0415 - scikit-learn: only when a head is trained

    t0 = time.monotonic()
    ge = balanced_sample(goemotions_examples(spec.data_dir, "train"), spec.per_class, spec.seed)
    dd = balanced_sample([t for d in dailydialog_dialogues(spec.data_dir, "train") for t in d], spec.per_class, spec.seed)
    data = ge + dd
    log.info("emotion judge: training on %d texts (%d GoEmotions, %d DailyDialog)", len(data), len(ge), len(dd))
    x = cache.get([t for t, _ in data], label="emotion judge: embedding training texts")
    y = np.array([ERC7.index(lab) for _, lab in data])
    clf = LogisticRegression(C=spec.C, max_iter=2000, class_weight="balanced", random_state=spec.seed)
    clf.fit(x, y)
    classes = [ERC7[int(c)] for c in clf.classes_]
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "head.tmp.npz"
    np.savez(tmp, coef=clf.coef_.astype(np.float32), intercept=clf.intercept_.astype(np.float32))
    os.replace(tmp, out / "head.npz")
    meta = {"version": HEAD_VERSION, "classes": classes, "n_train": len(data), "n_goemotions": len(ge),
            "n_dailydialog": len(dd), "per_class": spec.per_class, "seed": spec.seed, "C": spec.C,
            "min_support": spec.min_support, "embedder": cache.embedder.fingerprint, "support_at": 0.5,
            "contradict_at": 1.0}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    # thresholds from DailyDialog validation: never from the data the bench reports on
    judge = EmotionJudge(out, cache)
    pairs = swap_pairs(dailydialog_dialogues(spec.data_dir, "validation"))
    if spec.tune_limit:
        pairs = sorted(pairs, key=lambda x: _order_key(spec.seed, x[0]))[:spec.tune_limit]
    p = judge.probs([t for t, _, _ in pairs])
    true = [judge.score_row(row, lab, _NO_TAX) for row, (_, lab, _) in zip(p, pairs)]
    swapped = [judge.score_row(row, sw, _NO_TAX) for row, (_, _, sw) in zip(p, pairs)]
    meta["support_at"] = round(float(np.quantile([s.score for s in swapped], 0.90)), 4)
    meta["contradict_at"] = round(float(np.quantile([s.opposite for s in true], 0.95)), 4)
    meta["validation_auroc"] = round(auroc([s.score for s in true], [s.score for s in swapped]), 4)
    meta["validation_pairs"] = len(pairs)
    meta["train_s"] = round(time.monotonic() - t0, 1)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    log.info("emotion judge: trained in %.0fs, validation AUROC %.3f", meta["train_s"], meta["validation_auroc"])


class _NoTaxonomy:
    """Scoring ERC class names directly (training-time threshold tuning)."""

    mappings: dict = {}
    name = "erc7"


_NO_TAX = _NoTaxonomy()  # type: ignore[assignment]


def load_or_train(home: Path, spec: TrainSpec | None = None, embedder: Embedder | None = None) -> EmotionJudge:
    """The stored head for these inputs, trained first when there is none."""
    spec = spec or TrainSpec(default_data_dir())
    embedder = embedder or Embedder()
    fp = spec.fingerprint(embedder.fingerprint)
    path = Path(home) / "judges" / "emotion" / fp
    cache = EmbeddingCache(home, embedder)
    if not ((path / "head.npz").is_file() and (path / "meta.json").is_file()):
        _train(spec, cache, path)
    return EmotionJudge(path, cache)


_LOADED: dict[str, EmotionJudge] = {}
_LOCK = threading.Lock()


def judge_for_home(home: Path) -> EmotionJudge:
    """One judge per home and process (the build calls this from every shard; the first call may train)."""
    key = str(Path(home).resolve())
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = load_or_train(Path(home))
        return _LOADED[key]


# ---- judgements and the decision -------------------------------------------------------------------------------
def classifier_judgement(judge: EmotionJudge, jid: str, dialogue_id: str, texts: Sequence[str],
                         emotions: Sequence[str], tax: Taxonomy) -> Judgement:
    """The judge's record of a dialogue: per-turn fidelity on 1-5 (``emotion_fidelity``), ``failures`` naming
    each unsupported or contradicted turn, verdict ``accept`` / ``uncertain`` (it never rejects by itself)."""
    scores = judge.score(texts, emotions, tax)
    failures = []
    for i, s in enumerate(scores):
        if s.opposite >= judge.contradict_at:
            failures.append(f"emotion_contradicted:{i}:{s.emotion} reads as {s.top} (opposite {s.opposite:.2f})")
        elif s.score < judge.support_at:
            failures.append(f"emotion_unsupported:{i}:{s.emotion} score {s.score:.2f} < {judge.support_at:.2f}")
    supported = sum(1 for s in scores if s.score >= judge.support_at and s.opposite < judge.contradict_at)
    share = supported / len(scores) if scores else 0.0
    contradicted = any(f.startswith("emotion_contradicted") for f in failures)
    verdict = "accept" if share >= judge.min_support and not contradicted else "uncertain"
    detail = "; ".join(f"{i}:{s.emotion}->{s.erc} p={s.fidelity:.2f} region={s.region:.2f}" for i, s in enumerate(scores))
    return Judgement(
        id=jid, dialogue_id=dialogue_id, judge_id=judge.judge_id, kind=JUDGE_KIND, verdict=verdict,
        emotion_fidelity=[int(round(1 + 4 * s.score)) for s in scores], failures=failures,
        rationale=f"{supported}/{len(scores)} turns support their target emotion (support_at {judge.support_at:.2f}); {detail}"[:2000],
    )


def unavailable_judgement(jid: str, dialogue_id: str, why: str) -> Judgement:
    """What is recorded when the judge cannot run: ``uncertain``, so nothing is accepted unsupported."""
    return Judgement(id=jid, dialogue_id=dialogue_id, judge_id="classifier:emotion-unavailable", kind=JUDGE_KIND,
                     verdict="uncertain", failures=[f"emotion_judge_unavailable:-:{why[:300]}"],
                     rationale=f"emotion judge unavailable: {why[:300]}")


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """A judge that cannot be built fails the same way for every dialogue: say so once per process, not per dialogue."""
    with _LOCK:
        if message in _WARNED:
            return
        _WARNED.add(message)
    log.warning("%s", message)


async def emotion_judgement(home: Path, jid: str, dialogue_id: str, texts: Sequence[str], emotions: Sequence[str],
                            tax: Taxonomy) -> Judgement:
    """The classifier judgement of a dialogue, computed off the event loop (the first call may train the head);
    a judge that cannot be built gives :func:`unavailable_judgement`."""
    def run() -> Judgement:
        try:
            return classifier_judgement(judge_for_home(home), jid, dialogue_id, texts, emotions, tax)
        except (EmotionJudgeError, EmbedderMissing, ImportError, OSError) as exc:
            _warn_once(f"emotion judge unavailable: {exc} (every dialogue it would decide stays uncertain)")
            return unavailable_judgement(jid, dialogue_id, str(exc))

    return await asyncio.to_thread(run)


def classifier_score(j: Judgement) -> float | None:
    """The dialogue's classifier score on the judges' 1-5 scale (mean per-turn fidelity); None when it did not run."""
    return float(np.mean(j.emotion_fidelity)) if j.emotion_fidelity else None


def classifier_decision(clf: Judgement | None, llm_note: str = "") -> tuple[str, str, float | None]:
    """(status, reason, score) when the checks passed and the classifier judge decides (every LLM judge is a tiny
    embedded model): ``accepted`` only on the classifier's ``accept``; anything it cannot support -> ``uncertain``."""
    note = f"; {llm_note}" if llm_note else ""
    if clf is None:
        return "uncertain", f"checks passed; no emotion judge verdict{note}", None
    score = classifier_score(clf)
    gates = sorted({f.split(":", 1)[0] for f in clf.failures})
    if clf.verdict == "accept":
        return "accepted", f"checks passed; emotion judge: {clf.rationale.split(';')[0]}{note}", score
    return "uncertain", f"checks passed; emotion judge cannot support it ({', '.join(gates) or clf.verdict}){note}", score


__all__ = [
    "EmotionJudge", "EmotionJudgeError", "JUDGE_KIND", "TrainSpec", "auroc", "balanced_sample", "classifier_decision",
    "classifier_judgement", "classifier_score", "dailydialog_dialogues", "erc_class", "goemotions_examples",
    "emotion_judgement", "judge_for_home", "load_or_train", "swap_pairs", "unavailable_judgement",
]
