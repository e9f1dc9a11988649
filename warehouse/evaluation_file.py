"""The release's ``evaluation.json`` side file: read, write (atomically), summarise, compare two releases.

A release is immutable: its manifest lists the sha256 of every data, report and card file. ``evaluation.json`` is
the one file written *next to* them later (by ``emoforge evaluate`` or at the end of ``publish``); it is not in the
manifest, so writing or re-writing it never invalidates a checksum, and :func:`warehouse.releases.verify_release`
accepts it as a known side file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

EVALUATION_FILE = "evaluation.json"
SCORES = ("weighted_f1", "macro_f1")


def read_evaluation(release_dir: Path) -> dict[str, Any] | None:
    p = Path(release_dir) / EVALUATION_FILE
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None


def write_evaluation(release_dir: Path, data: dict[str, Any]) -> Path:
    p = Path(release_dir) / EVALUATION_FILE
    tmp = p.with_name(f".{EVALUATION_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, p)
    return p


def evaluation_summary(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """Per real test set: the probe's, the ceiling's and the majority baseline's weighted-F1 and macro-F1."""
    if not data:
        return None
    if "error" in data:
        return {"error": data["error"]}
    out: dict[str, Any] = {}
    for name, s in data.get("sets", {}).items():
        out[name] = {
            role: ({k: s[role][k] for k in SCORES} if s.get(role) else None)
            for role in ("probe", "ceiling", "majority")
        }
        out[name]["n"] = s.get("n")
    return out


def evaluation_delta(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """How the probe scores moved from release ``a`` to ``b`` on every real test set both were scored on."""
    if not a or not b:
        missing = [n for n, d in (("a", a), ("b", b)) if not d]
        return {"missing": missing}
    out: dict[str, Any] = {}
    for name in sorted(set(a.get("sets", {})) & set(b.get("sets", {}))):
        pa_, pb = a["sets"][name]["probe"], b["sets"][name]["probe"]
        out[name] = {k: {"a": pa_[k], "b": pb[k], "delta": round(pb[k] - pa_[k], 4)} for k in SCORES}
    return out
