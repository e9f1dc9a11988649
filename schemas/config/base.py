"""The one section base and the one YAML -> pydantic loader of every config file emoforge reads.

Every section refuses unknown keys (a typo is an error, never a silently ignored setting). Every loader error is a
:class:`ConfigError` (or a subclass naming the file kind) whose message reads ``invalid <what> <file>: <key.path>:
<problem>; ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and every problem."""


class Section(BaseModel):
    """Base of every config section: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=BaseModel)


def format_errors(exc: ValidationError, prefix: str = "") -> str:
    out = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"])
        loc = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "<root>")
        out.append(f"{loc}: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(out)


def read_yaml(path: str | Path, what: str = "config", error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """The mapping in a YAML file (an empty file is an empty mapping)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {p} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{what} {p} must be a mapping, got {type(data).__name__}")
    return data


def validate(model: type[M], data: Any, source: str = "", what: str = "config", prefix: str = "",
             error: type[ConfigError] = ConfigError) -> M:
    """``model`` from ``data``, every problem in one :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise error(f"{what}{' ' + source if source else ''} must be a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"invalid {what}{' ' + source if source else ''}: {format_errors(exc, prefix)}") from None


def load(model: type[M], path: str | Path | None = None, *, section: str | None = None, what: str = "config",
         error: type[ConfigError] = ConfigError, **overrides: Any) -> M:
    """Read ``path`` (its ``section:`` mapping when ``section`` is given and present), apply the non-None
    ``overrides`` (command-line flags win over the file) and validate."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path, what, error)
        if section is not None and section in data:
            data = data[section]
            if not isinstance(data, dict):
                raise error(f"{what} {path}: '{section}' must be a mapping")
    data = dict(data)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate(model, data, str(path) if path is not None else "", what, section or "", error)
