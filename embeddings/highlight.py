"""The highlighted sentence: which sentence of a quoted passage answers the question.

Both renderers show it in bold (`Result.highlight`, a span of the passage's verbatim text). A
sentence is scored by meaning and by the words it shares with the question: the cosine of the
question's vector (the one the search already computed) to the sentence's vector, the mean of its
words' vectors (word_vectors.py: stored at index time, so no model call), plus OVERLAP_WEIGHT x
the share of the question's words the sentence holds. Shared words alone missed the answer when a
question says it in other words ("How did the trapped workers stay alive?" / "the miners had
survived ... by rationing water") or spells it otherwise ("US" / "U.S."); meaning alone misses
where one exact word decides. On a labelled set of question/passage pairs the mix picks the
answering sentence most often (docs/retrieval.md, bench/experiments/highlight.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from .chunk import sentence_spans
from .words import STOPWORDS, WORD

OVERLAP_WEIGHT = 0.2
# Initialisms written with dots ("U.S.", "E.U.", "W.H.O.") are the same words as without them.
_DOTTED = re.compile(r"\b(?:[^\W\d_]\.){2,}(?!\w)")


def words_of(text: str) -> list[str]:
    """The words of text, casefolded, with dotted initialisms joined ("U.S." -> "us")."""
    text = _DOTTED.sub(lambda m: m.group().replace(".", ""), text)
    return [w.casefold() for w in WORD.findall(text)]


def content_words(text: str) -> set[str]:
    """The words of text without stopwords and one-letter words."""
    return {w for w in words_of(text) if w not in STOPWORDS and len(w) > 1}


def shared_share(question_words: set[str], words: set[str]) -> float:
    """The share of the question's words the sentence holds, matched loosely: the same word, a
    word of 4+ letters whose first five letters begin the other ('seized' ~ 'seize'), or a
    4-letter word that begins the question's word ('fall' ~ 'fallen')."""
    if not question_words:
        return 0.0
    long = [w for w in words if len(w) >= 4]
    four = {w for w in long if len(w) == 4}
    heads = {n: {w[:n] for w in long if len(w) >= n} for n in {len(t[:5]) for t in question_words}}
    found = sum(1 for t in question_words if t in words or t[:4] in four or t[:5] in heads[len(t[:5])])
    return found / len(question_words)


def best_sentence(
    question: str, text: str, question_vector: np.ndarray, vectors_of: Callable[[list[str]], np.ndarray]
) -> tuple[int, int] | None:
    """Span of the sentence of text that best answers the question; None for a one-sentence text.

    `question_vector`: the question's unit vector; `vectors_of(words)`: unit vectors of words, one
    row each (zero for a word without one), in the question vector's space."""
    spans = sentence_spans(text)
    if len(spans) < 2:
        return None
    sentences = [words_of(text[a:b]) for a, b in spans]
    vocabulary = sorted({w for words in sentences for w in words})
    row = {w: i for i, w in enumerate(vocabulary)}
    dimension = len(question_vector)
    vectors = np.asarray(vectors_of(vocabulary), np.float32) if vocabulary else np.zeros((0, dimension), np.float32)
    asked = content_words(question)
    scores = []
    for words in sentences:
        mean = vectors[[row[w] for w in words]].sum(0) if words else np.zeros(dimension, np.float32)
        norm = float(np.linalg.norm(mean))
        meaning = float(mean @ question_vector) / norm if norm else 0.0
        kept = {w for w in words if w not in STOPWORDS and len(w) > 1}
        scores.append(meaning + OVERLAP_WEIGHT * shared_share(asked, kept))
    return spans[int(np.argmax(scores))]  # the first of equals
