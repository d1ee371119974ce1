"""The highlighted sentence (embeddings/highlight.py): chosen by meaning and shared words."""

import json

import numpy as np
import pytest

from embeddings.chunk import sentence_spans
from embeddings.highlight import best_sentence, words_of
from embeddings.word_vectors import WordVectors
from tests.helpers import ROOT, SHIPPED_CORPUS

PAIRS_FILE = ROOT / "tests" / "fixtures" / "highlight" / "pairs.jsonl"
PAIRS = [json.loads(line) for line in PAIRS_FILE.read_text(encoding="utf-8").splitlines()]


def unit(*values: float) -> np.ndarray:
    v = np.array(values, np.float32)
    return v / np.linalg.norm(v)


def test_the_sentence_closest_in_meaning_wins_without_a_shared_word():
    text = "Officials met on Monday. The miners survived by rationing water. Talks resume soon."
    meaning = {
        "miners": unit(1, 0, 0),
        "survived": unit(1, 0, 0),
        "rationing": unit(0.9, 0.1, 0),
        "water": unit(1, 0, 0),
    }

    def vectors_of(words):
        return np.stack([meaning.get(w, unit(0, 0, 1)) for w in words])

    start, end = best_sentence("How did the trapped workers stay alive?", text, unit(1, 0, 0), vectors_of)
    assert text[start:end] == "The miners survived by rationing water."


def test_shared_words_decide_between_sentences_equally_close_in_meaning():
    text = "Kunduz fell on Sunday. Residents fled to Kabul by road. Officials said little."
    start, end = best_sentence(
        "Where did the residents flee to?", text, unit(1, 0), lambda words: np.tile(unit(1, 0), (len(words), 1))
    )
    assert text[start:end] == "Residents fled to Kabul by road."


def test_a_one_sentence_passage_has_no_highlight():
    assert best_sentence("Who?", "Only one sentence here.", unit(1, 0), lambda words: np.zeros((len(words), 2))) is None


def test_dotted_initialisms_are_the_same_words_as_without_dots():
    assert words_of("U.S. and E.U. officials met the W.H.O. in D.C.") == [
        "us",
        "and",
        "eu",
        "officials",
        "met",
        "the",
        "who",
        "in",
        "dc",
    ]
    assert words_of("Mr. Smith, 4.5 per cent, e.g. this") == ["mr", "smith", "4", "5", "per", "cent", "eg", "this"]


def test_the_labelled_set_is_sound():
    """40+ pairs; each label is one sentence of its passage as the product splits it; the shipped
    corpus's passages are its paragraphs verbatim."""
    assert len(PAIRS) >= 40 and len({p["id"] for p in PAIRS}) == len(PAIRS)
    corpus = {path.name: path.read_text(encoding="utf-8") for path in SHIPPED_CORPUS.iterdir()}
    for p in PAIRS:
        sentences = [p["passage"][a:b] for a, b in sentence_spans(p["passage"])]
        assert len(sentences) >= 2 and sentences.count(p["answer"]) == 1, p["id"]
        if p["origin"].startswith("corpus/"):
            assert p["passage"] in corpus[p["origin"].split()[0].removeprefix("corpus/")], p["id"]


@pytest.mark.model
def test_the_answering_sentence_is_bold_on_the_labelled_set(real_embedder):
    """Measured (docs/retrieval.md): 0.840 of the pairs; the shared words alone picked 0.741."""
    words = sorted({w for p in PAIRS for w in words_of(p["passage"])})
    tokens = sorted({t for ids in real_embedder.token_ids(words) for t in ids})
    stored = WordVectors(np.array(tokens, np.int64), real_embedder.token_vectors(tokens).astype(np.float16))
    questions = real_embedder.encode([p["question"] for p in PAIRS])
    right = 0
    for p, q in zip(PAIRS, questions):
        start, end = best_sentence(p["question"], p["passage"], q, lambda ws: stored.of(ws, real_embedder))
        right += p["passage"][start:end] == p["answer"]
    assert right / len(PAIRS) >= 0.82, right
