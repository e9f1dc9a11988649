"""One shape for every LLM stage (Bespoke Curator's): ``prompt(row) -> messages``, an optional pydantic
``response_format(row)`` (the JSON schema the answer must match; None for free text), ``parse(row, response)``.

:func:`call_stage` makes the call through the run's :class:`flows.llm.client.LLMPool`. The call's cache key covers
the inputs (through the messages), the prompt's template version, the model, the response schema and the
sampling, never ``parse``: changing a parser, a cleaning rule or a threshold repeats no call.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Generic, TypeVar

from pydantic import BaseModel

from flows.llm.client import ChatResult

R = TypeVar("R")
Out = TypeVar("Out")


@dataclass(frozen=True)
class LLMStage(Generic[R, Out]):
    name: str
    version: Callable[[R], str]  # the prompt template's version (part of the cache key): bump it when wording changes
    prompt: Callable[[R], list[dict[str, str]]]
    parse: Callable[[R, Any], Out]  # (row, ChatResult for free text | the validated JSON object) -> output
    response_format: Callable[[R], type[BaseModel]] | None = None

    def schema(self, row: R) -> dict | None:
        return schema_of(self.response_format(row)) if self.response_format is not None else None


@lru_cache(maxsize=256)
def schema_of(model: type[BaseModel]) -> dict:
    """The JSON schema of a response model, generated once per model (pydantic builds it anew on every call:
    about 5 ms, more than the rest of a judge call's client-side work). Shared: treat it as read-only."""
    return model.model_json_schema()


async def call_stage(pool: Any, stage: LLMStage[R, Out], model: str, row: R, *, sampling: dict | None = None,
                     max_tokens: int | None = None, nonce: str | int | None = None) -> tuple[Out, ChatResult]:
    """One call of ``stage`` for ``row`` on ``model``: (parsed output, the call's result). Raises
    :class:`flows.llm.client.LLMCallError` (and whatever ``parse`` raises)."""
    messages = stage.prompt(row)
    schema = stage.schema(row)
    if schema is None:
        res = await pool.chat(model, messages, sampling=sampling, template_version=stage.version(row),
                              max_tokens=max_tokens, nonce=nonce)
        return stage.parse(row, res), res
    data, res = await pool.chat_json(model, messages, schema=schema, template_version=stage.version(row),
                                     sampling=sampling, max_tokens=max_tokens, nonce=nonce, schema_name=stage.name)
    return stage.parse(row, data), res


__all__ = ["LLMStage", "call_stage", "schema_of"]
