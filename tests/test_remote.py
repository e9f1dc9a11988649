"""Remotes against a REAL S3-protocol server on loopback (moto's standalone server in a subprocess, checking
request signatures): push -> list -> pull with checksums, a push killed mid-upload, a tampered object, missing and
wrong credentials, `datasets.load_dataset` and `emoforge sql --remote` straight from the bucket."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import datasets
import pytest
from s3server import MotoServer
from typer.testing import CliRunner

from emoforge.cli import app
from schemas.config import load_config
from flows.synthetic import load_synthetic
from schemas.taxonomy import load_taxonomy
from warehouse.publish import publish_release
from warehouse.releases import ReleaseError, hash_file, read_manifest, verify_release
from warehouse.remote import RemoteError, add_remote, get_remote
from warehouse.remote_sync import (
    load_remote_dataset,
    pull_remote,
    push_release,
    remote_data_files,
    remote_releases,
)
from warehouse.store import Warehouse

ROOT = Path(__file__).resolve().parent.parent
SYNTH = load_config(publish={"sources": ["synthetic"], "report": False})


@pytest.fixture(scope="module")
def s3():
    with MotoServer(auth=True) as server:
        yield server
    assert server.proc is None  # stopped: no server process left behind


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("remote") / "home"
    load_synthetic(Warehouse(home), load_taxonomy(), 40, 0)
    publish_release(home, SYNTH)
    return home


@pytest.fixture
def aws(s3, monkeypatch, tmp_path):
    """The standard AWS variables pointing at the loopback server; no shared config, no instance metadata."""
    for k in list(os.environ):
        if k.startswith(("AWS_", "EMOFORGE_REMOTE_")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return s3


def _remote(home: Path, s3: MotoServer, tag: str):
    bucket = s3.make_bucket(f"emo-{tag}-{uuid.uuid4().hex[:8]}")
    name = f"r{uuid.uuid4().hex[:6]}"
    return add_remote(home, name, f"s3://{bucket}/team/emoforge")


def _cli(*args: str, ok: bool = True):
    res = CliRunner().invoke(app, list(args))
    if ok:
        assert res.exit_code == 0, (args, res.output, res.exception)
    return res


def _keys(s3: MotoServer, bucket: str) -> list[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


def test_push_list_pull_round_trip_with_checksums(published, aws, tmp_path):
    r = _remote(published, aws, "rt")
    h = ["--home", str(published)]
    assert _cli("releases", "--remote", r.name, "--json", *h).stdout.strip() == "[]"
    url = _cli("push", "0.1.0", "--to", r.name, "--no-progress", *h).stdout.strip().splitlines()[-1]
    assert url == f"{r.url}/releases/0.1.0"
    local = read_manifest(published / "releases" / "0.1.0")
    keys = _keys(aws, r.bucket)
    assert not [k for k in keys if "/.incoming/" in k]  # the staging prefix is gone
    assert sorted(k.split("/releases/0.1.0/", 1)[1] for k in keys) == sorted([*local["files"], "manifest.json"])
    rows = json.loads(_cli("releases", "--remote", r.name, "--json", *h).stdout)
    assert [(x["version"], x["counts"]["dialogues"], x["path"]) for x in rows] == [("0.1.0", 40, url)]
    dest = Path(_cli("pull", "0.1.0", "--from", r.name, "--to", str(tmp_path / "got"), "--no-progress", *h)
                .stdout.strip().splitlines()[-1])
    assert verify_release(dest) == []
    for rel, meta in local["files"].items():
        assert hash_file(dest / rel) == meta["sha256"]
    assert (dest / "manifest.json").read_bytes() == (published / "releases" / "0.1.0" / "manifest.json").read_bytes()
    # the same content again is a no-op
    again = _cli("push", "0.1.0", "--to", r.name, "--no-progress", *h)
    assert "already on" in again.stderr and _keys(aws, r.bucket) == keys
    # another 0.1.0 (other content) is refused: releases are immutable on the remote too
    other = tmp_path / "other-home"
    load_synthetic(Warehouse(other), load_taxonomy(), 25, 7)
    publish_release(other, SYNTH)
    add_remote(other, r.name, r.url)
    res = _cli("push", "0.1.0", "--to", r.name, "--no-progress", "--home", str(other), ok=False)
    assert res.exit_code == 2 and "already has a release 0.1.0 with different content" in res.stderr
    assert "Traceback" not in res.output
    # unknown version on the remote
    res = _cli("pull", "0.9.0", "--from", r.name, "--to", str(tmp_path / "x"), *h, ok=False)
    assert res.exit_code == 2 and "has no release 0.9.0 (known: 0.1.0)" in res.stderr


PUSH_SCRIPT = """
import sys
from warehouse.remote import get_remote
from warehouse.remote_sync import push_release
print(push_release(sys.argv[1], "0.1.0", get_remote(sys.argv[1], sys.argv[2])))
"""


@pytest.mark.parametrize("stage", ["after_files:2", "before_manifest"])
def test_a_push_killed_midway_leaves_no_release_and_a_rerun_completes_it(published, aws, stage):
    r = _remote(published, aws, "kill")
    env = {**os.environ, "EMOFORGE_FAULT": f"push:{stage}", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", PUSH_SCRIPT, str(published), r.name], env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    keys = _keys(aws, r.bucket)
    assert [k for k in keys if "/.incoming/" in k]  # it had uploaded something
    assert not [k for k in keys if k.endswith("releases/0.1.0/manifest.json")]
    assert remote_releases(r) == []  # ... and nothing is visible
    with pytest.raises(ReleaseError, match="has no release 0.1.0"):
        pull_remote(r, "0.1.0", published.parent / f"never-{stage}")
    out = push_release(published, "0.1.0", r)
    assert out["pushed"] and out["resumed_files"] >= 2  # what was staged intact was not sent again
    assert [x["version"] for x in remote_releases(r)] == ["0.1.0"]
    assert not [k for k in _keys(aws, r.bucket) if "/.incoming/" in k]
    assert verify_release(pull_remote(r, "0.1.0", published.parent / f"after-{stage}")) == []


def test_a_tampered_remote_object_is_refused_on_pull_with_the_file_named(published, aws, tmp_path):
    r = _remote(published, aws, "tamper")
    push_release(published, "0.1.0", r)
    rel = next(k for k in read_manifest(published / "releases" / "0.1.0")["files"] if k.startswith("data/utterances/train-"))
    key = f"team/emoforge/releases/0.1.0/{rel}"
    body = aws.client().get_object(Bucket=r.bucket, Key=key)["Body"].read()
    aws.client().put_object(Bucket=r.bucket, Key=key, Body=body[:-8] + b"tampered")  # same size, other bytes
    res = _cli("pull", "0.1.0", "--from", r.name, "--to", str(tmp_path / "p"), "--no-progress", "--home", str(published),
               ok=False)
    assert res.exit_code == 2 and rel in res.stderr and "does not match the sha256" in res.stderr
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob(".p.pulling"))


def test_missing_or_wrong_credentials_name_the_remote(published, aws, monkeypatch, tmp_path):
    r = _remote(published, aws, "creds")
    h = ["--home", str(published)]
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    for args in (("releases", "--remote", r.name), ("push", "0.1.0", "--to", r.name, "--no-progress"),
                 ("pull", "0.1.0", "--from", r.name, "--to", str(tmp_path / "p"))):
        res = _cli(*args, *h, ok=False)
        assert res.exit_code == 2, res.output
        assert f"remote {r.name!r} ({r.url}): no credentials found" in res.stderr and "Traceback" not in res.output
    # wrong ones (per-remote variables win over the standard ones)
    var = f"EMOFORGE_REMOTE_{r.name.upper()}"
    monkeypatch.setenv(f"{var}_ACCESS_KEY_ID", aws.key)
    monkeypatch.setenv(f"{var}_SECRET_ACCESS_KEY", "not-the-secret")
    res = _cli("push", "0.1.0", "--to", r.name, "--no-progress", *h, ok=False)
    assert res.exit_code == 2 and f"remote {r.name!r}" in res.stderr and "access denied" in res.stderr
    assert "not-the-secret" not in res.output  # never echoed
    monkeypatch.setenv(f"{var}_SECRET_ACCESS_KEY", aws.secret)
    assert _cli("push", "0.1.0", "--to", r.name, "--no-progress", *h).exit_code == 0
    # what the home stores: the name and the URL, no secret
    stored = (published / "remotes.json").read_text()
    assert aws.secret not in stored and aws.key not in stored and r.url in stored


def test_bad_remote_definitions_are_refused(published, aws):
    with pytest.raises(RemoteError, match="not an S3 URL"):
        add_remote(published, "web", "https://example.org/x")
    with pytest.raises(RemoteError, match="remote name"):
        add_remote(published, "Bad Name", "s3://bucket-a/x")
    add_remote(published, "fixed", "s3://bucket-a/x")
    add_remote(published, "fixed", "s3://bucket-a/x/")  # the same again: fine
    with pytest.raises(RemoteError, match="already points at s3://bucket-a/x"):
        add_remote(published, "fixed", "s3://bucket-b/x")
    with pytest.raises(RemoteError, match="no remote named 'nope'"):
        get_remote(published, "nope")
    res = _cli("releases", "--remote", "fixed", "--home", str(published), ok=False)
    assert res.exit_code == 2 and "the bucket bucket-a does not exist" in res.stderr


def test_load_dataset_and_sql_straight_from_the_bucket(published, aws, monkeypatch, tmp_path):
    r = _remote(published, aws, "hf")
    push_release(published, "0.1.0", r)
    local = published / "releases" / "0.1.0"
    for cfg in ("utterances", "dialogues"):
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # as for a user outside emoforge (docs)
        # the plain `datasets` call documented in docs/warehouse.md, with the card's data files ...
        files = remote_data_files(r, "0.1.0", cfg)
        assert all(u.startswith(f"{r.url}/releases/0.1.0/data/{cfg}/") for us in files.values() for u in us)
        there = datasets.load_dataset("parquet", data_files=files, storage_options=r.storage_options(),
                                      cache_dir=str(tmp_path / "hf"))
        # ... and emoforge's wrapper give the same rows as the local release directory
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # emoforge's own default: still works
        wrapped = load_remote_dataset(r, "0.1.0", cfg, cache_dir=str(tmp_path / "hf2"))
        here = datasets.load_dataset(str(local), cfg, cache_dir=str(tmp_path / "hf-local"))
        assert set(there) == set(wrapped) == set(here) == {"train", "validation", "test"}
        def key(x):
            return x["dialogue_id"], x.get("utterance_idx", -1)

        for split in here:
            rows = sorted(here[split].to_list(), key=key)
            assert sorted(there[split].to_list(), key=key) == rows
            assert sorted(wrapped[split].to_list(), key=key) == rows
    h = ["--home", str(published)]
    out = _cli("sql", "SELECT split, count(*) AS n FROM utterances GROUP BY 1 ORDER BY 1", "--remote", r.name, *h).stdout
    counts = read_manifest(local)["counts"]["splits"]
    for split in ("test", "train", "validation"):
        assert re.search(rf"\b{split}\s+{counts[split]['utterances']}\b", out), out
    res = _cli("sql", f"COPY (SELECT 1 AS x) TO 's3://{r.bucket}/team/emoforge/evil.parquet'", "--remote", r.name, *h,
               ok=False)
    assert res.exit_code == 2 and "read-only" in res.stderr
    assert not [k for k in _keys(aws, r.bucket) if k.endswith("evil.parquet")]
