"""The models config (``--models FILE``, YAML): models, their OpenAI-compatible endpoints, pairs and judges.

Every model is reached through the OpenAI chat-completions protocol; nothing here is vendor-specific. A model with
``embedded`` set and no ``endpoints`` is served by emoforge itself (llama.cpp on loopback, ``flows.llm.embedded``).
API keys are never part of the config: ``api_key_env`` names the environment variable read at call time.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator, model_validator

from schemas.config.base import ConfigError, Section, read_yaml, validate

EMBEDDED_KEYS = ("smollm2-135m", "gemma3-270m")

# the OpenAI chat-completions sampling parameters
STANDARD_SAMPLING_KEYS = {
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "logit_bias",
}
# keys accepted in ``sampling``: the standard ones and server extensions (vLLM, llama.cpp); every one goes into the
# request body verbatim (and into the cache key)
SAMPLING_KEYS = STANDARD_SAMPLING_KEYS | {"top_k", "min_p", "repetition_penalty", "repeat_penalty"}


class ModelsConfigError(ConfigError):
    """A models config that cannot be used; the message names the file and the problem."""


class EndpointSpec(Section):
    """One server (replica) of a model. ``base_url`` is the OpenAI-compatible root, e.g. ``http://gpu1:8000/v1``."""

    base_url: str
    api_key_env: str | None = Field(None, description="environment variable holding the API key (read at call time)")
    max_concurrency: int | None = Field(None, ge=1, description="overrides the model's per-endpoint ceiling")

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"base_url must start with http:// or https://, got {v!r}")
        return v

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(
                f"api_key_env must be the NAME of an environment variable, not a key (got a value of {len(v)} chars)"
            )
        return v


class VllmSpec(Section):
    """How ``emoforge llm vllm-command`` launches this model with ``vllm serve`` on a GPU host."""

    model: str = Field(..., description="Hugging Face id or local path given to `vllm serve`")
    replicas: int = Field(1, ge=1)
    tensor_parallel_size: int = Field(1, ge=1)
    port: int = Field(8000, ge=1, le=65535, description="port of the first replica; the next ones count up")
    args: list[str] = Field(default_factory=list, description="extra `vllm serve` arguments")


class ModelSpec(Section):
    name: str = ""
    served_name: str | None = Field(None, description="model name the server knows (default: name)")
    endpoints: list[EndpointSpec] = Field(default_factory=list, description="replicas, load-balanced by least in-flight")
    sampling: dict[str, Any] = Field(default_factory=dict)
    max_concurrency: int = Field(64, ge=1, description="ceiling of requests in flight per endpoint")
    initial_concurrency: int | None = Field(None, ge=1, description="AIMD start (default: max_concurrency)")
    timeout_s: float = Field(120.0, gt=0)
    embedded: str | None = Field(None, description=f"embedded GGUF model served by emoforge: {', '.join(EMBEDDED_KEYS)}")
    vllm: VllmSpec | None = None

    @field_validator("sampling")
    @classmethod
    def _sampling(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(v) - SAMPLING_KEYS)
        if unknown:
            raise ValueError(f"unknown sampling keys {unknown}; allowed: {sorted(SAMPLING_KEYS)}")
        return v

    @field_validator("embedded")
    @classmethod
    def _embedded(cls, v: str | None) -> str | None:
        if v is not None and v not in EMBEDDED_KEYS:
            raise ValueError(f"unknown embedded model {v!r}; available: {', '.join(EMBEDDED_KEYS)}")
        return v

    @property
    def request_name(self) -> str:
        """The ``model`` field sent to the server."""
        return self.served_name or self.name


class RetryPolicy(Section):
    max_attempts: int = Field(6, ge=1, description="tries per call, the first included")
    backoff_base_s: float = Field(0.25, ge=0)
    backoff_max_s: float = Field(20.0, ge=0)
    max_retry_after_s: float = Field(120.0, ge=0, description="a longer Retry-After is capped to this")


class AimdPolicy(Section):
    """Per-endpoint adaptive concurrency (additive increase, multiplicative decrease)."""

    decrease_factor: float = Field(0.5, gt=0, lt=1, description="limit *= this on 429 or high latency")
    increase: float = Field(1.0, gt=0, description="limit grows by this per `limit` successes (about one per round trip)")
    latency_factor: float = Field(3.0, gt=1, description="cut when smoothed per-token latency > factor x its floor")
    min_samples: int = Field(20, ge=1, description="successes before latency-based cuts are considered")


class ModelsConfig(Section):
    models: dict[str, ModelSpec]
    pairs: list[tuple[str, str]] = Field(default_factory=list, description="(speaker A model, speaker B model)")
    judges: list[str] = Field(default_factory=list)
    error_rate_stop: float = Field(0.5, gt=0, le=1, description="stop the run when the recent error rate passes this")
    error_window: int = Field(200, ge=1, description="calls in the sliding window of the error rate")
    error_min_calls: int = Field(20, ge=1, description="no early stop before this many calls have finished")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    aimd: AimdPolicy = Field(default_factory=AimdPolicy)
    embedded_parallel: int = Field(4, ge=1, description="llama.cpp parallel slots per embedded server")
    embedded_ctx_per_slot: int = Field(2048, ge=256)
    embedded_threads: int | None = Field(None, ge=1, description="llama.cpp threads (default: CPU count)")

    @model_validator(mode="after")
    def _consistent(self) -> "ModelsConfig":
        if not self.models:
            raise ValueError("models: at least one model is needed")
        for key, spec in self.models.items():
            if not spec.name:
                spec.name = key
            elif spec.name != key:
                raise ValueError(f"models.{key}: name {spec.name!r} differs from its key")
            if not spec.endpoints and not spec.embedded and not spec.vllm:
                raise ValueError(f"models.{key}: give endpoints (base_url of an OpenAI-compatible server), "
                                 f"embedded ({', '.join(EMBEDDED_KEYS)}) or a vllm section")
        if not self.pairs:
            self.pairs = default_pairs(list(self.models))
        for i, (a, b) in enumerate(self.pairs):
            for m in (a, b):
                if m not in self.models:
                    raise ValueError(f"pairs[{i}]: unknown model {m!r}; known: {', '.join(self.models)}")
        for j in self.judges:
            if j not in self.models:
                raise ValueError(f"judges: unknown model {j!r}; known: {', '.join(self.models)}")
        return self

    def fingerprint(self) -> str:
        """Hash of what changes results (models, sampling, pairs, judges); endpoints and limits excluded."""
        core = {
            "models": {k: {"served": v.request_name, "sampling": v.sampling, "embedded": v.embedded} for k, v in self.models.items()},
            "pairs": self.pairs,
            "judges": self.judges,
        }
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]

    def needs_embedded(self) -> list[str]:
        return [k for k, m in self.models.items() if m.embedded and not m.endpoints]

    def without_endpoints(self) -> list[str]:
        return [k for k, m in self.models.items() if not m.endpoints]


def default_pairs(models: list[str]) -> list[tuple[str, str]]:
    """DeepDialogue-style pair grid: every same-model pair, then every cross pair (in listing order, A before B)."""
    same = [(m, m) for m in models]
    cross = [(a, b) for i, a in enumerate(models) for b in models[i + 1 :]]
    return same + cross


# the embedded turn writers: mild penalties, as the penalties reach back into the prompt (llama.cpp's last 64 tokens,
# i.e. the line being answered): 1.3 + presence/frequency pushed replies off the words of the line they answer
# (measured on the embedded build, README "What to expect")
TINY_TURN_SAMPLING: dict[str, Any] = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 64, "repeat_penalty": 1.1}

DEFAULT_MODELS: dict[str, Any] = {
    "models": {
        "smollm2-135m": {
            "embedded": "smollm2-135m",
            "sampling": TINY_TURN_SAMPLING,
            "max_concurrency": 8,
            "timeout_s": 180,
        },
        "gemma3-270m": {
            "embedded": "gemma3-270m",
            "sampling": TINY_TURN_SAMPLING,
            "max_concurrency": 8,
            "timeout_s": 180,
        },
        # the judge shares the SmolLM2 server (same embedded key) with greedy sampling; tiny models cannot really
        # judge, the deterministic checks carry the embedded default (docs/llm.md)
        "judge-smollm2": {
            "embedded": "smollm2-135m",
            "sampling": {"temperature": 0.0, "max_tokens": 400},
            "max_concurrency": 8,
            "timeout_s": 300,
        },
    },
    "pairs": [
        ["smollm2-135m", "smollm2-135m"],
        ["gemma3-270m", "gemma3-270m"],
        ["smollm2-135m", "gemma3-270m"],
        ["gemma3-270m", "smollm2-135m"],
    ],
    "judges": ["judge-smollm2"],
}


def parse_models_config(data: Any, source: str = "<models>") -> ModelsConfig:
    return validate(ModelsConfig, data, source, what="models config", error=ModelsConfigError)


def load_models_config(path: str | Path | None) -> ModelsConfig:
    """Read ``--models FILE``; ``None`` gives the embedded default (two different GGUF models, same and cross pairs,
    a judge)."""
    if path is None:
        return parse_models_config(json.loads(json.dumps(DEFAULT_MODELS)), "<embedded default>")
    return parse_models_config(read_yaml(path, "models config", ModelsConfigError), str(path))


def dump_models_config(cfg: ModelsConfig) -> str:
    """YAML text of a config (what ``vllm-command`` prints)."""
    data = cfg.model_dump(mode="json", exclude_defaults=True)
    for spec in data.get("models", {}).values():
        spec.pop("name", None)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)
