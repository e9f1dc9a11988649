"""Relocatable homes: a home moved or copied to another path serves its releases through every verb, and a home
written with absolute catalog paths is migrated on first open (and says so once)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from emoforge.cli import app
from schemas.config import load_config
from flows.synthetic import load_synthetic
from schemas.taxonomy import load_taxonomy
from warehouse.locations import HOME_ID_FILE, HomeMismatch, home_id, worker_home
from warehouse.publish import publish_release
from warehouse.releases import list_releases, verify_release
from warehouse.store import Warehouse

SYNTH = load_config(publish={"sources": ["synthetic"], "report": False})


def _cli(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, (args, res.output, res.exception)
    return res.stdout


@pytest.mark.parametrize("how", ["move", "copy"])
def test_a_moved_or_copied_home_serves_every_verb(tmp_path, how):
    old = tmp_path / "site-a" / "home"
    old.mkdir(parents=True)
    load_synthetic(Warehouse(old), load_taxonomy(), 40, 0)
    publish_release(old, SYNTH)
    new = tmp_path / "site-b" / "restored"
    new.parent.mkdir()
    if how == "move":
        os.rename(old, new)
    else:
        shutil.copytree(old, new)
    h = ["--home", str(new)]

    rows = json.loads(_cli("releases", "--json", *h))
    assert [r["version"] for r in rows] == ["0.1.0"]
    assert rows[0]["path"] == str(new.resolve() / "releases" / "0.1.0")  # this home's copy, not the old path
    pulled = Path(_cli("pull", "0.1.0", "--to", str(tmp_path / "pulled"), *h).strip().splitlines()[-1])
    assert verify_release(pulled) == []
    # the next version publishes from the moved home, with the old one as its parent
    load_synthetic(Warehouse(new), load_taxonomy(), 60, 1)
    assert _cli("publish", "--source", "synthetic", *h).strip().splitlines()[-1] == "0.2.0"
    rows = list_releases(Warehouse(new))
    assert [(r["version"], r["parent"]) for r in rows] == [("0.1.0", None), ("0.2.0", "0.1.0")]
    diff = json.loads(_cli("diff", "0.1.0", "0.2.0", "--json", *h))
    assert diff["dialogues"] == {"a": 40, "b": 100} and diff["removed"] == 0
    assert " 100" in _cli("sql", "SELECT count(*) AS n FROM dialogues", *h)
    html = Path(_cli("report", "0.1.0", *h).strip().splitlines()[-1])
    assert html.is_file() and new.resolve() in html.resolve().parents
    # the catalog file's own views follow the home too (`duckdb catalog.duckdb` works in the new place)
    if how == "move":
        con = duckdb.connect(str(new / "catalog.duckdb"), read_only=True)
        try:
            assert con.execute("SELECT count(*) FROM dialogues").fetchall()[0][0] == 100
            assert sorted(r[0] for r in con.execute("SELECT path FROM releases").fetchall()) == \
                ["releases/0.1.0", "releases/0.2.0"]
        finally:
            con.close()
    else:  # the original home is untouched by what the copy did
        assert [r["version"] for r in list_releases(Warehouse(old))] == ["0.1.0"]


def test_an_absolute_path_catalog_is_migrated_on_first_open_and_says_so_once(home, tmp_path, caplog):
    load_synthetic(Warehouse(home), load_taxonomy(), 30, 0)
    publish_release(home, SYNTH)
    # what homes written before relocation recorded: the absolute path of a home that has since moved
    con = duckdb.connect(str(home / "catalog.duckdb"))
    con.execute("UPDATE releases SET path = '/gone/old-home/releases/0.1.0'")
    con.execute("DROP TABLE home_meta")
    con.close()
    with caplog.at_level(logging.INFO, logger="warehouse.locations"):
        rows = list_releases(Warehouse(home))
    assert rows[0]["path"] == str(home.resolve() / "releases" / "0.1.0")
    said = [r.getMessage() for r in caplog.records if "migrated" in r.getMessage()]
    assert len(said) == 1 and "/gone/old-home" in said[0] and "1 release path" in said[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="warehouse.locations"):
        list_releases(Warehouse(home))
        _cli("releases", "--home", str(home))
    assert not [r for r in caplog.records if "migrated" in r.getMessage()]
    con = duckdb.connect(str(home / "catalog.duckdb"), read_only=True)
    assert con.execute("SELECT path FROM releases").fetchall() == [("releases/0.1.0",)]
    con.close()


def test_worker_home_accepts_the_same_home_under_another_path_only(tmp_path, monkeypatch):
    real = tmp_path / "real-home"
    real.mkdir()
    ident = home_id(real)
    assert home_id(real) == ident and (real / HOME_ID_FILE).is_file()
    alias = tmp_path / "mnt" / "home"
    alias.parent.mkdir()
    alias.symlink_to(real)
    monkeypatch.setenv("EMOFORGE_WORKER_HOME", str(alias))
    assert worker_home("/scheduler/only/path", ident) == alias
    other = tmp_path / "other-home"
    other.mkdir()
    home_id(other)
    monkeypatch.setenv("EMOFORGE_WORKER_HOME", str(other))
    with pytest.raises(HomeMismatch, match="another home than the scheduler's /scheduler/only/path"):
        worker_home("/scheduler/only/path", ident)
    monkeypatch.delenv("EMOFORGE_WORKER_HOME")
    with pytest.raises(HomeMismatch, match="no emoforge home at /scheduler/only/path.*EMOFORGE_WORKER_HOME"):
        worker_home("/scheduler/only/path", ident)
