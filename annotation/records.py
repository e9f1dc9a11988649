"""Bookkeeping records of the review loop (stored in the warehouse next to ``reviews``).

``review_tasks``     which dialogue went to which Label Studio task (the push ledger; makes pushes idempotent and
                     lets pull recognise tasks that are not ours)
``review_problems``  every annotation that failed validation, with its raw result, so nothing is lost; a later
                     pull that finds it fixed marks it ``resolved``
"""

from __future__ import annotations

import typing
from datetime import datetime

from pydantic import Field

from schemas.records import Record, content_id, utcnow


class ReviewTask(Record):
    table: typing.ClassVar[str] = "review_tasks"
    project_id: int
    project_title: str
    task_id: int
    dialogue_id: str
    text_hash: str
    n_turns: int
    reason: str  # uncertain | disagreement | audit-accepted | audit-rejected | manual
    pushed_at: datetime = Field(default_factory=utcnow)

    @staticmethod
    def make_id(server: str, project_id: int, dialogue_id: str) -> str:
        return content_id("rvt", server, project_id, dialogue_id)


class ReviewProblem(Record):
    table: typing.ClassVar[str] = "review_problems"
    project_id: int
    task_id: int
    annotation_id: int | None = None
    dialogue_id: str | None = None
    annotator: str = ""
    problems: list[str] = Field(default_factory=list)
    raw_json: str = ""
    resolved: bool = False
    updated_at: datetime = Field(default_factory=utcnow)

    @staticmethod
    def make_id(server: str, project_id: int, task_id: int, annotation_id: int | None) -> str:
        return content_id("rvp", server, project_id, task_id, annotation_id)


def review_id(server: str, project_id: int, task_id: int, annotation_id: int) -> str:
    return content_id("rev", server, project_id, task_id, annotation_id)
