"""Drills: a full disk (a real tiny tmpfs), a file-size limit (RLIMIT_FSIZE) and a read-only home give a clear
error and lose nothing already stored; after space is freed the same command succeeds. Kill -9 of a report writer
leaves nothing behind. (kill -9 during generation, speech and publish: the build, speech and publish tests.)"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from flows.synthetic import load_synthetic
from schemas.taxonomy import load_taxonomy
from warehouse.store import Warehouse, WarehouseError


@contextmanager
def tmpfs(path: Path, size: str):
    """A real small file system (root can mount tmpfs); skips where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); the RLIMIT_FSIZE drill covers the same path")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(folder: Path) -> Path:
    """Write a filler file until the file system is full; returns it (delete it to free the space)."""
    filler = folder / "filler.bin"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


def _snapshot(home: Path) -> dict:
    wh = Warehouse(home)
    return {t: sorted(r["id"] for r in wh.query(f"SELECT id FROM {t}").to_pylist()) for t in ("dialogues", "turns")}


def test_full_disk_refuses_writes_clearly_and_keeps_what_is_stored(tmp_path):
    tax = load_taxonomy("deepdialogue")
    with tmpfs(tmp_path / "fs", "3m") as fs:
        home = fs / "home"
        wh = Warehouse(home)
        load_synthetic(wh, tax, 20, seed=1)
        before = _snapshot(home)
        filler = _fill(fs)
        # the warehouse: a clear error, no half-written part, every stored row still readable
        from flows.synthetic import synthetic_dialogues

        more = list(synthetic_dialogues(tax, 400, seed=2))
        with pytest.raises(WarehouseError, match="No space left on device"):
            wh.upsert([t for _, ts in more for t in ts])
        assert not list((home / "store").rglob("*.tmp"))
        assert _snapshot(home) == before
        # the report of a release: clear error, no temporary folder left
        from warehouse.report import ReportError, write_report
        from tests.test_report import make_release

        filler.unlink()
        rel = make_release(fs / "r", n=8)
        _fill(fs)
        with pytest.raises(ReportError, match="disk full"):
            write_report(rel)
        assert [p.name for p in rel.iterdir() if p.name.startswith(".")] == []
        # space freed: the same write succeeds and nothing was duplicated
        (fs / "filler.bin").unlink()
        wh.upsert([d for d, _ in more[:5]])
        after = _snapshot(home)
        assert set(before["dialogues"]) < set(after["dialogues"]) and after["turns"] == before["turns"]


def test_publish_on_a_full_disk_says_so_and_keeps_earlier_releases(tmp_path):
    from flows.schedules import StorageError, publish_job
    from warehouse.releases import list_releases, verify_release

    tax = load_taxonomy("deepdialogue")
    with tmpfs(tmp_path / "fs", "24m") as fs:
        home = fs / "home"
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text("publish:\n  sources: [synthetic]\n")
        wh = Warehouse(home)
        load_synthetic(wh, tax, 30, seed=1)
        first = publish_job(str(home), str(cfg))
        load_synthetic(wh, tax, 60, seed=1)  # 30 more accepted dialogues: the next publish has work to do
        filler = _fill(fs)
        with pytest.raises(StorageError, match="publish stopped: the disk is full") as err:
            publish_job(str(home), str(cfg))
        assert "intact" in str(err.value)
        rels = list_releases(Warehouse(home))
        assert [r["version"] for r in rels] == [first["version"]]
        assert verify_release(Path(rels[0]["path"])) == []
        assert not [p for p in (home / "releases").iterdir() if p.name.startswith(".tmp-")]
        filler.unlink()
        second = publish_job(str(home), str(cfg))
        assert second["n_dialogues"] == 60 and second["parent"] == first["version"]


def _upsert_under_fsize_limit(home: str, limit: int, q) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from flows.synthetic import synthetic_dialogues

    tax = load_taxonomy("deepdialogue")
    turns = [t for _, ts in synthetic_dialogues(tax, 300, seed=9) for t in ts]
    try:
        Warehouse(home).upsert(turns)
        q.put("written")
    except WarehouseError as exc:
        q.put(str(exc))


def test_file_size_limit_gives_a_clear_error(tmp_path):
    home = tmp_path / "home"
    load_synthetic(Warehouse(home), load_taxonomy("deepdialogue"), 10, seed=1)
    before = _snapshot(home)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_upsert_under_fsize_limit, args=(str(home), 4096, q))
    p.start()
    msg = q.get(timeout=60)
    p.join(30)
    assert "File too large" in msg and str(home / "store" / "turns") in msg
    assert not list((home / "store").rglob("*.tmp"))
    assert _snapshot(home) == before


def test_read_only_home_is_refused_clearly_and_stays_readable(tmp_path):
    from typer.testing import CliRunner

    from emoforge.cli import app

    tax = load_taxonomy("deepdialogue")
    with tmpfs(tmp_path / "fs", "8m") as fs:
        home = fs / "home"
        wh = Warehouse(home)
        load_synthetic(wh, tax, 10, seed=1)
        before = _snapshot(home)
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        with pytest.raises(WarehouseError, match="Read-only file system"):
            Warehouse(home).upsert(list(load_synthetic.__globals__["synthetic_dialogues"](tax, 3, seed=5))[0][1])
        assert _snapshot(home) == before  # reading needs no write
        res = CliRunner().invoke(app, ["metrics", "--home", str(home), "--json"])
        assert res.exit_code == 0, res.output
        res = CliRunner().invoke(app, ["metrics", "--home", str(home), "--install"])
        assert res.exit_code == 2 and "Read-only file system" in res.output and "Traceback" not in res.output
        subprocess.run(["mount", "-o", "remount,rw", str(fs)], check=True)


def _report_then_hang(release: str, out: str) -> None:
    import warehouse.report as rep

    real = rep.render_html

    def slow(*a, **k):  # stop inside the write, after the plots, as a kill -9 would find it
        os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **k)

    rep.render_html = slow
    rep.write_report(Path(release), out_dir=Path(out))


def test_report_writer_killed_midway_leaves_the_previous_report(tmp_path):
    from warehouse.report import write_report
    from tests.test_report import make_release

    rel = make_release(tmp_path, n=6)
    out = tmp_path / "out"
    write_report(rel, out_dir=out)
    before = sorted(p.name for p in out.iterdir())
    p = mp.get_context("fork").Process(target=_report_then_hang, args=(str(rel), str(out)))
    p.start()
    p.join(120)
    assert p.exitcode == -signal.SIGKILL
    assert sorted(q.name for q in out.iterdir()) == before  # the previous report is whole
    assert [q.name for q in tmp_path.iterdir() if q.name.startswith(".out.tmp-")]  # the killed writer's leftovers
    write_report(rel, out_dir=out)  # the next run sweeps them
    assert not [q.name for q in tmp_path.iterdir() if q.name.startswith(".out.")]
