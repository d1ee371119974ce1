"""The order passages are shown in: the per-article cap and syndicated copies, over ranked candidates.

Whatever ranked the candidates (cosine, BM25, the hybrid rule, a cross-encoder), the same order
applies: it depends on the question alone, never on how many results a page shows.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# The per-article cap shapes the order, never hides: an article's passages after its best
# PER_ARTICLE count SAME_ARTICLE_PENALTY less, so other articles' passages come first unless they
# score that much lower, and further pages go on down the ranking into more passages of the same
# articles (docs/retrieval.md).
PER_ARTICLE = 2
SAME_ARTICLE_PENALTY = 0.1
# Passages this similar in different articles are one story syndicated twice: shown once, with
# "also in". Copies of a wire paragraph with a changed word or dateline score 0.97-1.0.
NEAR_DUPLICATE = 0.95
# How much higher than the last of a pool of candidates a passage left out of it may score: the
# pools are picked on int8 codes' cosines (within about 0.002 of the float16 ones) and then rescored,
# so a passage just outside can end up a little above the last one inside.
RESCORE_SLACK = 0.005


@dataclass(frozen=True)
class Candidates:
    """Passages considered for one question: rows of the index, best ranking score first."""

    rows: np.ndarray
    scores: np.ndarray  # the ranking score (cosine, BM25 or fused, by mode)
    cosine: np.ndarray  # cosine similarity to the question
    complete: bool  # False when asking for more candidates could find more

    def head(self, n: int) -> Candidates:
        return Candidates(self.rows[:n], self.scores[:n], self.cosine[:n], self.complete and n >= len(self.rows))

    @property
    def ceiling(self) -> float:
        """The most a passage left out of these candidates can score."""
        return -np.inf if self.complete or not len(self.rows) else float(self.scores[-1]) + RESCORE_SLACK

    @classmethod
    def ranked(cls, rows: np.ndarray, scores: np.ndarray, cosine: np.ndarray, complete: bool) -> Candidates:
        """Best score first; equal scores by row, so that the order never depends on the pool."""
        order = np.lexsort((rows, -scores))
        return cls(rows[order], scores[order], cosine[order], complete)


def order(
    candidates: Candidates,
    n: int,
    per_article: int,
    penalty: float,
    duplicates: dict[int, list[int]],
    *,
    article_of: np.ndarray,
    vectors_of: Callable[[np.ndarray], np.ndarray],
) -> tuple[list[int], list[float]]:
    """The first n passages in the order shown, and the score each is shown at (its relevance).

    A passage's relevance is its ranking score, less `penalty` when `per_article` passages of its
    article rank above it; the order is by relevance, the ranking's order among equals. It
    depends on the question alone, never on n, so page 2 continues page 1 exactly. A passage that
    is a near-copy of one ordered before it from another article (a syndicated wire story) is not
    ordered but listed under that one in `duplicates`.

    Candidates outside the pool score at most its last score, so only the passages whose
    relevance is at least that (Candidates.ceiling) are settled: fewer than n means the caller
    needs a larger pool. `article_of`: each row's article; `vectors_of(rows)`: their vectors."""
    rows, scores = candidates.rows, candidates.scores
    if not len(rows) or n <= 0:
        return [], []
    # Only the rows looked at are read (from the vector file, one by one on a large index):
    # usually a few more than n, unless the penalty or near-copies push many down.
    vectors = vectors_of(rows[: max(2 * n, 16)])
    kept: list[int] = []  # rows in the ranking's order
    kept_at: list[int] = []  # their positions in rows, for the vectors
    relevance: list[float] = []
    per: dict[int, int] = {}
    best_n: list[float] = []  # min-heap of the n highest relevances so far
    looked = len(rows)
    for at, i in enumerate(rows):
        score = float(scores[at])
        if len(best_n) == n and best_n[0] >= score:
            looked = at  # no passage from here on can come before the n settled ones
            break
        if at == len(vectors):
            vectors = np.concatenate([vectors, vectors_of(rows[at : 2 * at])])
        i = int(i)
        a = int(article_of[i])
        if kept:
            similarity = vectors[kept_at] @ vectors[at]
            j = int(np.argmax(similarity))
            if similarity[j] >= NEAR_DUPLICATE and int(article_of[kept[j]]) != a:
                duplicates.setdefault(kept[j], []).append(i)
                continue
        if per.get(a, 0) >= per_article:
            if penalty == np.inf:
                continue
            score -= penalty
        per[a] = per.get(a, 0) + 1
        kept.append(i)
        kept_at.append(at)
        relevance.append(score)
        if len(best_n) < n:
            heapq.heappush(best_n, score)
        elif score > best_n[0]:
            heapq.heapreplace(best_n, score)
    floor = max(float(scores[looked]) if looked < len(rows) else -np.inf, candidates.ceiling)
    shown = sorted(((r, k) for k, r in enumerate(relevance) if r >= floor), key=lambda rk: (-rk[0], rk[1]))[:n]
    return [kept[k] for _, k in shown], [r for r, _ in shown]
