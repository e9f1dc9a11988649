"""The PNG plots of the release report (matplotlib, Agg backend, no timestamps: same input, same bytes)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np

from warehouse.importers.labels import ERC7
from warehouse.report.stats import flatten_numbers


def load_pyplot():
    # matplotlib costs ~25 MB at import: loaded when a report is drawn, not by every publish that imports this
    import matplotlib  # noqa: PLC0415 - heavy, needed only to draw (see above)

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # noqa: PLC0415 - same

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "figure.dpi": 100, "savefig.dpi": 100,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    # what savefig(path, format="png") writes, byte for byte (FigureCanvasAgg.print_png: draw, then imsave of the
    # canvas's pixels), without the second, layout-only draw that savefig makes first; no version stamp: same data,
    # same bytes
    fig.canvas.draw()
    plt = load_pyplot()
    plt.imsave(path, fig.canvas.buffer_rgba(), format="png", origin="upper", dpi=fig.dpi,
               metadata={"Software": None})
    plt.close(fig)
    return path.name


def _hist_bins(values, others=None, integer: bool = False, max_bins: int = 40):
    vals = np.asarray(values, dtype=float)
    other = np.asarray(others if others is not None else [], dtype=float)
    lo = float(min(vals.min(), other.min())) if other.size else float(vals.min())
    hi = float(max(vals.max(), other.max())) if other.size else float(vals.max())
    if other.size:  # a long tail of the reference data would squash the plot: stop at its 99th percentile
        hi = max(float(vals.max()), float(np.sort(other)[int(0.99 * (other.size - 1))]))
    if integer:
        lo, hi = math.floor(lo), math.ceil(hi)
        step = max(1, math.ceil((hi - lo + 1) / max_bins))
        return [x - 0.5 for x in range(int(lo), int(hi) + step + 1, step)]
    if hi == lo:
        hi = lo + 1
    n = max(5, min(max_bins, int(math.sqrt(vals.size + other.size)) + 1))
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


def _plot_emotions(stats: dict, out: Path) -> str | None:
    e = stats["emotions"]
    labels = [k for k in e["labels"] if e["final"].get(k) or e["intended"].get(k)]
    if not labels:
        return None
    plt = load_pyplot()
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
    plt = load_pyplot()
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


def _plot_hist(values, out: Path, name: str, title: str, xlabel: str, integer: bool = False,
               compare: list[float] | None = None, compare_label: str = "DailyDialog") -> str | None:
    if not len(values):
        return None
    plt = load_pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = _hist_bins(values, compare, integer=integer)
    density = compare is not None and len(compare) > 0
    # arrays, not lists: matplotlib converts a list element by element (seconds for a release's utterances)
    ax.hist(np.asarray(values, dtype=float), bins=bins, density=density, alpha=0.75, label="this release")
    if density:
        ax.hist(np.minimum(np.asarray(compare, dtype=float), bins[-1]), bins=bins, density=True, alpha=0.5,
                label=compare_label, histtype="stepfilled")
        ax.legend()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share" if density else "count")
    return _save(fig, out / name)


def _plot_judges(stats: dict, out: Path) -> str | None:
    scores = stats["_values"]["judge_scores"]
    dims = stats["_values"]["dims"]
    panels = ([("release judge_score", None, scores)] if len(scores) else []) + [
        (f"{jid}: {dim}", jid, vals) for jid, d in sorted(dims.items()) for dim, vals in sorted(d.items()) if vals]
    if not panels:
        return None
    panels = panels[:12]
    plt = load_pyplot()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (title, _, vals) in zip([a for r in axes for a in r], panels):
        integer = bool(np.all(np.mod(np.asarray(vals, dtype=float), 1) == 0))
        ax.hist(np.asarray(vals, dtype=float), bins=_hist_bins(vals, integer=integer, max_bins=20))
        ax.set_title(title, fontsize=8)
    for ax in [a for r in axes for a in r][len(panels):]:
        ax.axis("off")
    fig.suptitle("Judge score distributions")
    return _save(fig, out / "judge_scores.png")


def _plot_acceptance(stats: dict, out: Path) -> str | None:
    acc = stats["acceptance"]
    if not acc["by_pair"] and not acc["by_domain"]:
        return None
    plt = load_pyplot()
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
                # inside the axes (x = 0.01 of 1, on its bar): no part of the tight layout's margins
                ax.text(0.01, y, f"{r['accepted']}/{r['accepted'] + r['rejected'] + r['uncertain']}", va="center",
                        fontsize=6, in_layout=False)
        else:
            ax.barh(range(len(keys)), [r["accepted"] for r in rows])
            ax.set_xlabel("dialogues in release")
        ax.set_yticks(range(len(keys)), keys, fontsize=7 if len(keys) < 30 else 5)
        ax.invert_yaxis()
        ax.set_title(f"Acceptance {title}")
    return _save(fig, out / "acceptance.png")


def _plot_difficulty(stats: dict, out: Path) -> str | None:
    vals = stats["_values"]["difficulty"]
    if not len(vals):
        return None
    plt = load_pyplot()
    buckets = stats["_values"]["buckets"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = _hist_bins(vals)
    groups = sorted(set(buckets))
    v_arr, b_arr = np.asarray(vals, dtype=float), np.asarray(buckets)
    ax.hist([v_arr[b_arr == g] for g in groups], bins=bins, stacked=True,
            label=[f"bucket {g}" if g >= 0 else "no bucket" for g in groups])
    ax.legend()
    ax.set_title("Difficulty (PRC-Emo DIF) by curriculum bucket")
    ax.set_xlabel("difficulty")
    ax.set_ylabel("dialogues")
    return _save(fig, out / "difficulty.png")


def _plot_audio(stats: dict, out: Path) -> str | None:
    t, m = stats["_values"]["audio_turn"], stats["_values"]["audio_mix"]
    if not len(t) and not len(m):
        return None
    plt = load_pyplot()
    panels = [(v, ttl) for v, ttl in ((t, "per-turn clips"), (m, "dialogue mixes")) if len(v)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3), squeeze=False)
    for ax, (vals, ttl) in zip(axes[0], panels):
        ax.hist(np.asarray(vals, dtype=float), bins=_hist_bins(vals))
        ax.set_title(f"Audio durations: {ttl}")
        ax.set_xlabel("seconds")
    return _save(fig, out / "audio_durations.png")


def _plot_agreement(stats: dict, out: Path) -> str | None:
    nums = [(k, v) for k, v in flatten_numbers(stats.get("agreement")) if -1.0 <= v <= 1.0]
    if not nums:
        return None
    plt = load_pyplot()
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
    plt = load_pyplot()
    tot_o = sum(ours.values()) or 1
    tot_d = sum(dd["emotions_erc7"].values()) or 1
    xs = list(range(len(ERC7)))
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ax.bar([x - 0.2 for x in xs], [ours.get(k, 0) / tot_o for k in ERC7], width=0.4, label="this release (erc7)")
    ax.bar([x + 0.2 for x in xs], [dd["emotions_erc7"].get(k, 0) / tot_d for k in ERC7], width=0.4, label="DailyDialog")
    ax.set_xticks(xs, ERC7)
    ax.set_ylabel("share of utterances")
    ax.set_title("Emotions (7 ERC classes): release vs DailyDialog")
    ax.legend()
    return _save(fig, out / "compare_emotions.png")


PLOTS = {  # figure name -> how it is drawn from (stats, taxonomy, DailyDialog figures or None, folder)
    "emotions": lambda stats, tax, dd, out: _plot_emotions(stats, out),
    "transitions": lambda stats, tax, dd, out: _plot_transitions(stats, tax, out),
    "turns": lambda stats, tax, dd, out: _plot_hist(
        np.asarray(stats["_values"]["turns"], dtype=float), out, "turns_per_dialogue.png", "Turns per dialogue",
        "turns", integer=True, compare=np.asarray(dd["turns_values"], dtype=float) if dd else None),
    "words": lambda stats, tax, dd, out: _plot_hist(
        np.asarray(stats["_values"]["words"], dtype=float), out, "words_per_turn.png", "Words per turn", "words",
        integer=True, compare=np.asarray(dd["words_values"], dtype=float) if dd else None),
    "judges": lambda stats, tax, dd, out: _plot_judges(stats, out),
    "acceptance": lambda stats, tax, dd, out: _plot_acceptance(stats, out),
    "difficulty": lambda stats, tax, dd, out: _plot_difficulty(stats, out),
    "audio": lambda stats, tax, dd, out: _plot_audio(stats, out),
    "agreement": lambda stats, tax, dd, out: _plot_agreement(stats, out),
    "compare_emotions": lambda stats, tax, dd, out: _plot_compare_emotions(stats, dd, out) if dd else None,
}


def plot_named(names, stats: dict, tax, dd: dict | None, out: Path) -> dict[str, str | None]:
    """The plots ``names`` (keys of :data:`PLOTS`) into ``out``: figure name -> PNG file name (None: no data)."""
    return {name: PLOTS[name](stats, tax, dd, out) for name in names}


def plot_all(stats: dict, tax, dd: dict | None, out: Path) -> dict[str, str | None]:
    """Every plot of the report into ``out``: figure name -> PNG file name (None: no data for it)."""
    return plot_named(PLOTS, stats, tax, dd, out)
