"""The release report: one HTML page with PNG plots, written to ``<release>/report/``.

:func:`write_report` (called by ``warehouse.publish.publish_release`` and by ``emoforge report VERSION``) reads the
release's Parquet files (and, given the home, the warehouse: every judge score, acceptance of all generated
dialogues, audio clip durations), computes the figures with :func:`release_stats`, and writes

``report/index.html``   the page (all dialogue text HTML-escaped)
``report/*.png``        one plot per figure (matplotlib, Agg backend, no timestamps: same input, same bytes)
``report/stats.json``   every figure as data

Figures: split sizes, emotion distribution (final label and intended), the observed emotion-transition heatmap
next to the configured transition graph, turns per dialogue, words per turn, judge score distributions,
acceptance by model pair and by domain, difficulty histogram, audio durations (when the release has speech),
inter-annotator agreement (manifest key ``agreement``, when reviews exist), and, with
``compare_dailydialog=PATH``, the same statistics of DailyDialog side by side (:func:`dailydialog_stats`).

The report is written to a temporary folder next to ``report/`` and swapped in at the end, so a failure (a full
disk) leaves the previous report as it was.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import statistics
import wave
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from warehouse.report_sections import extra_sections

REPORT_DIR = "report"
DD_LABELS = ["neutral", "anger", "disgust", "fear", "joy", "sadness", "surprise"]  # DailyDialog 0..6 (4 = happiness)
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


class ReportError(RuntimeError):
    """A release that cannot be reported on (missing or unreadable files); the message names the problem."""


# ---- small text helpers ---------------------------------------------------------------------------------
def count_words(text: str) -> int:
    """Words of a turn: runs of letters/digits, contractions kept whole (``I'll`` = 1), punctuation ignored."""
    return len(_WORD.findall(text or ""))


def _dd_detok(text: str) -> str:
    # DailyDialog is tokenised with spaces around punctuation ("I ’ ll", "don ' t"): join contractions back
    return re.sub(r"\s*(['’])\s*", r"\1", text)


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "mean": None, "median": None, "p10": None, "p90": None, "min": None, "max": None}
    vs = sorted(values)

    def q(p: float) -> float:
        k = (len(vs) - 1) * p
        lo, hi = math.floor(k), math.ceil(k)
        return float(vs[lo] + (vs[hi] - vs[lo]) * (k - lo))

    return {"n": len(vs), "mean": round(statistics.fmean(vs), 4), "median": q(0.5), "p10": q(0.1), "p90": q(0.9),
            "min": float(vs[0]), "max": float(vs[-1])}


# ---- reading the release ----------------------------------------------------------------------------------
def _read_table(release_dir: Path, name: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = release_dir / "data" / name
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f))
        except (OSError, pa.ArrowException) as exc:
            raise ReportError(f"cannot read {f}: {exc}") from None
    return pa.concat_tables(tables, promote_options="permissive")


def _load_manifest(release_dir: Path) -> dict:
    path = release_dir / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot read the manifest: {exc}") from None
    return data if isinstance(data, dict) else {}


def _resolve_taxonomy(taxonomy, manifest: dict):
    """A Taxonomy, or None when the release names one that cannot be loaded here (the graph panel says so)."""
    from schemas.taxonomy import Taxonomy, TaxonomyError, load_taxonomy

    if isinstance(taxonomy, Taxonomy):
        return taxonomy
    spec = taxonomy
    if spec is None:
        spec = manifest.get("taxonomy")
        if isinstance(spec, dict):
            spec = spec.get("name") or spec.get("path")
    if not spec:
        return None
    try:
        return load_taxonomy(spec)
    except TaxonomyError:
        if taxonomy is not None:
            raise
        return None


# ---- DailyDialog ------------------------------------------------------------------------------------------
def read_dailydialog(path: Path, skipped: list | None = None) -> list[tuple[list[str], list[str]]]:
    """DailyDialog dialogues as ``(texts, labels)`` from its original ``__eou__`` files (train/validation/test
    folders or the folder of one split). Dialogues that occur in several splits are counted once. The original
    files have a few dialogues whose label count differs from their turn count: they are left out and listed in
    ``skipped`` (``"file:line"``)."""
    path = Path(path)
    text_files = sorted(path.glob("dialogues_*.txt")) + sorted(path.glob("*/dialogues_*.txt"))
    text_files = [f for f in text_files if not f.name.startswith(("dialogues_act", "dialogues_emotion", "dialogues_topic"))]
    if not text_files:
        raise ReportError(f"{path}: no DailyDialog files (dialogues_<split>.txt with dialogues_emotion_<split>.txt)")
    seen: set[str] = set()
    out: list[tuple[list[str], list[str]]] = []
    for tf in text_files:
        ef = tf.with_name(tf.name.replace("dialogues_", "dialogues_emotion_", 1))
        if not ef.is_file():
            raise ReportError(f"{tf}: the emotion labels {ef.name} are missing next to it")
        texts = tf.read_text(encoding="utf-8").splitlines()
        labels = ef.read_text(encoding="utf-8").splitlines()
        if len(texts) != len(labels):
            raise ReportError(f"{tf}: {len(texts)} dialogues but {len(labels)} label lines in {ef.name}")
        for i, (line, lab) in enumerate(zip(texts, labels)):
            turns = [t.strip() for t in line.split("__eou__")]
            turns = [t for t in turns if t]
            codes = lab.split()
            if len(codes) != len(turns):
                if skipped is not None:
                    skipped.append(f"{tf.name}:{i + 1}")
                continue
            key = line.strip()
            if key in seen:
                continue
            seen.add(key)
            try:
                labs = [DD_LABELS[int(c)] for c in codes]
            except (ValueError, IndexError):
                raise ReportError(f"{ef}:{i + 1}: emotion codes must be 0-6, got {lab!r}") from None
            out.append(([_dd_detok(t) for t in turns], labs))
    return out


def dailydialog_stats(path: Path) -> dict:
    skipped: list[str] = []
    dialogues = read_dailydialog(path, skipped)
    if not dialogues:
        raise ReportError(f"{path}: no usable DailyDialog dialogue")
    turns = [len(t) for t, _ in dialogues]
    words = [count_words(x) for t, _ in dialogues for x in t]
    labels = Counter(lab for _, labs in dialogues for lab in labs)
    changes = sum(1 for _, labs in dialogues for a, b in zip(labs, labs[1:]) if a != b)
    pairs = sum(max(0, len(labs) - 1) for _, labs in dialogues)
    return {
        "source": str(path),
        "n_dialogues": len(dialogues),
        "n_utterances": len(words),
        "skipped_label_mismatch": len(skipped),
        "turns_per_dialogue": _quantiles([float(x) for x in turns]),
        "turns_hist": dict(sorted(Counter(turns).items())),
        "words_per_turn": _quantiles([float(x) for x in words]),
        "words_values": words,
        "turns_values": turns,
        "emotions_erc7": {lab: labels.get(lab, 0) for lab in DD_LABELS},
        "emotion_change_rate": round(changes / pairs, 4) if pairs else None,
        "distinct_emotions_per_dialogue": _quantiles([float(len(set(labs))) for _, labs in dialogues]),
    }


# ---- statistics of a release --------------------------------------------------------------------------------
@dataclass
class ReleaseData:
    release_dir: Path
    manifest: dict
    dialogues: list[dict]
    utterances: list[dict]
    taxonomy: Any = None
    warehouse: dict = field(default_factory=dict)


def _warehouse_figures(home: Path | None, dialogue_ids: list[str]) -> dict:
    """Figures only the warehouse has: all judge scores, acceptance of every generated dialogue, clip durations."""
    if home is None:
        return {}
    from warehouse.store import Warehouse

    home = Path(home)
    if not (home / "store").is_dir():
        return {}
    import pyarrow as pa

    from warehouse.effective import effective_views

    wh = Warehouse(home)
    out: dict = {}
    con = wh.connect()
    try:
        effective_views(con)  # human reviews win over judges, as at publish time
        con.register("_release_ids", pa.table({"id": pa.array(dialogue_ids, pa.string())}))
        rows = con.sql(
            """
            SELECT model_a, model_b, domain, status, count(*) AS n FROM effective_dialogues
            WHERE source = 'generated' OR id IN (SELECT id FROM _release_ids)
            GROUP BY ALL ORDER BY ALL
            """
        ).fetchall()
        out["dialogue_status"] = [
            {"model_a": a, "model_b": b, "domain": d, "status": s, "n": int(n)} for a, b, d, s, n in rows
        ]
        rows = con.sql(
            """
            SELECT j.judge_id, j.kind, j.coherence, j.naturalness, j.domain_fit, j.safety,
                   list_avg(j.emotion_fidelity) AS fidelity, j.verdict,
                   (j.dialogue_id IN (SELECT id FROM _release_ids)) AS in_release
            FROM judgements j ORDER BY j.judge_id, j.dialogue_id
            """
        ).fetchall()
        out["judgements"] = [
            {"judge_id": r[0], "kind": r[1], "coherence": r[2], "naturalness": r[3], "domain_fit": r[4],
             "safety": r[5], "emotion_fidelity": r[6], "verdict": r[7], "in_release": bool(r[8])}
            for r in rows
        ]
        rows = con.sql(
            """
            SELECT c.kind, c.duration_s FROM clips c WHERE c.dialogue_id IN (SELECT id FROM _release_ids)
            ORDER BY c.id
            """
        ).fetchall()
        out["clip_durations"] = {"turn": [float(d) for k, d in rows if k == "turn"],
                                 "mix": [float(d) for k, d in rows if k == "mix"]}
    finally:
        con.close()
    return out


def _audio_duration(path: Path) -> float | None:
    try:
        import soundfile as sf  # optional (speech extra)

        info = sf.info(str(path))
        return float(info.frames) / float(info.samplerate)
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - unreadable clip: reported as missing
        return None
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / float(w.getframerate())
    except (OSError, wave.Error, EOFError):
        return None


def _audio_ref(value) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        return value.get("path") or None
    return None


def _version_from_dir(release_dir: Path) -> str:
    m = re.match(r"^\.tmp-(.+)-[0-9a-f]{8}$", release_dir.name)  # publish builds in releases/.tmp-<version>-<rand>
    return m.group(1) if m else release_dir.name


def load_release(release_dir: Path, taxonomy=None, home: Path | None = None, manifest: dict | None = None) -> ReleaseData:
    release_dir = Path(release_dir)
    if not release_dir.is_dir():
        raise ReportError(f"release folder {release_dir} does not exist")
    manifest = dict(manifest) if manifest is not None else _load_manifest(release_dir)
    manifest.setdefault("version", _version_from_dir(release_dir))
    dlg = _read_table(release_dir, "dialogues")
    utt = _read_table(release_dir, "utterances")
    if dlg is None and utt is None:
        raise ReportError(f"{release_dir}: no data/dialogues/*.parquet nor data/utterances/*.parquet")
    dialogues = sorted(dlg.to_pylist(), key=lambda r: r.get("dialogue_id") or "") if dlg is not None else []
    utterances = (sorted(utt.to_pylist(), key=lambda r: (r.get("dialogue_id") or "", r.get("utterance_idx") or 0))
                  if utt is not None else [])
    if not dialogues and utterances:  # rebuild dialogue rows from utterances
        by: dict[str, list[dict]] = defaultdict(list)
        for u in utterances:
            by[u["dialogue_id"]].append(u)
        for did, us in sorted(by.items()):
            dialogues.append({"dialogue_id": did, "domain": us[0].get("domain"), "model_a": us[0].get("model_a"),
                              "model_b": us[0].get("model_b"), "n_turns": len(us), "split": us[0].get("split"),
                              "difficulty": us[0].get("difficulty"), "bucket": us[0].get("bucket"),
                              "turns": [{"idx": u["utterance_idx"], "speaker": u.get("speaker"), "text": u.get("text"),
                                         "emotion": u.get("emotion")} for u in us]})
    tax = _resolve_taxonomy(taxonomy, manifest)
    ids = [d["dialogue_id"] for d in dialogues]
    return ReleaseData(release_dir, manifest, dialogues, utterances, tax, _warehouse_figures(home, ids))


def _emotion_sequences(data: ReleaseData) -> list[list[str]]:
    seqs = []
    for d in data.dialogues:
        turns = d.get("turns")
        if turns:
            seqs.append([t.get("emotion") for t in sorted(turns, key=lambda t: t.get("idx") or 0)])
        elif d.get("emotions"):
            seqs.append(list(d["emotions"]))
    if not seqs and data.utterances:
        by: dict[str, list] = defaultdict(list)
        for u in data.utterances:
            by[u["dialogue_id"]].append(u.get("emotion"))
        seqs = [v for _, v in sorted(by.items())]
    return seqs


def _utterance_texts(data: ReleaseData) -> list[str]:
    if data.utterances:
        return [u.get("text") or "" for u in data.utterances]
    return [t.get("text") or "" for d in data.dialogues for t in (d.get("turns") or [])]


def _acceptance(data: ReleaseData) -> dict:
    """Acceptance per model pair and per domain: from the warehouse when given, else the release's own rows."""
    status_rows = data.warehouse.get("dialogue_status")
    by_pair: dict[str, Counter] = defaultdict(Counter)
    by_domain: dict[str, Counter] = defaultdict(Counter)
    if status_rows:
        source = "warehouse"
        for r in status_rows:
            pair = f"{r['model_a']} × {r['model_b']}"
            by_pair[pair][r["status"]] += r["n"]
            by_domain[r["domain"]][r["status"]] += r["n"]
    else:
        source = "release"
        for d in data.dialogues:
            pair = f"{d.get('model_a')} × {d.get('model_b')}"
            by_pair[pair]["accepted"] += 1
            by_domain[str(d.get("domain"))]["accepted"] += 1

    def table(groups: dict[str, Counter]) -> list[dict]:
        rows = []
        for key, c in sorted(groups.items()):
            decided = c["accepted"] + c["rejected"] + c["uncertain"]
            rows.append({"key": key, "accepted": c["accepted"], "rejected": c["rejected"],
                         "uncertain": c["uncertain"], "failed": c["failed"], "pending": c["pending"] + c["generated"],
                         "acceptance": round(c["accepted"] / decided, 4) if decided else None})
        return rows

    scores_pair: dict[str, list[float]] = defaultdict(list)
    for d in data.dialogues:
        if d.get("judge_score") is not None:
            scores_pair[f"{d.get('model_a')} × {d.get('model_b')}"].append(float(d["judge_score"]))
    return {"source": source, "by_pair": table(by_pair), "by_domain": table(by_domain),
            "release_judge_score_by_pair": {k: _quantiles(v) for k, v in sorted(scores_pair.items())}}


def release_stats(data: ReleaseData, dailydialog: dict | None = None) -> dict:
    """Every figure of the report as plain data (also written as ``report/stats.json``)."""
    m = data.manifest
    tax = data.taxonomy
    seqs = _emotion_sequences(data)
    final = Counter(e for s in seqs for e in s if e)
    intended = Counter(u.get("intended_emotion") for u in data.utterances if u.get("intended_emotion"))
    label_source = Counter(u.get("label_source") or "unknown" for u in data.utterances)
    names = list(tax.emotion_names) if tax is not None else []
    names += sorted((set(final) | set(intended)) - set(names))

    trans = Counter((a, b) for s in seqs for a, b in zip(s, s[1:]) if a and b)
    n_pairs = sum(trans.values())
    changes = sum(v for (a, b), v in trans.items() if a != b)
    graph_edges = {(a, b) for a, dsts in (tax.transitions.items() if tax is not None else []) for b in dsts}
    on_graph = sum(v for (a, b), v in trans.items() if a != b and (a, b) in graph_edges)
    off_graph = sorted(((a, b, v) for (a, b), v in trans.items() if a != b and (a, b) not in graph_edges),
                       key=lambda x: (-x[2], x[0], x[1]))

    turns = [int(d.get("n_turns") or len(d.get("turns") or [])) for d in data.dialogues]
    words = [count_words(t) for t in _utterance_texts(data)]
    splits = Counter(d.get("split") or "unsplit" for d in data.dialogues)
    difficulty = [float(d["difficulty"]) for d in data.dialogues if d.get("difficulty") is not None]
    buckets = Counter(int(d["bucket"]) for d in data.dialogues if d.get("bucket") is not None)
    judge_scores = [float(d["judge_score"]) for d in data.dialogues if d.get("judge_score") is not None]

    dims: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    verdicts: dict[str, Counter] = defaultdict(Counter)
    for j in data.warehouse.get("judgements", []):
        if j["kind"] != "llm":
            verdicts["checks"][j["verdict"]] += 1
            continue
        verdicts[j["judge_id"]][j["verdict"]] += 1
        for dim in ("coherence", "naturalness", "domain_fit", "safety", "emotion_fidelity"):
            if j.get(dim) is not None:
                dims[j["judge_id"]][dim].append(float(j[dim]))

    # audio: clip table durations, else the files shipped in the release
    audio: dict[str, Any] = {}
    clips = data.warehouse.get("clip_durations") or {}
    turn_durs = list(clips.get("turn") or [])
    mix_durs = list(clips.get("mix") or [])
    missing = 0
    if not turn_durs and any(_audio_ref(u.get("audio")) for u in data.utterances):
        for u in data.utterances:
            ref = _audio_ref(u.get("audio"))
            if ref:
                dur = _audio_duration(data.release_dir / ref)
                (turn_durs.append(dur) if dur is not None else None)
                missing += dur is None
    if not mix_durs:
        for d in data.dialogues:
            ref = _audio_ref(d.get("audio_mix"))
            if ref:
                dur = _audio_duration(data.release_dir / ref)
                if dur is not None:
                    mix_durs.append(dur)
    if turn_durs or mix_durs:
        audio = {"turn_seconds": _quantiles(turn_durs), "mix_seconds": _quantiles(mix_durs),
                 "total_seconds": round(sum(mix_durs) or sum(turn_durs), 3),
                 "total_hours": round((sum(mix_durs) or sum(turn_durs)) / 3600, 4), "unreadable": missing,
                 "turn_values": turn_durs, "mix_values": mix_durs}

    erc7: Counter = Counter()
    if data.utterances and "label_erc7" in data.utterances[0]:
        erc7 = Counter(u.get("label_erc7") for u in data.utterances if u.get("label_erc7"))
    elif tax is not None and "erc7" in tax.mappings:
        erc7 = Counter(tax.map_label(e, "erc7") for s in seqs for e in s if e in tax.emotion)

    out = {
        "version": m.get("version") or data.release_dir.name,
        "parent": m.get("parent"),
        "created": m.get("created_at") or m.get("created"),
        "code_version": m.get("code_version"),
        "config_fingerprint": m.get("config_fingerprint") or m.get("config"),
        "taxonomy": tax.name if tax is not None else (m.get("taxonomy") if isinstance(m.get("taxonomy"), str) else None),
        "n_dialogues": len(data.dialogues),
        "n_utterances": len(data.utterances) or sum(turns),
        "splits": dict(sorted(splits.items())),
        "emotions": {"labels": names, "final": {k: final.get(k, 0) for k in names},
                     "intended": {k: intended.get(k, 0) for k in names}, "label_source": dict(sorted(label_source.items())),
                     "final_equals_intended": (round(sum(1 for u in data.utterances if u.get("emotion") == u.get("intended_emotion"))
                                                     / len(data.utterances), 4) if data.utterances else None),
                     "erc7": {k: erc7.get(k, 0) for k in DD_LABELS} if erc7 else {}},
        "transitions": {
            "pairs": n_pairs, "changes": changes,
            "change_rate": round(changes / n_pairs, 4) if n_pairs else None,
            "on_graph_share": round(on_graph / changes, 4) if changes and graph_edges else None,
            "graph_edges": len(graph_edges),
            "graph_edges_used": len({(a, b) for (a, b) in trans if (a, b) in graph_edges}),
            "off_graph_top": [{"from": a, "to": b, "n": v} for a, b, v in off_graph[:10]],
            "matrix": {a: {b: trans.get((a, b), 0) for b in names if trans.get((a, b))} for a in names
                       if any(trans.get((a, b)) for b in names)},
        },
        "turns_per_dialogue": _quantiles([float(x) for x in turns]),
        "turns_hist": {str(k): v for k, v in sorted(Counter(turns).items())},
        "words_per_turn": _quantiles([float(x) for x in words]),
        "judge_score": _quantiles(judge_scores),
        "judges": {jid: {"verdicts": dict(sorted(verdicts[jid].items())),
                         **{dim: _quantiles(v) for dim, v in sorted(dims[jid].items())}}
                   for jid in sorted(verdicts)},
        "acceptance": _acceptance(data),
        "difficulty": {**_quantiles(difficulty), "buckets": {str(k): v for k, v in sorted(buckets.items())}},
        "audio": {k: v for k, v in audio.items() if not k.endswith("_values")},
        "agreement": m.get("agreement"),
        "distinct_emotions_per_dialogue": _quantiles([float(len(set(s))) for s in seqs]),
    }
    if dailydialog:
        out["dailydialog"] = {k: v for k, v in dailydialog.items() if not k.endswith("_values")}
    out["_values"] = {"turns": turns, "words": words, "difficulty": difficulty, "buckets": [
        int(d["bucket"]) if d.get("bucket") is not None else -1 for d in data.dialogues if d.get("difficulty") is not None],
        "judge_scores": judge_scores, "dims": {j: dict(v) for j, v in dims.items()},
        "audio_turn": audio.get("turn_values", []), "audio_mix": audio.get("mix_values", []),
        "trans": trans, "graph_edges": graph_edges}
    return out


# ---- plots ----------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "figure.dpi": 100, "savefig.dpi": 100,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})  # no version stamp: same data, same bytes
    _plt().close(fig)
    return path.name


def _hist_bins(values: list[float], others: list[float] | None = None, integer: bool = False, max_bins: int = 40):
    allv = values + (others or [])
    lo, hi = min(allv), max(allv)
    if others:  # a long tail of the reference data would squash the plot: stop at its 99th percentile
        hi = max(max(values), sorted(others)[int(0.99 * (len(others) - 1))])
    if integer:
        lo, hi = math.floor(lo), math.ceil(hi)
        step = max(1, math.ceil((hi - lo + 1) / max_bins))
        return [x - 0.5 for x in range(int(lo), int(hi) + step + 1, step)]
    if hi == lo:
        hi = lo + 1
    n = max(5, min(max_bins, int(math.sqrt(len(allv))) + 1))
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


def _plot_emotions(stats: dict, out: Path) -> str | None:
    e = stats["emotions"]
    labels = [k for k in e["labels"] if e["final"].get(k) or e["intended"].get(k)]
    if not labels:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.25 * len(labels) + 1)))
    ys = list(range(len(labels)))
    ax.barh([y + 0.2 for y in ys], [e["final"].get(k, 0) for k in labels], height=0.4, label="final label")
    if any(e["intended"].values()):
        ax.barh([y - 0.2 for y in ys], [e["intended"].get(k, 0) for k in labels], height=0.4, label="intended", alpha=0.6)
    ax.set_yticks(ys, labels)
    ax.invert_yaxis()
    ax.set_xlabel("utterances")
    ax.set_title("Emotion distribution")
    ax.legend(loc="lower right")
    return _save(fig, out / "emotions.png")


def _plot_transitions(stats: dict, tax, out: Path) -> str | None:
    trans: Counter = stats["_values"]["trans"]
    graph = stats["_values"]["graph_edges"]
    names = [n for n in stats["emotions"]["labels"]]
    if not trans and not graph:
        return None
    plt = _plt()
    n = len(names)
    idx = {k: i for i, k in enumerate(names)}
    obs = [[0.0] * n for _ in range(n)]
    for (a, b), v in trans.items():
        if a in idx and b in idx:
            obs[idx[a]][idx[b]] = float(v)
    for row in obs:  # row-normalise: P(next | current)
        s = sum(row)
        if s:
            row[:] = [x / s for x in row]
    panels = 2 if tax is not None else 1
    size = max(4.0, 0.28 * n + 2)
    fig, axes = plt.subplots(1, panels, figsize=(size * panels, size), squeeze=False)
    ax = axes[0][0]
    im = ax.imshow(obs, cmap="viridis", vmin=0, vmax=max(0.01, max(max(r) for r in obs)))
    off = [(idx[a], idx[b]) for (a, b) in trans if a != b and (a, b) not in graph and a in idx and b in idx] if graph else []
    if off:
        ax.scatter([j for i, j in off], [i for i, j in off], marker="x", color="red", s=12, label="not in graph")
        ax.legend(loc="upper right", fontsize=7)
    ax.set_title("Observed transitions P(next | current)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if tax is not None:
        adj = [[1.0 if (a, b) in graph else 0.0 for b in names] for a in names]
        axes[0][1].imshow(adj, cmap="Greys", vmin=0, vmax=1)
        axes[0][1].set_title(f"Configured graph ({tax.name}, {len(graph)} edges)")
    for ax in axes[0]:
        ax.set_xticks(range(n), names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
        ax.set_xlabel("next emotion")
        ax.set_ylabel("current emotion")
    return _save(fig, out / "transitions.png")


def _plot_hist(values: list[float], out: Path, name: str, title: str, xlabel: str, integer: bool = False,
               compare: list[float] | None = None, compare_label: str = "DailyDialog") -> str | None:
    if not values:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = _hist_bins(values, compare, integer=integer)
    density = bool(compare)
    ax.hist(values, bins=bins, density=density, alpha=0.75, label="this release")
    if compare:
        ax.hist([min(c, bins[-1]) for c in compare], bins=bins, density=True, alpha=0.5, label=compare_label,
                histtype="stepfilled")
        ax.legend()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share" if density else "count")
    return _save(fig, out / name)


def _plot_judges(stats: dict, out: Path) -> str | None:
    scores = stats["_values"]["judge_scores"]
    dims = stats["_values"]["dims"]
    panels = ([("release judge_score", None, scores)] if scores else []) + [
        (f"{jid}: {dim}", jid, vals) for jid, d in sorted(dims.items()) for dim, vals in sorted(d.items()) if vals]
    if not panels:
        return None
    panels = panels[:12]
    plt = _plt()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (title, _, vals) in zip([a for r in axes for a in r], panels):
        integer = all(float(v).is_integer() for v in vals)
        ax.hist(vals, bins=_hist_bins(vals, integer=integer, max_bins=20))
        ax.set_title(title, fontsize=8)
    for ax in [a for r in axes for a in r][len(panels):]:
        ax.axis("off")
    fig.suptitle("Judge score distributions")
    return _save(fig, out / "judge_scores.png")


def _plot_acceptance(stats: dict, out: Path) -> str | None:
    acc = stats["acceptance"]
    if not acc["by_pair"] and not acc["by_domain"]:
        return None
    plt = _plt()
    pairs = acc["by_pair"]
    doms = acc["by_domain"]
    h = max(3.0, 0.22 * len(doms) + 1.2)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, h), gridspec_kw={"width_ratios": [1, 1.2]})
    for ax, rows, title in ((a1, pairs, "by model pair"), (a2, doms, "by domain")):
        keys = [r["key"] for r in rows]
        if acc["source"] == "warehouse":
            vals = [r["acceptance"] or 0.0 for r in rows]
            ax.barh(range(len(keys)), vals, color="tab:green")
            ax.set_xlim(0, 1)
            ax.set_xlabel("accepted / decided")
            for y, r in enumerate(rows):
                ax.text(0.01, y, f"{r['accepted']}/{r['accepted'] + r['rejected'] + r['uncertain']}", va="center", fontsize=6)
        else:
            ax.barh(range(len(keys)), [r["accepted"] for r in rows])
            ax.set_xlabel("dialogues in release")
        ax.set_yticks(range(len(keys)), keys, fontsize=7 if len(keys) < 30 else 5)
        ax.invert_yaxis()
        ax.set_title(f"Acceptance {title}")
    return _save(fig, out / "acceptance.png")


def _plot_difficulty(stats: dict, out: Path) -> str | None:
    vals = stats["_values"]["difficulty"]
    if not vals:
        return None
    plt = _plt()
    buckets = stats["_values"]["buckets"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = _hist_bins(vals)
    groups = sorted(set(buckets))
    ax.hist([[v for v, b in zip(vals, buckets) if b == g] for g in groups], bins=bins, stacked=True,
            label=[f"bucket {g}" if g >= 0 else "no bucket" for g in groups])
    ax.legend()
    ax.set_title("Difficulty (PRC-Emo DIF) by curriculum bucket")
    ax.set_xlabel("difficulty")
    ax.set_ylabel("dialogues")
    return _save(fig, out / "difficulty.png")


def _plot_audio(stats: dict, out: Path) -> str | None:
    t, m = stats["_values"]["audio_turn"], stats["_values"]["audio_mix"]
    if not t and not m:
        return None
    plt = _plt()
    panels = [(v, ttl) for v, ttl in ((t, "per-turn clips"), (m, "dialogue mixes")) if v]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3), squeeze=False)
    for ax, (vals, ttl) in zip(axes[0], panels):
        ax.hist(vals, bins=_hist_bins(vals))
        ax.set_title(f"Audio durations: {ttl}")
        ax.set_xlabel("seconds")
    return _save(fig, out / "audio_durations.png")


def _flatten_numbers(obj, prefix: str = "") -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    if isinstance(obj, bool):
        return out
    if isinstance(obj, (int, float)):
        return [(prefix or "value", float(obj))]
    if isinstance(obj, dict):
        for k in sorted(obj):
            out += _flatten_numbers(obj[k], f"{prefix}.{k}" if prefix else str(k))
    return out


def _plot_agreement(stats: dict, out: Path) -> str | None:
    nums = [(k, v) for k, v in _flatten_numbers(stats.get("agreement")) if -1.0 <= v <= 1.0]
    if not nums:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, max(2.2, 0.3 * len(nums) + 1)))
    ax.barh(range(len(nums)), [v for _, v in nums], color="tab:purple")
    ax.set_yticks(range(len(nums)), [k for k, _ in nums], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(min(0.0, min(v for _, v in nums)), 1)
    ax.set_title("Inter-annotator agreement")
    return _save(fig, out / "agreement.png")


def _plot_compare_emotions(stats: dict, dd: dict, out: Path) -> str | None:
    ours = stats["emotions"]["erc7"]
    if not ours:
        return None
    plt = _plt()
    tot_o = sum(ours.values()) or 1
    tot_d = sum(dd["emotions_erc7"].values()) or 1
    xs = list(range(len(DD_LABELS)))
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ax.bar([x - 0.2 for x in xs], [ours.get(k, 0) / tot_o for k in DD_LABELS], width=0.4, label="this release (erc7)")
    ax.bar([x + 0.2 for x in xs], [dd["emotions_erc7"].get(k, 0) / tot_d for k in DD_LABELS], width=0.4, label="DailyDialog")
    ax.set_xticks(xs, DD_LABELS)
    ax.set_ylabel("share of utterances")
    ax.set_title("Emotions (7 ERC classes): release vs DailyDialog")
    ax.legend()
    return _save(fig, out / "compare_emotions.png")


# ---- HTML -------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;line-height:1.45}
h1{margin-bottom:.2rem} h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem} td,th{border:1px solid #ddd;padding:.25rem .55rem;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left} img{max-width:100%;border:1px solid #eee}
.muted{color:#777;font-size:.9rem} .dlg{background:#fafafa;border:1px solid #eee;padding:.6rem 1rem;margin:.6rem 0}
.turn{margin:.15rem 0} .emo{display:inline-block;min-width:7.5rem;color:#555;font-size:.8rem} .warn{color:#a40}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(name: str | None, alt: str) -> str:
    return f'<p><img src="{_e(name)}" alt="{_e(alt)}"></p>' if name else f'<p class="muted">No data for: {_e(alt)}.</p>'


def _q_row(label: str, q: dict) -> list:
    return [label, q.get("n"), q.get("mean"), q.get("median"), q.get("p10"), q.get("p90"), q.get("min"), q.get("max")]


_Q_HEAD = ["", "n", "mean", "median", "p10", "p90", "min", "max"]


def _sample_dialogues(data: ReleaseData, k: int = 3) -> str:
    parts = []
    for d in data.dialogues[:k]:
        turns = sorted(d.get("turns") or [], key=lambda t: t.get("idx") or 0)
        lines = "".join(
            f'<div class="turn"><span class="emo">{_e(t.get("speaker"))} · {_e(t.get("emotion"))}</span> {_e(t.get("text"))}</div>'
            for t in turns)
        parts.append(f'<div class="dlg"><div class="muted">{_e(d.get("dialogue_id"))} · {_e(d.get("domain"))} · '
                     f'{_e(d.get("model_a"))} × {_e(d.get("model_b"))}</div>{lines}</div>')
    return "".join(parts)


def render_html(stats: dict, plots: dict[str, str | None], data: ReleaseData) -> str:
    s = stats
    dd = s.get("dailydialog")
    tr = s["transitions"]
    sec: list[str] = []
    sec.append(f"<h1>Release {_e(s['version'])}</h1>")
    sec.append('<p class="muted">' + " · ".join(_e(x) for x in (
        f"taxonomy {s['taxonomy']}" if s.get("taxonomy") else None, f"parent {s['parent']}" if s.get("parent") else None,
        f"created {s['created']}" if s.get("created") else None,
        f"code {s['code_version']}" if s.get("code_version") else None,
        f"config {s['config_fingerprint']}" if s.get("config_fingerprint") else None) if x) + "</p>")
    sec.append(_table(["", "dialogues", "utterances"], [["total", s["n_dialogues"], s["n_utterances"]]]))
    sec.append("<h2>Splits</h2>" + _table(["split", "dialogues"], sorted(s["splits"].items())))

    sec.append("<h2>Emotion distribution</h2>" + _img(plots.get("emotions"), "emotion distribution"))
    e = s["emotions"]
    sec.append(f"<p>Final label equals the intended emotion for {_e(_fmt(e['final_equals_intended']))} of the utterances; "
               f"label sources: {_e(', '.join(f'{k} {v}' for k, v in e['label_source'].items()) or '–')}.</p>")

    sec.append("<h2>Emotion transitions</h2>" + _img(plots.get("transitions"), "transition heatmap and configured graph"))
    sec.append(_table(["consecutive pairs", "emotion changes", "change rate", "changes on graph edges",
                       "graph edges used"],
                      [[tr["pairs"], tr["changes"], tr["change_rate"], tr["on_graph_share"],
                        f"{tr['graph_edges_used']} / {tr['graph_edges']}"]]))
    if tr["off_graph_top"]:
        sec.append('<p class="warn">Most frequent transitions that are not edges of the configured graph '
                   "(human relabels or a generator that left the graph):</p>"
                   + _table(["from", "to", "n"], [[r["from"], r["to"], r["n"]] for r in tr["off_graph_top"]]))

    sec.append("<h2>Turns per dialogue and words per turn</h2>")
    sec.append(_img(plots.get("turns"), "turns per dialogue") + _img(plots.get("words"), "words per turn"))
    rows = [_q_row("turns per dialogue", s["turns_per_dialogue"]), _q_row("words per turn", s["words_per_turn"])]
    if dd:
        rows += [_q_row("DailyDialog turns per dialogue", dd["turns_per_dialogue"]),
                 _q_row("DailyDialog words per turn", dd["words_per_turn"])]
    sec.append(_table(_Q_HEAD, rows))

    sec.append("<h2>Judge scores</h2>" + _img(plots.get("judges"), "judge score distributions"))
    jrows = [_q_row("release judge_score", s["judge_score"])]
    for jid, j in s["judges"].items():
        for dim in ("coherence", "naturalness", "domain_fit", "safety", "emotion_fidelity"):
            if dim in j:
                jrows.append(_q_row(f"{jid} · {dim}", j[dim]))
    sec.append(_table(_Q_HEAD, jrows))
    if s["judges"]:
        sec.append(_table(["judge", "verdicts"], [[jid, ", ".join(f"{k} {v}" for k, v in j["verdicts"].items())]
                                                  for jid, j in s["judges"].items()]))

    acc = s["acceptance"]
    sec.append("<h2>Acceptance by model pair and domain</h2>" + _img(plots.get("acceptance"), "acceptance"))
    sec.append(f'<p class="muted">Source: {"every generated dialogue in the warehouse (accepted / accepted+rejected+uncertain)" if acc["source"] == "warehouse" else "the release only (no warehouse given: counts of released dialogues)"}.</p>')
    head = ["", "accepted", "rejected", "uncertain", "failed", "pending", "acceptance"]
    sec.append(_table(["model pair"] + head[1:], [[r["key"], r["accepted"], r["rejected"], r["uncertain"], r["failed"],
                                                   r["pending"], r["acceptance"]] for r in acc["by_pair"]]))
    sec.append("<details><summary>by domain</summary>" + _table(
        ["domain"] + head[1:], [[r["key"], r["accepted"], r["rejected"], r["uncertain"], r["failed"], r["pending"],
                                 r["acceptance"]] for r in acc["by_domain"]]) + "</details>")

    d = s["difficulty"]
    sec.append("<h2>Difficulty</h2>" + _img(plots.get("difficulty"), "difficulty histogram"))
    sec.append(_table(_Q_HEAD, [_q_row("difficulty", d)]) + _table(["bucket", "dialogues"], sorted(d["buckets"].items())))

    if s["audio"]:
        a = s["audio"]
        sec.append("<h2>Audio</h2>" + _img(plots.get("audio"), "audio durations"))
        sec.append(_table(_Q_HEAD, [_q_row("turn clip seconds", a["turn_seconds"]), _q_row("mix seconds", a["mix_seconds"])]))
        sec.append(f"<p>Total audio: {_e(_fmt(a['total_hours']))} h" +
                   (f'; <span class="warn">{_e(a["unreadable"])} clip(s) unreadable</span>' if a.get("unreadable") else "") + "</p>")

    if s.get("agreement") is not None:
        sec.append("<h2>Inter-annotator agreement</h2>" + _img(plots.get("agreement"), "agreement"))
        sec.append(_table(["measure", "value"], _flatten_numbers(s["agreement"])))

    if dd:
        sec.append("<h2>Compared with DailyDialog</h2>")
        sec.append(f'<p class="muted">{_e(dd["source"])}: {_e(_fmt(dd["n_dialogues"]))} dialogues, '
                   f'{_e(_fmt(dd["n_utterances"]))} utterances (human-written, 7 emotion classes).</p>')
        sec.append(_img(plots.get("compare_emotions"), "emotions vs DailyDialog"))
        ours7 = e["erc7"]
        tot_o, tot_d = sum(ours7.values()) or 1, sum(dd["emotions_erc7"].values()) or 1
        sec.append(_table(["", "this release", "DailyDialog"], [
            ["dialogues", s["n_dialogues"], dd["n_dialogues"]],
            ["utterances", s["n_utterances"], dd["n_utterances"]],
            ["mean turns per dialogue", s["turns_per_dialogue"]["mean"], dd["turns_per_dialogue"]["mean"]],
            ["mean words per turn", s["words_per_turn"]["mean"], dd["words_per_turn"]["mean"]],
            ["emotion change rate", tr["change_rate"], dd["emotion_change_rate"]],
            ["mean distinct emotions per dialogue", s["distinct_emotions_per_dialogue"]["mean"],
             dd["distinct_emotions_per_dialogue"]["mean"]],
        ] + ([[f"share {k}", round(ours7.get(k, 0) / tot_o, 4), round(dd["emotions_erc7"].get(k, 0) / tot_d, 4)]
              for k in DD_LABELS] if ours7 else [])))

    sec.append("<h2>Sample dialogues</h2>" + (_sample_dialogues(data) or '<p class="muted">none</p>'))
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>emoforge release {_e(s['version'])}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(sec) + '\n<p class="muted">Figures as data: <a href="stats.json">stats.json</a>.</p>'
            "\n</body></html>\n")


# ---- entry point ------------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_leftovers(final: Path) -> None:
    """Remove what a killed writer left next to ``final`` (``.<name>.tmp-<pid>``, ``.<name>.old-<pid>``); when the
    kill came between the two renames, the previous report is put back first."""
    for p in sorted(final.parent.glob(f".{final.name}.*-*")):
        m = re.fullmatch(rf"\.{re.escape(final.name)}\.(tmp|old)-(\d+)", p.name)
        if not m or _pid_alive(int(m.group(2))):
            continue
        if m.group(1) == "old" and not final.exists():
            os.replace(p, final)
        else:
            shutil.rmtree(p, ignore_errors=True)


def write_report(release_dir: Path, *, taxonomy=None, home: Path | None = None, manifest: dict | None = None,
                 compare_dailydialog: Path | None = None, out_dir: Path | None = None) -> Path:
    """Write ``<release>/report/index.html`` + PNG plots + ``stats.json``; returns the HTML path.

    ``taxonomy``: a :class:`~schemas.taxonomy.Taxonomy`, a preset name or file, or ``None`` for the manifest's.
    ``home``: the emoforge home, for figures only the warehouse has (judges, acceptance, clip durations).
    ``manifest``: the release manifest when ``manifest.json`` is not written yet (publish builds the report first).
    ``compare_dailydialog``: a DailyDialog folder (``../shared/benchdata/dailydialog``) to compare with.
    ``out_dir``: write somewhere else than ``<release>/report`` (the release itself is never modified then).
    """
    release_dir = Path(release_dir)
    data = load_release(release_dir, taxonomy, home, manifest)
    dd = dailydialog_stats(Path(compare_dailydialog)) if compare_dailydialog else None
    stats = release_stats(data, dd)

    final = Path(out_dir) if out_dir else release_dir / REPORT_DIR
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _sweep_leftovers(final)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        plots = {
            "emotions": _plot_emotions(stats, tmp),
            "transitions": _plot_transitions(stats, data.taxonomy, tmp),
            "turns": _plot_hist([float(x) for x in stats["_values"]["turns"]], tmp, "turns_per_dialogue.png",
                                "Turns per dialogue", "turns", integer=True,
                                compare=[float(x) for x in dd["turns_values"]] if dd else None),
            "words": _plot_hist([float(x) for x in stats["_values"]["words"]], tmp, "words_per_turn.png",
                                "Words per turn", "words", integer=True,
                                compare=[float(x) for x in dd["words_values"]] if dd else None),
            "judges": _plot_judges(stats, tmp),
            "acceptance": _plot_acceptance(stats, tmp),
            "difficulty": _plot_difficulty(stats, tmp),
            "audio": _plot_audio(stats, tmp),
            "agreement": _plot_agreement(stats, tmp),
            "compare_emotions": _plot_compare_emotions(stats, dd, tmp) if dd else None,
        }
        page = render_html(stats, plots, data)
        tax = data.taxonomy
        erc7 = [[tax.map_label(e, "erc7") for e in s if e in tax.emotion] for s in _emotion_sequences(data)] \
            if tax is not None and "erc7" in tax.mappings else None
        extra_html, extra_data, extra_plots = extra_sections(release_dir, home, erc7, tmp)  # evaluation, real dynamics
        page = page.replace("<h2>Sample dialogues</h2>", extra_html + "\n<h2>Sample dialogues</h2>", 1)
        plots.update(extra_plots)
        public = {k: v for k, v in stats.items() if k != "_values"} | extra_data
        public["plots"] = {k: v for k, v in plots.items() if v}
        (tmp / "stats.json").write_text(json.dumps(public, indent=2, sort_keys=True, default=str) + "\n")
        (tmp / "index.html").write_text(page, encoding="utf-8")
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if final.exists():
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except OSError:
            if old.exists():
                os.replace(old, final)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ReportError(f"cannot write the report to {final}: {exc.strerror or exc}"
                          + (" (disk full or file size limit reached)" if getattr(exc, "errno", None) in (27, 28) else "")
                          ) from None
    return final / "index.html"
