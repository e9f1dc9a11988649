"""`emoforge evaluate`: a linear probe on real MiniLM embeddings, scored on a small slice of the real DailyDialog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emoforge.cli import app
from schemas.config import load_config
from warehouse.report import write_report
from flows.synthetic import load_synthetic
from schemas.records import Dialogue, Turn, content_id, text_hash
from schemas.taxonomy import load_taxonomy
from warehouse.evaluation import EvaluationError, ProbeOptions, evaluate_release
from warehouse.importers import import_dailydialog
from warehouse.publish import publish_release
from warehouse.releases import diff_releases, list_releases, pull_release, verify_release
from warehouse.store import Warehouse

SYNTH = load_config(publish={"sources": ["synthetic"], "report": False})


def small_dailydialog(shared: Path, dest: Path, n_train: int = 60, n_test: int = 40) -> Path:
    """The first dialogues of the real DailyDialog train and test files, in DailyDialog's own layout."""
    root = shared / "benchdata" / "dailydialog"
    for split, n in (("train", n_train), ("test", n_test)):
        (dest / split).mkdir(parents=True)
        for name in (f"dialogues_{split}.txt", f"dialogues_emotion_{split}.txt"):
            with open(root / split / name, encoding="utf-8") as fh:
                lines = [next(fh) for _ in range(n)]
            (dest / split / name).write_text("".join(lines), encoding="utf-8")
    return dest


@pytest.fixture
def dd_home(home: Path, shared_dir: Path, tmp_path: Path) -> Path:
    import_dailydialog(home, small_dailydialog(shared_dir, tmp_path / "dd"))
    load_synthetic(Warehouse(home), load_taxonomy(), 40, seed=3)
    return home


def _figures(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "timing"}


def test_evaluate_is_deterministic_and_leaves_the_release_verifiable(dd_home: Path, tmp_path: Path) -> None:
    version = publish_release(dd_home, SYNTH)["version"]
    first = evaluate_release(dd_home, version, ProbeOptions(seed=0))
    second = evaluate_release(dd_home, version, ProbeOptions(seed=0))
    assert _figures(first) == _figures(second)
    dd = first["sets"]["dailydialog_test"]
    n_test = sum(len(line.split("__eou__")) - 1 for line in
                 (tmp_path / "dd" / "test" / "dialogues_test.txt").read_text().splitlines())
    assert dd["n"] == n_test and dd["probe"]["n"] == n_test
    # the ceiling was trained on DailyDialog's own train split; the majority class there is neutral
    assert dd["ceiling"]["n_train"] > 0 and dd["majority"]["label"] == "neutral"
    for role in ("probe", "ceiling", "majority"):
        assert 0.0 <= dd[role]["macro_f1"] <= 1.0 and 0.0 <= dd[role]["weighted_f1"] <= 1.0
    # a constant predictor's macro-F1 is its one class's F1 divided by the classes present
    assert dd["majority"]["macro_f1"] < dd["majority"]["weighted_f1"]
    assert second["timing"]["embedded_now"] == 0  # the second run embedded nothing: every text was cached
    # the side file: written, listed, compared, and no checksum broken (pull verifies every file)
    release_dir = Path(next(r["path"] for r in list_releases(Warehouse(dd_home)) if r["version"] == version))
    assert json.loads((release_dir / "evaluation.json").read_text())["sets"] == first["sets"]
    assert verify_release(release_dir) == []
    pulled = pull_release(dd_home, version, tmp_path / "pulled")
    assert (pulled / "evaluation.json").is_file()
    page = write_report(release_dir, home=dd_home, out_dir=tmp_path / "report").read_text()
    assert "Transfer to real conversation" in page and f"<td>{dd['probe']['weighted_f1']}</td>" in page
    assert "Emotion dynamics vs real conversation" in page and (tmp_path / "report" / "transitions_vs_real.png").is_file()
    listed = next(r for r in list_releases(Warehouse(dd_home)) if r["version"] == version)
    assert listed["evaluation"]["dailydialog_test"]["probe"]["weighted_f1"] == dd["probe"]["weighted_f1"]
    # publish scores the next release itself (the home has an imported test set); diff shows the change
    load_synthetic(Warehouse(dd_home), load_taxonomy(), 30, seed=9)
    v2 = publish_release(dd_home, SYNTH)["version"]
    delta = diff_releases(dd_home, version, v2)["evaluation"]["dailydialog_test"]
    assert delta["weighted_f1"]["a"] == dd["probe"]["weighted_f1"]
    assert delta["weighted_f1"]["delta"] == pytest.approx(delta["weighted_f1"]["b"] - delta["weighted_f1"]["a"], abs=1e-4)


def test_evaluate_cli_prints_a_table_and_one_json_line(dd_home: Path) -> None:
    version = publish_release(dd_home, SYNTH, evaluate=False)["version"]
    assert not any(Path(r["path"], "evaluation.json").exists() for r in list_releases(Warehouse(dd_home)))
    res = CliRunner().invoke(app, ["evaluate", version, "--home", str(dd_home)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert line["version"] == version and "dailydialog_test" in line["sets"]
    assert "ceiling (dailydialog train)" in res.output and "majority (neutral)" in res.output


def _one_class_dialogues(n: int) -> tuple[list[Dialogue], list[Turn]]:
    dialogues, turns = [], []
    for i in range(n):
        did = content_id("dlg", "synthetic", "oneclass", i)
        texts = [f"What a lovely day number {i}, turn {t}!" for t in range(4)]
        turns += [Turn(id=Turn.make_id(did, t), dialogue_id=did, idx=t, speaker="AB"[t % 2], model="synth",
                       text=x, intended_emotion="Happy", label="Happy", n_words=len(x.split()))
                  for t, x in enumerate(texts)]
        dialogues.append(Dialogue(id=did, source="synthetic", domain="Travel", model_a="synth", model_b="synth",
                                  n_turns=4, status="accepted", decided_by="synthetic", text_hash=text_hash(texts)))
    return dialogues, turns


def test_one_class_release_is_refused(home: Path, shared_dir: Path, tmp_path: Path) -> None:
    import_dailydialog(home, small_dailydialog(shared_dir, tmp_path / "dd", 5, 5))
    dialogues, turns = _one_class_dialogues(30)
    wh = Warehouse(home)
    wh.upsert(turns)
    wh.upsert(dialogues)
    version = publish_release(home, SYNTH, evaluate=False)["version"]
    with pytest.raises(EvaluationError, match="only the class 'joy'.*at least two classes"):
        evaluate_release(home, version)


def test_missing_test_set_names_the_import_command(home: Path) -> None:
    load_synthetic(Warehouse(home), load_taxonomy(), 20, seed=1)
    version = publish_release(home, SYNTH)["version"]  # nothing imported: publish skips the evaluation
    assert not any(Path(r["path"], "evaluation.json").exists() for r in list_releases(Warehouse(home)))
    with pytest.raises(EvaluationError, match=r"emoforge import dailydialog PATH"):
        evaluate_release(home, version)
    with pytest.raises(EvaluationError, match=r"meld test split is not imported.*\n  emoforge import meld PATH"):
        evaluate_release(home, version, ProbeOptions(sets=("meld",)))
    res = CliRunner().invoke(app, ["evaluate", version, "--home", str(home)])
    assert res.exit_code == 2 and "emoforge import dailydialog PATH" in res.output
