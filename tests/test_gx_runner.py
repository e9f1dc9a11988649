"""The GX runner of the release gates: results in the order given, failing rows named, and no fingerprint of the
whole frame (GX hashes every row of a pandas batch for a batch marker no result keeps: half of a gate's time)."""

from __future__ import annotations

import pandas as pd

from schemas.gx import GXRunner


def test_runner_names_failing_rows_without_fingerprinting_the_frame(monkeypatch):
    runner = GXRunner("test")
    from great_expectations.execution_engine import pandas_execution_engine

    def no_hash(df):
        raise AssertionError("the frame was fingerprinted")

    monkeypatch.setattr(pandas_execution_engine, "hash_pandas_dataframe", no_hash)
    E = runner.expectations
    df = pd.DataFrame({"id": [f"d{i}" for i in range(50)], "x": list(range(50))})
    df.loc[7, "x"] = 500
    exps = [E.ExpectColumnValuesToBeBetween(column="x", min_value=0, max_value=100),
            E.ExpectColumnValuesToNotBeNull(column="id")]
    results = runner.validate("t", exps, df, ["id"])
    assert [r.success for r in results] == [False, True]
    assert [row["id"] for row in results[0].result["unexpected_index_list"]] == ["d7"]


def test_fingerprint_threshold_is_what_gx_reads():
    """The switch used above is GX's own constant; if a GX upgrade renames it, this says so."""
    GXRunner("test2")
    from great_expectations.execution_engine import pandas_execution_engine

    assert pandas_execution_engine.HASH_THRESHOLD == 0
    assert "HASH_THRESHOLD" in pandas_execution_engine.PandasExecutionEngine.get_batch_data_and_markers.__code__.co_names
