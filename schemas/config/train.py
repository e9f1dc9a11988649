"""``train:`` section of the run config: the curriculum LoRA trainer (``emoforge train`` flags override it)."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field

from schemas.config.base import Section


class TrainConfig(Section):
    mapping: str = Field("erc7", description="label mapping: identity, erc7, ...")
    window: int = Field(5, ge=0, description="previous utterances in the prompt")
    future: int = Field(0, ge=0, description="following utterances in the prompt")
    k: int = Field(3, ge=0, description="retrieved demonstrations per sample (0: none)")
    max_chars: int = Field(400, ge=1, description="characters of one utterance in the prompt")
    # curriculum
    epochs: int = Field(3, ge=1, description="total epochs of the default PRC-Emo schedule")
    buckets: int | None = Field(None, ge=1, description="difficulty buckets (None: the release's)")
    schedule: str | None = Field(None, description="explicit phases, e.g. '0:1;0,1:1;all:1' (None: PRC-Emo default)")
    # LoRA / optimisation
    lora_r: int = Field(32, ge=1)
    lora_alpha: int = Field(128, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    lr: float = Field(3e-4, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, le=1, description="linear warm-up share of each phase's steps")
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(8, ge=1, description="samples per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimiser step")
    max_length: int = Field(1024, ge=16, description="tokens per sample (prompts are fitted)")
    qlora: bool | None = Field(None, description="4-bit QLoRA (None: when a GPU and bitsandbytes are present)")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="weights on a GPU without QLoRA (CPU: always float32). SmolLM2-135M on an H200: "
        "bfloat16 diverged (NaN) and was slower than float32 (docs/benchmarks.md)")
    gradient_checkpointing: bool | None = Field(None, description="None: on with QLoRA; on CPU when the estimated activations exceed half the available memory")
    length_bucketing: bool = Field(True, description="micro-batches of similar prompt length (less padding)")
    # size limits (smoke runs, CPU)
    max_train_samples: int | None = Field(None, ge=1, description="training utterances (whole dialogues)")
    max_steps_per_phase: int | None = Field(None, ge=1)
    max_eval: int | None = Field(None, ge=1, description="utterances per test set")
    eval_batch_size: int = Field(8, ge=1)
    eval_every_phase: bool = Field(True, description="score the test sets after every phase (False: after the last only)")
    eval_sets: tuple[str, ...] | None = Field(None, description="imported sources to test on (None: all that map)")
    # retrieval library
    library_sources: tuple[str, ...] | None = Field(None, description="imported sources in the library")
    library_max_per_source: int | None = Field(20000, ge=1, description="imported training utterances per source")
    embedder: str | None = None
    seed: int = 0

    def fingerprint(self, release: str, base_model: str) -> str:
        blob = json.dumps({"cfg": self.model_dump(), "release": release, "base": base_model}, sort_keys=True,
                          default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
