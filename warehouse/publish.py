"""`emoforge publish`: accepted dialogues -> an immutable, validated, versioned release.

Steps (all under the warehouse write lock, so two publishes never interleave):

1. select the accepted dialogues of the configured sources (human reviews applied: ``warehouse.effective``);
2. assign splits (``warehouse.splits``: stored, stable, stratified by domain x model pair, grouped by dialogue and
   by normalised text);
3. compute the PRC-Emo difficulty of every dialogue and its curriculum bucket (quantiles over the train split);
4. stream dialogue- and utterance-level Parquet per split into ``releases/.tmp-<version>-<rand>/``;
5. run the Great Expectations gate (``schemas.expectations``); a failure keeps its result under
   ``runs/<run>/`` and publishes nothing;
6. write the report, ``manifest.json`` (sha256 of every file) and the dataset card, fsync, rename the directory to
   ``releases/<version>`` and register it in the catalog in one transaction.

A crash or kill at any point leaves either the complete release or nothing visible: temporary directories are
never listed and are swept by the next publish; a renamed but unregistered directory (a kill between rename and
registration) is verified against its manifest and registered by the next publish or listing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from schemas.config import Config, PublishConfig, load_config
from schemas.home import code_version
from schemas.difficulty import bucket_edges, bucket_of
from schemas.expectations import validate_release
from schemas.expectations_audio import validate_audio
from schemas.taxonomy import Taxonomy, load_taxonomy
from warehouse.agreement import agreement_summary
from warehouse.difficulty_table import dialogue_difficulty
from warehouse.effective import effective_views
from warehouse.evaluation import evaluate_after_publish
from warehouse.evaluation_file import evaluation_summary
from warehouse.home_meta import resolve_config
from warehouse.quarantine import (
    QUARANTINE_FILE, Resynthesise, audio_violations, card_lines, dialogue_gates, drop_from_selection, manifest_entry,
    retry_targets, share_problem, summarise, write_summary,
)
from warehouse.report import warehouse_figures, write_report
from warehouse.release_files import ReleaseTables, write_splits
from warehouse.releases import (
    ReleaseError,
    fsync_tree,
    hash_file,
    reconcile,
    registered_versions,
    register_release,
)
from warehouse.splits import SPLIT_SCHEMA, SPLITS, assign_splits
from warehouse.store import Warehouse, sql_str
from warehouse.text_functions import register_text_functions
from warehouse.versions import check_version, next_version

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    pass


class GateFailed(PublishError):
    def __init__(self, summary: str, result_path: Path):
        super().__init__(f"{summary}\nfull validation result: {result_path}")
        self.result_path = result_path


def _fault(stage: str) -> None:
    """Fault injection for the kill drills: EMOFORGE_FAULT=publish:<stage> kills the process at that stage."""
    if os.environ.get("EMOFORGE_FAULT") == f"publish:{stage}":
        os.kill(os.getpid(), 9)


def publish_release(
    home: str | os.PathLike,
    config: Config | None = None,
    *,
    version: str | None = None,
    run_id: str | None = None,
    progress: bool = False,
    resynthesise: Resynthesise | None = None,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Publish the accepted dialogues in ``home`` as a new release; returns its manifest summary.

    ``resynthesise``: called once with ``{dialogue_id: speakers}`` for the dialogues whose clips failed the audio
    checks (``flows.speech.retry``); what still fails afterwards is quarantined. With ``evaluate`` the new release
    is then scored on the home's imported real test sets (:mod:`warehouse.evaluation`)."""
    cfg = resolve_config(home, config or load_config())  # the home's taxonomy unless the config says otherwise
    taxonomy = load_taxonomy(cfg.taxonomy)
    wh = Warehouse(home)
    if version is not None:
        version = check_version(version)
    with wh.write_lock():
        reconcile(wh)
        existing = registered_versions(wh)
        if version is None:
            version = next_version(existing)
        elif version in existing or (wh.releases_dir / version).exists():
            raise ReleaseError(f"release {version} already exists; releases are immutable, pick a new version")
        parent = existing[-1] if existing else None
        tmp = wh.releases_dir / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            summary = _build(wh, cfg, taxonomy, version, parent, tmp, run_id or f"publish-{version}", progress,
                             resynthesise)
            _fault("before_rename")
            final = wh.releases_dir / version
            os.replace(tmp, final)
            _fault("after_rename")
            register_release(wh, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    summary["path"] = str(final)
    if evaluate:
        summary["evaluation"] = evaluation_summary(evaluate_after_publish(home, version, log.info))
    return summary


def _build(wh: Warehouse, cfg: Config, tax: Taxonomy, version: str, parent: str | None, out: Path,
           run_id: str, progress: bool, resynthesise: Resynthesise | None = None) -> dict[str, Any]:
    """Stages 1-6 into ``out``. Independent work overlaps in threads where it releases the GIL (DuckDB, Arrow,
    Parquet): the agreement figures are read from the start, the report is written while the gate runs."""
    pc = cfg.publish
    # leaving the block waits for every thread, the file writer first: a failure removes ``out`` only after that
    with ThreadPoolExecutor(3, thread_name_prefix="publish") as threads, \
            ThreadPoolExecutor(1, thread_name_prefix="publish-files") as files:
        agreement = threads.submit(_agreement, wh)
        con = _connect(wh)
        try:
            _select(con, wh, pc)  # 1. selection
            suites, quarantine, audio_gate = _quarantine(con, wh, cfg, tax, run_id, version, resynthesise)  # 1b.
            # the report's warehouse figures (judges, acceptance, clips) of the selection, read meanwhile
            figures = threads.submit(_figures, wh, con.sql("SELECT id FROM sel").to_arrow_table()) if pc.report else None
            # 3. the difficulty of every dialogue (DuckDB and NumPy, GIL-free mostly) on a cursor in a thread while
            # 2. the splits are assigned (Python) here; then the buckets (quantiles over the train split)
            difficulty = threads.submit(_dialogue_difficulty, con.cursor(), tax, pc)
            split_of = _splits(con, wh, pc)  # 2.
            edges = _difficulty(con, pc, split_of, *difficulty.result())  # 3.
            audio = _audio_present(con, wh, pc.audio)
            uid = uuid.uuid4().hex[:12]
            counts, tables = write_splits(con, wh.home / "audio" if audio else None, tax, pc, out / "data", uid,
                                          files)  # 4. (the files are written meanwhile)
            stats = _stats(con, tax)
        finally:
            con.close()
        _fault("before_validate")
        manifest = _manifest(cfg, tax, version, uid, parent, counts, edges, stats, quarantine, audio)
        manifest["agreement"] = agreement.result()
        # the report needs no gate result: written meanwhile, from the tables the files were written from (not read
        # back) and a copy of the manifest so far
        report = threads.submit(_report, out, tax, wh, dict(manifest), tables, figures) if pc.report else None
        try:
            gate = _gate(wh, tax, pc, out, audio_gate, run_id, version, suites, tables)  # 5. the gate (release-level)
        finally:
            manifest["report"] = report.result() if report is not None else None  # it writes under ``out``
        tables.wait_written()
    write_summary(out / QUARANTINE_FILE, quarantine)
    manifest["validation"] = {"success": True, "checked": gate.checked,
                              "audio": None if audio_gate is None else {
                                  "success": True, "stats": audio_gate.stats,
                                  "quarantined_checks": sorted({f.check for f in audio_gate.failures})}}
    # 6. card, manifest
    (out / "README.md").write_text(dataset_card(manifest))
    _fault("before_manifest")
    files = {}
    for p in sorted(out.rglob("*")):
        if p.is_file():
            files[p.relative_to(out).as_posix()] = {"sha256": hash_file(p), "bytes": p.stat().st_size}
    manifest["files"] = files
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str))
    fsync_tree(out)
    return {"version": version, "parent": parent, "n_dialogues": manifest["counts"]["dialogues"],
            "n_utterances": manifest["counts"]["utterances"], "counts": counts, "quarantine": manifest["quarantine"]}


def _manifest(cfg: Config, tax: Taxonomy, version: str, uid: str, parent: str | None, counts: dict, edges: list,
              stats: dict, quarantine: dict, audio: bool) -> dict[str, Any]:
    """The manifest up to the gate's result, the agreement figures, the report and the files."""
    pc = cfg.publish
    return {
        "name": "emoforge",
        "version": version,
        "release_uid": uid,
        "parent": parent,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "code_version": code_version(),
        "config_fingerprint": cfg.fingerprint(),
        "config": cfg.model_dump(mode="json"),
        "taxonomy": {"name": tax.name, "fingerprint": tax.fingerprint, "emotions": tax.emotion_names,
                     "mappings": {n: m.labels for n, m in tax.mappings.items()}},
        "counts": {"splits": counts,
                   "dialogues": sum(c["dialogues"] for c in counts.values()),
                   "utterances": sum(c["utterances"] for c in counts.values())},
        "difficulty": {"k": pc.difficulty.k, "b": pc.difficulty.b, "buckets": pc.difficulty.buckets, "edges": edges},
        "stats": stats,
        "quarantine": manifest_entry(quarantine),
        "sources": list(pc.sources),
        "audio": {"embedded": bool(audio), "format": "wav, Hugging Face Audio struct {bytes, path}"} if audio else None,
    }


def _connect(wh: Warehouse):
    con = wh.connect()
    tmpdir = wh.home / ".tmp" / "duckdb"
    tmpdir.mkdir(parents=True, exist_ok=True)
    con.execute(f"SET temp_directory = {sql_str(str(tmpdir))}")
    con.execute("SET memory_limit = '1GB'")
    con.execute("SET preserve_insertion_order = false")
    effective_views(con)
    return con


def _select(con, wh: Warehouse, pc: PublishConfig) -> None:
    """Temp table ``sel``: the accepted dialogues (reviews applied) of the configured sources. ``judge_score`` is
    the score that decided each dialogue (flows.judge), stored with it; ``text_hash`` is the warehouse's
    (schemas.text.text_hash of the normalised turn texts; reviews change labels, never text)."""
    sources = ", ".join(sql_str(s) for s in pc.sources)
    columns = {r[0] for r in con.execute("DESCRIBE dialogues").fetchall()}
    judge_score = "d.judge_score" if "judge_score" in columns else "NULL::DOUBLE"  # a store older than the column
    con.execute(  # a table of this private in-memory database, not TEMP: a cursor in another thread reads it too
        f"""
        CREATE TABLE sel AS
        SELECT d.id, d.source, d.domain, d.model_a, d.model_b, d.n_turns, d.decided_by, {judge_score} AS judge_score,
               coalesce(nullif(d.text_hash, ''), d.id) AS text_hash, d.source_split,
               d.domain || ' | ' || d.model_a || ' | ' || d.model_b AS stratum
        FROM effective_dialogues d
        WHERE d.status = 'accepted' AND d.source IN ({sources})
        """  # a row stored without a text hash groups alone
    )
    if con.execute("SELECT count(*) FROM sel").fetchall()[0][0] == 0:
        raise PublishError(f"nothing to publish: no accepted dialogues from sources {pc.sources} in {wh.home}")
    materialise_turns(con)


def materialise_turns(con) -> None:
    """``effective_turns`` of the selected dialogues, computed once into a temp table that the view then reads.

    Over a store as a build leaves it (hundreds of parts, rows written more than once) the view deduplicates every
    turn of the store by a window over all parts; publish reads the turns a dozen times (rules, difficulty, each
    split's files, stats), so it would repeat that work each time. Every reader joins ``sel``, a subset of what is
    kept here; a re-synthesis that redefines the views calls this again. ``n_words`` is recounted from the text."""
    # n_words counted again by schemas.text's rule, whatever the store holds: rows written before every writer
    # used it (importers counted whitespace tokens: DailyDialog's "Hello , how are you ?" made 6) and any text
    # edited since are published with the one count the gates and the report read
    register_text_functions(con)
    con.execute("CREATE OR REPLACE TABLE _sel_turns AS SELECT t.* REPLACE (emoforge_count_words(t.text) AS n_words) "
                "FROM effective_turns t WHERE t.dialogue_id IN (SELECT id FROM sel)")
    con.execute("CREATE OR REPLACE VIEW effective_turns AS SELECT * FROM _sel_turns")


def _quarantine(con, wh: Warehouse, cfg: Config, tax: Taxonomy, run_id: str, version: str,
                resynthesise: Resynthesise | None):
    """Dialogue gates (source suites, defect audits) and the audio checks over ``sel``: what fails is quarantined
    (removed from ``sel`` with its reason), not a veto; a quarantined share over the bound blocks the release."""
    pc = cfg.publish
    n_sel = con.execute("SELECT count(*) FROM sel").fetchall()[0][0]
    suites, found = dialogue_gates(con, cfg, tax)
    audio_gate, retried = None, []
    if pc.audio == "require" or _audio_present(con, wh, pc.audio):
        audio_gate, audio_found, retried = _audio_pass(con, wh, cfg, resynthesise)
        found += audio_found
    quarantine = summarise(found, n_sel, pc.max_quarantine_share, pc.quarantine_floor)
    quarantine["resynthesised"] = retried  # dialogues whose failed clips were voiced again (kept if they pass)
    problem = share_problem(quarantine)
    if problem:
        keep = wh.runs_dir / run_id
        write_summary(keep / f"quarantine-{version}.json", quarantine)
        if audio_gate is not None:
            (keep / f"validation-audio-{version}.json").write_text(audio_gate.to_json())
        raise GateFailed(problem, keep / f"quarantine-{version}.json")
    if quarantine["quarantined"] == n_sel:
        raise PublishError(f"nothing to publish: all {n_sel} accepted dialogues are quarantined "
                           f"({quarantine['by_reason']})")
    return suites, quarantine, audio_gate


def _splits(con, wh: Warehouse, pc: PublishConfig) -> dict[str, str]:
    """Keep the stored assignments, assign the new ones; registers ``split_map`` (id, split); id -> split."""
    existing = con.execute("SELECT id, split, stratum, group_key FROM splits").fetchall() if "splits" in wh.tables() else []
    known = {row[0] for row in existing}
    pending = [r for r in con.execute("SELECT id, stratum, text_hash, source_split FROM sel").fetchall() if r[0] not in known]
    # imported dialogues keep the split their dataset gave them (a DailyDialog test dialogue never trains)
    assigned = [{"id": i, "split": sp, "stratum": st, "group_key": h} for i, st, h, sp in pending if sp in SPLITS]
    new = [(i, st, h) for i, st, h, sp in pending if sp not in SPLITS]
    assigned += assign_splits(new, existing, pc.splits.fractions(), pc.splits.seed)
    if assigned:
        wh.upsert_arrow("splits", pa.Table.from_pydict(
            {f.name: [r[f.name] for r in assigned] for f in SPLIT_SCHEMA}, schema=SPLIT_SCHEMA))
    split_of = {r[0]: r[1] for r in existing} | {r["id"]: r["split"] for r in assigned}
    con.register("split_map", pa.table({"id": pa.array(list(split_of), pa.string()),
                                        "split": pa.array(list(split_of.values()), pa.string())}))
    return split_of


def _dialogue_difficulty(cursor, tax: Taxonomy, pc: PublishConfig) -> tuple[pa.Array, Any]:
    """PRC-Emo difficulty per dialogue of ``sel`` (``warehouse.difficulty_table``: all dialogues at once, the numbers
    of ``schemas.difficulty.difficulty``), on its own cursor (closed here)."""
    try:
        return dialogue_difficulty(cursor, tax, pc.difficulty.k, pc.difficulty.b)
    finally:
        cursor.close()


def _difficulty(con, pc: PublishConfig, split_of: dict[str, str], ids: pa.Array, values) -> list[float]:
    """The curriculum bucket of every dialogue's difficulty (``ids``, ``values``: :func:`_dialogue_difficulty`),
    quantile edges over the train split; registers ``dif`` (id, difficulty, bucket); returns the edges."""
    id_list = ids.to_pylist()
    train_vals = [v for d, v in zip(id_list, values.tolist()) if split_of.get(d) == "train"] or values.tolist()
    edges = bucket_edges(train_vals, pc.difficulty.buckets)
    con.register("dif", pa.table({
        "id": ids,
        "difficulty": pa.array(values, pa.float64()),
        "bucket": pa.array([bucket_of(v, edges) for v in values.tolist()], pa.int64()),
    }))
    return edges


def _gate(wh: Warehouse, tax: Taxonomy, pc: PublishConfig, out: Path, audio_gate, run_id: str, version: str,
          suites: dict, tables: ReleaseTables):
    """Run the Great Expectations gate over ``out/data`` (release-level: schema, split leakage; audio failures were
    quarantined before), on ``tables``, what its files were written from; a failure keeps its results under
    ``runs/<run>/`` and raises :class:`GateFailed`."""
    gate = validate_release(out / "data", tax, pc, suites=suites, tables=(tables.utterances, tables.dialogues))
    (out / "validation").mkdir()
    (out / "validation" / "result.json").write_text(gate.to_json())
    if audio_gate is not None:
        (out / "validation" / "audio.json").write_text(audio_gate.to_json())
    if gate.success:
        return gate
    keep = wh.runs_dir / run_id
    keep.mkdir(parents=True, exist_ok=True)
    result_path = keep / f"validation-{version}.json"
    result_path.write_text(gate.to_json())
    raise GateFailed(gate.summary(), result_path)


def _audio_present(con, wh: Warehouse, mode: str) -> bool:
    if mode == "off" or "clips" not in wh.tables():
        return False
    n = con.execute("SELECT count(*) FROM clips c JOIN sel ON sel.id = c.dialogue_id").fetchall()[0][0]
    return n > 0


def _audio_gate(con, wh: Warehouse, cfg: Config, only: str = "sel"):
    """The audio checks over the clips of the dialogues in table ``only`` (a subset of ``sel``)."""
    clips = con.sql(f"SELECT c.* FROM clips c JOIN {only} w ON w.id = c.dialogue_id").to_arrow_table() \
        if "clips" in wh.tables() else None
    turns = con.sql("SELECT t.id, t.dialogue_id, t.speaker, t.text, t.n_words FROM effective_turns t "
                    f"JOIN {only} w ON w.id = t.dialogue_id").to_arrow_table()
    return validate_audio(clips, turns, cfg.speech.bounds,
                          audio_root=wh.home / "audio")


def _audio_pass(con, wh: Warehouse, cfg: Config, resynthesise: Resynthesise | None):
    """Audio checks over ``sel``. The dialogues whose clips fail are re-synthesised once (``resynthesise``: another
    voice for the failing speaker) and checked again; what still fails is quarantined (removed from ``sel``)."""
    gate = _audio_gate(con, wh, cfg)
    found = audio_violations(gate)
    targets: dict[str, set[str]] = {}
    if found and resynthesise is not None:
        clips = con.sql("SELECT c.id, c.dialogue_id, t.speaker FROM clips c JOIN sel ON sel.id = c.dialogue_id "
                        "LEFT JOIN effective_turns t ON t.id = c.turn_id").to_arrow_table().to_pylist()
        targets = retry_targets(gate, clips)
        log.warning("audio checks failed on %d dialogue(s); re-synthesising them once with other voices", len(targets))
        resynthesise(targets)
        wh.define_views(con)  # the retry wrote new clips and casts: list the store's parts again
        effective_views(con)
        materialise_turns(con)
        con.register("_retry", pa.table({"id": pa.array(sorted(targets), pa.string())}))
        again = _audio_gate(con, wh, cfg, only="_retry")
        con.unregister("_retry")
        found = [q for q in found if q.dialogue_id not in targets] + audio_violations(again)
    drop_from_selection(con, {q.dialogue_id for q in found})
    return gate, found, sorted(targets)


def _stats(con, tax: Taxonomy) -> dict[str, Any]:
    emo = dict(con.execute("SELECT t.label, count(*) FROM effective_turns t JOIN sel ON sel.id = t.dialogue_id GROUP BY 1 ORDER BY 1").fetchall())
    dom = dict(con.execute("SELECT domain, count(*) FROM sel GROUP BY 1 ORDER BY 1").fetchall())
    pairs = dict(con.execute("SELECT model_a || '|' || model_b, count(*) FROM sel GROUP BY 1 ORDER BY 1").fetchall())
    src = dict(con.execute("SELECT t.label_source, count(*) FROM effective_turns t JOIN sel ON sel.id = t.dialogue_id GROUP BY 1").fetchall())
    return {"emotions": emo, "domains": dom, "pairs": pairs, "label_sources": src}


def _agreement(wh: Warehouse) -> dict | None:
    try:
        return agreement_summary(wh.home)
    except Exception as exc:  # agreement is informative; it never blocks a release
        log.warning("agreement figures not computed: %s", exc)
        return {"error": str(exc)}


def _figures(wh: Warehouse, selected: pa.Table) -> tuple[pa.Array, dict] | None:
    ids = selected.column("id").combine_chunks()
    try:
        return ids, warehouse_figures(wh.home, ids)
    except Exception as exc:  # the report reads them again (and says why it cannot) when it is written
        log.warning("warehouse figures of the report not read ahead: %s", exc)
        return None


def _report(out: Path, tax: Taxonomy, wh: Warehouse, manifest: dict[str, Any], tables: ReleaseTables,
            figures: Future | None = None) -> str | None:
    try:
        return write_report(out, taxonomy=tax, home=wh.home, manifest=manifest, tables=tables,
                            figures=figures.result() if figures is not None else None).relative_to(out).as_posix()
    except Exception as exc:  # the report is for people; a plotting failure never blocks a release
        log.warning("release report not written: %s", exc)
        return None


def _sources_text(sources: list[str] | None) -> str:
    parts = []
    for src in sources or ["generated"]:
        if src == "generated":
            parts.append("generated by paired LLMs, judged, optionally human-reviewed")
        elif src == "synthetic":
            parts.append("template-made (source 'synthetic')")
        else:
            parts.append(f"imported real dialogues from {src}, with their own labels (mapped in label_* columns)")
    return "; ".join(parts)


def dataset_card(manifest: dict[str, Any]) -> str:
    """README.md of a release: YAML ``configs`` for ``datasets.load_dataset(<dir>)`` plus a summary."""
    v = manifest["version"]
    lines = ["---", "configs:"]
    for cfg_name, default in (("utterances", True), ("dialogues", False)):
        lines.append(f"- config_name: {cfg_name}")
        if default:
            lines.append("  default: true")
        lines.append("  data_files:")
        for split in SPLITS:  # an empty split cannot be loaded by `datasets`: it is left out of the card
            if manifest["counts"]["splits"][split]["dialogues"]:
                lines += [f"  - split: {split}", f"    path: data/{cfg_name}/{split}-{manifest['release_uid']}.parquet"]
    lines += ["license: other", "language:", "- en", "task_categories:", "- text-classification", "tags:",
              "- emotion-recognition-in-conversation", "- synthetic", "---", ""]
    counts = manifest["counts"]
    lines += [
        f"# emoforge release {v}",
        "",
        f"Emotional multi-turn dialogues ({_sources_text(manifest.get('sources'))}); "
        f"taxonomy `{manifest['taxonomy']['name']}` ({len(manifest['taxonomy']['emotions'])} emotions). "
        f"Parent version: {manifest['parent'] or 'none'}. Code: {manifest['code_version']}.",
        "",
        "| split | dialogues | utterances |",
        "|---|---:|---:|",
    ]
    for split in SPLITS:
        c = counts["splits"][split]
        lines.append(f"| {split} | {c['dialogues']} | {c['utterances']} |")
    lines += ["", "## Load", "", "```python", "import datasets",
              f"utterances = datasets.load_dataset('releases/{v}')            # default config",
              f"dialogues = datasets.load_dataset('releases/{v}', 'dialogues')",
              "```", "",
              "Splits are grouped by dialogue and stable across versions. `difficulty` is PRC-Emo's curriculum "
              f"difficulty (k={manifest['difficulty']['k']}, b={manifest['difficulty']['b']}); `bucket` its "
              f"quantile bucket (0 = easiest, {manifest['difficulty']['buckets']} buckets, edges "
              f"{[round(e, 4) for e in manifest['difficulty']['edges']]} over the train split).", "",
              "## Emotions", "", "| emotion | utterances |", "|---|---:|"]
    for emo, n in sorted(manifest["stats"]["emotions"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {emo} | {n} |")
    lines += card_lines(manifest.get("quarantine"))
    if manifest.get("agreement"):
        lines += ["", "## Human review agreement", "", "```json", json.dumps(manifest["agreement"], indent=1, default=str), "```"]
    if manifest.get("report"):
        lines += ["", f"Report with plots: [{manifest['report']}]({manifest['report']})"]
    lines += ["", "`manifest.json` lists the sha256 of every file; `emoforge pull` verifies them.", ""]
    return "\n".join(lines)

