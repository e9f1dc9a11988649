"""Every figure of the release report as plain data (written as ``report/stats.json``)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pyarrow.compute as pc

from schemas.stats import quantiles
from schemas.text import count_words, count_words_column
from warehouse.importers.labels import ERC7
from warehouse.report.data import ReleaseData, _audio_duration, _audio_ref


def emotion_sequences(data: ReleaseData) -> list[list[str]]:
    seqs = []
    for d in data.dialogues:
        turns = d.get("turns")
        if turns:
            seqs.append([t.get("emotion") for t in sorted(turns, key=lambda t: t.get("idx") or 0)])
        elif d.get("emotions"):
            seqs.append(list(d["emotions"]))
    if not seqs and data.utterances.num_rows:
        by: dict[str, list] = defaultdict(list)
        rows = sorted(zip(*_columns(data.utterances, "dialogue_id", "utterance_idx", "emotion")),
                      key=lambda r: (r[0] or "", r[1] or 0))
        for did, _, emo in rows:
            by[did].append(emo)
        seqs = [v for _, v in sorted(by.items())]
    return seqs


def _columns(table, *names: str) -> list[list]:
    """Columns of an Arrow table as Python lists (a missing column: all None)."""
    return [table.column(n).to_pylist() if n in table.column_names else [None] * table.num_rows for n in names]


def _counts(table, name: str) -> Counter:
    """Non-null values of a column and how often each occurs (vectorised)."""
    if name not in table.column_names or not table.num_rows:
        return Counter()
    vc = pc.value_counts(table.column(name))
    return Counter({v: n for v, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()) if v})


def _words(data: ReleaseData) -> list[int]:
    """Words of every utterance (schemas.text's rule, counted over the whole column at once)."""
    if data.utterances.num_rows and "text" in data.utterances.column_names:
        return count_words_column(data.utterances.column("text"))
    return [count_words(t.get("text") or "") for d in data.dialogues for t in (d.get("turns") or [])]


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
    refs = _columns(data.utterances, "audio")[0]
    if not turn_durs and any(_audio_ref(r) for r in refs):
        for r in refs:
            ref = _audio_ref(r)
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
        audio = {"turn_seconds": quantiles(turn_durs), "mix_seconds": quantiles(mix_durs),
                 "total_seconds": round(sum(mix_durs) or sum(turn_durs), 3),
                 "total_hours": round((sum(mix_durs) or sum(turn_durs)) / 3600, 4), "unreadable": missing,
                 "turn_values": turn_durs, "mix_values": mix_durs}

    return audio


def release_stats(data: ReleaseData, dailydialog: dict | None = None) -> dict:
    """Every figure of the report as plain data (also written as ``report/stats.json``)."""
    m = data.manifest
    tax = data.taxonomy
    seqs = emotion_sequences(data)
    final = Counter(e for s in seqs for e in s if e)
    utt = data.utterances
    intended = _counts(utt, "intended_emotion")
    label_source = Counter({k or "unknown": v for k, v in _counts(utt, "label_source").items()})
    if utt.num_rows and sum(label_source.values()) < utt.num_rows:
        label_source["unknown"] += utt.num_rows - sum(label_source.values())
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
    words = _words(data)
    splits = Counter(d.get("split") or "unsplit" for d in data.dialogues)
    difficulty = [float(d["difficulty"]) for d in data.dialogues if d.get("difficulty") is not None]
    buckets = Counter(int(d["bucket"]) for d in data.dialogues if d.get("bucket") is not None)
    judge_scores = [float(d["judge_score"]) for d in data.dialogues if d.get("judge_score") is not None]

    dims, verdicts = _judge_figures(data)
    audio = _audio_figures(data)

    erc7: Counter = Counter()
    if utt.num_rows and "label_erc7" in utt.column_names:
        erc7 = _counts(utt, "label_erc7")
    elif tax is not None and "erc7" in tax.mappings:
        erc7 = Counter(tax.map_label(e, "erc7") for s in seqs for e in s if e in tax.emotion)

    out = {
        "version": m.get("version") or data.release_dir.name,
        "parent": m.get("parent"),
        "quarantine": m.get("quarantine"),
        "created": m.get("created_at") or m.get("created"),
        "code_version": m.get("code_version"),
        "config_fingerprint": m.get("config_fingerprint") or m.get("config"),
        "taxonomy": tax.name if tax is not None else (m.get("taxonomy") if isinstance(m.get("taxonomy"), str) else None),
        "n_dialogues": len(data.dialogues),
        "n_utterances": utt.num_rows or sum(turns),
        "splits": dict(sorted(splits.items())),
        "emotions": {"labels": names, "final": {k: final.get(k, 0) for k in names},
                     "intended": {k: intended.get(k, 0) for k in names}, "label_source": dict(sorted(label_source.items())),
                     "final_equals_intended": (round(sum(1 for a, b in zip(*_columns(utt, "emotion", "intended_emotion"))
                                                         if a == b) / utt.num_rows, 4) if utt.num_rows else None),
                     "erc7": {k: erc7.get(k, 0) for k in ERC7} if erc7 else {}},
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
        "turns_per_dialogue": quantiles([float(x) for x in turns]),
        "turns_hist": {str(k): v for k, v in sorted(Counter(turns).items())},
        "words_per_turn": quantiles([float(x) for x in words]),
        "judge_score": quantiles(judge_scores),
        "judges": {jid: {"verdicts": dict(sorted(verdicts[jid].items())),
                         **{dim: quantiles(v) for dim, v in sorted(dims[jid].items())}}
                   for jid in sorted(verdicts)},
        "acceptance": _acceptance(data),
        "difficulty": {**quantiles(difficulty), "buckets": {str(k): v for k, v in sorted(buckets.items())}},
        "audio": {k: v for k, v in audio.items() if not k.endswith("_values")},
        "agreement": m.get("agreement"),
        "distinct_emotions_per_dialogue": quantiles([float(len(set(s))) for s in seqs]),
    }
    if dailydialog:
        out["dailydialog"] = {k: v for k, v in dailydialog.items() if not k.endswith("_values")}
    out["_values"] = {"turns": turns, "words": words, "difficulty": difficulty, "buckets": [
        int(d["bucket"]) if d.get("bucket") is not None else -1 for d in data.dialogues if d.get("difficulty") is not None],
        "judge_scores": judge_scores, "dims": {j: dict(v) for j, v in dims.items()},
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
