"""The report page: ``templates/index.html.j2`` rendered with jinja2 (autoescape on: dialogue text can never become
markup). This module shapes the figures into rows; the template lays them out."""

from __future__ import annotations

from typing import Any

import jinja2

from warehouse.importers.labels import ERC7
from warehouse.report.data import ReleaseData
from warehouse.report.stats import flatten_numbers
from warehouse.quarantine import report_html as quarantine_html

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("warehouse.report", "templates"),
                          autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
                          trim_blocks=False, lstrip_blocks=False, keep_trailing_newline=True)


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def quantile_row(label: str, q: dict) -> list:
    return [label, q.get("n"), q.get("mean"), q.get("median"), q.get("p10"), q.get("p90"), q.get("min"), q.get("max")]


_ENV.filters.update(
    fmt=fmt,
    rowof=lambda d, *keys: [d[k] for k in keys],
    pairs=lambda d: ", ".join(f"{k} {v}" for k, v in d.items()),
    verdicts=lambda kv: [kv[0], ", ".join(f"{k} {v}" for k, v in kv[1]["verdicts"].items())],
)
_ENV.globals["quantile_row"] = quantile_row


def _compare_rows(s: dict, dd: dict) -> list[list]:
    ours7 = s["emotions"]["erc7"]
    tot_o, tot_d = sum(ours7.values()) or 1, sum(dd["emotions_erc7"].values()) or 1
    rows = [
        ["dialogues", s["n_dialogues"], dd["n_dialogues"]],
        ["utterances", s["n_utterances"], dd["n_utterances"]],
        ["mean turns per dialogue", s["turns_per_dialogue"]["mean"], dd["turns_per_dialogue"]["mean"]],
        ["mean words per turn", s["words_per_turn"]["mean"], dd["words_per_turn"]["mean"]],
        ["emotion change rate", s["transitions"]["change_rate"], dd["emotion_change_rate"]],
        ["mean distinct emotions per dialogue", s["distinct_emotions_per_dialogue"]["mean"],
         dd["distinct_emotions_per_dialogue"]["mean"]],
    ]
    if ours7:
        rows += [[f"share {k}", round(ours7.get(k, 0) / tot_o, 4), round(dd["emotions_erc7"].get(k, 0) / tot_d, 4)]
                 for k in ERC7]
    return rows


def render_html(stats: dict, plots: dict[str, str | None], data: ReleaseData, n_samples: int = 3) -> str:
    s = stats
    dd = s.get("dailydialog")
    meta = [x for x in (
        f"taxonomy {s['taxonomy']}" if s.get("taxonomy") else None, f"parent {s['parent']}" if s.get("parent") else None,
        f"created {s['created']}" if s.get("created") else None,
        f"code {s['code_version']}" if s.get("code_version") else None,
        f"config {s['config_fingerprint']}" if s.get("config_fingerprint") else None) if x]
    shape = [quantile_row("turns per dialogue", s["turns_per_dialogue"]),
             quantile_row("words per turn", s["words_per_turn"])]
    if dd:
        shape += [quantile_row("DailyDialog turns per dialogue", dd["turns_per_dialogue"]),
                  quantile_row("DailyDialog words per turn", dd["words_per_turn"])]
    judges = [quantile_row("release judge_score", s["judge_score"])]
    for jid, j in s["judges"].items():
        judges += [quantile_row(f"{jid} · {dim}", j[dim])
                   for dim in ("coherence", "naturalness", "domain_fit", "safety", "emotion_fidelity") if dim in j]
    samples = [d | {"turns": sorted(d.get("turns") or [], key=lambda t: t.get("idx") or 0)}
               for d in data.samples[:n_samples]]
    return _ENV.get_template("index.html.j2").render(
        s={**s, "dailydialog": dd, "audio": s.get("audio") or {}}, plots=plots, meta=meta,
        css=(_ENV.loader.get_source(_ENV, "report.css")[0]),
        quantile_rows={"shape": shape, "judges": judges},
        agreement_rows=flatten_numbers(s.get("agreement")) if s.get("agreement") is not None else [],
        compare_rows=_compare_rows(s, dd) if dd else [], samples=samples,
        quarantine=quarantine_html(s.get("quarantine")))
