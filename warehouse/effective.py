"""What a release takes: dialogues and turns with the human reviews applied over the judges' decisions.

:func:`effective_views` defines two views on a connection from :meth:`warehouse.store.Warehouse.connect`:

``effective_dialogues``
    every column of ``dialogues``; ``status``, ``decided_by`` and ``status_reason`` replaced where humans
    reviewed the dialogue, plus ``review_accepts``, ``review_rejects`` (number of annotators voting each way)
    and ``review_rating`` (mean 1–5 rating, NULL when none).

``effective_turns``
    every column of ``turns``; ``label`` replaced by the human-corrected label and ``label_source`` set to
    ``'human'`` where reviewers corrected the turn. ``intended_emotion`` is never changed.

Merge policy (human decisions win over judges):

* Each annotator counts once per dialogue: their latest review (``updated_at``, then ``annotation_id``).
* Verdict: the majority of the annotators' accept/reject votes decides: ``accepted`` / ``rejected`` with
  ``decided_by = 'human'``. A tie (e.g. one accept, one reject) makes the dialogue ``uncertain``
  (``decided_by = 'human'``, reason "annotators split"): it is left out of releases until another annotator
  breaks the tie, whatever the judges said (PRC-Emo keeps only what annotators agree on).
  Reviews without a verdict do not vote. Dialogues whose generation ``failed`` (or is ``pending``) keep
  their status: a review cannot publish a dialogue that was never completed.
* Turn labels: per turn, the label most annotators chose wins; an empty label means "no choice" and does
  not vote; a tie keeps the current label. When the winning label differs from the turn's current label it
  becomes ``label`` and ``label_source`` becomes ``'human'``; a human who confirms the label changes nothing.
"""

from __future__ import annotations

import duckdb

# each annotator counts once per dialogue: their latest review
LATEST_REVIEWS_SQL = """
    SELECT * FROM reviews
    QUALIFY row_number() OVER (
        PARTITION BY dialogue_id, annotator ORDER BY updated_at DESC, annotation_id DESC, id DESC) = 1
"""

# each judge counts once per dialogue: its latest judgement
LATEST_JUDGEMENTS_SQL = """
    SELECT * FROM judgements
    QUALIFY row_number() OVER (PARTITION BY dialogue_id, judge_id ORDER BY created_at DESC, id DESC) = 1
"""

EFFECTIVE_DIALOGUES_SQL = f"""
CREATE OR REPLACE VIEW effective_dialogues AS
WITH latest AS ({LATEST_REVIEWS_SQL}),
votes AS (
    SELECT dialogue_id,
           count(*) FILTER (WHERE verdict = 'accept') AS n_acc,
           count(*) FILTER (WHERE verdict = 'reject') AS n_rej,
           avg(rating) FILTER (WHERE rating IS NOT NULL) AS mean_rating
    FROM latest GROUP BY dialogue_id
)
SELECT d.* REPLACE (
    CASE WHEN d.status IN ('failed', 'pending') OR coalesce(v.n_acc, 0) + coalesce(v.n_rej, 0) = 0 THEN d.status
         WHEN v.n_acc > v.n_rej THEN 'accepted'
         WHEN v.n_rej > v.n_acc THEN 'rejected'
         ELSE 'uncertain' END AS status,
    CASE WHEN d.status IN ('failed', 'pending') OR coalesce(v.n_acc, 0) + coalesce(v.n_rej, 0) = 0 THEN d.decided_by
         ELSE 'human' END AS decided_by,
    CASE WHEN d.status IN ('failed', 'pending') OR coalesce(v.n_acc, 0) + coalesce(v.n_rej, 0) = 0 THEN d.status_reason
         WHEN v.n_acc = v.n_rej THEN format('annotators split {{}} accept / {{}} reject', v.n_acc, v.n_rej)
         ELSE format('human review: {{}} accept / {{}} reject', v.n_acc, v.n_rej) END AS status_reason
),
    coalesce(v.n_acc, 0)::BIGINT AS review_accepts,
    coalesce(v.n_rej, 0)::BIGINT AS review_rejects,
    v.mean_rating::DOUBLE AS review_rating
FROM dialogues d LEFT JOIN votes v ON v.dialogue_id = d.id
"""

EFFECTIVE_TURNS_SQL = f"""
CREATE OR REPLACE VIEW effective_turns AS
WITH latest AS ({LATEST_REVIEWS_SQL}),
per_turn AS (
    SELECT dialogue_id, unnest(turn_labels) AS label, generate_subscripts(turn_labels, 1) - 1 AS idx
    FROM latest WHERE len(turn_labels) > 0
),
counts AS (
    SELECT dialogue_id, idx, label, count(*) AS n
    FROM per_turn WHERE label IS NOT NULL AND label <> ''
    GROUP BY ALL
),
top AS (
    SELECT * FROM counts
    QUALIFY rank() OVER (PARTITION BY dialogue_id, idx ORDER BY n DESC) = 1
),
winner AS (
    SELECT dialogue_id, idx, any_value(label) AS label FROM top GROUP BY dialogue_id, idx HAVING count(*) = 1
)
SELECT t.* REPLACE (
    CASE WHEN w.label IS NOT NULL AND w.label <> t.label THEN w.label ELSE t.label END AS label,
    CASE WHEN w.label IS NOT NULL AND w.label <> t.label THEN 'human' ELSE t.label_source END AS label_source
)
FROM turns t LEFT JOIN winner w ON w.dialogue_id = t.dialogue_id AND w.idx = t.idx
"""


def effective_views(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``effective_dialogues`` and ``effective_turns`` on ``con`` (which has the store's views)."""
    con.execute(EFFECTIVE_DIALOGUES_SQL)
    con.execute(EFFECTIVE_TURNS_SQL)
