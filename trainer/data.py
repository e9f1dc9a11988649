"""The trainer's view of ERC data: the readers live in :mod:`warehouse.utterances` (shared with the evaluation)."""

from __future__ import annotations

from warehouse.utterances import (  # noqa: F401 - re-exported
    IDENTITY, SPLITS, DataError, ReleaseRef, Utterance, by_dialogue, cap_dialogues, imported_sources,
    imported_utterances, majority_label, open_release, release_fingerprint, release_utterances, supports_mapping,
)

TrainerDataError = DataError
