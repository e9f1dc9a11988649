"""The one Great Expectations (GX Core 1.x) runner of the release gates: an ephemeral context (no files, no network,
no progress bars) that validates a pandas frame against a list of expectations and returns one result per
expectation, in the order given (GX itself does not keep a suite's order)."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import pandas as pd

MAX_LISTED = 20


class GXRunner:
    def __init__(self, name: str = "emoforge") -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import great_expectations as gx  # noqa: PLC0415 - heavy (seconds): imported only when a gate runs
        from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: PLC0415 - same
        from great_expectations.execution_engine import pandas_execution_engine  # noqa: PLC0415 - same

        # GX fingerprints every pandas batch it loads (pandas.util.hash_pandas_object over all rows, twice per
        # run: half of the gate's time on a release) for a batch marker that no result of ours keeps; frames at or
        # above this size are not fingerprinted, so 0 turns it off
        pandas_execution_engine.HASH_THRESHOLD = 0

        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        self.gx = gx
        self.expectations = gx.expectations  # the expectation classes: runner.expectations.ExpectColumn...
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.source = self.context.data_sources.add_pandas(name)
        self._n = 0

    def validate(self, name: str, expectations: list, df: pd.DataFrame, index_cols: list[str]) -> list[Any]:
        """Validate ``df``; the ExpectationValidationResult of each of ``expectations``, in their order. Failed rows
        are named by ``index_cols`` (``result.unexpected_index_list``).

        Every expectation runs once at GX's ``BASIC`` result format (success, counts, observed value, a partial list
        of unexpected values); only the ones that fail run again at ``COMPLETE`` for the ids of their failed rows.
        ``COMPLETE`` adds several metrics per expectation (unexpected index lists, rows, queries), which is most of
        GX's cost on a release that passes."""
        results = self._validate(name, expectations, df, {"result_format": "BASIC"})
        failed = [i for i, r in enumerate(results) if not r.success]
        if failed:
            again = self._validate(name, [expectations[i] for i in failed], df, {
                "result_format": "COMPLETE", "unexpected_index_column_names": index_cols,
                "partial_unexpected_count": MAX_LISTED})
            for i, r in zip(failed, again):
                results[i] = r
        return results

    def _validate(self, name: str, expectations: list, df: pd.DataFrame, result_format: dict) -> list[Any]:
        self._n += 1
        asset = self.source.add_dataframe_asset(f"{name}_{self._n}")
        batch_def = asset.add_batch_definition_whole_dataframe(f"all_{self._n}")
        # a copy per run with an id of its own (results come back by id); the suite is not saved to the context:
        # saving serialises the whole suite again for every expectation added, seconds over a release's runs
        suite = self.gx.ExpectationSuite(name=f"{name}_{self._n}",
                                         expectations=[exp.copy(update={"id": None}) for exp in expectations])
        added = list(suite.expectations)
        for exp in added:
            exp.id = str(uuid.uuid4())
        batch = batch_def.get_batch(batch_parameters={"dataframe": df})
        result = batch.validate(suite, result_format=result_format)
        by_id = {str(r.expectation_config.id): r for r in result.results}
        missing = [e for e in added if str(e.id) not in by_id]
        if missing:
            raise RuntimeError(f"GX returned no result for {missing}")
        return [by_id[str(e.id)] for e in added]
