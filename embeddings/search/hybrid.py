"""The hybrid rule: a passage's score from its cosine and the question's words, in one place.

    score = cosine
          + weight x coverage   (each question word's BM25 in the passage, x the word's weight plus
                                 the share of the word the passage's vector misses, over the idf sum)
          + weight x feedback   (BM25 of the best passage's rarest other words, over their idf sum)

Functions on arrays, with the settings in a frozen HybridRule passed in (DEFAULT_RULE is the
product's). SearchIndex (search_index.py) gathers their inputs: cosines from the vectors, BM25
and document frequencies from the keyword engine (engines.py). docs/retrieval.md has the
measurements behind each setting; bench/fusion_experiments.py tries variants by passing rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..embedder import Embedder
from ..words import WORD

# Words a question uses about the articles rather than what they say ("What did Jason Ditz write?").
ABOUT_ARTICLES = frozenset(
    "write writes wrote written writing article articles story stories piece column report reports author "
    "authors byline publish published".split()
)


@dataclass(frozen=True)
class HybridRule:
    """The settings of hybrid ranking (and of the keyword query's pruning, which keyword mode shares).

    The values are the product's (DEFAULT_RULE); docs/retrieval.md gives each one's measurements.

    weight: of keyword coverage and feedback against the cosine: of the rules measured, the one
    that gains where questions reuse rare words and stays above vectors where they are paraphrased.
    model_read_weight: a question word's weight when the embedding model reads it whole (1 when it
    must cut it up, word_weights); missed_exponent: the share of a word the passage's vector misses
    is (1 - cosine(word, passage)) ** missed_exponent (word_vectors.py).
    feedback_words: how many of the best passage's rarest words the question does not use (at least
    3 letters, in at most feedback_common of the passages) make the second keyword query: the
    answer's own rare words are what the question and the passages that answer it share beyond its
    wording (taken from more passages it drifts off topic; 0 turns feedback off).
    fusion_depth: candidates taken from the vectors and from each keyword list.
    common_term_share, common_term_min: a question word in more than this share of the passages,
    and in more than this many, is left out of the keyword query (unless every word is that
    common): its idf is tiny next to the words that find the answer, but FTS5 scores every passage
    it matches, so "said" would dominate a large corpus's query time. Small corpora are never
    pruned; a much lower share costs quality.
    rare_words_held: a passage holding this share of the question's rare words' weight (names,
    numbers, jargon) is not a weak answer, whatever its cosine: half would let a coincidence
    through ("Who is Angela Merkel?" where an article mentions Merkel-era tariffs), all of them is
    stricter than longer questions need.
    """

    weight: float = 0.225
    model_read_weight: float = 0.25
    missed_exponent: int = 5
    feedback_words: int = 8
    feedback_common: float = 0.1
    fusion_depth: int = 200
    common_term_share: float = 0.25
    common_term_min: int = 20_000
    rare_words_held: float = 0.7


DEFAULT_RULE = HybridRule()


def word_weights(terms: list[str], embedder: Embedder, rule: HybridRule = DEFAULT_RULE) -> dict[str, float]:
    """Keyword weight of each question word: rule.model_read_weight for a word the embedding model
    reads as one token of its vocabulary (it places such words well itself), 1 for the words it
    must cut into pieces or that hold a digit (names, jargon, codes: where vectors are weak and
    exact matching is what finds the passage)."""
    overhead = embedder.count_tokens("")  # the special tokens around any text
    return {
        t: 1.0 if any(c.isdigit() for c in t) or embedder.count_tokens(t) - overhead > 1 else rule.model_read_weight
        for t in terms
    }


def phrased_otherwise(terms: list[str], weights: dict[str, float], hits: dict[str, int]) -> bool:
    """Whether the question uses an ordinary word (one the model reads whole) that no passage has:
    it is phrased in other words than the corpus, any keyword match is incidental, and the vectors
    rank alone. `hits`: passages found per word
    searched; a word left out as too common (not in hits) is not missing, nor is a word about the
    articles themselves ("What did Jason Ditz write?": his name is in the context, "write" in no text)."""
    return any(weights[t] < 1.0 and t in hits and not hits[t] and t not in ABOUT_ARTICLES for t in terms)


def matched(bm25: np.ndarray) -> np.ndarray:
    """Which passages (columns of a words x passages BM25 matrix) hold any of the words."""
    return bm25.any(axis=0)


def coverage(
    bm25: np.ndarray, weights: list[float], cosine: np.ndarray | None, idf_sum: float, rule: HybridRule = DEFAULT_RULE
) -> np.ndarray:
    """Each passage's keyword coverage of the question: the BM25 of each word in it (`bm25`, words
    x passages) times the word's weight (`weights`, one per word) plus the share of the word the
    passage's vector misses, summed and divided by the question's idf sum (roughly the BM25 of a
    passage holding every word once), so comparable across questions and addable to a cosine.
    `cosine`: of each word's vector to the `matched` passages (words x matched passages; None
    when none matches)."""
    if idf_sum <= 0 or not bm25.size:
        return np.zeros(bm25.shape[1], np.float32)
    found = matched(bm25)
    weight = np.zeros_like(bm25)
    if found.any():
        weight[:, found] = word_weight(np.asarray(weights, np.float32)[:, None], cosine, rule)
    return (bm25 * weight).sum(0) / idf_sum


def word_weight(base: np.ndarray | float, cosine: np.ndarray, rule: HybridRule = DEFAULT_RULE) -> np.ndarray:
    """A word's keyword weight in each passage: its `base` weight (word_weights) plus the share of
    the word the passage's vector misses, (1 - cosine(word, passage)) ** rule.missed_exponent."""
    return base + (1.0 - np.minimum(np.maximum(cosine, 0.0), 1.0)) ** rule.missed_exponent


def keyword_bonus(coverage_scores: np.ndarray, rule: HybridRule = DEFAULT_RULE) -> np.ndarray:
    return rule.weight * coverage_scores


def feedback_words(
    words: list[str],
    asked: list[str],
    document_frequencies: Callable[[list[str]], list[int]],
    passages: int,
    rule: HybridRule = DEFAULT_RULE,
) -> list[str]:
    """Keyword feedback: the rule.feedback_words rarest of the best passage's `words` that are not
    `asked`, have at least 3 letters and are in at most rule.feedback_common of the passages."""
    asked_words = set(asked)
    words = list(dict.fromkeys(w for w in words if len(w) > 2 and w not in asked_words))
    counts = dict(zip(words, document_frequencies(words)))
    rare = [w for w in words if 0 < counts[w] <= rule.feedback_common * passages]
    return sorted(rare, key=counts.__getitem__)[: rule.feedback_words]  # the rarest: the highest idf


def feedback_bonus(bm25: np.ndarray, idf_sum: float, rule: HybridRule = DEFAULT_RULE) -> np.ndarray:
    """What the feedback query adds: its BM25 over its words' idf sum, x rule.weight."""
    return rule.weight * bm25 / idf_sum


def keyword_scores(bm25: np.ndarray, idf_sum: float) -> np.ndarray:
    """Keyword mode's score: BM25 over the words' idf sum, on the scale the article penalty is set for."""
    return bm25 / max(idf_sum, 1e-6)


def without_common(
    terms: list[str], count: Callable[[str], int], passages: int, rule: HybridRule = DEFAULT_RULE
) -> list[str]:
    """The terms minus the common ones (rule.common_term_share, rule.common_term_min); the rarest
    one when all are common. `count(word)`: passages holding it."""
    limit = max(rule.common_term_share * passages, rule.common_term_min)
    if len(terms) < 2 or passages <= limit:
        return terms
    counts = {t: count(t) for t in terms}
    return [t for t in terms if counts[t] <= limit] or [min(terms, key=counts.get)]


# ------------------------------------------------------------------ weak answers


def rare_candidates(question: str, terms: list[str], weights: dict[str, float]) -> dict[str, str]:
    """The question's rare words, each with the form it is matched in (rare_share): names, numbers
    and jargon, that is the words it writes with a capital letter after its first word, that hold
    a digit, or that the embedding model cuts into pieces (weight 1). Not stopwords or words about
    the articles themselves. A word written in capitals ("US", "GDP") keeps them: it is matched
    only so written, not as "us"."""
    words = WORD.findall(question)
    capitalised = {w.casefold() for w in words[1:] if w[:1].isupper() and len(w) > 1}
    acronyms = {w.casefold(): w for w in words if w.isupper() and len(w) > 1}
    return {t: acronyms.get(t, t) for t in terms if t not in ABOUT_ARTICLES and (weights[t] == 1.0 or t in capitalised)}


def rare_weight(passages: int, document_frequency: int) -> float:
    """A rare word's weight: its idf as FTS5 computes it; a word no passage holds weighs the most."""
    n, df = passages, document_frequency
    return float(np.log((n + 0.5) / 0.5) if not df else max(np.log((n - df + 0.5) / (df + 0.5)), 0.0))


def rare_share(rare: dict[str, float], text: str) -> float:
    """The share of the rare words' weight that the text holds: each word as a whole word, in any
    case (a word kept in capitals only so written), or with a plural -s."""
    total = sum(rare.values())
    if total <= 0:
        return 0.0
    words = WORD.findall(text)
    written = set(words) | {w.casefold() for w in words}
    held = sum(
        weight
        for word, weight in rare.items()
        if word in written
        or word + "s" in written
        or word + "es" in written
        or (len(word) > 4 and word.endswith("s") and word[:-1] in written)
    )
    return held / total
