"""What the review project shows around the labeling page: the task list's columns, the audio it may play.

* **Task list** (Label Studio's Data Manager "tab", shared by everyone in the project in Community Edition): shows
  what a reviewer sorts by — dialogue, review reason, the judges' verdicts, the deciding judge score, domain, number
  of turns — and hides the internals (``emoforge_*`` bookkeeping keys, the per-turn keys the page reads, the summary
  line). Set through ``/api/dm/views`` on every push, so a column layout someone broke is put back.
* **Audio**: speech clips live under ``<home>/audio``; Label Studio serves them through its local-files endpoint,
  which it allows only below a local storage registered for the project (created here, without syncing: the
  storage only grants read access, tasks still come from push).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from warehouse.store import Warehouse

LABELS_MODEL = "emoforge:current-labels"  # the prediction that pre-fills the annotator's form
VIEW_TITLE = "Review queue"
SHOWN = ("dialogue", "review_reason", "judge_verdict", "judge_score", "domain", "n_turns")
HIDDEN_KEYS = ("emoforge_dialogue_id", "emoforge_text_hash", "emoforge_n_turns", "emoforge_config", "meta", "audio",
               "instructions")
HIDDEN_COLUMNS = ("tasks:inner_id", "tasks:total_predictions", "tasks:predictions_score", "tasks:predictions_results",
                  "tasks:predictions_model_versions", "tasks:annotations_results", "tasks:file_upload",
                  "tasks:storage_filename", "tasks:created_at", "tasks:updated_at", "tasks:updated_by",
                  "tasks:avg_lead_time", "tasks:draft_exists", "tasks:annotations_ids", "tasks:comment_count",
                  "tasks:unresolved_comment_count", "tasks:last_comment_updated_at")


def hidden_columns(slots: int) -> list[str]:
    per_turn = [f"tasks:data.{k}{i}{suffix}" for i in range(slots)
                for k, suffix in (("turn_", ""), ("intended_", ""), ("turn_", "_audio"))]
    return [f"tasks:data.{k}" for k in HIDDEN_KEYS] + per_turn + list(HIDDEN_COLUMNS)


def view_data(slots: int) -> dict:
    hidden = hidden_columns(slots)
    return {"title": VIEW_TITLE, "type": "list", "target": "tasks",
            "hiddenColumns": {"explore": hidden, "labeling": hidden + [f"tasks:data.{k}" for k in SHOWN[2:]]},
            "ordering": ["tasks:data.review_reason"], "columnsWidth": {},
            "columnsDisplayType": {"tasks:data.judge_score": "Number", "tasks:data.n_turns": "Number"}, "gridWidth": 4,
            "filters": {"conjunction": "and", "items": []}}


def ensure_task_view(client, project_id: int, slots: int) -> int:
    """Create or reset the project's task-list tab; the other tabs (someone's own) are left alone. The tab id."""
    data = view_data(slots)
    for view in client.views.list(project=project_id):
        vdata = view.data if isinstance(view.data, dict) else {}
        if vdata.get("title") == VIEW_TITLE or (vdata.get("title") in (None, "Default") and not vdata.get("hiddenColumns")):
            if vdata.get("hiddenColumns") != data["hiddenColumns"] or vdata.get("title") != VIEW_TITLE:
                client.views.update(id=view.id, project=project_id, data=data)
            return view.id
    return client.views.create(project=project_id, data=data).id


# ---- audio --------------------------------------------------------------------------------------------------
def audio_dir(home: Path) -> Path:
    return Path(home).resolve() / "audio"


def local_file_url(path: Path) -> str:
    """The URL Label Studio serves a local file at (document root ``/``, see annotation.server.server_env)."""
    return "/data/local-files/?d=" + quote(str(Path(path).resolve()).lstrip("/"))


def audio_for(home: Path, dialogue_ids: list[str]) -> dict[str, dict]:
    """dialogue id -> {"mix": url, "turns": {turn idx: (url, duration s)}} for the dialogues that have speech."""
    wh = Warehouse(home)
    if "clips" not in wh.tables() or not dialogue_ids:
        return {}
    rows = wh.query(
        "SELECT c.dialogue_id, c.kind, c.path, c.duration_s, t.idx FROM clips c "
        "LEFT JOIN turns t ON t.id = c.turn_id WHERE c.dialogue_id IN (SELECT unnest(?))", [list(dialogue_ids)]).to_pylist()
    root = audio_dir(home)
    out: dict[str, dict] = {}
    for r in rows:
        entry = out.setdefault(r["dialogue_id"], {"mix": "", "turns": {}})
        url = local_file_url(root / r["path"])
        if r["kind"] == "mix":
            entry["mix"] = url
        elif r["idx"] is not None:
            entry["turns"][int(r["idx"])] = (url, float(r["duration_s"]))
    return out


def ensure_audio_storage(client, project_id: int, home: Path) -> None:
    """Register ``<home>/audio`` as the project's local storage (read access for the audio players)."""
    path = str(audio_dir(home))
    for st in client.import_storage.local.list(project=project_id):
        if getattr(st, "path", None) == path:
            return
    client.import_storage.local.create(project=project_id, path=path, title="emoforge speech clips",
                                       use_blob_urls=False)


# ---- paging without the 404 -----------------------------------------------------------------------------------
def list_all(list_fn, page_size: int = 100, **kwargs) -> list:
    """Every item of a paginated SDK ``list`` call (projects, tasks).

    The SDK's own pager asks for pages until Label Studio answers 404 "Invalid page", which the server logs as an
    ERROR on every call; this stops after the last page instead (a short page, or the reported total reached).
    """
    items: list = []
    page = 1
    while True:
        pager = list_fn(page=page, page_size=page_size, **kwargs)
        got = list(pager.items or [])
        items += got
        resp = getattr(pager, "response", None)
        total = getattr(resp, "total", None) if resp is not None else None
        if total is None and resp is not None:
            total = getattr(resp, "count", None)
        if len(got) < page_size or (total is not None and len(items) >= total):
            return items
        page += 1
