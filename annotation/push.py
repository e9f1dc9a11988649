"""Push dialogues that need human eyes to a Label Studio project (created or updated), judges as predictions.

Which dialogues go (:class:`ReviewPolicy`):

* ``uncertain``     the judges' uncertain band (dialogue status ``uncertain``);
* ``disagreement``  judges that disagree: different verdicts, or a rubric score that differs by ``score_spread``
                    or more between judges;
* ``audit-accepted`` / ``audit-rejected``  a random audit sample of the judges' accepted and rejected dialogues at
                    ``audit_accepted`` / ``audit_rejected`` rates. The draw is a hash of (seed, dialogue id), so the
                    same dialogues are drawn on every push and a higher rate only adds to the sample.

Pushing is idempotent: dialogues that already have a task in the project (found in Label Studio itself by the
dialogue id in the task data, and in the ``review_tasks`` ledger) are not pushed again, so a push interrupted
half way is simply run again.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from annotation.config import CONFIG_VERSION, config_slots, labeling_config, prediction_result, slots_for, task_data
from annotation.labelstudio_view import LABELS_MODEL, audio_for, ensure_audio_storage, ensure_task_view, list_all
from annotation.records import ReviewTask
from schemas.config.review import ReviewConfig
from warehouse.effective import LATEST_JUDGEMENTS_SQL
from warehouse.store import Warehouse

DEFAULT_PROJECT = ReviewConfig().project  # one default: the review: section
RUBRIC = ("coherence", "naturalness", "domain_fit", "safety")
REASONS = ("uncertain", "disagreement", "audit-accepted", "audit-rejected")


class PushError(RuntimeError):
    pass


_DEFAULTS = ReviewConfig()  # one set of defaults: the review: section


@dataclass
class ReviewPolicy:
    """Which dialogues go to human review (``review:`` section of the run config; see :func:`select_for_review`)."""

    uncertain: bool = _DEFAULTS.uncertain
    disagreement: bool = _DEFAULTS.disagreement
    score_spread: int = _DEFAULTS.score_spread
    audit_accepted: float = _DEFAULTS.audit_accepted
    audit_rejected: float = _DEFAULTS.audit_rejected
    seed: int = _DEFAULTS.seed
    limit: int | None = _DEFAULTS.limit
    sources: list[str] | None = None

    def __post_init__(self) -> None:
        for name in ("audit_accepted", "audit_rejected"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise PushError(f"{name.replace('_', ' ')} rate must be between 0 and 1, got {rate}")
        if self.score_spread < 1:
            raise PushError(f"score spread must be at least 1, got {self.score_spread}")
        if self.limit is not None and self.limit < 0:
            raise PushError(f"limit must be >= 0, got {self.limit}")


@dataclass
class PushReport:
    project_id: int
    project_title: str
    selected: dict[str, int] = field(default_factory=dict)
    created: int = 0
    already_there: int = 0
    stale: list[str] = field(default_factory=list)  # pushed before, text changed since
    config_updated: bool = False
    project_created: bool = False

    def as_dict(self) -> dict:
        return {"project_id": self.project_id, "project": self.project_title, "selected": self.selected,
                "created": self.created, "already_there": self.already_there, "stale": len(self.stale),
                "project_created": self.project_created, "config_updated": self.config_updated}


def audit_draw(seed: int, dialogue_id: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, dialogue id)."""
    h = hashlib.sha256(f"{seed}:{dialogue_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def latest_judgements(con) -> dict[str, list[dict]]:
    rows = con.sql(
        f"SELECT * FROM ({LATEST_JUDGEMENTS_SQL}) ORDER BY dialogue_id, judge_id"
    ).to_arrow_table().to_pylist()
    out: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        out[r["dialogue_id"]].append(r)
    return out


def judges_disagree(judgements: list[dict], score_spread: int) -> bool:
    verdicts = {j["verdict"] for j in judgements}
    if len(verdicts) > 1:
        return True
    for crit in RUBRIC:
        vals = [j[crit] for j in judgements if j.get(crit) is not None]
        if len(vals) >= 2 and max(vals) - min(vals) >= score_spread:
            return True
    return False


def select_for_review(home: Path, policy: ReviewPolicy) -> list[tuple[str, str]]:
    """(dialogue id, reason) of the dialogues that should be reviewed, in a stable order."""
    wh = Warehouse(home)
    con = wh.connect()
    try:
        where = "status IN ('accepted', 'rejected', 'uncertain')"
        params: list = []
        if policy.sources:
            where += " AND source IN (SELECT unnest(?))"
            params.append(list(policy.sources))
        dialogues = con.execute(f"SELECT id, status FROM dialogues WHERE {where} ORDER BY id", params).fetchall()
        judgements = latest_judgements(con)
    finally:
        con.close()
    chosen: list[tuple[str, str]] = []
    for did, status in dialogues:
        reason = None
        if policy.uncertain and status == "uncertain":
            reason = "uncertain"
        elif policy.disagreement and judges_disagree(judgements.get(did, []), policy.score_spread):
            reason = "disagreement"
        elif status == "accepted" and audit_draw(policy.seed, did) < policy.audit_accepted:
            reason = "audit-accepted"
        elif status == "rejected" and audit_draw(policy.seed, did) < policy.audit_rejected:
            reason = "audit-rejected"
        if reason:
            chosen.append((did, reason))
    order = {r: i for i, r in enumerate(REASONS)}
    chosen.sort(key=lambda x: (order[x[1]], x[0]))
    if policy.limit is not None:
        chosen = chosen[: policy.limit]
    return chosen


# ---- Label Studio side -----------------------------------------------------------------------------
def project_key(project) -> str:
    """A key for the project that survives a port change and differs when the Label Studio database is new."""
    created = getattr(project, "created_at", None)
    return f"{project.id}@{created.isoformat() if hasattr(created, 'isoformat') else created}"


def find_project(client, title: str):
    for p in list_all(client.projects.list):
        if p.title == title:
            return p
    return None


def ensure_project(client, title: str, emotions: list[str], overlap: int, model_version: str | None = None,
                   *, slots: int | None = None, audio: bool = False):
    """(project, created, config_updated): the project with the dialogue config, created or brought up to date.

    ``slots``: turn rows the pushed dialogues need; an existing project keeps more rows if it has them (a config
    never shrinks, so tasks pushed before keep fitting). ``audio``: the pushed dialogues have speech (a project
    that had audio keeps it).
    """
    if len(title) < 3:
        raise PushError(f"project title {title!r} is too short (Label Studio needs 3 characters or more)")
    if overlap < 1:
        raise PushError(f"overlap (annotators per task) must be at least 1, got {overlap}")
    settings = dict(maximum_annotations=overlap, overlap_cohort_percentage=100, show_collab_predictions=True,
                    show_skip_button=True, enable_empty_annotation=False)
    if model_version:
        settings["model_version"] = model_version
    project = find_project(client, title)
    old = (project.label_config or "") if project is not None else ""
    xml = labeling_config(emotions, slots=max(slots or 0, config_slots(old), slots_for(0)),
                          audio=audio or 'name="mix"' in old)
    if project is None:
        project = client.projects.create(
            title=title, label_config=xml,
            description=f"emoforge {CONFIG_VERSION}: accept or reject each dialogue, correct turn emotions, rate 1-5",
            **settings)
        return client.projects.get(id=project.id), True, False
    changed = (project.label_config or "").strip() != xml.strip()
    current = {k: getattr(project, k, None) for k in settings}
    if changed or current != settings:
        try:
            client.projects.update(id=project.id, **({"label_config": xml} if changed else {}), **settings)
        except Exception as exc:  # label studio refuses configs that drop labels already used
            raise PushError(f"Label Studio refused to update the labeling config of project {title!r}: {_api_error(exc)} "
                            "(a project made by an older emoforge, or whose tasks lack the new turn rows, keeps its "
                            "config: push to a new project with --project)") from None
        project = client.projects.get(id=project.id)
    return project, False, changed


def _api_error(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    return json.dumps(body)[:500] if body else str(exc)[:500]


def existing_tasks(client, project_id: int) -> dict[str, dict]:
    """dialogue id -> {task_id, text_hash} of the project's tasks that carry an emoforge dialogue id."""
    out: dict[str, dict] = {}
    for t in list_all(client.tasks.list, project=project_id, fields="task_only"):
        data = t.data or {}
        did = data.get("emoforge_dialogue_id")
        if did and did not in out:
            out[did] = {"task_id": t.id, "text_hash": data.get("emoforge_text_hash", ""),
                        "n_turns": data.get("emoforge_n_turns")}
    return out


def judge_rating(judgement: dict) -> int | None:
    """A judge's 1-5 rating: the mean of its rubric scores, rounded."""
    scores = [judgement[c] for c in RUBRIC if judgement.get(c) is not None]
    return max(1, min(5, round(sum(scores) / len(scores)))) if scores else None


def judge_predictions(judgements: list[dict], turn_labels: list[str], prefill_verdict: bool = False) -> list[dict]:
    """The predictions of one task.

    One per judge (model_version = judge id: its verdict, a 1-5 rating, the labels), for Label Studio's comparison
    view and scores; plus the one that pre-fills the annotator's form (model_version ``LABELS_MODEL``): the current
    turn labels only, or, with ``prefill_verdict``, also the first llm judge's verdict and rating.
    """
    preds = []
    for j in judgements:
        scores = [j[c] for c in RUBRIC if j.get(c) is not None]
        fid = [f for f in (j.get("emotion_fidelity") or []) if f is not None]
        score = (sum(scores) / (5 * len(scores))) if scores else (sum(fid) / (5 * len(fid)) if fid else None)
        verdict = j["verdict"] if j["verdict"] in ("accept", "reject") else None
        pred = {"model_version": j["judge_id"], "result": prediction_result(turn_labels, verdict, judge_rating(j))}
        if score is not None:
            pred["score"] = round(float(score), 4)
        preds.append(pred)
    lead = next((j for j in judgements if j["kind"] == "llm"), judgements[0] if judgements else None)
    verdict = rating = None
    if prefill_verdict and lead is not None:
        verdict = lead["verdict"] if lead["verdict"] in ("accept", "reject") else None
        rating = judge_rating(lead)
    preds.append({"model_version": LABELS_MODEL, "result": prediction_result(turn_labels, verdict, rating)})
    return preds


def _ledger_row(key: str, project_id: int, title: str, did: str, info: dict, reason: str) -> ReviewTask:
    """The push ledger's row for dialogue ``did`` shown by the task ``info`` (from :func:`existing_tasks`)."""
    return ReviewTask(id=ReviewTask.make_id(key, project_id, did), project_id=project_id, project_title=title,
                      task_id=info["task_id"], dialogue_id=did, text_hash=info["text_hash"],
                      n_turns=int(info["n_turns"] or 0), reason=reason)


def _import_tasks(client, project_id: int, todo: list[tuple[str, str]], batch: int,
                  task_of: Callable[[str, str], dict], progress: Callable[[int, int], None] | None) -> None:
    """Import ``todo`` (dialogue id, reason) as tasks in batches; Label Studio's refusal is a PushError."""
    for start in range(0, len(todo), batch):
        part = todo[start:start + batch]
        try:
            client.projects.import_tasks(id=project_id, request=[task_of(d, r) for d, r in part],
                                         return_task_ids=True)
        except Exception as exc:
            raise PushError(f"Label Studio refused the task import: {_api_error(exc)}") from None
        if progress:
            progress(start + len(part), len(todo))


def push(home: Path, client, *, policy: ReviewPolicy | None = None, title: str = DEFAULT_PROJECT,
         emotions: list[str], overlap: int = 1, dialogue_ids: list[str] | None = None, batch: int = 100,
         prefill_verdict: bool = False, progress: Callable[[int, int], None] | None = None) -> PushReport:
    """Select (or take ``dialogue_ids``), create/update the project, import the new tasks with predictions.

    ``prefill_verdict``: pre-select the first llm judge's verdict and rating in the annotator's form (off by
    default: the judges' opinion is shown as information, the annotator decides).
    """
    policy = policy or ReviewPolicy()
    wh = Warehouse(home)
    if dialogue_ids is not None:
        chosen = [(d, "manual") for d in dialogue_ids]
    else:
        chosen = select_for_review(home, policy)
    ids = [d for d, _ in chosen]
    judgements, drows, trows = _load_dialogues(wh, ids)
    missing = [d for d in ids if d not in drows or not trows.get(d)]
    if missing:
        raise PushError(f"{len(missing)} dialogue(s) not in the warehouse or without turns: {', '.join(missing[:5])}")
    used_labels = sorted({t["label"] for ts in trows.values() for t in ts} | {t["intended_emotion"] for ts in trows.values() for t in ts})
    unknown = [label for label in used_labels if label not in emotions]
    all_emotions = list(emotions) + unknown  # labels outside the taxonomy stay choosable (imports)
    audio = audio_for(home, ids)
    longest = max(len(ts) for ts in trows.values()) if trows else 0
    project, created, cfg_changed = ensure_project(client, title, all_emotions, overlap, LABELS_MODEL,
                                                   slots=slots_for(longest), audio=bool(audio))
    slots = config_slots(project.label_config or "")
    has_audio = 'name="mix"' in (project.label_config or "")
    if audio:
        ensure_audio_storage(client, project.id, home)
    ensure_task_view(client, project.id, slots)
    key = project_key(project)
    report = PushReport(project_id=project.id, project_title=title, project_created=created, config_updated=cfg_changed)
    for _, reason in chosen:
        report.selected[reason] = report.selected.get(reason, 0) + 1

    there = existing_tasks(client, project.id)
    reasons = dict(chosen)
    ledger = [_ledger_row(key, project.id, title, d, info, reasons.get(d, "manual")) for d, info in there.items()]
    todo = []
    for did, reason in chosen:
        if did in there:
            report.already_there += 1
            if there[did]["text_hash"] != (drows[did].get("text_hash") or ""):
                report.stale.append(did)
            continue
        todo.append((did, reason))

    _import_tasks(client, project.id, todo, batch, lambda did, reason: {
        "data": task_data(drows[did], trows[did], judgements.get(did, []), slots=slots, reason=reason,
                          audio=audio.get(did, {}) if has_audio else None),
        "predictions": judge_predictions(judgements.get(did, []), [t["label"] for t in trows[did]], prefill_verdict),
    }, progress)
    if todo:
        # map dialogue -> task id from Label Studio itself (import order is not promised)
        there = existing_tasks(client, project.id)
        for did, reason in todo:
            if did not in there:
                raise PushError(f"dialogue {did} was imported but no task carries it")
            ledger.append(_ledger_row(key, project.id, title, did, there[did], reason))
        report.created = len(todo)
    _upsert_ledger(wh, ledger)
    return report


def _load_dialogues(wh: Warehouse, ids: list[str]) -> tuple[dict, dict, dict]:
    """(latest judgements by dialogue, dialogue rows by id, turn rows by dialogue sorted by idx) for ``ids``."""
    con = wh.connect()
    try:
        judgements = latest_judgements(con)
        drows = {r["id"]: r for r in con.sql(
            "SELECT * FROM dialogues WHERE id IN (SELECT unnest($ids))", params={"ids": ids}).to_arrow_table().to_pylist()}
        trows: dict[str, list[dict]] = defaultdict(list)
        for r in con.sql("SELECT * FROM turns WHERE dialogue_id IN (SELECT unnest($ids)) ORDER BY dialogue_id, idx",
                         params={"ids": ids}).to_arrow_table().to_pylist():
            trows[r["dialogue_id"]].append(r)
    finally:
        con.close()
    return judgements, drows, trows


def _upsert_ledger(wh: Warehouse, rows: list[ReviewTask]) -> None:
    """Write ledger rows that are new or changed (a re-push writes nothing)."""
    if not rows:
        return
    known: dict[str, tuple] = {}
    if "review_tasks" in wh.tables():
        for r in wh.query("SELECT id, task_id, text_hash FROM review_tasks").to_pylist():
            known[r["id"]] = (r["task_id"], r["text_hash"])
    fresh = [r for r in rows if known.get(r.id) != (r.task_id, r.text_hash)]
    if fresh:
        wh.upsert(fresh)
