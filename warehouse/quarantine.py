"""Quarantine, not veto: a dialogue that fails a gate at publish is left out of the release with its reason.

``publish`` selects the accepted dialogues, then, before writing anything, runs three kinds of dialogue-level gate
and removes what fails from the selection:

* ``rule:<name>`` — the source's suite (:mod:`schemas.suites`): empty text, a label outside the source's label set,
  a speaker out of order (generated two-party dialogue only), words per turn or turns per dialogue out of bounds,
  missing turns; imported data whose text also sits in another of its dataset's splits (``rule:import_split_leak``:
  the copy outside train/test is left out);
* ``defect:<class>`` — the dialogue audits in :data:`DIALOGUE_AUDITS` (functions ``(texts, context) ->
  [(turn_idx, class, reason)]``, e.g. the defect catalogue's ``audit_dialogue``), on sources whose suite audits;
* ``audio:<check>`` — the audio checks (``schemas.expectations_audio``) per clip; a dialogue with a failed clip is
  first re-synthesised once (the publish caller's ``resynthesise`` hook: another voice of the speaker's casting)
  and quarantined only when its clips fail again.

A release is blocked only by release-level failures: the schema gate, split leakage, or a quarantined share over
``publish.max_quarantine_share`` (default 5%) when more than ``publish.quarantine_floor`` (default 2) dialogues are
quarantined (on a small build, one bad clip is a third of a few dialogues: a share says nothing there). The release lists what was left out in ``quarantine.json`` (counts
per reason, the ids and reasons of every dialogue), in its manifest, card and report.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from schemas.config import Config, PublishConfig
from schemas.defects import DefectContext, audit_dialogue
from schemas.suites import GENERATED, SourceSuite, generated_suite, imported_suite
from schemas.taxonomy import Taxonomy
from warehouse.importers.labels import LABEL_SETS

QUARANTINE_FILE = "quarantine.json"
SYNTHETIC = "synthetic"  # the source of flows.synthetic's template-made dialogues
MAX_DETAIL = 300
SPLIT_PRIORITY = ("train", "test", "validation")  # an imported text in two splits stays in the first of these

# (texts, context) -> [(turn_idx, defect class, reason)]; context: dialogue_id, source, domain, speakers, emotions
DialogueAudit = Callable[[list[str], dict[str, Any]], list[tuple[int, str, str]]]


def defect_audit(texts: list[str], context: dict[str, Any]) -> list[tuple[int, str, str]]:
    """The defect catalogue (:mod:`schemas.defects`) over a whole dialogue: the same checks generation retried on."""
    return audit_dialogue(texts, DefectContext(emotions=tuple(context.get("emotions") or ())))


# the dialogue-level audits publish runs on every dialogue of an auditing source
DIALOGUE_AUDITS: tuple[DialogueAudit, ...] = (defect_audit,)
# {dialogue_id: speakers whose clips failed} -> None: re-synthesise those dialogues once (flows.speech.retry)
Resynthesise = Callable[[dict[str, set[str]]], Any]


@dataclass(frozen=True)
class Quarantined:
    dialogue_id: str
    reason: str  # rule:<name> | defect:<class> | audio:<check>
    detail: str = ""
    turn_idx: int | None = None


def release_suites(sources: list[str], tax: Taxonomy, pc: PublishConfig) -> dict[str, SourceSuite]:
    """The suite of every source a release takes: imported datasets their own, everything else the generated one."""
    v, imp = pc.validation, pc.imported
    gen = generated_suite(tax.emotion_names, {n: dict(m.map) for n, m in tax.mappings.items()},
                          min_turns=v.min_turns, max_turns=v.max_turns, min_words=v.min_words_per_turn,
                          max_words=v.max_words_per_turn)
    out: dict[str, SourceSuite] = {}
    for src in sources:
        ls = LABEL_SETS.get(src)
        if src == SYNTHETIC:  # template-made test and bench data (flows.synthetic): no generation defects to audit
            out[src] = replace(gen, audit=False)
            continue
        out[src] = gen if ls is None else imported_suite(
            src, list(ls.labels), ls.mappings, min_turns=imp.min_turns, max_turns=imp.max_turns,
            min_words=imp.min_words_per_turn, max_words=imp.max_words_per_turn)
    return out


def register_suites(con, suites: dict[str, SourceSuite], mapping_names: list[str]) -> None:
    """Register the suites as tables on ``con``: ``suite_bounds``, ``suite_labels`` and ``map_<mapping>``
    (source, emotion, label) for the label columns of the release."""
    con.register("suite_bounds", pa.Table.from_pylist(
        [{"source": s, "suite": x.name, "min_turns": x.min_turns, "max_turns": x.max_turns, "min_words": x.min_words,
          "max_words": x.max_words, "alternating": x.alternating} for s, x in suites.items()],
        schema=pa.schema([("source", pa.string()), ("suite", pa.string()), ("min_turns", pa.int64()),
                          ("max_turns", pa.int64()), ("min_words", pa.int64()), ("max_words", pa.int64()),
                          ("alternating", pa.bool_())])))
    con.register("suite_labels", pa.Table.from_pylist(
        [{"source": s, "label": lab} for s, x in suites.items() for lab in x.labels],
        schema=pa.schema([("source", pa.string()), ("label", pa.string())])))
    for name in mapping_names:
        rows = [{"source": s, "emotion": k, "label": v} for s, x in suites.items() for k, v in (x.mapped(name) or {}).items()]
        con.register(f"map_{name}", pa.Table.from_pylist(
            rows, schema=pa.schema([("source", pa.string()), ("emotion", pa.string()), ("label", pa.string())])))


_TURN_RULES = [
    # trim(text) = '' only where the first character is one trim removes: checked first, trim runs on those alone
    ("empty_text", "t.text IS NULL OR length(t.text) = 0 OR (ltrim(left(t.text, 1)) = '' AND trim(t.text) = '')",
     "format('turn {} is empty', t.idx)"),
    ("label_not_in_suite", "t.label NOT IN (SELECT label FROM suite_labels l WHERE l.source = sel.source)",
     "format('turn {}: emotion {} is not a {} label', t.idx, t.label, b.suite)"),
    ("label_not_in_suite", "t.intended_emotion NOT IN (SELECT label FROM suite_labels l WHERE l.source = sel.source)",
     "format('turn {}: intended emotion {} is not a {} label', t.idx, t.intended_emotion, b.suite)"),
    ("speaker", "t.speaker NOT IN ('A', 'B')", "format('turn {}: speaker {} is not A or B', t.idx, t.speaker)"),
    ("speaker_order", "b.alternating AND t.speaker IN ('A', 'B') AND t.speaker <> CASE WHEN t.idx % 2 = 0 THEN 'A' ELSE 'B' END",
     "format('turn {}: speaker {} out of the A, B, A, ... order', t.idx, t.speaker)"),
    ("words_out_of_bounds", "t.n_words < b.min_words OR t.n_words > b.max_words",
     "format('turn {}: {} words, allowed {}..{}', t.idx, t.n_words, b.min_words, b.max_words)"),
]


def rule_violations(con) -> list[Quarantined]:
    """The suite rules over ``sel`` (id, source, n_turns, source_split, text_hash) and ``effective_turns``."""
    out: list[Quarantined] = []
    # every turn rule in one scan of the turns: a flag and a detail per rule, the rows that break any rule
    flags = ", ".join(f"coalesce({where}, false) AS f{i}, CASE WHEN {where} THEN {detail} END AS d{i}"
                      for i, (_, where, detail) in enumerate(_TURN_RULES))
    rows = con.execute(f"""
        SELECT * FROM (
            SELECT t.dialogue_id, t.idx, {flags}
            FROM effective_turns t JOIN sel ON sel.id = t.dialogue_id JOIN suite_bounds b ON b.source = sel.source)
        WHERE {" OR ".join(f"f{i}" for i in range(len(_TURN_RULES)))}
        ORDER BY dialogue_id, idx""").fetchall()
    for i, (name, _, _) in enumerate(_TURN_RULES):
        out += [Quarantined(r[0], f"rule:{name}", r[3 + 2 * i], int(r[1])) for r in rows if r[2 + 2 * i]]
    rows = con.execute("""
        WITH u AS (SELECT dialogue_id, count(*) AS n, count(DISTINCT idx) AS k, min(idx) AS lo
                   FROM effective_turns WHERE dialogue_id IN (SELECT id FROM sel) GROUP BY dialogue_id)
        SELECT sel.id, sel.n_turns, b.min_turns, b.max_turns, coalesce(u.n, 0), coalesce(u.k, 0), u.lo
        FROM sel JOIN suite_bounds b ON b.source = sel.source LEFT JOIN u ON u.dialogue_id = sel.id""").fetchall()
    for did, n_turns, lo, hi, n, k, first in rows:
        if not lo <= n_turns <= hi:
            out.append(Quarantined(did, "rule:turns_out_of_bounds", f"{n_turns} turns, allowed {lo}..{hi}"))
        if n != n_turns or k != n_turns or (first or 0) != 0:
            out.append(Quarantined(did, "rule:turns_incomplete", f"{n_turns} turns declared, {k} stored"))
    prio = " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(SPLIT_PRIORITY))
    for did, split, keep in con.execute(f"""
        WITH r AS (SELECT id, source_split, text_hash,
                          min(CASE source_split {prio} ELSE 9 END) OVER (PARTITION BY text_hash) AS best,
                          CASE source_split {prio} ELSE 9 END AS mine
                   FROM sel WHERE source_split IS NOT NULL)
        SELECT id, source_split, best FROM r WHERE mine > best""").fetchall():
        out.append(Quarantined(did, "rule:import_split_leak",
                               f"its text is also in the dataset's {SPLIT_PRIORITY[keep]} split ({split} copy left out)"))
    return out


def audit_violations(con, suites: dict[str, SourceSuite], audits: tuple[DialogueAudit, ...]) -> list[Quarantined]:
    """Run the dialogue audits over every selected dialogue of an auditing source, streaming the turns."""
    sources = [s for s, x in suites.items() if x.audit]
    if not audits or not sources:
        return []
    src = ", ".join("'" + s.replace("'", "''") + "'" for s in sources)
    reader = con.sql(
        "SELECT t.dialogue_id, sel.source, sel.domain, t.speaker, t.text, t.label FROM effective_turns t "
        f"JOIN sel ON sel.id = t.dialogue_id WHERE sel.source IN ({src}) ORDER BY t.dialogue_id, t.idx"
    ).to_arrow_reader(100_000)
    out: list[Quarantined] = []
    cur: dict[str, Any] | None = None

    def flush(d: dict[str, Any] | None) -> None:
        if d is None:
            return
        texts = d.pop("texts")
        for audit in audits:
            for idx, cls, reason in audit(texts, d):
                out.append(Quarantined(d["dialogue_id"], f"defect:{cls}", str(reason)[:MAX_DETAIL], int(idx)))

    for batch in reader:
        for did, source, domain, spk, text, label in zip(*(batch.column(i).to_pylist() for i in range(6))):
            if cur is None or cur["dialogue_id"] != did:
                flush(cur)
                cur = {"dialogue_id": did, "source": source, "domain": domain, "speakers": [], "emotions": [],
                       "texts": []}
            cur["speakers"].append(spk)
            cur["emotions"].append(label)
            cur["texts"].append(text)
    flush(cur)
    return out


def audio_violations(gate) -> list[Quarantined]:
    """One entry per (dialogue, failed audio check) of an ``AudioValidation``."""
    out = []
    for f in gate.failures:
        for did in f.dialogue_ids:
            out.append(Quarantined(did, f"audio:{f.check}", f.message[:MAX_DETAIL]))
    return out


def retry_targets(gate, clips: list[dict]) -> dict[str, set[str]]:
    """{dialogue_id: speakers whose turn clips failed} for every dialogue an audio check failed on (an empty set:
    the failure is not one speaker's, e.g. a missing mix)."""
    of = {c["id"]: (c["dialogue_id"], c.get("speaker")) for c in clips}
    out: dict[str, set[str]] = {}
    for f in gate.failures:
        for did in f.dialogue_ids:
            out.setdefault(did, set())
        for cid in f.clip_ids:
            did, spk = of.get(cid, (None, None))
            if did is not None and spk in ("A", "B"):
                out.setdefault(did, set()).add(spk)
    return out


def summarise(items: list[Quarantined], n_selected: int, bound: float, floor: int = 0) -> dict[str, Any]:
    """Counts per reason (dialogues), the share of the selection and every dialogue's reasons."""
    by_dialogue: dict[str, list[dict]] = {}
    for q in items:
        by_dialogue.setdefault(q.dialogue_id, []).append(
            {k: v for k, v in asdict(q).items() if k != "dialogue_id" and v is not None})
    reasons = Counter(r for did, rs in by_dialogue.items() for r in {x["reason"] for x in rs})
    n = len(by_dialogue)
    return {
        "selected": n_selected, "quarantined": n, "share": round(n / n_selected, 6) if n_selected else 0.0,
        "bound": bound, "floor": floor, "by_reason": dict(sorted(reasons.items())),
        "ids_by_reason": {r: sorted(d for d, rs in by_dialogue.items() if r in {x["reason"] for x in rs})
                          for r in sorted(reasons)},
        "dialogues": [{"dialogue_id": d, "reasons": by_dialogue[d]} for d in sorted(by_dialogue)],
    }


def share_problem(summary: dict[str, Any]) -> str | None:
    """The message that blocks a release whose quarantined share is over the bound and whose quarantined count is
    over the floor, else ``None``."""
    if summary["share"] <= summary["bound"] or summary["quarantined"] <= summary.get("floor", 0):
        return None
    top = ", ".join(f"{r} {n}" for r, n in sorted(summary["by_reason"].items(), key=lambda kv: -kv[1])[:8])
    return (f"quarantined share {summary['share']:.1%} ({summary['quarantined']} of {summary['selected']} dialogues) "
            f"is over the bound publish.max_quarantine_share = {summary['bound']:.1%} (and over "
            f"publish.quarantine_floor = {summary.get('floor', 0)} dialogues); reasons: {top}")


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1, sort_keys=True, default=str))


def manifest_entry(summary: dict[str, Any]) -> dict[str, Any]:
    """What the manifest carries: counts per reason and the ids (details are in ``quarantine.json``)."""
    keys = ("selected", "quarantined", "share", "bound", "floor", "by_reason", "ids_by_reason", "resynthesised")
    return {k: summary[k] for k in keys if k in summary} | {"file": QUARANTINE_FILE}


def card_lines(entry: dict[str, Any] | None) -> list[str]:
    """The dataset card's section on what was left out."""
    if not entry:
        return []
    lines = ["", "## Quarantined", ""]
    if entry.get("resynthesised"):
        lines += [f"{len(entry['resynthesised'])} dialogue(s) with failed clips were re-synthesised once with another "
                  "voice before this decision.", ""]
    if not entry["quarantined"]:
        return lines + [f"Nothing: all {entry['selected']} selected dialogues passed the dialogue gates.", ""]
    lines += [f"{entry['quarantined']} of {entry['selected']} selected dialogues ({entry['share']:.2%}; bound "
              f"{entry['bound']:.0%} beyond {entry.get('floor', 0)} dialogues) failed a dialogue gate and are left "
              f"out; `{QUARANTINE_FILE}` lists every dialogue with its reasons.", "", "| reason | dialogues | ids |", "|---|---:|---|"]
    for reason, n in sorted(entry["by_reason"].items(), key=lambda kv: -kv[1]):
        ids = entry["ids_by_reason"][reason]
        shown = ", ".join(f"`{i}`" for i in ids[:5]) + (f" (+{len(ids) - 5})" if len(ids) > 5 else "")
        lines.append(f"| {reason} | {n} | {shown} |")
    return lines + [""]


def report_html(entry: dict[str, Any] | None) -> str:
    """The release report's section on what was left out."""
    if not entry:
        return ""
    e = html.escape
    head = (f"<h2>Quarantined</h2><p>{entry['quarantined']} of {entry['selected']} selected dialogues "
            f"({entry['share']:.2%}; bound {entry['bound']:.0%} beyond {entry.get('floor', 0)} dialogues) left out; "
            f"details in {e(QUARANTINE_FILE)}.</p>")
    if not entry["quarantined"]:
        return head
    rows = "".join(f"<tr><td>{e(r)}</td><td>{n}</td><td>{e(', '.join(entry['ids_by_reason'][r][:20]))}</td></tr>"
                   for r, n in sorted(entry["by_reason"].items(), key=lambda kv: -kv[1]))
    return head + f"<table><tr><th>reason</th><th>dialogues</th><th>ids</th></tr>{rows}</table>"


def drop_from_selection(con, ids: set[str]) -> None:
    if ids:
        con.register("_quarantined", pa.table({"id": pa.array(sorted(ids), pa.string())}))
        con.execute("DELETE FROM sel WHERE id IN (SELECT id FROM _quarantined)")
        con.unregister("_quarantined")


def dialogue_gates(con, cfg: Config, tax: Taxonomy, audits: tuple[DialogueAudit, ...] | None = None
                   ) -> tuple[dict[str, SourceSuite], list[Quarantined]]:
    """Suites + rule and audit violations over ``sel``; the violating dialogues are removed from ``sel``."""
    suites = release_suites(cfg.publish.sources, tax, cfg.publish)
    register_suites(con, suites, list(tax.mappings))
    found = rule_violations(con) + audit_violations(con, suites, DIALOGUE_AUDITS if audits is None else audits)
    drop_from_selection(con, {q.dialogue_id for q in found})
    return suites, found


__all__ = [
    "DIALOGUE_AUDITS", "GENERATED", "QUARANTINE_FILE", "DialogueAudit", "Quarantined", "Resynthesise",
    "audio_violations", "audit_violations", "card_lines", "dialogue_gates", "drop_from_selection", "manifest_entry",
    "release_suites", "report_html", "retry_targets", "rule_violations", "share_problem", "summarise", "write_summary",
]
