"""The real thing: `emoforge build` on the embedded llama.cpp models (no --models), published and loadable with
`datasets`. Small N and short dialogues so it fits CI on 2 cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from warehouse.store import Warehouse

ROOT = Path(__file__).resolve().parent.parent
EMOFORGE = str(Path(sys.executable).parent / "emoforge")


@pytest.mark.slow
def test_emoforge_build_on_embedded_models_publishes_a_loadable_release(home, tmp_path, prefect_api_url):
    cfg = tmp_path / "run.yaml"
    # six dialogues: one quarantined clip (tiny models' text, ASR round trip) is 17-25 % of the release, over the 5 %
    # default bound meant for real release sizes (seen in CI: 1 of 4 accepted quarantined for audio:wer, no release)
    cfg.write_text("generation:\n  min_turns: 3\n  max_turns: 3\npublish:\n  max_quarantine_share: 0.5\n")
    env = dict(os.environ, PREFECT_API_URL=prefect_api_url, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [EMOFORGE, "build", "--dialogues", "6", "--config", str(cfg), "--home", str(home), "--version", "1.0.0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500,
    )
    wh = Warehouse(home)
    dialogues = wh.query("SELECT id, status, decided_by, status_reason, model_a, model_b FROM dialogues").to_pylist()
    assert len(dialogues) == 6
    assert {d["model_a"] for d in dialogues} | {d["model_b"] for d in dialogues} == {"smollm2-135m", "gemma3-270m"}
    for d in dialogues:
        assert d["status"] in ("accepted", "rejected", "uncertain", "failed") and (d["status"] != "failed" or d["status_reason"])
    # tiny judges: the checks + the classifier emotion judge decide; nothing is accepted without its support
    passed = [d for d in dialogues if d["status"] in ("accepted", "uncertain")]
    assert all(d["decided_by"] == "classifier" for d in passed)
    clf = {r["dialogue_id"]: r["verdict"] for r in
           wh.query("SELECT dialogue_id, verdict FROM judgements WHERE kind = 'classifier'").to_pylist()}
    assert all(clf.get(d["id"]) == "accept" for d in dialogues if d["status"] == "accepted")
    if not any(d["status"] == "accepted" for d in dialogues):
        # an honest outcome with 135M/270M models: a finished build without a release, that says why
        assert proc.returncode == 0 and "not published: nothing to publish" in proc.stderr, proc.stderr[-4000:]
        assert ("await human review" in proc.stderr) == any(d["status"] == "uncertain" for d in dialogues)
        assert not (home / "releases" / "1.0.0").exists()
        return
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().splitlines()[-1] == "1.0.0"
    passed = [d for d in dialogues if d["status"] == "accepted"]
    # the LLM judge really ran on what passed the checks, and its scores are stored
    llm = wh.query("SELECT judge_id, coherence, emotion_fidelity FROM judgements WHERE kind = 'llm'").to_pylist()
    assert passed and len(llm) >= len(passed)
    assert all(1 <= j["coherence"] <= 5 and len(j["emotion_fidelity"]) == 3 for j in llm)
    checks = wh.query("SELECT verdict, failures FROM judgements WHERE kind = 'checks'").to_pylist()
    assert all(c["failures"] for c in checks if c["verdict"] == "reject")
    run = wh.query("SELECT status, metrics_json FROM runs").to_pylist()[0]
    metrics = json.loads(run["metrics_json"])
    assert run["status"] == "finished" and metrics["models"]["smollm2-135m"]["completion_tokens"] > 0

    import datasets

    rel = home / "releases" / "1.0.0"
    dd = datasets.load_dataset(str(rel))  # the default config: utterances, every split
    n = sum(len(split) for split in dd.values())
    q = json.loads((rel / "manifest.json").read_text())["quarantine"]
    assert n == 3 * (len(passed) - q["quarantined"])  # every accepted dialogue not quarantined, 3 utterances each
    texts = [t for split in dd.values() for t in split["text"]]
    assert texts and {"dialogue_id", "text", "emotion"} <= set(next(iter(dd.values())).column_names)
    assert all(t.strip() and "<|" not in t and not t.lower().startswith(("a:", "b:")) for t in texts)
