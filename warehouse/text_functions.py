"""SQL functions over text with the project's one definition (``schemas.text``), for DuckDB connections."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from schemas.text import count_words_column


def _count_words(texts: pa.Array) -> pa.Array:
    return pa.array(count_words_column(texts), pa.int64())


def register_text_functions(con: duckdb.DuckDBPyConnection) -> None:
    """``emoforge_count_words(text)``: ``schemas.text.count_words`` of every value (vectorised; null counts 0).
    Idempotent per connection."""
    try:
        con.create_function("emoforge_count_words", _count_words, ["VARCHAR"], "BIGINT", type="arrow",
                            null_handling="special", side_effects=False)
    except duckdb.NotImplementedException:  # registered on this connection already
        pass
