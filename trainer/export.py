"""ERC samples from a release: one per utterance, with context, retrieved demonstrations and PRC-Emo's prompt.

The user message follows PRC-Emo's emotion-sensitive prompt structure, in this order:

1. the instruction (the task and the speaker-centred question);
2. a note defining explicit and implicit emotion, so the model looks at both the words and the situation;
3. the conversation: up to ``window`` previous utterances (default 5), the target utterance marked, and
   optionally ``future`` following ones;
4. ``k`` retrieved demonstrations (default 3) with their labels, never from the sample's own dialogue;
5. the label list and the answer format.

The assistant message is the label. Samples are ordered by (dialogue_id, utterance_idx) and rendering is a pure
function of its inputs, so an export is byte-for-byte reproducible.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from trainer.data import SPLITS, Utterance, by_dialogue, open_release, release_utterances
from trainer.retrieval import DEFAULT_K, EmbeddingCache, Embedder, Entry, Library, LibraryOptions, build_library

SYSTEM = "You are an expert in emotion analysis. You read conversations and name the emotion each speaker feels."

INSTRUCTION = (
    "### Task\n"
    "Identify the emotion that {speaker} feels when saying the target utterance in the conversation below. "
    "Think about {speaker}'s psychological state: what happened before, what the other speakers said, and how "
    "{speaker} reacts to it."
)

EMOTION_NOTE = (
    "### Explicit and implicit emotion\n"
    "An emotion is explicit when the words of the utterance show it directly (emotion words such as \"angry\" "
    "or \"thrilled\", exclamations, insults, laughter). It is implicit when nothing in the words names it and it "
    "must be inferred from the context: the situation, the previous turns, the speaker's goals and the way they "
    "respond. Use explicit cues when present, otherwise infer the implicit emotion from the context; an utterance "
    "without any emotional cue in either is neutral when that label exists."
)


@dataclass
class ExportOptions:
    mapping: str = "erc7"
    window: int = 5  # previous utterances shown
    future: int = 0  # following utterances shown
    k: int = DEFAULT_K  # retrieved demonstrations
    max_chars: int = 400  # per utterance shown (longer ones are cut with an ellipsis)


@dataclass
class ErcSample:
    id: str
    dialogue_id: str
    utterance_idx: int
    speaker: str
    text: str
    label: str
    split: str
    source: str
    bucket: int | None
    difficulty: float | None
    context: list[tuple[str, str]]  # (speaker, text) of the previous utterances, oldest first (up to window)
    future: list[tuple[str, str]]
    demos: list[Entry] = field(default_factory=list)

    def messages(self, labels: list[str], opts: ExportOptions, window: int | None = None,
                 k: int | None = None) -> list[dict[str, str]]:
        return render_messages(self, labels, opts, window, k)

    def to_json(self, labels: list[str], opts: ExportOptions) -> dict:
        return {
            "id": self.id, "dialogue_id": self.dialogue_id, "utterance_idx": self.utterance_idx,
            "speaker": self.speaker, "text": self.text, "label": self.label, "split": self.split,
            "source": self.source, "bucket": self.bucket, "difficulty": self.difficulty,
            "demonstrations": [{"id": d.uid, "source": d.source, "label": d.label} for d in self.demos],
            "messages": self.messages(labels, opts),
        }


def _cut(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def render_messages(s: ErcSample, labels: list[str], opts: ExportOptions, window: int | None = None,
                    k: int | None = None) -> list[dict[str, str]]:
    window = opts.window if window is None else window
    k = len(s.demos) if k is None else k
    ctx = s.context[len(s.context) - window:] if window > 0 else []
    first = s.utterance_idx - len(ctx) + 1
    conv = [f"[{first + i}] {spk}: {_cut(txt, opts.max_chars)}" for i, (spk, txt) in enumerate(ctx)]
    conv.append(f">>> [{s.utterance_idx + 1}] {s.speaker}: {_cut(s.text, opts.max_chars)}   <- target utterance")
    conv += [f"[{s.utterance_idx + 2 + i}] {spk}: {_cut(txt, opts.max_chars)}" for i, (spk, txt) in enumerate(s.future)]
    parts = [INSTRUCTION.format(speaker=s.speaker), EMOTION_NOTE, "### Conversation\n" + "\n".join(conv)]
    demos = s.demos[:k]
    if demos:
        lines = []
        for j, d in enumerate(demos, 1):
            block = [f"Example {j}:"]
            if d.prev_text:
                block.append(f"  {d.prev_speaker}: {_cut(d.prev_text, opts.max_chars)}")
            block.append(f"  {d.speaker}: {_cut(d.text, opts.max_chars)}")
            block.append(f"  Emotion of {d.speaker}: {d.label}")
            lines.append("\n".join(block))
        parts.append("### Similar examples (retrieved from other conversations)\n" + "\n".join(lines))
    parts.append(
        "### Labels\n"
        f"Choose exactly one of: {', '.join(labels)}.\n"
        f"What emotion does {s.speaker} feel in utterance [{s.utterance_idx + 1}]? Answer with the label only."
    )
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "\n\n".join(parts)},
        {"role": "assistant", "content": s.label},
    ]


def make_samples(utts: list[Utterance], opts: ExportOptions) -> list[ErcSample]:
    out = []
    for did, dlg in sorted(by_dialogue(utts).items()):
        for pos, u in enumerate(dlg):
            out.append(ErcSample(
                id=u.uid, dialogue_id=did, utterance_idx=u.idx, speaker=u.speaker, text=u.text, label=u.label,
                split=u.split, source=u.source, bucket=u.bucket, difficulty=u.difficulty,
                context=[(p.speaker, p.text) for p in dlg[max(0, pos - opts.window):pos]],
                future=[(f.speaker, f.text) for f in dlg[pos + 1:pos + 1 + opts.future]],
            ))
    return out


def attach_demonstrations(samples: list[ErcSample], library: Library, cache: EmbeddingCache, k: int) -> None:
    if k <= 0 or not samples:
        return
    vecs = cache.get([s.text for s in samples], label="queries")
    for s, idx in zip(samples, library.neighbours(vecs, [s.dialogue_id for s in samples], k)):
        s.demos = [library.entries[j] for j in idx]


def export_erc(home: str | Path, version: str, out: str | Path, opts: ExportOptions | None = None,
               splits: tuple[str, ...] = SPLITS, library_opts: LibraryOptions | None = None,
               embedder: Embedder | None = None) -> dict:
    """Write ``out/<split>.jsonl`` (one chat sample per utterance) and ``out/labels.json``; returns counts."""
    opts = opts or ExportOptions()
    release = open_release(home, version)
    labels = release.labels(opts.mapping)
    samples = make_samples(release_utterances(release, opts.mapping, splits), opts)
    info: dict = {"release": release.version, "mapping": opts.mapping, "labels": labels, "options": vars(opts)}
    if opts.k > 0:
        lib_opts = library_opts or LibraryOptions(mapping=opts.mapping)
        lib_opts.mapping = opts.mapping
        cache = EmbeddingCache(home, embedder or Embedder())
        library = build_library(home, release, lib_opts, cache=cache)
        attach_demonstrations(samples, library, cache, opts.k)
        info["library"] = {"fingerprint": library.fingerprint, "entries": len(library), "dir": str(library.dir),
                           "built": library.built}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in splits:
        rows = [s.to_json(labels, opts) for s in samples if s.split == split]
        _write_atomic(out / f"{split}.jsonl", "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))
        counts[split] = len(rows)
    info["counts"] = counts
    _write_atomic(out / "labels.json", json.dumps(info, indent=1, sort_keys=True, default=str))
    return info


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
