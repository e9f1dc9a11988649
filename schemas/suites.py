"""Gates per source: what a valid dialogue looks like for each kind of data a release can take.

Generated dialogues (sources ``generated``, ``synthetic``) follow the taxonomy and the build's shape: two speakers
alternating A, B, A, ..., turn counts and words per turn within ``publish.validation``. Imported real dialogues
(``dailydialog``, ``meld``) keep their own label set (mapped onto the named mappings, e.g. ``label_erc7``) and
their real shape: several speakers (MELD's ``speaker`` is A for the first speaker and B for the others; the real
name is ``speaker_name``), 1 to 30+ turns, long utterances, within ``publish.imported``.

A :class:`SourceSuite` is pure data; the publish pre-pass (``warehouse.quarantine``) and the release gate
(``schemas.expectations``) both read their bounds and label sets from it, so the two never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GENERATED = "generated"


@dataclass(frozen=True)
class SourceSuite:
    name: str  # the suite's name: "generated" or the imported dataset's name
    labels: tuple[str, ...]  # allowed values of ``emotion`` / ``intended_emotion``
    min_turns: int
    max_turns: int
    min_words: int
    max_words: int
    alternating: bool  # speakers strictly alternate A, B, A, ... (generated two-party dialogue)
    mappings: dict[str, dict[str, str]] = field(default_factory=dict)  # mapping name -> {label: mapped label}
    audit: bool = True  # run the dialogue-level defect audits (generation defects) on this source

    def mapped(self, mapping: str) -> dict[str, str] | None:
        """``{label: mapped label}`` under ``mapping``, ``None`` when this source has no such mapping."""
        return self.mappings.get(mapping)


def generated_suite(emotions: list[str], mappings: dict[str, dict[str, str]], *, min_turns: int, max_turns: int,
                    min_words: int, max_words: int) -> SourceSuite:
    """The suite of generated (and template-made) dialogue: the taxonomy's emotions and mappings."""
    return SourceSuite(GENERATED, tuple(emotions), min_turns, max_turns, min_words, max_words, alternating=True,
                       mappings={k: dict(v) for k, v in mappings.items()}, audit=True)


def imported_suite(name: str, labels: list[str], mappings: dict[str, dict[str, str]], *, min_turns: int,
                   max_turns: int, min_words: int, max_words: int) -> SourceSuite:
    """The suite of an imported real dataset: its own labels, any speaker order, its own bounds. The defect audits
    (made for generation failures: echoes, fragments, truncation) do not run on human-written data."""
    own = {name: {lab: lab for lab in labels}}
    return SourceSuite(name, tuple(labels), min_turns, max_turns, min_words, max_words, alternating=False,
                       mappings={**own, **{k: dict(v) for k, v in mappings.items()}}, audit=False)
