"""One config loader: every section refuses unknown keys with one error style; the review: and train: sections give
the defaults of `emoforge review push` and `emoforge train`, and a flag given on the command line wins."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from emoforge.cli import app
from emoforge.commands.train import train_config
from flows.synthetic import load_synthetic
from schemas.config import Config, ConfigError, load_config
from schemas.config.models import ModelsConfigError, load_models_config
from schemas.config.speech import SpeechConfigError, load_speech_config
from schemas.taxonomy import load_taxonomy
from warehouse.store import Warehouse


@pytest.mark.parametrize("section", ["generation", "judging", "publish", "speech", "review", "train"])
def test_every_section_refuses_an_unknown_key_and_names_it(tmp_path, section):
    p = tmp_path / "run.yaml"
    p.write_text(f"{section}:\n  not_a_setting: 1\n")
    with pytest.raises(ConfigError, match=rf"invalid config {p}: {section}\.not_a_setting: Extra inputs"):
        load_config(p)


def test_one_error_style_for_every_file_kind(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("[unclosed")
    for loader, error, what in ((load_config, ConfigError, "config"), (load_models_config, ModelsConfigError,
                                                                       "models config"),
                                (load_speech_config, SpeechConfigError, "speech config")):
        with pytest.raises(error, match=rf"^{what} {bad} is not valid YAML"):
            loader(bad)
        with pytest.raises(error, match=rf"^cannot read {what} {tmp_path / 'absent.yaml'}"):
            loader(tmp_path / "absent.yaml")
        assert issubclass(error, ConfigError)


def test_fingerprint_ignores_review_and_train(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("review:\n  overlap: 3\ntrain:\n  epochs: 9\n")
    assert load_config(p).fingerprint() == Config().fingerprint()
    p.write_text("judging:\n  accept_at: 4.0\n")
    assert load_config(p).fingerprint() != Config().fingerprint()


def test_train_flags_override_the_train_section(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("train:\n  epochs: 7\n  lr: 0.001\n  library_max_per_source: 50\n  eval_sets: [dailydialog]\n")
    cfg = train_config(p, {"epochs": 2, "lr": None, "eval_sets": None})
    assert (cfg.epochs, cfg.lr, cfg.library_max_per_source, cfg.eval_sets) == (2, 0.001, 50, ("dailydialog",))
    assert train_config(p, {}, library_max_per_source=0).library_max_per_source is None  # 0 on the command line: all
    assert train_config(None, {}).epochs == 3
    with pytest.raises(ConfigError, match="train.epochs"):
        train_config(p, {"epochs": 0})


def test_review_push_takes_its_defaults_from_the_review_section(tmp_path):
    home = tmp_path / "home"
    load_synthetic(Warehouse(home), load_taxonomy(), 12, seed=3)
    accepted = Warehouse(home).count("dialogues", "status = 'accepted'")
    assert accepted > 0
    cfg = tmp_path / "run.yaml"
    cfg.write_text("review:\n  audit_accepted: 1.0\n  audit_rejected: 0.0\n  uncertain: false\n  disagreement: false\n")
    runner = CliRunner()
    res = runner.invoke(app, ["review", "push", "--home", str(home), "--config", str(cfg), "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == {"selected": accepted, "by_reason": {"audit-accepted": accepted}}
    res = runner.invoke(app, ["review", "push", "--home", str(home), "--config", str(cfg), "--dry-run", "--json",
                              "--audit-accepted", "0"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["selected"] == 0
    cfg.write_text("review:\n  audit_acepted: 1.0\n")
    res = runner.invoke(app, ["review", "push", "--home", str(home), "--config", str(cfg), "--dry-run"])
    assert res.exit_code != 0 and "review.audit_acepted" in res.output
