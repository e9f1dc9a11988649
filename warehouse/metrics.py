"""Run metrics as DuckDB views: tokens, calls, retries, errors and latency per model; acceptance per model pair,
domain and run; judge verdicts.

Every run writes one ``runs`` row whose ``metrics_json`` holds, under ``"models"``, the LLM client's per-model
accounting (``flows.llm.client.LLMClient.stats()``)::

    {"models": {"<model>": {"requests": 10, "calls": 9, "cached": 1, "retries": 2, "repairs": 0,
                            "errors": {"timeout": 1}, "prompt_tokens": 900, "completion_tokens": 400,
                            "latency_p50": 0.8, "latency_p90": 1.9, "latency_p99": 2.4,   # seconds
                            "tokens_per_s": 55.0, ...}},   # or tokens_per_s_wall (flows.build)
     "stages": {...}, ...}

Views (on a connection from :func:`connect`, or inside ``catalog.duckdb`` after :func:`install_catalog_views`):

``run_model_metrics``   one row per (run, model): the numbers above, ``errors`` summed over kinds
``model_metrics``       per model over all runs: sums; latency percentiles as call-weighted means of the runs'
                        percentiles (``latency_p99_max_s``: the worst run's p99)
``run_summary``         per run: command, status, duration, calls, tokens, retries, errors, dialogues generated /
                        accepted / rejected / failed
``acceptance_by_pair``  per (model_a, model_b): counts by status and ``acceptance`` = accepted / decided
``acceptance_by_domain``, ``acceptance_by_run``   the same per domain and per (run, model pair)
``judge_summary``       per judge: verdict counts and mean scores

Acceptance uses ``effective_dialogues`` (human reviews over judges, :mod:`warehouse.effective`) when the
connection has the store's ``reviews`` and ``turns`` views, else ``dialogues``.
"""

from __future__ import annotations

import os

import duckdb

from warehouse.effective import effective_views
from warehouse.store import Warehouse, WarehouseError

_NUM = "coalesce(TRY_CAST(json_extract(m.value, '$.{k}') AS {t}), 0)"


def _n(key: str, typ: str = "BIGINT") -> str:
    return _NUM.format(k=key, t=typ)


RUN_MODEL_METRICS = f"""
CREATE OR REPLACE VIEW run_model_metrics AS
SELECT r.id AS run_id, r.command, r.status, r.started_at, r.finished_at, m.key AS model,
       {_n('requests')} AS requests, {_n('calls')} AS calls, {_n('cached')} AS cached,
       {_n('retries')} AS retries, {_n('repairs')} AS repairs,
       coalesce((SELECT sum(TRY_CAST(e.value AS BIGINT)) FROM json_each(m.value, '$.errors') e), 0)::BIGINT AS errors,
       {_n('prompt_tokens')} AS prompt_tokens, {_n('completion_tokens')} AS completion_tokens,
       {_n('prompt_tokens')} + {_n('completion_tokens')} AS total_tokens,
       TRY_CAST(json_extract(m.value, '$.latency_p50') AS DOUBLE) AS latency_p50_s,
       TRY_CAST(json_extract(m.value, '$.latency_p90') AS DOUBLE) AS latency_p90_s,
       TRY_CAST(json_extract(m.value, '$.latency_p99') AS DOUBLE) AS latency_p99_s,
       coalesce(TRY_CAST(json_extract(m.value, '$.tokens_per_s') AS DOUBLE),
                TRY_CAST(json_extract(m.value, '$.tokens_per_s_wall') AS DOUBLE)) AS tokens_per_s
FROM runs r,
     json_each(CASE WHEN json_valid(r.metrics_json) AND json_type(r.metrics_json, '$.models') = 'OBJECT'
                    THEN r.metrics_json ELSE '{{"models": {{}}}}' END, '$.models') m
"""

MODEL_METRICS = """
CREATE OR REPLACE VIEW model_metrics AS
SELECT model,
       count(DISTINCT run_id) AS runs,
       sum(requests)::BIGINT AS requests, sum(calls)::BIGINT AS calls, sum(cached)::BIGINT AS cached,
       sum(retries)::BIGINT AS retries, sum(repairs)::BIGINT AS repairs, sum(errors)::BIGINT AS errors,
       sum(prompt_tokens)::BIGINT AS prompt_tokens, sum(completion_tokens)::BIGINT AS completion_tokens,
       sum(total_tokens)::BIGINT AS total_tokens,
       round(sum(retries) / nullif(sum(calls), 0), 4) AS retries_per_call,
       round(sum(errors) / nullif(sum(requests), 0), 4) AS error_rate,
       round(sum(latency_p50_s * calls) FILTER (WHERE latency_p50_s IS NOT NULL)
             / nullif(sum(calls) FILTER (WHERE latency_p50_s IS NOT NULL), 0), 4) AS latency_p50_s,
       round(sum(latency_p90_s * calls) FILTER (WHERE latency_p90_s IS NOT NULL)
             / nullif(sum(calls) FILTER (WHERE latency_p90_s IS NOT NULL), 0), 4) AS latency_p90_s,
       round(sum(latency_p99_s * calls) FILTER (WHERE latency_p99_s IS NOT NULL)
             / nullif(sum(calls) FILTER (WHERE latency_p99_s IS NOT NULL), 0), 4) AS latency_p99_s,
       max(latency_p99_s) AS latency_p99_max_s,
       round(sum(tokens_per_s * completion_tokens) FILTER (WHERE tokens_per_s IS NOT NULL)
             / nullif(sum(completion_tokens) FILTER (WHERE tokens_per_s IS NOT NULL), 0), 2) AS tokens_per_s
FROM run_model_metrics GROUP BY model ORDER BY model
"""

_STATUS_COUNTS = """
       count(*) AS dialogues,
       count(*) FILTER (WHERE status = 'accepted') AS accepted,
       count(*) FILTER (WHERE status = 'rejected') AS rejected,
       count(*) FILTER (WHERE status = 'uncertain') AS uncertain,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status IN ('pending', 'generated')) AS undecided,
       round(count(*) FILTER (WHERE status = 'accepted')
             / nullif(count(*) FILTER (WHERE status IN ('accepted', 'rejected', 'uncertain')), 0), 4) AS acceptance"""


def _acceptance_sql(src: str) -> list[str]:
    return [
        f"""CREATE OR REPLACE VIEW acceptance_by_pair AS
            SELECT model_a, model_b, CASE WHEN model_a = model_b THEN 'same' ELSE 'cross' END AS pair_type,
            {_STATUS_COUNTS}
            FROM {src} GROUP BY model_a, model_b ORDER BY model_a, model_b""",
        f"""CREATE OR REPLACE VIEW acceptance_by_domain AS
            SELECT domain, {_STATUS_COUNTS} FROM {src} GROUP BY domain ORDER BY domain""",
        f"""CREATE OR REPLACE VIEW acceptance_by_run AS
            SELECT run_id, model_a, model_b, {_STATUS_COUNTS}
            FROM {src} GROUP BY run_id, model_a, model_b ORDER BY run_id, model_a, model_b""",
    ]


JUDGE_SUMMARY = """
CREATE OR REPLACE VIEW judge_summary AS
SELECT judge_id, kind, count(*) AS judgements,
       count(*) FILTER (WHERE verdict = 'accept') AS accept,
       count(*) FILTER (WHERE verdict = 'reject') AS reject,
       count(*) FILTER (WHERE verdict = 'uncertain') AS uncertain,
       round(avg(coherence), 3) AS coherence, round(avg(naturalness), 3) AS naturalness,
       round(avg(domain_fit), 3) AS domain_fit, round(avg(safety), 3) AS safety,
       round(avg(list_avg(emotion_fidelity)), 3) AS emotion_fidelity
FROM judgements GROUP BY judge_id, kind ORDER BY judge_id
"""

RUN_SUMMARY = """
CREATE OR REPLACE VIEW run_summary AS
WITH m AS (
    SELECT run_id, count(*) AS models, sum(calls) AS calls, sum(total_tokens) AS tokens, sum(retries) AS retries,
           sum(errors) AS errors
    FROM run_model_metrics GROUP BY run_id
), d AS (
    SELECT run_id, count(*) AS dialogues,
           count(*) FILTER (WHERE status = 'accepted') AS accepted,
           count(*) FILTER (WHERE status = 'rejected') AS rejected,
           count(*) FILTER (WHERE status = 'failed') AS failed
    FROM dialogues WHERE run_id IS NOT NULL GROUP BY run_id
)
SELECT r.id AS run_id, r.command, r.status, r.started_at, r.finished_at,
       round(epoch(r.finished_at) - epoch(r.started_at), 3) AS duration_s,
       coalesce(m.models, 0)::BIGINT AS models, coalesce(m.calls, 0)::BIGINT AS calls,
       coalesce(m.tokens, 0)::BIGINT AS tokens, coalesce(m.retries, 0)::BIGINT AS retries,
       coalesce(m.errors, 0)::BIGINT AS errors,
       coalesce(d.dialogues, 0)::BIGINT AS dialogues, coalesce(d.accepted, 0)::BIGINT AS accepted,
       coalesce(d.rejected, 0)::BIGINT AS rejected, coalesce(d.failed, 0)::BIGINT AS failed
FROM runs r LEFT JOIN m ON m.run_id = r.id LEFT JOIN d ON d.run_id = r.id
ORDER BY r.started_at
"""

VIEWS = ("run_model_metrics", "model_metrics", "run_summary", "acceptance_by_pair", "acceptance_by_domain",
         "acceptance_by_run", "judge_summary")


def _has_view(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    rows = con.sql(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal UNION ALL SELECT table_name FROM duckdb_tables()"
    ).fetchall()
    return name in {r[0] for r in rows}


def define_metric_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Create the metric views on ``con`` (which has the store's views); returns the names created."""
    made: list[str] = []
    if _has_view(con, "runs"):
        con.execute(RUN_MODEL_METRICS)
        con.execute(MODEL_METRICS)
        made += ["run_model_metrics", "model_metrics"]
        if _has_view(con, "dialogues"):
            con.execute(RUN_SUMMARY)
            made.append("run_summary")
    if _has_view(con, "dialogues"):
        src = "dialogues"
        if all(_has_view(con, v) for v in ("reviews", "turns")):
            effective_views(con)
            src = "effective_dialogues"
        for sql in _acceptance_sql(src):
            con.execute(sql)
        made += ["acceptance_by_pair", "acceptance_by_domain", "acceptance_by_run"]
    if _has_view(con, "judgements"):
        con.execute(JUDGE_SUMMARY)
        made.append("judge_summary")
    return made


def connect(home: str | os.PathLike) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the store's views and the metric views."""
    con = Warehouse(home).connect()
    define_metric_views(con)
    return con


def query(home: str | os.PathLike, sql: str):
    con = connect(home)
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def install_catalog_views(home: str | os.PathLike) -> list[str]:
    """Define the store views and the metric views inside ``catalog.duckdb`` (under the write lock), so that
    ``duckdb <home>/catalog.duckdb -c 'FROM model_metrics'`` works without emoforge."""
    wh = Warehouse(home)
    try:
        with wh.catalog(write=True) as con:
            wh.refresh_catalog_views(con)
            return define_metric_views(con)
    except (OSError, duckdb.IOException) as exc:
        raise WarehouseError(f"cannot write the catalog {wh.catalog_path}: {getattr(exc, 'strerror', None) or exc}"
                             ) from None
