"""``review:`` section of the run config: which dialogues go to human review (``emoforge review push`` flags
override it)."""

from __future__ import annotations

from pydantic import Field

from schemas.config.base import Section


class ReviewConfig(Section):
    project: str = Field("emoforge dialogue review", description="Label Studio project title")
    overlap: int = Field(1, ge=1, description="annotators per task")
    uncertain: bool = Field(True, description="push the judges' uncertain band")
    disagreement: bool = Field(True, description="push dialogues the judges disagree on")
    score_spread: int = Field(2, ge=1, description="rubric score difference that counts as disagreement")
    audit_accepted: float = Field(0.05, ge=0, le=1, description="audit rate of judge-accepted dialogues")
    audit_rejected: float = Field(0.05, ge=0, le=1, description="audit rate of judge-rejected dialogues")
    seed: int = Field(0, description="audit sample seed")
    limit: int | None = Field(None, ge=0, description="push at most this many dialogues")
    poll_interval_s: float = Field(60.0, gt=0, description="seconds between polls of `review pull --watch`")
    prefill_verdict: bool = Field(False, description="pre-select the judge's verdict and rating in the annotator's "
                                  "form (default: shown as information only, the annotator decides)")
