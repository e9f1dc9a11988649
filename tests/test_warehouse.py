import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from schemas.config import ConfigError, load_config
from flows.synthetic import load_synthetic, synthetic_dialogues
from schemas.records import Dialogue
from schemas.taxonomy import load_taxonomy
from warehouse.publish import GateFailed, PublishError, publish_release
from warehouse.releases import ReleaseError, diff_releases, list_releases, pull_release, resolve_release
from warehouse.store import Warehouse
from warehouse.versions import VersionError, next_version

ROOT = Path(__file__).resolve().parent.parent
SYNTH = load_config(publish={"sources": ["synthetic"], "report": False})


def seeded(home, n=60, seed=0):
    wh = Warehouse(home)
    load_synthetic(wh, load_taxonomy(), n, seed)
    return wh


def test_upsert_is_idempotent_and_latest_wins(home):
    wh = Warehouse(home)
    d = Dialogue(id="d1", domain="Art", model_a="a", model_b="b", n_turns=3, status="generated")
    wh.upsert([d])
    wh.upsert([d])
    wh.upsert([d.model_copy(update={"status": "accepted"})])
    assert wh.count("dialogues") == 1
    assert wh.query("SELECT status FROM dialogues").column("status").to_pylist() == ["accepted"]
    wh.compact()
    assert len(list((wh.store_dir / "dialogues").glob("*.parquet"))) == 1
    assert wh.query("SELECT status FROM dialogues").column("status").to_pylist() == ["accepted"]


def _writer(home, n):
    wh = Warehouse(home)
    for i in range(n):
        wh.upsert([Dialogue(id=f"w{i}", domain="Art", model_a="a", model_b="b", n_turns=3, status="generated")])


def test_readers_run_while_a_writer_writes(home):
    Warehouse(home)
    proc = mp.get_context("spawn").Process(target=_writer, args=(str(home), 150))
    proc.start()
    seen = []
    while proc.is_alive():
        seen.append(Warehouse(home).count("dialogues"))
    proc.join()
    assert proc.exitcode == 0
    assert seen == sorted(seen)  # every read saw a consistent, growing table
    assert Warehouse(home).count("dialogues") == 150


def test_publish_pull_load_dataset_round_trip(home, tmp_path):
    seeded(home, 80)
    out = publish_release(home, SYNTH)
    assert out["version"] == "0.1.0" and out["n_dialogues"] == 80
    rel = Path(out["path"])
    manifest = json.loads((rel / "manifest.json").read_text())
    assert manifest["counts"]["dialogues"] == 80
    uid = manifest["release_uid"]
    assert set(manifest["files"]) >= {"README.md", f"data/utterances/train-{uid}.parquet", f"data/dialogues/test-{uid}.parquet"}
    dest = pull_release(home, "0.1.0", tmp_path / "pulled")
    utt = datasets.load_dataset(str(dest))
    dlg = datasets.load_dataset(str(dest), "dialogues")
    assert set(utt) == {"train", "validation", "test"}
    assert sum(len(utt[s]) for s in utt) == manifest["counts"]["utterances"]
    assert sum(len(dlg[s]) for s in dlg) == 80
    # grouped by dialogue: no dialogue in two splits, utterances match their dialogue's split
    ids = {s: set(dlg[s]["dialogue_id"]) for s in dlg}
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["validation"])
    for s in utt:
        assert set(utt[s]["dialogue_id"]) <= ids[s]
    row = utt["train"][0]
    assert row["emotion"] in load_taxonomy().emotion_names
    assert 0 <= row["bucket"] < 2 and row["difficulty"] > 0
    assert row["label_erc7"] in {"neutral", "anger", "disgust", "fear", "joy", "sadness", "surprise"}


def test_same_version_in_two_homes_never_share_a_datasets_cache(tmp_path):
    # datasets keys its cache on the directory name + card patterns; releases named alike must not collide
    sizes = []
    for n in (20, 30):
        h = tmp_path / f"home{n}"
        seeded(h, n)
        path = publish_release(h, SYNTH)["path"]
        assert Path(path).name == "0.1.0"
        ds = datasets.load_dataset(path, "dialogues")
        sizes.append(sum(len(ds[s]) for s in ds))
    assert sizes == [20, 30]


def test_splits_are_stable_when_dialogues_are_added(home):
    wh = seeded(home, 60, seed=1)
    v1 = publish_release(home, SYNTH)
    load_synthetic(wh, load_taxonomy(), 90, seed=2)
    v2 = publish_release(home, SYNTH)
    assert v2["version"] == "0.2.0" and v2["parent"] == "0.1.0"

    def split_map(path):
        t = pq.read_table(Path(path) / "data" / "dialogues", columns=["dialogue_id", "split"]).to_pylist()
        return {r["dialogue_id"]: r["split"] for r in t}

    old, new = split_map(v1["path"]), split_map(v2["path"])
    assert len(new) == 150
    assert all(new[d] == s for d, s in old.items())
    d = diff_releases(home, "0.1.0", "0.2.0")
    assert d["added"] == 90 and d["removed"] == 0 and d["changed_split"] == 0


def test_stratified_split_shares(home):
    seeded(home, 400, seed=3)
    out = publish_release(home, SYNTH)
    c = out["counts"]
    assert c["train"]["dialogues"] == 320 and c["validation"]["dialogues"] == 40 and c["test"]["dialogues"] == 40


def test_releases_are_immutable_and_tampering_is_detected(home, tmp_path):
    seeded(home, 40)
    publish_release(home, SYNTH, version="1.0.0")
    with pytest.raises(ReleaseError, match="already exists"):
        publish_release(home, SYNTH, version="1.0.0")
    rel = resolve_release(home, "1.0.0")
    target = next((rel / "data" / "utterances").glob("train-*.parquet"))
    with open(target, "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ReleaseError, match=f"checksum mismatch for data/utterances/{target.name}"):
        pull_release(home, "1.0.0", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", ["", "../x", "1.0", "v1.0.0", "1.0.0/../../etc", "01.0.0"])
def test_bad_versions_are_clear_errors(home, bad):
    seeded(home, 20)
    with pytest.raises(VersionError, match="version"):
        publish_release(home, SYNTH, version=bad)
    with pytest.raises(VersionError):
        resolve_release(home, bad)


def test_unknown_version_and_empty_warehouse(home):
    with pytest.raises(PublishError, match="nothing to publish"):
        publish_release(home, SYNTH)
    assert list_releases(Warehouse(home)) == []
    with pytest.raises(ReleaseError, match="unknown release 3.0.0"):
        resolve_release(home, "3.0.0")
    assert next_version(["0.1.0", "0.10.0", "0.9.0"]) == "0.11.0"


def test_bad_config_is_refused(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("publish:\n  splits: {train: 0.9, validation: 0.2, test: 0.1}\n")
    with pytest.raises(ConfigError, match="split fractions must sum to 1"):
        load_config(p)
    p.write_text("publsh: {}\n")
    with pytest.raises(ConfigError, match="publsh"):
        load_config(p)


def test_bad_rows_are_quarantined_and_the_schema_gate_still_names_them(home):
    wh = seeded(home, 30)
    tax = load_taxonomy()
    dlg, turns = next(synthetic_dialogues(tax, 1, seed=99))
    turns[1] = turns[1].model_copy(update={"label": "Ecstatic", "text": ""})
    turns[2] = turns[2].model_copy(update={"text": " ".join(["word"] * 60), "n_words": 60})
    wh.upsert([dlg])
    wh.upsert(turns)
    # one bad dialogue of 31: left out with its reasons, the release publishes
    out = publish_release(home, SYNTH)
    assert out["quarantine"]["ids_by_reason"]["rule:label_not_in_suite"] == [dlg.id]
    assert out["n_dialogues"] == 30
    # the release-level schema gate (Great Expectations) still names bad rows that reach the files
    from schemas.expectations import validate_release

    data = Path(out["path"]) / "data"
    import pyarrow as pa

    f = sorted((data / "utterances").glob("train-*.parquet"))[0]
    t = pq.read_table(f)
    bad = t.set_column(t.schema.get_field_index("emotion"), "emotion",
                       pa.array(["Ecstatic"] + t["emotion"].to_pylist()[1:]))
    work = home.parent / "tampered" / "data"
    (work / "utterances").mkdir(parents=True)
    (work / "dialogues").mkdir(parents=True)
    pq.write_table(bad, work / "utterances" / f.name)
    for p in (data / "dialogues").glob("*.parquet"):
        (work / "dialogues" / p.name).write_bytes(p.read_bytes())
    gate = validate_release(work, tax, SYNTH.publish)
    assert not gate.success
    first = f"{t['dialogue_id'][0].as_py()}:{t['utterance_idx'][0].as_py()}"
    assert "expect_column_values_to_be_in_set(column='emotion')" in gate.summary() and first in gate.summary()


def test_gate_catches_text_leakage_across_splits(home):
    wh = Warehouse(home)
    tax = load_taxonomy()
    # the same dialogue text under many ids: grouped splitting keeps them together, so no leakage...
    pairs = list(synthetic_dialogues(tax, 1, seed=5))
    dlg, turns = pairs[0]
    for i in range(12):
        did = f"dup{i}"
        wh.upsert([dlg.model_copy(update={"id": did, "domain": tax.domains[i].name})])
        wh.upsert([t.model_copy(update={"id": f"{did}-{t.idx}", "dialogue_id": did}) for t in turns])
    out = publish_release(home, SYNTH)
    nonempty = [s for s, c in out["counts"].items() if c["dialogues"]]
    assert nonempty == ["train"]
    # ...and a forced assignment across splits is caught by the gate
    import pyarrow as pa

    from warehouse.splits import SPLIT_SCHEMA

    wh.upsert_arrow("splits", pa.Table.from_pylist(
        [{"id": "dup0", "split": "test", "stratum": "x", "group_key": "forced"}], schema=SPLIT_SCHEMA))
    with pytest.raises(GateFailed, match="split_text_hash"):
        publish_release(home, SYNTH)


FAULT_SCRIPT = """
import sys
from schemas.config import load_config
from warehouse.publish import publish_release
publish_release(sys.argv[1], load_config(publish={"sources": ["synthetic"], "report": False}))
"""


@pytest.mark.parametrize("stage, visible", [("before_validate", False), ("before_manifest", False),
                                            ("before_rename", False), ("after_rename", True)])
def test_a_publish_killed_midway_leaves_nothing_or_everything(home, stage, visible):
    seeded(home, 30)
    env = {**os.environ, "EMOFORGE_FAULT": f"publish:{stage}", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", FAULT_SCRIPT, str(home)], env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    rows = list_releases(Warehouse(home))
    assert [r["version"] for r in rows] == (["0.1.0"] if visible else [])
    leftovers = [p.name for p in (home / "releases").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the next listing swept the temporary directory
    if visible:
        assert pull_release(home, "0.1.0", home.parent / "copy").is_dir()
    # and the next publish works
    out = publish_release(home, SYNTH)
    assert out["version"] == ("0.2.0" if visible else "0.1.0")


def test_cli_contract(home, tmp_path):
    exe = [str(Path(sys.executable).parent / "emoforge")]

    def run(*a):
        return subprocess.run([*exe, *a, "--home", str(home)], capture_output=True, text=True)

    assert run("sample", "-n", "25").returncode == 0
    pub = run("publish", "--source", "synthetic")
    assert pub.returncode == 0, pub.stderr
    assert pub.stdout.strip().splitlines()[-1] == "0.1.0"
    rel = json.loads(run("releases", "--json").stdout)
    assert rel[0]["version"] == "0.1.0" and rel[0]["counts"]["dialogues"] == 25 and "created" in rel[0]
    bad = run("pull", "../x", "--to", str(tmp_path / "p"))
    assert bad.returncode == 2 and "not a release version" in bad.stderr
    unknown = run("diff", "0.1.0", "0.9.0")
    assert unknown.returncode == 2 and "unknown release 0.9.0" in unknown.stderr
    ok = run("pull", "0.1.0", "--to", str(tmp_path / "p"))
    assert ok.returncode == 0 and (tmp_path / "p" / "manifest.json").is_file()
