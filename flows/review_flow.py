"""Prefect flow: poll Label Studio for annotations until a deadline (or until every task has its annotations).

Thin: each poll is :func:`poll_once`, a plain function (pull + counts) that tests call directly. Run it with
``emoforge review pull --watch`` or ``python -m flows.review_flow --home H --minutes 60``.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from annotation.client import connect
from annotation.labelstudio_view import list_all
from annotation.pull import pull
from annotation.push import DEFAULT_PROJECT, find_project
from schemas.home import offline_env


def poll_once(home: str | Path, url: str | None = None, project: str | None = None) -> dict:
    """One pull; returns the pull report plus how many tasks still lack annotations."""
    home = Path(home)
    client = connect(home, url)
    title = project or DEFAULT_PROJECT
    rep = pull(home, client, title=title).as_dict()
    proj = client.projects.get(id=find_project(client, title).id)
    wanted = int(getattr(proj, "maximum_annotations", 1) or 1)
    waiting = sum(1 for t in list_all(client.tasks.list, project=proj.id, fields="task_only")
                  if (getattr(t, "total_annotations", 0) or 0) < wanted)
    rep["tasks_waiting"] = waiting
    return rep


def poll_until(home: str | Path, deadline: datetime, interval_s: float = 60.0, url: str | None = None,
               project: str | None = None, poll=poll_once, sleep=time.sleep, now=lambda: datetime.now(timezone.utc)) -> list[dict]:
    """Poll until ``deadline`` or until no task waits for annotations; returns every poll's report."""
    reports = []
    while True:
        rep = poll(home, url=url, project=project)
        reports.append(rep)
        if rep.get("tasks_waiting", 1) == 0:
            break
        left = (deadline - now()).total_seconds()
        if left <= 0:
            break
        sleep(min(interval_s, left))
    return reports


@task(name="pull-annotations", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=10)
def pull_task(home: str, url: str | None, project: str | None) -> dict:
    return poll_once(home, url=url, project=project)


@flow(name="emoforge-review-poll", persist_result=False)
def review_poll_flow(home: str, minutes: float = 60.0, interval_s: float = 60.0, url: str | None = None,
                     project: str | None = None) -> list[dict]:
    """Pull annotations every ``interval_s`` until ``minutes`` have passed or no task waits (each pull a task)."""
    deadline = datetime.now(timezone.utc) + timedelta(minutes=minutes)
    return poll_until(home, deadline, interval_s, url=url, project=project,
                      poll=lambda h, url=None, project=None: pull_task(h, url, project))


def main() -> None:  # pragma: no cover
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--home", required=True)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--interval", type=float, default=60.0)
    ap.add_argument("--url")
    ap.add_argument("--project")
    a = ap.parse_args()
    offline_env(Path(a.home))
    out = review_poll_flow(a.home, a.minutes, a.interval, a.url, a.project)
    print(json.dumps(out[-1] if out else {}))


if __name__ == "__main__":  # pragma: no cover
    main()
