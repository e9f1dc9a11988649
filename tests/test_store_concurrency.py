"""Store correctness under concurrency: a writer process racing compactions (the part-count threshold reached over
and over, and explicit compactions from another process) never has a newer row shadowed or lost, and parts written
by hosts whose clocks disagree are ordered by the store's own sequence, not by time."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

from warehouse import store
from warehouse.store import COMPACT_AFTER_PARTS, Warehouse, part_seq

ROOT = Path(__file__).resolve().parent.parent
IDS = ["a", "b", "c"]

WRITER = """
import sys
import pyarrow as pa
sys.path.insert(0, sys.argv[1])
from warehouse.store import Warehouse
wh = Warehouse(sys.argv[2], compact_after=int(sys.argv[3]))
for i in range(1, int(sys.argv[4]) + 1):
    wh.upsert_arrow("probe", pa.table({"id": %r, "v": [i] * 3}))
print("done", flush=True)
""" % (IDS,)


def _values(wh: Warehouse) -> dict[str, int]:
    return {r["id"]: r["v"] for r in wh.query("SELECT id, v FROM probe").to_pylist()}


def test_writer_racing_compactions_never_loses_or_shadows_a_newer_row(tmp_path):
    home = tmp_path / "home"
    n = COMPACT_AFTER_PARTS + 200  # the writer itself crosses the default threshold, then keeps writing
    wh = Warehouse(home)
    wh.upsert_arrow("probe", pa.table({"id": IDS, "v": [0] * 3}))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(ROOT), str(home), str(COMPACT_AFTER_PARTS), str(n)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = {i: 0 for i in IDS}
    compactions = reads = 0
    max_parts = 0
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            max_parts = max(max_parts, len(list((home / "store" / "probe").glob("[0-9]*.parquet"))))
            if reads % 20 == 19:  # this process compacts too, while the writer writes
                wh.compact("probe")
                compactions += 1
            now = _values(wh)
            reads += 1
            for k in IDS:  # a read never goes back to an older row than an earlier read saw
                assert now[k] >= seen[k], (k, now[k], seen[k])
            seen = now
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "done" in out, err[-3000:]
    assert compactions >= 1 and reads >= 20
    assert max_parts > COMPACT_AFTER_PARTS // 4  # the race ran with many parts, not one
    assert _values(Warehouse(home)) == {k: n for k in IDS}  # the latest write wins, nothing lost
    # the writer's own threshold compactions kept the part count bounded
    assert len(list((home / "store" / "probe").glob("[0-9]*.parquet"))) <= COMPACT_AFTER_PARTS + 1


def test_a_part_written_during_the_merge_is_not_shadowed_by_the_merged_part(tmp_path, monkeypatch):
    """The interleaving made certain: the compaction's merge pauses while another process writes a newer row."""
    home = tmp_path / "home"
    wh = Warehouse(home)
    for i in range(1, 4):
        wh.upsert_arrow("probe", pa.table({"id": IDS, "v": [i] * 3}))
    real = store.latest_rows_sql
    raced = []

    def merge_after_a_racing_writer(files):  # the compaction has listed its parts; merging starts
        if not raced:
            out = subprocess.run([sys.executable, "-c", WRITER.replace("range(1, int(sys.argv[4]) + 1)", "[99]"),
                                  str(ROOT), str(home), "1000", "1"], capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            raced.append(True)
        return real(files)

    monkeypatch.setattr(store, "latest_rows_sql", merge_after_a_racing_writer)
    wh.compact("probe")
    monkeypatch.setattr(store, "latest_rows_sql", real)
    assert raced
    assert _values(wh) == {k: 99 for k in IDS}
    assert len(wh._parts("probe")) == 2  # the merged part and the racing writer's, which the merge left alone


def test_threshold_is_a_parameter_and_compaction_keeps_the_latest_row(tmp_path):
    wh = Warehouse(tmp_path / "home", compact_after=8)
    for i in range(1, 29):
        wh.upsert_arrow("probe", pa.table({"id": IDS[: 1 + i % 3], "v": [i] * (1 + i % 3)}))
        assert len(wh._parts("probe")) <= 8
    assert _values(wh) == {"a": 28, "b": 28, "c": 26}
    seqs = [part_seq(p) for p in wh._parts("probe")]
    assert seqs == sorted(set(seqs))  # unique and increasing


def test_parts_from_hosts_with_skewed_clocks_are_ordered_by_the_store(tmp_path, monkeypatch):
    home = tmp_path / "home"
    fast = 4_000_000_000_000_000_000  # a host whose clock runs ~96 years ahead writes first
    monkeypatch.setattr(time, "time_ns", lambda: fast)
    monkeypatch.setattr(time, "time", lambda: fast / 1e9)
    Warehouse(home).upsert_arrow("probe", pa.table({"id": ["a"], "v": [1]}))
    monkeypatch.setattr(time, "time_ns", lambda: 1_000_000_000_000_000_000)  # then a host in 2001
    monkeypatch.setattr(time, "time", lambda: 1e9)
    Warehouse(home).upsert_arrow("probe", pa.table({"id": ["a"], "v": [2]}))
    assert _values(Warehouse(home)) == {"a": 2}
    Warehouse(home).compact()
    assert _values(Warehouse(home)) == {"a": 2}
    Warehouse(home).upsert_arrow("probe", pa.table({"id": ["a"], "v": [3]}))  # after a compaction too
    assert _values(Warehouse(home)) == {"a": 3}


def test_a_read_that_loses_its_parts_to_a_compaction_lists_them_again(tmp_path, monkeypatch):
    """Seen in CI: the views list the parts, a compaction merges and deletes them, the query then finds no file."""
    wh = Warehouse(tmp_path / "home")
    for i in range(3):
        wh.upsert_arrow("probe", pa.table({"id": IDS, "v": [i] * 3}))
    real = Warehouse.connect
    compacted: list[bool] = []

    def connect_then_compact(self):
        con = real(self)
        if not compacted:  # once: between listing the parts (the views) and reading them
            compacted.append(True)
            self.compact("probe")
        return con

    monkeypatch.setattr(Warehouse, "connect", connect_then_compact)
    assert _values(wh) == {k: 2 for k in IDS}
    assert compacted and len(list((tmp_path / "home" / "store" / "probe").glob("*.parquet"))) == 1
