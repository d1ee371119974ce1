"""The highlighted sentence (embeddings/highlight.py)."""
from embeddings.highlight import best_sentence


def test_best_sentence_highlights_the_matching_sentence():
    text = "Kunduz fell on Sunday. Residents fled to Kabul by road. Officials said little."
    start, end = best_sentence("Where did the residents flee to?", text)
    assert text[start:end] == "Residents fled to Kabul by road."
    assert best_sentence("zzz qqq", text) is None
