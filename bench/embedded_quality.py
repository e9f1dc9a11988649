"""What an `emoforge build` kept, read back from its home: the share accepted, why the rest failed, and a re-audit of
every accepted turn against the defect catalogue as it stands now (:func:`schemas.defects.audit_dialogue`).

Used to measure the embedded default pair (README "What to expect", docs/generation.md):

    .venv/bin/emoforge build --dialogues 24 --no-publish --home /tmp/eq-home
    .venv/bin/python bench/embedded_quality.py /tmp/eq-home --jsonl /tmp/eq-accepted.jsonl
    .venv/bin/emoforge gates check /tmp/eq-accepted.jsonl --home /tmp/eq-home   # the same dialogues, checks + judge

Prints the failure reasons grouped by (model of the failing turn, gate), then every accepted dialogue (to read), and
ends with one JSON line: ``accepted``, ``decided`` (every dialogue with a final status), ``statuses``,
``failures`` ({"model gate": n}), ``accepted_turns`` and ``accepted_turns_with_defects`` (with the classes).
``--quick`` is accepted for the bench convention (the script only reads the home: it is always quick).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from schemas.defects import DefectContext, audit_dialogue  # noqa: E402
from warehouse.store import Warehouse  # noqa: E402

FINAL = ("accepted", "rejected", "uncertain", "failed")
_FAILED = re.compile(r"turn \d+ \((?P<model>[^)]+)\): (?P<gate>[^(]*?)\s*(?:\(|after \d+ attempts|$)")


def failure_key(reason: str | None) -> str:
    """``"<model> <gate>"`` of a failed dialogue's reason (``turn 2 (gemma3-270m): empty_turn after 5 attempts``)."""
    m = _FAILED.match(reason or "")
    return f"{m.group('model')} {m.group('gate').strip()}" if m else (reason or "?")[:60]


def read_home(home: Path) -> tuple[list[dict], dict[str, list[dict]]]:
    wh = Warehouse(home)
    dialogues = wh.query("SELECT id, domain, status, status_reason, decided_by, model_a, model_b FROM dialogues "
                         "ORDER BY id").to_pylist()
    turns: dict[str, list[dict]] = {}
    for t in wh.query("SELECT dialogue_id, idx, speaker, text, intended_emotion FROM turns ORDER BY dialogue_id, idx"
                      ).to_pylist():
        turns.setdefault(t["dialogue_id"], []).append(t)
    return dialogues, turns


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("home", type=Path)
    ap.add_argument("--jsonl", type=Path, help="write the accepted dialogues here, in `emoforge gates check` form")
    ap.add_argument("--word-cap", type=int, default=25)
    ap.add_argument("--quick", action="store_true")
    ns = ap.parse_args(argv)
    dialogues, turns = read_home(ns.home)
    statuses = Counter(d["status"] for d in dialogues)
    failures = Counter(failure_key(d["status_reason"]) for d in dialogues if d["status"] == "failed")
    accepted = [d for d in dialogues if d["status"] == "accepted"]
    defects: Counter = Counter()
    n_turns = n_bad = 0
    lines = []
    for d in accepted:
        rows = turns.get(d["id"], [])
        texts = [r["text"] for r in rows]
        found = audit_dialogue(texts, DefectContext(word_cap=ns.word_cap))
        n_turns += len(texts)
        n_bad += len({i for i, _, _ in found})
        defects.update(name for _, name, _ in found)
        print(f"== {d['id']} {d['model_a']}/{d['model_b']} {d['domain']}: {d['status_reason']}")
        for r in rows:
            print(f"   {r['speaker']} ({r['intended_emotion']}): {r['text']}")
        lines.append(json.dumps({"id": d["id"], "domain": d["domain"], "turns": [
            {"speaker": r["speaker"], "text": r["text"], "emotion": r["intended_emotion"]} for r in rows]}))
    for key, n in failures.most_common():
        print(f"failed {n:3d}  {key}")
    if ns.jsonl:
        ns.jsonl.write_text("".join(f"{line}\n" for line in lines))
    decided = sum(statuses[s] for s in FINAL)
    print(json.dumps({"home": str(ns.home), "accepted": len(accepted), "decided": decided,
                      "statuses": dict(statuses), "failures": dict(failures.most_common()),
                      "accepted_turns": n_turns, "accepted_turns_with_defects": n_bad,
                      "defects": dict(defects)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
