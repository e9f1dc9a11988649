"""Agreement figures for a release: between annotators, and between each judge and the humans.

* Inter-annotator: Fleiss' kappa (items rated by two or more annotators; the number of raters may vary per item),
  mean pairwise Cohen's kappa over annotator pairs that share at least two items, and raw percent agreement,
  on dialogue verdicts and on turn labels.
* Judge vs human, per judge: Cohen's kappa and agreement of the judge verdict with the human majority verdict;
  per rubric criterion, Spearman's rank correlation of the judge score with the mean human rating; for emotion
  fidelity, Spearman of the per-turn fidelity score with "the humans kept the intended emotion" (1/0).

Each annotator counts once per dialogue (their latest review), as in ``warehouse.effective``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path

from warehouse.effective import LATEST_JUDGEMENTS_SQL, LATEST_REVIEWS_SQL
from warehouse.store import Warehouse

RUBRIC = ("coherence", "naturalness", "domain_fit", "safety")


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


def cohen_kappa(a: list, b: list) -> float | None:
    """Cohen's kappa of two raters over the same items; None when undefined (no items)."""
    if len(a) != len(b):
        raise ValueError("cohen_kappa needs two equally long rating lists")
    n = len(a)
    if n == 0:
        return None
    po = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    if pe == 1.0:
        return 1.0 if po == 1.0 else 0.0
    return (po - pe) / (1 - pe)


def fleiss_kappa(items: list[list]) -> float | None:
    """Fleiss' kappa; ``items`` are the ratings each item got (items with fewer than 2 ratings are ignored)."""
    items = [r for r in items if len(r) >= 2]
    if not items:
        return None
    totals: Counter = Counter()
    p_items = []
    n_ratings = 0
    for ratings in items:
        c = Counter(ratings)
        n = len(ratings)
        totals.update(c)
        n_ratings += n
        p_items.append((sum(v * v for v in c.values()) - n) / (n * (n - 1)))
    p_bar = sum(p_items) / len(p_items)
    pe = sum((v / n_ratings) ** 2 for v in totals.values())
    if pe == 1.0:
        return 1.0 if p_bar == 1.0 else 0.0
    return (p_bar - pe) / (1 - pe)


def _ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(x: list[float], y: list[float]) -> float | None:
    n = len(x)
    if n < 3:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho (average ranks for ties); None with fewer than 3 pairs or a constant side."""
    if len(x) != len(y):
        raise ValueError("spearman needs two equally long lists")
    return pearson(_ranks(x), _ranks(y))


def _inter_annotator(ratings: dict[object, dict[str, str]]) -> dict:
    """``ratings``: item -> {annotator: rating}."""
    multi = {k: v for k, v in ratings.items() if len(v) >= 2}
    agree = [len(set(v.values())) == 1 for v in multi.values()]
    pairs = []
    annotators = sorted({a for v in ratings.values() for a in v})
    for a, b in combinations(annotators, 2):
        shared = [k for k, v in ratings.items() if a in v and b in v]
        if len(shared) >= 2:
            k = cohen_kappa([ratings[s][a] for s in shared], [ratings[s][b] for s in shared])
            if k is not None:
                pairs.append(k)
    return {
        "items": len(ratings),
        "items_multi_rated": len(multi),
        "fleiss_kappa": _r(fleiss_kappa([list(v.values()) for v in multi.values()])),
        "mean_pairwise_cohen_kappa": _r(sum(pairs) / len(pairs)) if pairs else None,
        "annotator_pairs": len(pairs),
        "percent_agreement": _r(sum(agree) / len(agree)) if agree else None,
    }


def _load(home: Path, dialogue_ids: list[str] | None) -> tuple[list[dict], list[dict], list[dict]]:
    """The latest review of each annotator, the reviewed turns and the latest judgement of each judge."""
    wh = Warehouse(home)
    con = wh.connect()
    try:
        params: dict = {}
        restrict = ""
        if dialogue_ids is not None:
            restrict = " WHERE dialogue_id IN (SELECT unnest($ids))"
            params["ids"] = list(dialogue_ids)
        reviews = con.sql(f"SELECT * FROM ({LATEST_REVIEWS_SQL}){restrict}", params=params or None).to_arrow_table().to_pylist()
        reviewed = sorted({r["dialogue_id"] for r in reviews})
        if not reviewed:  # nothing reviewed: no need to deduplicate every turn and judgement of the store
            return reviews, [], []
        turns = con.sql("SELECT dialogue_id, idx, label, intended_emotion FROM turns WHERE dialogue_id IN (SELECT unnest($ids))",
                        params={"ids": reviewed}).to_arrow_table().to_pylist()
        judgements = con.sql(
            f"SELECT * FROM ({LATEST_JUDGEMENTS_SQL}) WHERE dialogue_id IN (SELECT unnest($ids))",
            params={"ids": reviewed}).to_arrow_table().to_pylist()
    finally:
        con.close()
    return reviews, turns, judgements


def agreement_summary(home: Path, dialogue_ids: list[str] | None = None) -> dict:
    """JSON-ready agreement figures over the reviewed dialogues (restricted to ``dialogue_ids`` when given)."""
    reviews, turns, judgements = _load(home, dialogue_ids)
    reviewed = sorted({r["dialogue_id"] for r in reviews})

    verdicts: dict[str, dict[str, str]] = defaultdict(dict)
    ratings: dict[str, list[int]] = defaultdict(list)
    labels: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    for r in reviews:
        if r["verdict"]:
            verdicts[r["dialogue_id"]][r["annotator"]] = r["verdict"]
        if r["rating"] is not None:
            ratings[r["dialogue_id"]].append(r["rating"])
        for i, lab in enumerate(r["turn_labels"] or []):
            if lab:
                labels[(r["dialogue_id"], i)][r["annotator"]] = lab

    def majority(votes: dict[str, str]) -> str | None:
        top = Counter(votes.values()).most_common()
        if not top or (len(top) > 1 and top[0][1] == top[1][1]):
            return None
        return top[0][0]

    human_verdict = {d: m for d, v in verdicts.items() if (m := majority(v))}
    human_label = {k: m for k, v in labels.items() if (m := majority(v))}
    turn_info = {(t["dialogue_id"], t["idx"]): t for t in turns}
    corrected = sum(1 for k, lab in human_label.items() if k in turn_info and lab != turn_info[k]["label"])

    judges: dict[str, dict] = {}
    by_judge: dict[str, list[dict]] = defaultdict(list)
    for j in judgements:
        by_judge[j["judge_id"]].append(j)
    for jid, js in sorted(by_judge.items()):
        pairs = [(j["verdict"], human_verdict[j["dialogue_id"]]) for j in js if j["dialogue_id"] in human_verdict]
        entry: dict = {
            "kind": js[0]["kind"],
            "verdict": {
                "n": len(pairs),
                "agreement": _r(sum(a == b for a, b in pairs) / len(pairs)) if pairs else None,
                "cohen_kappa": _r(cohen_kappa([a for a, _ in pairs], [b for _, b in pairs])) if pairs else None,
            },
            "criteria": {},
        }
        for crit in RUBRIC:
            xs, ys = [], []
            for j in js:
                if j.get(crit) is not None and ratings.get(j["dialogue_id"]):
                    xs.append(float(j[crit]))
                    ys.append(sum(ratings[j["dialogue_id"]]) / len(ratings[j["dialogue_id"]]))
            entry["criteria"][crit] = {"n": len(xs), "spearman_vs_human_rating": _r(spearman(xs, ys))}
        fx, fy = [], []
        for j in js:
            for i, f in enumerate(j.get("emotion_fidelity") or []):
                key = (j["dialogue_id"], i)
                if f is not None and key in human_label and key in turn_info:
                    fx.append(float(f))
                    fy.append(1.0 if human_label[key] == turn_info[key]["intended_emotion"] else 0.0)
        entry["criteria"]["emotion_fidelity"] = {"n": len(fx), "spearman_vs_human_kept_intended": _r(spearman(fx, fy))}
        judges[jid] = entry

    return {
        "reviewed_dialogues": len(reviewed),
        "reviews": len(reviews),
        "annotators": len({r["annotator"] for r in reviews}),
        "human_decisions": {"accept": sum(v == "accept" for v in human_verdict.values()),
                            "reject": sum(v == "reject" for v in human_verdict.values()),
                            "tied": sum(1 for d in verdicts if d not in human_verdict)},
        "labels_corrected": corrected,
        "verdict_agreement": _inter_annotator(verdicts),
        "turn_label_agreement": _inter_annotator(labels),
        "judge_vs_human": judges,
    }
