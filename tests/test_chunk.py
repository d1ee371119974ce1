import pytest
from hypothesis import given, settings, strategies as st

from embeddings.chunk import MIN_WORDS, make_passages, split_sentences


def words(n: int, word: str = "word") -> str:
    return " ".join([word] * n)


def count(text: str) -> int:
    return len(text.split())


def test_sentences_respect_abbreviations_and_quotes():
    text = "The U.S. left on Aug. 9, 2021. Mr. Smith said “No.” He left! A. B. Jones came."
    assert split_sentences(text) == [
        "The U.S. left on Aug. 9, 2021.",
        "Mr. Smith said “No.”",
        "He left!",
        "A. B. Jones came.",
    ]


@pytest.mark.timeout(60)  # a hang guard: the quadratic version took minutes on this text
def test_a_long_paragraph_of_rejected_sentence_ends_is_one_sentence_and_its_end_still_splits():
    """Every '. ' below follows a lone letter, an initial as in "J. Smith", so none ends a sentence:
    the text up to the last one is one sentence (a hostile corpus paragraph like this once made every
    /ask quoting it take 7 s)."""
    run = "~~strike~~`code` *it* à. Co " * 6000
    text = run + "Then it ended. Mr. Smith came."
    assert split_sentences(text) == [run + "Then it ended.", "Mr. Smith came."]


def test_each_paragraph_is_a_passage_verbatim():
    paras = [words(12, "alpha") + ".", words(20, "beta") + "."]
    assert make_passages(paras, count_tokens=count, max_tokens=100) == paras


def test_short_fragment_merges_into_next_paragraph():
    paras = ["Short bit.", words(12) + "."]
    out = make_passages(paras, count_tokens=count, max_tokens=100)
    assert out == ["Short bit.\n\n" + words(12) + "."]


def test_trailing_fragment_merges_into_previous():
    paras = [words(12) + ".", "The end."]
    assert make_passages(paras, count_tokens=count, max_tokens=100) == [words(12) + ".\n\nThe end."]


def test_long_paragraph_splits_at_sentence_boundaries_within_budget():
    sentences = [f"Sentence number {i} has exactly seven words." for i in range(30)]
    para = " ".join(sentences)
    out = make_passages([para], count_tokens=count, max_tokens=40)
    assert len(out) > 1
    assert all(count(p) <= 40 for p in out)
    # Nothing lost or rewritten: the pieces are whole sentences that rejoin to the paragraph.
    assert " ".join(out) == para
    assert all(p.endswith(".") for p in out)


def test_a_single_overlong_sentence_is_cut_at_words():
    para = words(100) + "."
    out = make_passages([para], count_tokens=count, max_tokens=30)
    assert all(count(p) <= 30 for p in out)
    assert " ".join(out) == para


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=400), max_size=12), st.integers(min_value=8, max_value=120))
def test_passages_never_empty_and_within_budget(paras, max_tokens):
    out = make_passages(paras, count_tokens=count, max_tokens=max_tokens)
    assert all(p.strip() for p in out)
    # Every word of the input survives, in order.
    assert " ".join(out).split() == " ".join(p.strip() for p in paras if p.strip()).split()
    assert all(count(p) <= max_tokens or len(p.split()) == 1 for p in out)
    assert MIN_WORDS > 0
