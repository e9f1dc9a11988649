"""normalise_text's fast path (one regex, one lower()) gives exactly what lowering and testing each character
does, for any text: the release's text_hash and every duplicate gate depend on it staying the same."""

from hypothesis import given, settings
from hypothesis import strategies as st

import pyarrow as pa

from schemas.text import count_words, count_words_column, normalise_text, text_hash


def _per_character(text: str) -> str:
    return " ".join("".join(ch.lower() if ch.isalnum() else " " for ch in text).split())


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60)
       | st.text(alphabet="aZ09_ -'’.,!?\n\tİıßΣσςÉé٣²½ǅﬁ\u0307\u00a0漢", max_size=40))
def test_fast_normalisation_equals_the_per_character_definition(text):
    assert normalise_text(text) == _per_character(text)


def test_known_values():
    assert normalise_text("  Hello,   WORLD_it's  ") == "hello world it s"
    assert normalise_text("ΟΔΟΣ") == "οδοσ"  # each letter lowered on its own: no final sigma
    assert text_hash(["Hi there!", "hi   THERE"]) == text_hash(["hi there", "Hi, there."])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.none() | st.text(alphabet="aZ09_ -'’.,!?\n\tİßΣé٣²½\u0307\U00011f04漢", max_size=30)
                | st.text(max_size=20), max_size=40))
def test_column_word_counts_equal_count_words(texts):
    """The report counts words over a whole column at once; every text gets count_words's count."""
    got = count_words_column(pa.chunked_array([pa.array(texts[:5], pa.string()), pa.array(texts[5:], pa.string())]))
    assert got == [count_words(t or "") for t in texts]


def test_column_word_counts_known_values():
    texts = ["I'll go now, it's 5 o'clock", "naïve café", "don’t stop", "a_b", "", None, "--", "x'"]
    assert count_words_column(pa.array(texts)) == [6, 2, 2, 2, 0, 0, 0, 1]
    assert count_words_column(pa.array(["", None, ""])) == [0, 0, 0] and count_words_column(pa.array([], pa.string())) == []
    text = "a'b'c d''e 'f' g-h"
    assert count_words_column(pa.array(["x", text, "z"]).slice(1, 1)) == [count_words(text)] == [6]  # a slice


@settings(max_examples=400, deadline=None)
@given(st.lists(st.none() | st.text(alphabet="aZ09_ '-.\n'", max_size=12), max_size=30),
       st.integers(min_value=1, max_value=7))
def test_ascii_word_counts_over_the_buffer_equal_count_words(texts, chunk):
    """The ASCII path counts runs less joining apostrophes over the UTF-8 buffer, a few texts at a time: texts that
    start or end with an apostrophe or a letter, empty texts and chunk boundaries between them."""
    from unittest.mock import patch

    import schemas.text as text_mod

    arr = pa.chunked_array([pa.array(texts[:4], pa.string()), pa.array(texts[4:], pa.string())])
    with patch.object(text_mod, "_CHUNK_TEXTS", chunk):
        assert count_words_column(arr) == [count_words(t or "") for t in texts]
        assert count_words_column(arr.cast(pa.large_string())) == [count_words(t or "") for t in texts]
