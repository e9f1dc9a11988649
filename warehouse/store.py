"""The warehouse: an append-only Parquet store of records plus a DuckDB catalog file.

Layout under the home directory::

    store/<table>/<seq>-<pid>-<rand>.parquet   immutable part files (the Parquet store)
    store/<table>/.names.lock                   taken for the instant a part gets its sequence number
    catalog.duckdb                              releases registry + views over the store
    releases/<version>/                         published releases (see ``warehouse.publish``)

Writes are idempotent upserts by ``id``: a write adds a part file (written to a temporary name, then renamed),
and readers see, for every id, the row of the newest part. Readers never take a lock, so they run while a writer
writes. Small parts are merged by :meth:`Warehouse.compact` under the writer lock.

"Newest" is a per-table sequence number, never a wall clock (hosts sharing the store disagree about the time):
a part is written under a temporary name, then, holding the table's name lock, gets the next number (one more than
the largest in the folder) and is renamed to it, so every number handed out is visible the moment it exists.
A compaction lists its parts under that lock, merges them without it, and names the merged part with the largest
number it merged: anything written during the merge has a larger number, so it is never shadowed, and the merged
parts are the only ones deleted, so nothing is lost.
"""

from __future__ import annotations

import os
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from schemas.records import RECORD_TYPES, Record, arrow_schema

COMPACT_AFTER_PARTS = 256


class WarehouseError(RuntimeError):
    pass


def _part_name(seq: int) -> str:
    return f"{seq:020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"


def part_seq(part: Path) -> int:
    """The sequence number a part file's name starts with."""
    return int(part.name.split("-", 1)[0])


class Warehouse:
    def __init__(self, home: str | os.PathLike, compact_after: int = COMPACT_AFTER_PARTS):
        """``compact_after``: a write that leaves more parts than this in its table merges them (if the write lock
        is free right then)."""
        self.compact_after = compact_after
        self.home = Path(home).resolve()
        self.store_dir = self.home / "store"
        self.releases_dir = self.home / "releases"
        self.catalog_path = self.home / "catalog.duckdb"
        self.runs_dir = self.home / "runs"
        try:
            for d in (self.store_dir, self.releases_dir, self.runs_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WarehouseError(f"cannot use {self.home} as emoforge home: {exc.strerror or exc}") from None
        self._lock = FileLock(str(self.home / ".write.lock"))

    # ---- writing ---------------------------------------------------------------------------------
    @contextmanager
    def write_lock(self, timeout: float = 600) -> Iterator[None]:
        with self._lock.acquire(timeout=timeout):
            yield

    @contextmanager
    def try_write_lock(self) -> Iterator[bool]:
        """The write lock if it is free right now (yields True), else yields False without waiting."""
        try:
            self._lock.acquire(timeout=0, blocking=False)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            self._lock.release()

    def upsert(self, records: Sequence[Record]) -> int:
        """Write records (all of one type) as a new part; later writes of an id replace earlier ones."""
        if not records:
            return 0
        cls = type(records[0])
        if any(type(r) is not cls for r in records):
            raise WarehouseError("upsert takes records of one type at a time")
        table = pa.Table.from_pylist([r.row() for r in records], schema=arrow_schema(cls))
        return self.upsert_arrow(cls.table, table)

    def upsert_arrow(self, table_name: str, table: pa.Table) -> int:
        if table.num_rows == 0:
            return 0
        if "id" not in table.column_names:
            raise WarehouseError(f"table {table_name!r}: rows need an 'id' column")
        folder = self.store_dir / table_name
        tmp = folder / f".{os.getpid()}-{uuid.uuid4().hex}.parquet.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, tmp, compression="zstd")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            with self._names_lock(table_name):
                parts = self._parts(table_name)
                os.replace(tmp, folder / _part_name(part_seq(parts[-1]) + 1 if parts else 1))
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass  # a read-only file system refuses even that; nothing was written
            raise WarehouseError(f"cannot write to {folder}: {exc.strerror or exc}") from None
        if len(parts) + 1 > self.compact_after:
            with self.try_write_lock() as locked:
                if locked:
                    self._compact_locked(table_name)
        return table.num_rows

    def _names_lock(self, table_name: str) -> FileLock:
        """Held only while a part gets its number and its final name (or a compaction lists what it merges)."""
        return FileLock(str(self.store_dir / table_name / ".names.lock"), timeout=120)

    def _parts(self, table_name: str) -> list[Path]:
        """The table's part files, oldest first (by sequence number)."""
        folder = self.store_dir / table_name
        return sorted(folder.glob("[0-9]*.parquet"), key=lambda p: (part_seq(p), p.name)) if folder.is_dir() else []

    def compact(self, table_name: str | None = None) -> None:
        with self.write_lock():
            for name in [table_name] if table_name else self.tables():
                self._compact_locked(name)

    def _compact_locked(self, table_name: str) -> None:
        """Merge the table's parts into one (the caller holds the write lock, so no other compaction runs; writers
        may add parts meanwhile: they get larger numbers than the merged part and are left as they are)."""
        folder = self.store_dir / table_name
        with self._names_lock(table_name):
            parts = self._parts(table_name)
        if len(parts) <= 1:
            return
        con = duckdb.connect()
        merged = con.sql(latest_rows_sql(_sql_list(parts))).to_arrow_table()
        con.close()
        tmp = folder / f".{os.getpid()}-{uuid.uuid4().hex}.parquet.tmp"
        pq.write_table(merged, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        # the newest merged part's number; readers seeing both it and the merged part find the same rows in each
        os.replace(tmp, folder / _part_name(part_seq(parts[-1])))
        for p in parts:
            p.unlink(missing_ok=True)

    def tables(self) -> list[str]:
        return sorted(p.name for p in self.store_dir.iterdir() if p.is_dir())

    # ---- reading ---------------------------------------------------------------------------------
    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with one view per table: the latest row of every id."""
        for attempt in range(5):
            con = duckdb.connect()
            try:
                self.define_views(con)
                return con
            except duckdb.IOException:
                con.close()
                time.sleep(0.05 * (attempt + 1))  # a compaction replaced parts under us: list again
        raise WarehouseError(f"cannot read the store under {self.store_dir}")

    def define_views(self, con: duckdb.DuckDBPyConnection) -> None:
        """(Re)define one view per table over its current parts on ``con`` (after a write on an open connection)."""
        names = set(RECORD_TYPES) | set(self.tables())
        for name in sorted(names):
            parts = self._parts(name)
            if parts:
                con.execute(f"CREATE OR REPLACE VIEW {name} AS {latest_rows_sql(_sql_list(parts))}")
            elif name in RECORD_TYPES:
                empty = arrow_schema(RECORD_TYPES[name]).empty_table()
                con.register(f"_empty_{name}", empty)
                con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM _empty_{name}")

    def latest_sql(self, table_name: str, where: str) -> str:
        """SQL for the latest row of every id of ``table_name`` among the rows matching ``where``, the filter applied
        to the parts before the latest-row window, so a lookup of a few ids costs a scan, not a sort of the whole
        table. ``where`` must hold for every version of an id or for none (filter on ``id``, or on a column such as
        ``dialogue_id`` that an id's versions share)."""
        parts = self._parts(table_name)
        if not parts:
            return f"SELECT * FROM {table_name} WHERE {where}"  # the empty view (define_views)
        return latest_rows_sql(_sql_list(parts), where)

    def stored_rows_sql(self, table_name: str) -> str | None:
        """SQL for every row stored in ``table_name``'s parts, every version of every id (None: no parts). The
        latest rows are some of these: what no stored row has, no latest row has, found without the latest-row
        window."""
        parts = self._parts(table_name)
        return f"SELECT * FROM read_parquet({_sql_list(parts)}, union_by_name=true)" if parts else None

    def query(self, sql: str, params: Iterable | None = None) -> pa.Table:
        for attempt in range(5):
            con = self.connect()
            try:
                return con.sql(sql, params=list(params) if params is not None else None).to_arrow_table()
            except duckdb.IOException:
                if attempt == 4:
                    raise
                # a compaction merged and removed a part between listing the parts and reading them: list again
                time.sleep(0.05 * (attempt + 1))
            finally:
                con.close()
        raise AssertionError("unreachable")

    def count(self, table_name: str, where: str = "TRUE") -> int:
        return int(self.query(f"SELECT count(*) AS n FROM {table_name} WHERE {where}").column("n")[0].as_py())

    # ---- catalog ---------------------------------------------------------------------------------
    @contextmanager
    def catalog(self, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """The DuckDB catalog file. Writers hold the write lock; readers retry while a writer has it open."""
        if write:
            with self.write_lock():
                con = duckdb.connect(str(self.catalog_path))
                try:
                    _init_catalog(con)
                    yield con
                finally:
                    con.close()
            return
        if not self.catalog_path.exists():
            con = duckdb.connect()
            _init_catalog(con)
            try:
                yield con
            finally:
                con.close()
            return
        delay = 0.02
        for _ in range(200):
            try:
                con = duckdb.connect(str(self.catalog_path), read_only=True)
                break
            except duckdb.IOException:
                time.sleep(delay)
                delay = min(delay * 1.5, 0.5)
        else:
            raise WarehouseError(f"the catalog {self.catalog_path} stayed locked by a writer")
        try:
            yield con
        finally:
            con.close()

    def refresh_catalog_views(self, con: duckdb.DuckDBPyConnection) -> None:
        """(Re)define views over the store inside the catalog file, so `duckdb catalog.duckdb` can query them."""
        for name in self.tables():
            glob = sql_str(str(self.store_dir / name / "*.parquet"))
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {latest_rows_sql(glob)}")


def sql_str(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join(sql_str(str(p)) for p in paths) + "]"


def latest_rows_sql(files: str, where: str | None = None) -> str:
    """The latest row of every id over the Parquet parts ``files`` (a SQL list or glob literal): the store is
    append-only, a later part (file names sort by time) or a later row in the same part wins. ``where`` filters the
    rows before the window (see :meth:`Warehouse.latest_sql`)."""
    return (
        "SELECT * EXCLUDE (filename, file_row_number, _rank) FROM ("
        "SELECT *, row_number() OVER (PARTITION BY id ORDER BY filename DESC, file_row_number DESC) AS _rank "
        f"FROM read_parquet({files}, union_by_name=true, filename=true, file_row_number=true)"
        + (f" WHERE {where}" if where else "") + ") WHERE _rank = 1"
    )


def _init_catalog(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE IF NOT EXISTS releases (
            version VARCHAR PRIMARY KEY,
            path VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            parent VARCHAR,
            n_dialogues BIGINT NOT NULL,
            n_utterances BIGINT NOT NULL,
            counts_json VARCHAR NOT NULL,
            config_fingerprint VARCHAR NOT NULL,
            code_version VARCHAR NOT NULL,
            manifest_sha256 VARCHAR NOT NULL
        )
        """
    )
