"""Registered releases: listing, verification, pull, diff, and the crash-recovery sweep."""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from schemas.digest import file_sha256
from warehouse.locations import catalog_path, ensure_relocatable, record_home, release_dir
from warehouse.evaluation_file import EVALUATION_FILE, evaluation_delta, evaluation_summary, read_evaluation
from warehouse.store import Warehouse
from warehouse.versions import check_version, sort_versions

log = logging.getLogger(__name__)


class ReleaseError(RuntimeError):
    pass


def hash_file(path: Path) -> str:
    return file_sha256(path)


def fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*"), reverse=True):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise ReleaseError(f"{path} has no manifest.json: not a complete release") from None
    except json.JSONDecodeError as exc:
        raise ReleaseError(f"{path}/manifest.json is not valid JSON: {exc}") from None


def verify_release(path: Path) -> list[str]:
    """Problems found when checking every file against the manifest (empty when the release is intact)."""
    manifest = read_manifest(path)
    problems = []
    listed = manifest.get("files", {})
    for rel, meta in listed.items():
        p = path / rel
        if not p.is_file():
            problems.append(f"missing file {rel}")
        elif p.stat().st_size != meta["bytes"] or hash_file(p) != meta["sha256"]:
            problems.append(f"checksum mismatch for {rel}")
    for p in path.rglob("*"):
        rel = p.relative_to(path).as_posix()
        if p.is_file() and rel not in ("manifest.json", EVALUATION_FILE) and rel not in listed:
            problems.append(f"unexpected file {rel}")
    return problems


# ---- catalog -----------------------------------------------------------------------------------------
def registered_versions(wh: Warehouse) -> list[str]:
    with wh.catalog() as con:
        return sort_versions([r[0] for r in con.execute("SELECT version FROM releases").fetchall()])


def register_release(wh: Warehouse, path: Path) -> None:
    manifest = read_manifest(path)
    counts = manifest["counts"]
    with wh.catalog(write=True) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                "INSERT INTO releases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    manifest["version"], catalog_path(wh, path), datetime.fromisoformat(manifest["created_at"]),
                    manifest.get("parent"), counts["dialogues"], counts["utterances"],
                    json.dumps(counts["splits"]), manifest["config_fingerprint"], manifest["code_version"],
                    hash_file(path / "manifest.json"),
                ],
            )
            wh.refresh_catalog_views(con)
            record_home(con, wh)
            con.execute("COMMIT")
        except duckdb.Error:
            con.execute("ROLLBACK")
            raise


def reconcile(wh: Warehouse) -> None:
    """Sweep what an interrupted publish left: drop temporary build directories; register a renamed release whose
    manifest verifies (the kill came between rename and registration); set aside one that does not."""
    with wh.write_lock():
        for tmp in wh.releases_dir.glob(".tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)
        known = set(registered_versions(wh))
        for d in wh.releases_dir.iterdir():
            if d.name.startswith(".") or not d.is_dir() or d.name in known:
                continue
            try:
                problems = verify_release(d)
            except ReleaseError as exc:
                problems = [str(exc)]
            if problems:
                aside = wh.releases_dir / f".broken-{d.name}"
                log.warning("release directory %s is incomplete (%s); moved to %s", d, problems[:3], aside)
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(d, aside)
            else:
                register_release(wh, d)


def list_releases(wh: Warehouse) -> list[dict[str, Any]]:
    if any(wh.releases_dir.glob("[0-9]*")) or any(wh.releases_dir.glob(".tmp-*")):
        # finish what an interrupted publish left, unless a publish is running right now
        with wh.try_write_lock() as locked:
            if locked:
                reconcile(wh)
    ensure_relocatable(wh)  # a moved home, or one written with absolute paths: fixed once, here
    with wh.catalog() as con:
        rows = con.execute(
            "SELECT version, path, created_at, parent, n_dialogues, n_utterances, counts_json FROM releases"
        ).fetchall()
    out = [
        {"version": v, "path": str(release_dir(wh, p)), "created": c.isoformat(), "parent": par,
         "counts": {"dialogues": nd, "utterances": nu, "splits": json.loads(cj)},
         "evaluation": evaluation_summary(read_evaluation(release_dir(wh, p)))}
        for v, p, c, par, nd, nu, cj in rows
    ]
    order = {v: i for i, v in enumerate(sort_versions([r["version"] for r in out]))}
    return sorted(out, key=lambda r: order[r["version"]])


def resolve_release(home: str | os.PathLike | Warehouse, version: str) -> Path:
    """The directory of a registered release; refuses malformed and unknown versions."""
    wh = home if isinstance(home, Warehouse) else Warehouse(home)
    version = check_version(version)
    releases = {r["version"]: r for r in list_releases(wh)}
    if version not in releases:
        known = ", ".join(releases) or "none"
        raise ReleaseError(f"unknown release {version} in {wh.home} (known: {known})")
    path = Path(releases[version]["path"])
    if not path.is_dir():
        raise ReleaseError(f"release {version} is registered but its directory {path} is missing")
    return path


def pull_release(home: str | os.PathLike, version: str, dest: str | os.PathLike) -> Path:
    """Copy a release to ``dest`` (a new or empty directory) and verify every checksum of the copy."""
    src = resolve_release(home, version)
    problems = verify_release(src)
    if problems:
        raise ReleaseError(f"release {version} in the warehouse is damaged: {'; '.join(problems[:10])}")
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise ReleaseError(f"destination {dest} exists and is not empty")
    tmp = dest.parent / f".{dest.name}.pulling"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    problems = verify_release(tmp)
    if problems:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ReleaseError(f"copy of release {version} does not match its manifest: {'; '.join(problems[:10])}")
    if dest.exists():
        dest.rmdir()
    os.replace(tmp, dest)
    return dest


def diff_releases(home: str | os.PathLike, a: str, b: str) -> dict[str, Any]:
    """Dialogues added/removed/relabelled from ``a`` to ``b`` and how distributions moved."""
    wh = Warehouse(home)
    pa_, pb = resolve_release(wh, a), resolve_release(wh, b)
    con = duckdb.connect()
    try:
        def view(name: str, path: Path, kind: str) -> None:
            glob = str(path / "data" / kind / "*.parquet").replace("'", "''")
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{glob}')")

        view("da", pa_, "dialogues"), view("db", pb, "dialogues"), view("ua", pa_, "utterances"), view("ub", pb, "utterances")
        added = [r[0] for r in con.execute("SELECT dialogue_id FROM db EXCEPT SELECT dialogue_id FROM da ORDER BY 1").fetchall()]
        removed = [r[0] for r in con.execute("SELECT dialogue_id FROM da EXCEPT SELECT dialogue_id FROM db ORDER BY 1").fetchall()]
        moved = con.execute(
            "SELECT da.dialogue_id, da.split, db.split FROM da JOIN db USING (dialogue_id) WHERE da.split <> db.split"
        ).fetchall()
        relabelled = con.execute(
            "SELECT count(*) FROM ua JOIN ub USING (dialogue_id, utterance_idx) WHERE ua.emotion <> ub.emotion"
        ).fetchall()[0][0]

        def dist(table: str, col: str) -> dict[str, int]:
            return dict(con.execute(f"SELECT {col}, count(*) FROM {table} GROUP BY 1").fetchall())

        def shift(col: str, ta: str, tb: str) -> dict[str, dict[str, float]]:
            da_, db_ = dist(ta, col), dist(tb, col)
            na, nb = sum(da_.values()) or 1, sum(db_.values()) or 1
            return {
                str(k): {"a": da_.get(k, 0), "b": db_.get(k, 0),
                         "share_a": round(da_.get(k, 0) / na, 4), "share_b": round(db_.get(k, 0) / nb, 4),
                         "delta_share": round(db_.get(k, 0) / nb - da_.get(k, 0) / na, 4)}
                for k in sorted(set(da_) | set(db_), key=str)
            }

        return {
            "a": a, "b": b,
            "dialogues": {"a": con.execute("SELECT count(*) FROM da").fetchall()[0][0],
                          "b": con.execute("SELECT count(*) FROM db").fetchall()[0][0]},
            "added": len(added), "removed": len(removed), "added_ids": added[:50], "removed_ids": removed[:50],
            "changed_split": len(moved), "relabelled_utterances": relabelled,
            "emotions": shift("emotion", "ua", "ub"), "splits": shift("split", "da", "db"),
            "domains": shift("domain", "da", "db"), "buckets": shift("bucket", "da", "db"),
            "evaluation": evaluation_delta(read_evaluation(pa_), read_evaluation(pb)),
        }
    finally:
        con.close()
