"""Pull annotations from Label Studio, validate them, store them as ``reviews`` (idempotently).

Validation, per annotation (each problem is reported with its task; nothing else is dropped):

* the task is not ours: no emoforge dialogue id in its data, no push-ledger entry for it, or a dialogue id the
  warehouse does not know  → no review; the annotation is kept in ``review_problems``;
* the task shows another version of the dialogue (text hash or number of turns changed since the push)
  → no review (its labels may not line up); kept in ``review_problems``;
* unknown emotion labels, several labels for one turn, turns that do not exist (extra), turns left without a
  label (missing), a missing/unknown verdict, a rating outside 1–5, unknown control names → the review is stored
  with the valid parts (bad turn labels become "" = no correction) and the problems are kept with the raw result.

Storage is idempotent: a review's id is derived from (project, task, annotation); unchanged annotations are not
rewritten (a re-pull adds nothing), an edited annotation replaces its review, an annotation deleted or skipped
in Label Studio turns its review into a non-vote (no verdict, no labels).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from annotation.config import EMOTION_PREFIX, VERDICTS
from annotation.labelstudio_view import list_all
from annotation.push import DEFAULT_PROJECT, PushError, find_project, project_key
from annotation.records import ReviewProblem, review_id
from schemas.records import Review
from warehouse.store import Warehouse

_EMO_RE = re.compile(rf"^{EMOTION_PREFIX}(\d+)$")


@dataclass
class TaskProblem:
    task_id: int
    annotation_id: int | None
    dialogue_id: str | None
    annotator: str
    message: str

    def __str__(self) -> str:
        who = f" annotation {self.annotation_id} by {self.annotator}" if self.annotation_id is not None else ""
        dlg = f" (dialogue {self.dialogue_id})" if self.dialogue_id else ""
        return f"task {self.task_id}{who}{dlg}: {self.message}"


@dataclass
class PullReport:
    project_id: int
    tasks: int = 0
    annotations: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    withdrawn: int = 0
    skipped: int = 0
    rejected: int = 0  # annotations that could not become a review (not ours / stale)
    problems: list[TaskProblem] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"project_id": self.project_id, "tasks": self.tasks, "annotations": self.annotations, "new": self.new,
                "updated": self.updated, "unchanged": self.unchanged, "withdrawn": self.withdrawn,
                "skipped": self.skipped, "not_stored": self.rejected, "problems": len(self.problems),
                "tasks_with_problems": len({p.task_id for p in self.problems})}


def config_labels(label_config: str) -> set[str]:
    """The emotion choices of the project's labeling config (what annotators could pick)."""
    root = ET.fromstring(label_config)
    labels: set[str] = set()
    for choices in root.iter("Choices"):
        if choices.get("name", "").startswith(EMOTION_PREFIX):
            labels.update(c.get("value") for c in choices.iter("Choice") if c.get("value"))
    return labels


def _parse_time(value) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return datetime.now(timezone.utc)


def parse_annotation(result: list[dict], n_turns: int, labels: set[str]) -> tuple[dict, list[str]]:
    """(fields of a Review, problems) from an annotation ``result``; never raises on bad content."""
    turn_labels = [""] * n_turns
    seen_turns: set[int] = set()
    verdict = rating = None
    comment = ""
    problems: list[str] = []
    for item in result or []:
        if not isinstance(item, dict):
            problems.append(f"result item is not an object: {str(item)[:60]}")
            continue
        name = str(item.get("from_name", ""))
        value = item.get("value") or {}
        m = _EMO_RE.match(name)
        if m:
            idx = int(m.group(1))
            chosen = value.get("choices") or []
            if idx >= n_turns:
                problems.append(f"extra turn {idx + 1}: the dialogue has {n_turns} turns (label {chosen!r} ignored)")
                continue
            seen_turns.add(idx)
            if len(chosen) != 1:
                problems.append(f"turn {idx + 1}: expected one emotion, got {chosen!r}")
                continue
            if chosen[0] not in labels:
                problems.append(f"turn {idx + 1}: unknown label {chosen[0]!r}")
                continue
            turn_labels[idx] = chosen[0]
        elif name == "verdict":
            chosen = value.get("choices") or []
            if len(chosen) == 1 and chosen[0] in VERDICTS:
                verdict = chosen[0]
            else:
                problems.append(f"unknown verdict {chosen!r} (expected one of {list(VERDICTS)})")
        elif name == "rating":
            r = value.get("rating")
            if isinstance(r, (int, float)) and float(r).is_integer() and 1 <= int(r) <= 5:
                rating = int(r)
            else:
                problems.append(f"rating {r!r} is not an integer from 1 to 5")
        elif name == "comment":
            text = value.get("text") or []
            comment = "\n".join(str(t) for t in text) if isinstance(text, list) else str(text)
        else:
            problems.append(f"unknown control {name!r}")
    missing = [i + 1 for i in range(n_turns) if i not in seen_turns]
    if missing:
        problems.append(f"missing turn label(s) for turn(s) {', '.join(map(str, missing))}")
    if verdict is None and not any("verdict" in p for p in problems):
        problems.append("no verdict (accept/reject)")
    return {"verdict": verdict, "rating": rating, "turn_labels": turn_labels, "comment": comment}, problems


def _usernames(client) -> dict[int, str]:
    try:
        return {u.id: (u.email or u.username or str(u.id)) for u in client.users.list()}
    except Exception:  # an annotator token cannot list users: fall back to ids
        return {}


@dataclass
class _Stored:
    """What the warehouse holds before a pull: dialogue text hashes and turn counts, reviews, ledger, problems."""
    dialogues: dict[str, str]
    n_turns: dict[str, int]
    reviews: dict[str, dict]
    ledger: dict[int, str]
    problems: dict[str, bool]


def _stored(wh: Warehouse, project_id: int) -> _Stored:
    con = wh.connect()
    try:
        tables = wh.tables()
        return _Stored(
            dialogues={r[0]: r[1] or "" for r in con.sql("SELECT id, text_hash FROM dialogues").fetchall()},
            n_turns=dict(con.sql("SELECT dialogue_id, count(*) FROM turns GROUP BY 1").fetchall()),
            reviews={r["id"]: r for r in con.sql(
                "SELECT id, dialogue_id, annotator, task_id, annotation_id, updated_at, verdict, turn_labels "
                "FROM reviews").to_arrow_table().to_pylist()},
            ledger=dict(con.execute("SELECT task_id, dialogue_id FROM review_tasks WHERE project_id = ?",
                                    [project_id]).fetchall()) if "review_tasks" in tables else {},
            problems={r[0]: r[1] for r in con.execute(
                "SELECT id, resolved FROM review_problems WHERE project_id = ?", [project_id]).fetchall()}
            if "review_problems" in tables else {},
        )
    finally:
        con.close()


def _not_ours(task_id: int, did: str | None, data: dict, st: _Stored) -> str | None:
    """Why a task's annotations cannot become reviews (not our task, or another version of the dialogue)."""
    if not did:
        return "task is not ours: its data has no emoforge_dialogue_id"
    if st.ledger and task_id not in st.ledger:
        return f"task is not ours: it was not created by emoforge push (dialogue {did})"
    if st.ledger and st.ledger[task_id] != did:
        return f"task is not ours: the push ledger has dialogue {st.ledger[task_id]} for it, the task says {did}"
    if did not in st.dialogues:
        return f"task is not ours: dialogue {did} is not in the warehouse"
    if data.get("emoforge_text_hash", "") != st.dialogues[did] or data.get("emoforge_n_turns") != st.n_turns.get(did):
        return "the task shows another version of the dialogue (text or number of turns changed since push)"
    return None


@dataclass
class _Pulled:
    reviews: list[Review] = field(default_factory=list)
    problems: list[ReviewProblem] = field(default_factory=list)
    review_ids: set[str] = field(default_factory=set)
    problem_ids: set[str] = field(default_factory=set)


def _take_annotation(ann: dict, task, key: str, project_id: int, labels: set[str], st: _Stored,
                     who: str, out: _Pulled, report: PullReport) -> None:
    """Validate one annotation of ``task``; add its review and/or problem to ``out``, count it in ``report``."""
    data = task.data or {}
    did = data.get("emoforge_dialogue_id")
    aid = ann.get("id")
    if ann.get("was_cancelled"):
        report.skipped += 1
        return  # skipped by the annotator: no vote (a stored review becomes a non-vote, see _withdrawn)
    fatal = _not_ours(task.id, did, data, st)
    fields_, found = ({}, [fatal]) if fatal else parse_annotation(ann.get("result") or [], st.n_turns[did], labels)
    if found:
        pid = ReviewProblem.make_id(key, project_id, task.id, aid)
        out.problem_ids.add(pid)
        report.problems.extend(TaskProblem(task.id, aid, did, who, msg) for msg in found)
        out.problems.append(ReviewProblem(id=pid, project_id=project_id, task_id=task.id, annotation_id=aid,
                                          dialogue_id=did, annotator=who, problems=found,
                                          raw_json=json.dumps(ann.get("result"), ensure_ascii=False)))
    if fatal:
        report.rejected += 1
        return
    rid = review_id(key, project_id, task.id, aid)
    updated_at = _parse_time(ann.get("updated_at"))
    out.review_ids.add(rid)
    prev = st.reviews.get(rid)
    if prev is not None and _parse_time(prev["updated_at"]) == updated_at:
        report.unchanged += 1
        return
    out.reviews.append(Review(id=rid, dialogue_id=did, task_id=task.id, annotation_id=aid, annotator=who,
                              updated_at=updated_at, **fields_))
    if prev is None:
        report.new += 1
    else:
        report.updated += 1


def _withdrawn(st: _Stored, seen: set[str], key: str, project_id: int) -> list[Review]:
    """Reviews whose annotation was deleted or skipped since the last pull: they stop voting."""
    out = []
    for rid, prev in st.reviews.items():
        if rid in seen or rid != review_id(key, project_id, prev["task_id"], prev["annotation_id"]):
            continue  # still there, or belongs to another project
        if prev["verdict"] is None and not any(prev["turn_labels"] or []):
            continue  # already a non-vote
        out.append(Review(id=rid, dialogue_id=prev["dialogue_id"], task_id=prev["task_id"],
                          annotation_id=prev["annotation_id"], annotator=prev["annotator"],
                          verdict=None, rating=None, turn_labels=[],
                          comment="withdrawn: deleted or skipped in Label Studio"))
    return out


def _store_problems(wh: Warehouse, problems: list[ReviewProblem], st: _Stored, seen: set[str]) -> None:
    """Store new or changed problems, and mark the ones fixed since the last pull resolved."""
    for pid, resolved in st.problems.items():
        if pid not in seen and not resolved:
            old = wh.query("SELECT * FROM review_problems WHERE id = ?", [pid]).to_pylist()[0]
            old.update(resolved=True, updated_at=datetime.now(timezone.utc))
            problems.append(ReviewProblem(**old))
    if not problems:
        return
    current = {}
    if "review_problems" in wh.tables():
        current = {r["id"]: (tuple(r["problems"]), r["raw_json"], r["resolved"]) for r in wh.query(
            "SELECT id, problems, raw_json, resolved FROM review_problems").to_pylist()}
    wh.upsert([p for p in problems if current.get(p.id) != (tuple(p.problems), p.raw_json, p.resolved)])


def pull(home: Path, client, *, title: str = DEFAULT_PROJECT) -> PullReport:
    """Fetch every annotation of the project, validate it and store reviews and problems (idempotent)."""
    wh = Warehouse(home)
    project = find_project(client, title)
    if project is None:
        raise PushError(f"no Label Studio project named {title!r}: push first (`emoforge review push`)")
    project = client.projects.get(id=project.id)
    key = project_key(project)
    labels = config_labels(project.label_config)
    report = PullReport(project_id=project.id)
    st = _stored(wh, project.id)
    users = _usernames(client)
    out = _Pulled()
    for task in list_all(client.tasks.list, project=project.id, fields="all"):
        report.tasks += 1
        for ann in task.annotations or []:
            ann = ann if isinstance(ann, dict) else ann.dict()
            report.annotations += 1
            who = users.get(ann.get("completed_by"), f"user:{ann.get('completed_by')}")
            _take_annotation(ann, task, key, project.id, labels, st, who, out, report)
    gone = _withdrawn(st, out.review_ids, key, project.id)
    report.withdrawn += len(gone)
    _store_problems(wh, out.problems, st, out.problem_ids)
    if out.reviews or gone:
        wh.upsert(out.reviews + gone)
    return report


def open_problems(home: Path) -> list[dict]:
    wh = Warehouse(home)
    if "review_problems" not in wh.tables():
        return []
    return wh.query("SELECT * FROM review_problems WHERE NOT resolved ORDER BY task_id, annotation_id").to_pylist()
