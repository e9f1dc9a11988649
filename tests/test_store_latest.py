"""``Warehouse.latest_sql``: a lookup filtered before the latest-row window returns exactly what the full view
returns for those ids (the newest version of each), across parts and within a part."""

from __future__ import annotations

import pyarrow as pa

from warehouse.store import Warehouse


def _rows(ids, version, dialogue=lambda i: f"d{i % 7}"):
    return pa.table({"id": [f"t{i}" for i in ids], "dialogue_id": [dialogue(i) for i in ids],
                     "version": [version] * len(ids)})


def test_filtered_lookup_returns_the_newest_version_of_each_id(tmp_path):
    wh = Warehouse(tmp_path)
    wh.upsert_arrow("things", _rows(range(50), 1))
    wh.upsert_arrow("things", _rows(range(0, 50, 2), 2))  # newer part: even ids
    wh.upsert_arrow("things", pa.concat_tables([_rows([4], 3), _rows([4], 4)]))  # same part: the later row wins
    con = wh.connect()
    try:
        con.register("want", pa.table({"id": ["d0", "d3"]}))
        got = {r["id"]: r["version"] for r in con.sql(
            f"SELECT id, version FROM ({wh.latest_sql('things', 'dialogue_id IN (SELECT id FROM want)')})"
        ).to_arrow_table().to_pylist()}
        full = {r["id"]: r["version"] for r in con.sql(
            "SELECT id, version FROM things WHERE dialogue_id IN (SELECT id FROM want)").to_arrow_table().to_pylist()}
        assert got == full and len(got) == 15
        assert got["t0"] == 2 and got["t7"] == 1 and got["t3"] == 1 and got["t10"] == 2
        four = con.sql(f"SELECT version FROM ({wh.latest_sql('things', 'id = ' + repr('t4'))})").fetchall()
        assert four == [(4,)]
        # a table with no parts yet answers through its (empty) view
        assert con.sql(f"SELECT count(*) FROM ({wh.latest_sql('dialogues', 'id IN (SELECT id FROM want)')})"
                       ).fetchall() == [(0,)]
    finally:
        con.close()
