"""Report sections that need the home's real data: the release's evaluation and its emotion dynamics vs real ones.

``extra_sections(release_dir, home, sequences, out)`` returns (HTML, figures as data, plot file names); the release
report inserts the HTML before its sample dialogues and the data into ``stats.json``.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Callable

from warehouse.evaluation_file import read_evaluation
from warehouse.report.plots import load_pyplot
from warehouse.transitions import compare_with_real
from warehouse.utterances import imported_sources


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('-' if c is None else str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def evaluation_html(ev: dict[str, Any] | None) -> str:
    if not ev or "sets" not in ev:
        return ('<h2>Transfer to real conversation</h2><p class="muted">No evaluation.json in the release folder when '
                "this report was written. <code>emoforge evaluate VERSION</code> writes it (publish runs it after the "
                "release is in place when real test sets are imported: <code>emoforge import dailydialog PATH</code>); "
                "<code>emoforge report VERSION</code> then shows it here.</p>")
    rows = []
    for name, s in ev["sets"].items():
        for who, sc in (("release probe", s["probe"]), (f"ceiling ({s['source']} train)", s["ceiling"]),
                        (f"majority ({s['majority']['label']})", s["majority"])):
            rows.append([name, s["n"], who] + ([sc["weighted_f1"], sc["macro_f1"], sc["accuracy"]] if sc else
                                               [None, None, None]))
    if ev.get("release_test"):
        r = ev["release_test"]
        rows.append(["release test (in-domain)", r["n"], "release probe", r["weighted_f1"], r["macro_f1"], r["accuracy"]])
    return ("<h2>Transfer to real conversation</h2><p>A linear probe on frozen all-MiniLM-L6-v2 embeddings (utterance "
            f"+ previous utterance) trained on this release's train split ({ev['train']['n']} utterances, erc7) and "
            "scored on imported real test sets, beside the same probe trained on the real train split (ceiling) "
            "and the majority class.</p>"
            + _table(["test set", "n", "scored by", "weighted-F1", "macro-F1", "accuracy"], rows))


def _plot_heatmaps(cmp: dict[str, Any], out: Path) -> str | None:
    plt = load_pyplot()
    panels = [("this release", cmp["release"])] + [(f"{src} ({d['split']})", d) for src, d in cmp["real"].items()]
    labels = cmp["labels"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False)
    for ax, (title, d) in zip(axes[0], panels):
        rows = [[c / (sum(r) or 1) for c in r] for r in d["counts"]]
        ax.imshow(rows, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_title(f"{title}\nchange rate {d['change_rate']}", fontsize=9)
        ax.set_xlabel("next", fontsize=8)
    axes[0][0].set_ylabel("current (erc7)", fontsize=8)
    fig.tight_layout()
    name = "transitions_vs_real.png"
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return name


def dynamics_html(cmp: dict[str, Any], plot: str | None) -> str:
    rows = [["this release", cmp["release"]["change_rate"]]] + [
        [f"{src} {d['split']}", d["change_rate"]] for src, d in cmp["real"].items()]
    img = f'<img src="{html.escape(plot)}" alt="transition heatmaps, release vs real">' if plot else ""
    return ("<h2>Emotion dynamics vs real conversation</h2><p>Share of consecutive turns whose erc7 class changes, and "
            "P(next | current) side by side. Scenarios can learn the real stay probability with "
            "<code>generation.transitions: learned:&lt;source&gt;</code> (docs/generation.md).</p>"
            + _table(["corpus", "change rate"], rows) + img)


def extra_sections(release_dir: Path, home: Path | None, erc7_sequences: Callable[[], list[list[str]] | None],
                   out: Path) -> tuple[str, dict[str, Any], dict[str, str | None]]:
    """``erc7_sequences``: called only when the home holds imported real data to compare with."""
    ev = read_evaluation(release_dir)
    parts, data, plots = [evaluation_html(ev)], {"evaluation": ev}, {}
    seqs = erc7_sequences() if home is not None and imported_sources(home) else None
    if seqs:
        cmp = compare_with_real(home, seqs)
        if cmp["real"]:
            plots["transitions_vs_real"] = _plot_heatmaps(cmp, out)
            parts.append(dynamics_html(cmp, plots["transitions_vs_real"]))
            data["dynamics_vs_real"] = {k: v for k, v in cmp.items()}
    return "\n".join(parts), data, plots
