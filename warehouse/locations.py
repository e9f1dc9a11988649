"""Where things live inside an emoforge home, independent of where the home itself is mounted.

A home is relocatable: the catalog records each release as a path relative to the home (``releases/0.2.0``),
so a home moved, copied, restored from a backup or mounted at another path on another host serves its releases
unchanged. Catalogs written before this rule held absolute paths; :func:`ensure_relocatable` rewrites them the
first time such a home is opened (and says so once), and :func:`release_dir` reads either form meanwhile (a
read-only home is never rewritten, only read correctly).

Every home also carries an identity (``.emoforge-home-id``, a random id written once): a Dask worker that sees
the home under another path (``EMOFORGE_WORKER_HOME``) checks it holds the same home the scheduler uses, instead
of silently writing into a different one (docs/operations.md, "Dask across hosts").
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path, PurePosixPath

import duckdb

from warehouse.store import Warehouse

log = logging.getLogger(__name__)

HOME_ID_FILE = ".emoforge-home-id"
WORKER_HOME_ENV = "EMOFORGE_WORKER_HOME"


class HomeMismatch(RuntimeError):
    """A worker's view of the home is missing or is another home."""


# ---- catalog paths -------------------------------------------------------------------------------------------
def catalog_path(wh: Warehouse, path: Path) -> str:
    """How the catalog records ``path`` (a directory inside the home): relative, POSIX separators."""
    try:
        return Path(path).resolve().relative_to(wh.home).as_posix()
    except ValueError:
        raise ValueError(f"{path} is not inside the emoforge home {wh.home}; releases live under releases/") from None


def release_dir(wh: Warehouse, stored: str) -> Path:
    """The directory a catalog entry names, in this home wherever it is mounted. A legacy absolute entry names
    ``<old home>/releases/<version>``; in a moved or copied home that is ``<this home>/releases/<version>``."""
    p = PurePosixPath(stored)
    if not p.is_absolute():
        return wh.home / Path(*p.parts)
    return wh.releases_dir / p.name


def record_home(con: duckdb.DuckDBPyConnection, wh: Warehouse) -> None:
    """Note in the catalog which path its views were made for (a later open elsewhere re-points them)."""
    con.execute("CREATE TABLE IF NOT EXISTS home_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
    con.execute("INSERT OR REPLACE INTO home_meta VALUES ('home', ?)", [str(wh.home)])


def _needs_migration(con: duckdb.DuckDBPyConnection, home: Path) -> tuple[list[tuple[str, str]], bool]:
    """(absolute release rows, whether the catalog's views were made for another home path)."""
    rows = con.execute("SELECT version, path FROM releases WHERE path LIKE '/%' OR path LIKE '_:%'").fetchall()
    try:
        got = con.execute("SELECT value FROM home_meta WHERE key = 'home'").fetchall()
    except duckdb.CatalogException:
        got = []
    return rows, (got[0][0] if got else None) != str(home)


def ensure_relocatable(wh: Warehouse) -> int:
    """Rewrite absolute release paths as home-relative ones and re-point the catalog's store views at this home's
    path. Returns the number of release paths rewritten. Cheap when there is nothing to do (one read-only look);
    skipped while a writer holds the home (the next open does it) and on a read-only home."""
    if not wh.catalog_path.exists():
        return 0
    with wh.catalog() as con:
        rows, moved = _needs_migration(con, wh.home)
    if not rows and not moved:
        return 0
    with wh.try_write_lock() as locked:
        if not locked:
            return 0
        try:
            return _migrate(wh)
        except (duckdb.IOException, duckdb.PermissionException, OSError) as exc:
            log.info("catalog of %s not migrated (read-only?): %s; release paths are resolved on the fly", wh.home, exc)
            return 0


def _migrate(wh: Warehouse) -> int:
    with wh.catalog(write=True) as con:
        rows, moved = _needs_migration(con, wh.home)
        con.execute("BEGIN TRANSACTION")
        try:
            for version, stored in rows:
                rel = catalog_path(wh, release_dir(wh, stored))
                con.execute("UPDATE releases SET path = ? WHERE version = ?", [rel, version])
            record_home(con, wh)
            if moved:
                wh.refresh_catalog_views(con)
            con.execute("COMMIT")
        except duckdb.Error:
            con.execute("ROLLBACK")
            raise
    if rows:
        old = sorted({str(PurePosixPath(s).parent.parent) for _, s in rows})
        log.warning("catalog of %s migrated: %d release path(s) recorded under %s are now relative to the home, "
                    "so the home can be moved or copied", wh.home, len(rows), ", ".join(old))
    elif moved:
        log.info("home %s was moved or copied: catalog views re-pointed at it", wh.home)
    return len(rows)


# ---- home identity (Dask workers) ----------------------------------------------------------------------------
def home_id(home: str | os.PathLike) -> str:
    """The home's identity, created on first use (written to a temporary name, then renamed: never torn)."""
    f = Path(home) / HOME_ID_FILE
    try:
        return f.read_text().strip()
    except FileNotFoundError:
        pass
    tmp = f.with_name(f"{HOME_ID_FILE}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(uuid.uuid4().hex + "\n")
    try:
        os.link(tmp, f)  # fails if another process created it first: theirs wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return f.read_text().strip()


def worker_home(home: str, expected_id: str | None) -> Path:
    """The home as this (possibly remote) worker process sees it: ``$EMOFORGE_WORKER_HOME`` when set, else the
    scheduler's path. Refuses a path that holds no home or another home than the scheduler's."""
    chosen = os.environ.get(WORKER_HOME_ENV) or home
    path = Path(chosen).expanduser()
    if expected_id is None:
        return path
    how = f"${WORKER_HOME_ENV}" if os.environ.get(WORKER_HOME_ENV) else "the scheduler's path"
    try:
        got = (path / HOME_ID_FILE).read_text().strip()
    except OSError:
        raise HomeMismatch(
            f"this worker sees no emoforge home at {path} ({how}; the scheduler's home is {home}): mount the "
            f"shared home on this host and start the worker with {WORKER_HOME_ENV}=<its path here> "
            "(docs/operations.md)") from None
    if got != expected_id:
        raise HomeMismatch(
            f"this worker's home {path} ({how}) is another home than the scheduler's {home} (id {got[:8]} != "
            f"{expected_id[:8]}): point {WORKER_HOME_ENV} at the shared home's mount on this host")
    return path
