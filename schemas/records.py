"""Typed records: the one definition from which the warehouse's Arrow schemas are derived.

Every record has a string ``id``. Ids are content hashes (:func:`content_id`) of what identifies the thing,
so the same scenario + models + prompt always gets the same id and re-writing a record is an upsert.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from datetime import datetime, timezone
from typing import Any, Literal, Union, get_args, get_origin

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from schemas.text import normalise_text, text_hash  # noqa: F401  (part of the records API)

PROMPT_VERSION = "gen-v1"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_id(prefix: str, *parts: Any) -> str:
    """A stable id: ``prefix`` + 20 hex chars of the sha256 of the canonical JSON of ``parts``."""
    digest = hashlib.sha256(canonical_json(parts).encode()).hexdigest()
    return f"{prefix}_{digest[:20]}"


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")
    table: typing.ClassVar[str]
    id: str

    def row(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


Speaker = Literal["A", "B"]
DialogueStatus = Literal["pending", "generated", "failed", "accepted", "rejected", "uncertain"]
Verdict = Literal["accept", "reject", "uncertain"]


class Run(Record):
    table: typing.ClassVar[str] = "runs"
    command: str
    started_at: datetime
    finished_at: datetime | None = None
    status: Literal["running", "finished", "failed"] = "running"
    config_fingerprint: str = ""
    code_version: str = ""
    metrics_json: str = "{}"


class Scenario(Record):
    table: typing.ClassVar[str] = "scenarios"
    domain: str
    model_a: str
    model_b: str
    n_turns: int = Field(ge=1, le=64)
    emotions: list[str]
    seed: int
    index: int
    taxonomy: str
    prompt_version: str = PROMPT_VERSION
    word_cap: int = 25

    @staticmethod
    def make_id(domain: str, model_a: str, model_b: str, emotions: list[str], seed: int, index: int,
                taxonomy: str, prompt_version: str, word_cap: int) -> str:
        return content_id("scn", domain, model_a, model_b, emotions, seed, index, taxonomy, prompt_version, word_cap)


class Dialogue(Record):
    table: typing.ClassVar[str] = "dialogues"
    scenario_id: str | None = None
    run_id: str | None = None
    source: str = "generated"
    domain: str
    model_a: str
    model_b: str
    n_turns: int
    status: DialogueStatus
    status_reason: str | None = None
    decided_by: str | None = None
    text_hash: str = ""
    judge_score: float | None = None  # the score that decided (flows.judge), stored once; the release carries it
    taxonomy: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    source_split: str | None = None  # imported data: the split the external dataset put it in (train/validation/test)

    @property
    def pair(self) -> str:
        return f"{self.model_a}|{self.model_b}"


class Turn(Record):
    table: typing.ClassVar[str] = "turns"
    dialogue_id: str
    idx: int
    speaker: Speaker
    model: str
    text: str
    intended_emotion: str
    label: str
    label_source: Literal["intended", "human", "import"] = "intended"
    n_words: int
    speaker_name: str | None = None  # imported multi-party data (MELD): the real speaker; ``speaker`` is A = first, B = others

    @staticmethod
    def make_id(dialogue_id: str, idx: int) -> str:
        return content_id("trn", dialogue_id, idx)


class Judgement(Record):
    table: typing.ClassVar[str] = "judgements"
    dialogue_id: str
    judge_id: str
    kind: Literal["checks", "llm", "classifier"]
    coherence: int | None = None
    naturalness: int | None = None
    domain_fit: int | None = None
    safety: int | None = None
    emotion_fidelity: list[int] = Field(default_factory=list)
    verdict: Verdict
    rationale: str = ""
    failures: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)


class Review(Record):
    table: typing.ClassVar[str] = "reviews"
    dialogue_id: str
    task_id: int
    annotation_id: int
    annotator: str
    verdict: Literal["accept", "reject"] | None = None
    rating: int | None = None
    turn_labels: list[str] = Field(default_factory=list)
    comment: str = ""
    updated_at: datetime = Field(default_factory=utcnow)


class AudioClip(Record):
    table: typing.ClassVar[str] = "clips"
    dialogue_id: str
    turn_id: str | None = None
    kind: Literal["turn", "mix"]
    path: str
    engine: str
    voice: str
    emotion: str | None = None
    sample_rate: int
    duration_s: float
    wer: float | None = None
    sha256: str


RECORD_TYPES: dict[str, type[Record]] = {
    cls.table: cls for cls in (Run, Scenario, Dialogue, Turn, Judgement, Review, AudioClip)
}


# ---- Arrow schemas derived from the records ------------------------------------------------------
_SCALARS: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    datetime: pa.timestamp("us", tz="UTC"),
}


def arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """(Arrow type, nullable) of a pydantic field annotation."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union {annotation!r}")
        return arrow_type(args[0])[0], True
    if origin is Literal:
        return pa.string(), False
    if origin is list:
        (inner,) = get_args(annotation)
        return pa.list_(arrow_type(inner)[0]), False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct([pa.field(n, *arrow_type(f.annotation)) for n, f in annotation.model_fields.items()]), False
    if annotation in _SCALARS:
        return _SCALARS[annotation], False
    raise TypeError(f"no Arrow type for {annotation!r}")


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    fields = []
    for name, field in model.model_fields.items():
        typ, nullable = arrow_type(field.annotation)
        fields.append(pa.field(name, typ, nullable=nullable))
    return pa.schema(fields)


def to_table(records: list[Record]) -> pa.Table:
    if not records:
        raise ValueError("to_table needs at least one record")
    cls = type(records[0])
    return pa.Table.from_pylist([r.row() for r in records], schema=arrow_schema(cls))
