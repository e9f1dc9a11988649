"""Every figure of the release report as plain data (written as ``report/stats.json``)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.stats import quantiles
from schemas.text import count_words_column
from warehouse.importers.labels import ERC7
from warehouse.difficulty_table import dictionary_codes
from warehouse.report.data import ReleaseData, _audio_duration, _audio_ref


@dataclass
class Sequences:
    """The emotion sequences of a release's dialogues as flat columns: ``labels`` (every label, dialogue after
    dialogue, each in turn order; None for a missing one) and ``parents`` (the index of its sequence; dialogues
    without labels have none)."""

    labels: pa.Array
    parents: np.ndarray
    n: int

    def as_lists(self) -> list[list]:
        out: list[list] = [[] for _ in range(self.n)]
        for p, e in zip(self.parents.tolist(), self.labels.to_pylist()):
            out[p].append(e)
        return out

    def codes(self) -> tuple[list[str], np.ndarray]:
        """(distinct labels, the code of every label: its index there; -1 for None or "")."""
        names, codes = dictionary_codes(self.labels)
        empty = [i for i, n in enumerate(names) if not n]
        if empty:
            codes[np.isin(codes, empty)] = -1
        return names, codes


def emotion_sequences(data: ReleaseData) -> Sequences:
    """The emotion sequence of every dialogue (its ``emotions`` list; without dialogue files, the utterances'
    labels in turn order)."""
    dlg = data.dialogue_table
    if "emotions" in dlg.column_names and dlg.num_rows:
        lists = dlg.column("emotions").combine_chunks()
        lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
        if lengths.sum():
            lists = lists.filter(pa.array(lengths > 0))
            return Sequences(pc.list_flatten(lists), np.repeat(np.arange(len(lists)), lengths[lengths > 0]),
                             len(lists))
    utt = data.utterances
    if not utt.num_rows or not {"dialogue_id", "utterance_idx", "emotion"} <= set(utt.column_names):
        return Sequences(pa.array([], pa.string()), np.zeros(0, np.int64), 0)
    rows = utt.select(["dialogue_id", "utterance_idx", "emotion"]).sort_by(
        [("dialogue_id", "ascending"), ("utterance_idx", "ascending")])
    ids = pc.dictionary_encode(rows.column("dialogue_id").combine_chunks()).indices.to_numpy(zero_copy_only=False)
    parents = np.cumsum(np.diff(ids, prepend=-1) != 0) - 1  # rows are sorted: a dialogue's rows are contiguous
    return Sequences(rows.column("emotion").combine_chunks(), parents, int(parents[-1]) + 1)


def _transitions(seqs: Sequences) -> tuple[Counter, list[float]]:
    """Consecutive label pairs (both labels present) and how often each occurs; distinct labels per sequence."""
    names, codes = seqs.codes()
    k = len(names) + 1
    same = seqs.parents[1:] == seqs.parents[:-1]
    ok = same & (codes[:-1] >= 0) & (codes[1:] >= 0)
    pair = codes[:-1][ok] * k + codes[1:][ok]
    trans = Counter({(names[c // k], names[c % k]): int(n) for c, n in zip(*np.unique(pair, return_counts=True))})
    # a missing label counts as one distinct value of its sequence, as set() would count None
    distinct = np.unique(seqs.parents * k + np.where(codes >= 0, codes, k - 1))
    per_seq = np.bincount(distinct // k, minlength=seqs.n)
    return trans, per_seq.astype(float)


def _columns(table, *names: str) -> list[list]:
    """Columns of an Arrow table as Python lists (a missing column: all None)."""
    return [table.column(n).to_pylist() if n in table.column_names else [None] * table.num_rows for n in names]


def _present(table, name: str) -> list:
    """The non-null values of a column as Python objects (a missing column: none): a text-only release has no
    audio column, and an audio column of a release without clips is all null."""
    return pc.drop_null(table.column(name)).to_pylist() if name in table.column_names else []


def _counts(table, name: str) -> Counter:
    """Non-null values of a column and how often each occurs (vectorised)."""
    if name not in table.column_names or not table.num_rows:
        return Counter()
    vc = pc.value_counts(table.column(name))
    return Counter({v: n for v, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()) if v})


def _value_counts(table, name: str) -> Counter:
    """Every non-null value of a column and how often it occurs (falsy values included)."""
    if name not in table.column_names or not table.num_rows:
        return Counter()
    vc = pc.value_counts(pc.drop_null(table.column(name)))
    return Counter(dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())))


def _numbers(table, name: str, dtype=float) -> np.ndarray:
    """The non-null values of a numeric column as a NumPy array (a missing column: empty)."""
    if name not in table.column_names:
        return np.zeros(0, dtype)
    col = table.column(name)
    return pc.drop_null(col).to_numpy().astype(dtype) if col.null_count < len(col) else np.zeros(0, dtype)


def _words(data: ReleaseData) -> np.ndarray:
    """Words of every utterance: the release's ``n_words`` (publish counts it from the text by schemas.text's rule),
    or, for a release folder without that column, the same rule over its texts."""
    utt = data.utterances
    if utt.num_rows and "n_words" in utt.column_names and utt.column("n_words").null_count == 0:
        return utt.column("n_words").to_numpy().astype(np.int64)
    if utt.num_rows and "text" in utt.column_names:
        return np.asarray(count_words_column(utt.column("text")), dtype=np.int64)
    return np.zeros(0, np.int64)  # no utterance texts: nothing to count


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
        for a, b, dom in zip(*_columns(data.dialogue_table, "model_a", "model_b", "domain")):
            by_pair[f"{a} × {b}"]["accepted"] += 1
            by_domain[str(dom)]["accepted"] += 1

    def table(groups: dict[str, Counter]) -> list[dict]:
        rows = []
        for key, c in sorted(groups.items()):
            decided = c["accepted"] + c["rejected"] + c["uncertain"]
            rows.append({"key": key, "accepted": c["accepted"], "rejected": c["rejected"],
                         "uncertain": c["uncertain"], "failed": c["failed"], "pending": c["pending"] + c["generated"],
                         "acceptance": round(c["accepted"] / decided, 4) if decided else None})
        return rows

    scores_pair: dict[str, list[float]] = defaultdict(list)
    for a, b, score in zip(*_columns(data.dialogue_table, "model_a", "model_b", "judge_score")):
        if score is not None:
            scores_pair[f"{a} × {b}"].append(float(score))
    return {"source": source, "by_pair": table(by_pair), "by_domain": table(by_domain),
            "release_judge_score_by_pair": {k: quantiles(v) for k, v in sorted(scores_pair.items())}}


def _judge_figures(data: ReleaseData) -> tuple[dict[str, dict[str, list[float]]], dict[str, Counter]]:
    """Per LLM judge: its scores per rubric dimension; per judge (and the checks): its verdict counts."""
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

    return dims, verdicts


def _audio_figures(data: ReleaseData) -> dict[str, Any]:
    """Audio durations: from the warehouse's clip table, else from the files shipped in the release."""
    audio: dict[str, Any] = {}
    clips = data.warehouse.get("clip_durations") or {}
    turn_durs = list(clips.get("turn") or [])
    mix_durs = list(clips.get("mix") or [])
    missing = 0
    refs = _present(data.utterances, "audio")
    if not turn_durs and any(_audio_ref(r) for r in refs):
        for r in refs:
            ref = _audio_ref(r)
            if ref:
                dur = _audio_duration(data.release_dir / ref)
                (turn_durs.append(dur) if dur is not None else None)
                missing += dur is None
    if not mix_durs:
        for mix in _present(data.dialogue_table, "audio_mix"):
            ref = _audio_ref(mix)
            if ref:
                dur = _audio_duration(data.release_dir / ref)
                if dur is not None:
                    mix_durs.append(dur)
    if turn_durs or mix_durs:
        audio = {"turn_seconds": quantiles(turn_durs), "mix_seconds": quantiles(mix_durs),
                 "total_seconds": round(sum(mix_durs) or sum(turn_durs), 3),
                 "total_hours": round((sum(mix_durs) or sum(turn_durs)) / 3600, 4), "unreadable": missing,
                 "turn_values": turn_durs, "mix_values": mix_durs}

    return audio


def _emotion_figures(data: ReleaseData, seqs: Sequences) -> dict:
    """Final and intended label counts, label sources, erc7 classes, and the label names in the taxonomy's order."""
    tax, utt = data.taxonomy, data.utterances
    final = _counts(pa.table({"e": seqs.labels}), "e")  # non-empty labels
    intended = _counts(utt, "intended_emotion")
    label_source = Counter({k or "unknown": v for k, v in _counts(utt, "label_source").items()})
    if utt.num_rows and sum(label_source.values()) < utt.num_rows:
        label_source["unknown"] += utt.num_rows - sum(label_source.values())
    names = list(tax.emotion_names) if tax is not None else []
    names += sorted((set(final) | set(intended)) - set(names))
    erc7: Counter = Counter()
    if utt.num_rows and "label_erc7" in utt.column_names:
        erc7 = _counts(utt, "label_erc7")
    elif tax is not None and "erc7" in tax.mappings:
        for e, n in final.items():
            if e in tax.emotion:
                erc7[tax.map_label(e, "erc7")] += n
    same = None
    if utt.num_rows:  # a missing value equals a missing value (a missing column: all missing)
        a, b = (utt.column(c) if c in utt.column_names else pa.nulls(utt.num_rows, pa.string())
                for c in ("emotion", "intended_emotion"))
        eq = pc.or_(pc.fill_null(pc.equal(a, b), False), pc.and_(pc.is_null(a), pc.is_null(b)))
        same = round(pc.sum(eq).as_py() / utt.num_rows, 4)
    return {"labels": names, "final": {k: final.get(k, 0) for k in names},
            "intended": {k: intended.get(k, 0) for k in names}, "label_source": dict(sorted(label_source.items())),
            "final_equals_intended": same, "erc7": {k: erc7.get(k, 0) for k in ERC7} if erc7 else {}}


def _transition_figures(trans: Counter, names: list[str], graph_edges: set) -> dict:
    n_pairs = sum(trans.values())
    changes = sum(v for (a, b), v in trans.items() if a != b)
    on_graph = sum(v for (a, b), v in trans.items() if a != b and (a, b) in graph_edges)
    off_graph = sorted(((a, b, v) for (a, b), v in trans.items() if a != b and (a, b) not in graph_edges),
                       key=lambda x: (-x[2], x[0], x[1]))
    return {
        "pairs": n_pairs, "changes": changes,
        "change_rate": round(changes / n_pairs, 4) if n_pairs else None,
        "on_graph_share": round(on_graph / changes, 4) if changes and graph_edges else None,
        "graph_edges": len(graph_edges),
        "graph_edges_used": len({(a, b) for (a, b) in trans if (a, b) in graph_edges}),
        "off_graph_top": [{"from": a, "to": b, "n": v} for a, b, v in off_graph[:10]],
        "matrix": {a: {b: trans.get((a, b), 0) for b in names if trans.get((a, b))} for a in names
                   if any(trans.get((a, b)) for b in names)},
    }


def _dialogue_values(dlg: pa.Table) -> dict[str, Any]:
    """Per-dialogue columns of the figures: turns, split counts, difficulty and its bucket, judge scores."""
    n = dlg.num_rows
    turns = (pc.fill_null(dlg.column("n_turns"), 0).to_numpy().astype(np.int64) if "n_turns" in dlg.column_names
             else np.zeros(n, np.int64))
    split = dlg.column("split") if "split" in dlg.column_names else pa.nulls(n, pa.string())
    split = pc.if_else(pc.fill_null(pc.equal(split, ""), True), "unsplit", split) if n else split
    difficulty, buckets = np.zeros(0), np.zeros(0, np.int64)
    if "difficulty" in dlg.column_names:
        has = pc.is_valid(dlg.column("difficulty"))
        difficulty = _numbers(dlg, "difficulty")
        bucket = dlg.column("bucket") if "bucket" in dlg.column_names else pa.nulls(n, pa.int64())
        buckets = pc.fill_null(pc.filter(bucket, has), -1).to_numpy().astype(np.int64) if n else buckets
    return {"turns": turns, "splits": Counter(_counts(pa.table({"s": split}), "s")) if n else Counter(),
            "difficulty": difficulty, "buckets": buckets, "bucket_counts": _value_counts(dlg, "bucket"),
            "judge_scores": _numbers(dlg, "judge_score")}


def release_stats(data: ReleaseData, dailydialog: dict | None = None) -> dict:
    """Every figure of the report as plain data (also written as ``report/stats.json``)."""
    m = data.manifest
    tax = data.taxonomy
    utt = data.utterances
    seqs = emotion_sequences(data)
    trans, distinct = _transitions(seqs)
    emotions = _emotion_figures(data, seqs)
    graph_edges = {(a, b) for a, dsts in (tax.transitions.items() if tax is not None else []) for b in dsts}
    dv = _dialogue_values(data.dialogue_table)
    turns, words = dv["turns"], _words(data)
    dims, verdicts = _judge_figures(data)
    audio = _audio_figures(data)
    out = {
        "version": m.get("version") or data.release_dir.name,
        "parent": m.get("parent"),
        "quarantine": m.get("quarantine"),
        "created": m.get("created_at") or m.get("created"),
        "code_version": m.get("code_version"),
        "config_fingerprint": m.get("config_fingerprint") or m.get("config"),
        "taxonomy": tax.name if tax is not None else (m.get("taxonomy") if isinstance(m.get("taxonomy"), str) else None),
        "n_dialogues": data.dialogue_table.num_rows,
        "n_utterances": utt.num_rows or int(turns.sum()),
        "splits": dict(sorted(dv["splits"].items())),
        "emotions": emotions,
        "transitions": _transition_figures(trans, emotions["labels"], graph_edges),
        "turns_per_dialogue": quantiles(turns),
        "turns_hist": {str(k): int(v) for k, v in zip(*np.unique(turns, return_counts=True))},
        "words_per_turn": quantiles(words),
        "judge_score": quantiles(dv["judge_scores"]),
        "judges": {jid: {"verdicts": dict(sorted(verdicts[jid].items())),
                         **{dim: quantiles(v) for dim, v in sorted(dims[jid].items())}}
                   for jid in sorted(verdicts)},
        "acceptance": _acceptance(data),
        "difficulty": {**quantiles(dv["difficulty"]),
                       "buckets": {str(k): v for k, v in sorted(dv["bucket_counts"].items())}},
        "audio": {k: v for k, v in audio.items() if not k.endswith("_values")},
        "agreement": m.get("agreement"),
        "distinct_emotions_per_dialogue": quantiles(distinct),
    }
    if dailydialog:
        out["dailydialog"] = {k: v for k, v in dailydialog.items() if not k.endswith("_values")}
    out["_values"] = {"turns": turns, "words": words, "difficulty": dv["difficulty"], "buckets": dv["buckets"],
                      "judge_scores": dv["judge_scores"], "dims": {j: dict(v) for j, v in dims.items()},
                      "audio_turn": audio.get("turn_values", []), "audio_mix": audio.get("mix_values", []),
                      "trans": trans, "graph_edges": graph_edges}
    return out


def flatten_numbers(obj, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, number) of every number in a nested dict (the agreement figures)."""
    out: list[tuple[str, float]] = []
    if isinstance(obj, bool):
        return out
    if isinstance(obj, (int, float)):
        return [(prefix or "value", float(obj))]
    if isinstance(obj, dict):
        for k in sorted(obj):
            out += flatten_numbers(obj[k], f"{prefix}.{k}" if prefix else str(k))
    return out
