"""normalise_text's fast path (one regex, one lower()) gives exactly what lowering and testing each character
does, for any text: the release's text_hash and every duplicate gate depend on it staying the same."""

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.text import normalise_text, text_hash


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
