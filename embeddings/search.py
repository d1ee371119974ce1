"""Search: exact cosine similarity over every passage vector, held in memory (embeddings.vectors).

A `SearchIndex` is an immutable snapshot of one committed index state: vectors, passage ids and
article metadata are loaded in one read transaction, and that transaction stays open so passage
texts fetched later come from the same state even while a re-index commits a new one. Callers
swap in a fresh `SearchIndex` after a re-index (the bot) or load one per process (the CLI).
"""
from __future__ import annotations

import datetime as dt
import heapq
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import store, tantivy_index, vector_file
from .answer import Answer, Article, Result
from .embedder import Embedder, Reranker
from .errors import IndexDamagedError, ModelMismatchError, QueryError
from .highlight import STOPWORDS, WORD, best_sentence
from .vectors import DTYPE, VectorMatrix, checked_scale
from .word_vectors import WordVectors

log = logging.getLogger(__name__)

from .search_options import DEFAULT_K, DEFAULT_MODE, MAX_K, MODES  # noqa: F401 (re-exported)
# The per-article cap shapes the order, never hides: an article's passages after its best
# PER_ARTICLE count SAME_ARTICLE_PENALTY less, so other articles' passages come first unless they
# score that much lower, and further pages go on down the ranking into more passages of the same
# articles (docs/retrieval.md).
PER_ARTICLE = 2
SAME_ARTICLE_PENALTY = 0.1
MAX_QUESTION_CHARS = 2000


# Hybrid score: cosine + HYBRID_WEIGHT x keyword coverage (SearchIndex.keyword_coverage): each
# question word's BM25 in the passage, weighted by how far the word is from what the embedding
# model already sees: MODEL_READ_WEIGHT for a word it reads whole, 1 for one it must cut up
# (word_weights), plus (1 - cosine(word, passage))^MISSED_EXPONENT, the share of the word the
# passage's vector misses (word_vectors.py); the cosine alone when the question uses an ordinary
# word no passage has (keyword_coverage). Of the rules in docs/retrieval.md the one that gains
# where questions reuse rare words (SciFact +0.086 nDCG@10 over vectors, news_lee +0.041) and
# stays above vectors where they are paraphrased (+0.009 and +0.012), hence the default.
HYBRID_WEIGHT = 0.225
MODEL_READ_WEIGHT = 0.25
MISSED_EXPONENT = 5
KEYWORD_LIMIT = 1000
# A question word found in more than this share of the passages, and in more than this many, is
# left out of the keyword query (unless every word is that common): its BM25 weight is tiny
# (idf < 1.1, against 7-12 for the words that find the answer) but FTS5 scores every passage it
# matches (~0.6 us each): "said" or "about" in 300k of 1M passages would cost 200 ms. Small
# corpora are never pruned. 0.25 changes nDCG@10 by at most 0.003 on SciFact and news_lee;
# 0.05 cost 0.03 on SciFact (docs/retrieval.md).
COMMON_TERM_SHARE = 0.25
COMMON_TERM_MIN = 20_000
CONTEXT_WEIGHT = 0.5  # BM25 weight of the context column (title, publication, authors) relative to the text
# Passages this similar in different articles are one story syndicated twice: shown once, with
# "also in". Copies of a wire paragraph with a changed word or dateline score 0.97-1.0.
NEAR_DUPLICATE = 0.95
RERANK_DEPTH = 50  # passages a cross-encoder re-orders (it costs a model call per passage)
# How much higher than the last of a pool of candidates a passage left out of it may score: the
# pools are picked on int8 codes' cosines (within about 0.002 of the float16 ones) and then rescored,
# so a passage just outside can end up a little above the last one inside.
RESCORE_SLACK = 0.005
# Keyword feedback (hybrid): the FEEDBACK_WORDS rarest words of the best passage that the question
# does not use (at least 3 letters, in at most FEEDBACK_COMMON of the passages) are a second keyword
# query, its BM25 over its idf sum added x HYBRID_WEIGHT to every candidate's score: the answer's
# own rare words are what the question and the passages that answer it share beyond its wording.
# +0.007 nDCG@10 on SciFact, +0.002-0.006 on the news sets; from 3 or 5 passages it drifts off
# topic (docs/retrieval.md).
FEEDBACK_WORDS = 8
FEEDBACK_COMMON = 0.1
# A passage holding this share of the question's rare words' weight (names, numbers, jargon:
# SearchIndex.rare_words) is not a weak answer, whatever its cosine: half would let a coincidence
# through ("Who is Angela Merkel?" where an article mentions Merkel-era tariffs), all of them is
# stricter than longer questions need (docs/retrieval.md).
RARE_WORDS_HELD = 0.7
# Words a question uses about the articles rather than what they say ("What did Jason Ditz write?").
ABOUT_ARTICLES = frozenset(
    "write writes wrote written writing article articles story stories piece column report reports author "
    "authors byline publish published".split()
)


@dataclass(frozen=True)
class Candidates:
    """Passages considered for one question: rows of the index, best ranking score first."""

    rows: np.ndarray
    scores: np.ndarray  # the ranking score (cosine, BM25 or fused, by mode)
    cosine: np.ndarray  # cosine similarity to the question
    complete: bool  # False when asking for more candidates could find more

    def head(self, n: int) -> "Candidates":
        return Candidates(self.rows[:n], self.scores[:n], self.cosine[:n], self.complete and n >= len(self.rows))

    @property
    def ceiling(self) -> float:
        """The most a passage left out of these candidates can score."""
        return -np.inf if self.complete or not len(self.rows) else float(self.scores[-1]) + RESCORE_SLACK

    @classmethod
    def ranked(cls, rows: np.ndarray, scores: np.ndarray, cosine: np.ndarray, complete: bool) -> "Candidates":
        """Best score first; equal scores by row, so that the order never depends on the pool."""
        order = np.lexsort((rows, -scores))
        return cls(rows[order], scores[order], cosine[order], complete)


@dataclass(frozen=True)
class Ranking:
    picked: list[int]  # row indices, in the order shown
    picked_cosine: list[float]  # their cosine similarity to the question
    picked_relevance: list[float]  # the score they are ordered by (ranking score less the article penalty)
    candidates: Candidates
    excluded_undated: int
    duplicates: dict[int, list[int]]  # picked row -> near-copies of it in other articles
    query: np.ndarray | None = None  # the question's vector (None when nothing was searched)


@dataclass(frozen=True)
class Filters:
    source: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None

    def as_dict(self) -> dict:
        return {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in vars(self).items() if v}


def parse_iso_date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise QueryError(f"{option} {value!r} is not a date in YYYY-MM-DD form") from None


class SearchIndex:
    def __init__(self, conn, meta, articles, vectors, passage_ids, passage_article, passage_position, weak_score):
        self._conn = conn
        self._lock = threading.Lock()  # one sqlite connection shared by executor threads
        self._engine_lock = threading.Lock()  # switching from a failed tantivy copy to FTS5, once
        self.meta = meta
        self.articles: list[Article] = articles
        self.vectors: VectorMatrix = vectors
        self.passage_ids = passage_ids
        self.passage_article = passage_article  # index into self.articles
        self.passage_position = passage_position
        self.weak_score = weak_score
        self._id_order: np.ndarray | None = None  # lazily built id -> row lookup
        self._sorted_ids: np.ndarray | None = None
        self._term_counts: dict[str, int] = {}  # passages matching each question word, in this snapshot
        self._usable: np.ndarray | None = None  # False for passages whose vectors are damaged (_leave_out)
        self.damaged: dict[str, str] = {}
        self.tantivy: tantivy_index.TantivyIndex | None = None  # keyword search's fast path on large indexes
        self.word_vectors = WordVectors.load(conn, int(meta.get("dimension") or 0))
        # Publication dates as day ordinals (0 = undated) so date filters are one vector comparison.
        self._published = np.array([a.published.toordinal() if a.published else 0 for a in articles], dtype=np.int64)

    @classmethod
    def load(cls, index_path: Path, *, model_name: str, weak_score: float) -> "SearchIndex":
        with store.damage_reported(index_path):
            return cls._load(index_path, model_name=model_name, weak_score=weak_score)

    @classmethod
    def _load(cls, index_path: Path, *, model_name: str, weak_score: float) -> "SearchIndex":
        conn = store.connect_for_reading(index_path)
        try:
            conn.execute("BEGIN")  # snapshot: held until close()
            meta = store.read_meta(conn)
            if meta.get("model") and meta["model"] != model_name:
                raise ModelMismatchError(
                    f"the index at {index_path} was built with {meta['model']!r} but EMBEDDING_MODEL is {model_name!r}; "
                    "set EMBEDDING_MODEL back or run `corpus-bot index --rebuild`"
                )
            articles = store.read_articles(conn)
            row_of = {a.id: i for i, a in enumerate(articles)}
            dim = int(meta.get("dimension") or 0)
            total = sum(a.passages for a in articles)
            loaded = (vector_file.load(index_path, meta.get("generation"), total, dim)
                      if total >= vector_file.LARGE_INDEX else None)
            damaged: dict[int, str] = {}  # article id -> why some of its vectors are left out
            damaged_rows = np.zeros(0, np.int64)
            if loaded:
                vectors, ids, owners = loaded.vectors, loaded.passage_ids, loaded.owners
            else:
                # Filled blob by blob: joining the blobs first doubled peak memory (and glibc kept
                # the freed half: 3.0 GB instead of 1.5 GB RSS at 1M passages).
                exact = np.empty((total, max(dim, 1)), DTYPE)
                try:
                    owners, damaged = store.read_vectors_into(conn, exact)
                except ValueError as exc:
                    raise IndexDamagedError(
                        f"the index at {index_path} is inconsistent ({exc}): run `corpus-bot index --rebuild`"
                    ) from None
                # Checked where the codes' scale is computed: the same pass over the vectors.
                damaged_rows, scale = checked_scale(exact)
                vectors, ids = VectorMatrix(exact, scale), store.passage_ids_by_row(conn)
            counts = np.array([articles[row_of[a]].passages for a in owners], dtype=np.int64)
            passage_article = np.repeat(np.array([row_of[a] for a in owners], dtype=np.int32), counts)
            passage_position = (np.arange(len(ids)) - np.repeat(np.cumsum(counts) - counts, counts)).astype(np.int32)
            if not (len(ids) == total == len(passage_article)):
                raise IndexDamagedError(
                    f"the index at {index_path} is inconsistent ({len(ids)} passages, {total} vectors): "
                    "run `corpus-bot index --rebuild`"
                )
        except BaseException:
            conn.close()
            raise
        index = cls(conn, meta, articles, vectors, ids, passage_article, passage_position, weak_score)
        index._leave_out(damaged_rows, damaged)
        if len(ids) >= tantivy_index.LARGE_INDEX:
            index.tantivy = tantivy_index.TantivyIndex.open(index_path, meta.get("generation"))
        return index

    def _leave_out(self, rows: np.ndarray, why: dict[int, str]) -> None:
        """Leave passages whose vectors are damaged out of every search, and say so (once per
        snapshot): `stats` lists them and the next `corpus-bot index` embeds their articles again."""
        self.damaged = {}  # article key -> why its vectors (some or all) are left out
        if not len(rows):
            return
        self.vectors._damaged_seen |= set(rows.tolist())  # known: get() need not report them again
        self._usable = np.ones(self.passage_count, bool)
        self._usable[rows] = False
        for a, n in zip(*np.unique(self.passage_article[rows], return_counts=True)):
            article = self.articles[a]
            self.damaged[article.key] = why.get(article.id) or f"{n} of its {article.passages} vectors are not unit vectors"
        listed = "; ".join(f"{key} ({reason})" for key, reason in list(self.damaged.items())[:5])
        log.warning("%d passages of %d articles are left out of search because their stored vectors are damaged; "
                    "`corpus-bot index` embeds them again: %s%s", len(rows), len(self.damaged), listed,
                    " ..." if len(self.damaged) > 5 else "")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @property
    def passage_count(self) -> int:
        return len(self.passage_ids)

    def _texts(self, rows) -> dict[int, str]:
        """The texts of the passages at these rows, by passage id: each read with the article and
        position it belongs to, and left out (and logged) unless those are the row's. A passage id
        damaged in the vector file must never put one article's text under another's title."""
        rows = [int(r) for r in rows]
        if not rows:
            return {}
        ids = [int(self.passage_ids[r]) for r in rows]
        marks = ",".join("?" * len(ids))
        with self._lock:
            found = {pid: rest for pid, *rest in self._conn.execute(
                f"SELECT id, article_id, position, text FROM passages WHERE id IN ({marks})", ids)}
        texts, wrong = {}, set()
        for row, pid in zip(rows, ids):
            article, position = self.articles[self.passage_article[row]], int(self.passage_position[row])
            article_id, stored_position, text = found.get(pid, (None, None, None))
            if (article_id, stored_position) != (article.id, position):
                log.warning("passage %d left out: it is not paragraph %d of %s, where this index's vectors put it; "
                            "`corpus-bot index` writes the vector file again", pid, position + 1, article.key)
                wrong.add(pid)  # also where another row holds the same id: callers look texts up by id
            texts[pid] = text
        return {pid: text for pid, text in texts.items() if pid not in wrong}

    def _article_mask(self, filters: Filters) -> tuple[np.ndarray, int]:
        """Which articles pass the filters, and how many undated ones the date filter left out."""
        keep = np.ones(len(self.articles), dtype=bool)
        if filters.source:
            needle = filters.source.casefold()
            keep &= np.fromiter(
                (needle in (a.source or "").casefold() or needle in (a.title or "").casefold() for a in self.articles),
                bool, len(self.articles),
            )
        excluded_undated = 0
        if filters.since or filters.until:
            undated = self._published == 0
            excluded_undated = int((keep & undated).sum())
            keep &= ~undated
            if filters.since:
                keep &= self._published >= filters.since.toordinal()
            if filters.until:
                keep &= self._published <= filters.until.toordinal()
        return keep, excluded_undated

    def search(
        self,
        question: str,
        embedder: Embedder,
        *,
        k: int = DEFAULT_K,
        offset: int = 0,
        filters: Filters = Filters(),
        per_article: int = PER_ARTICLE,
        mode: str = DEFAULT_MODE,
        reranker: Reranker | None = None,
    ) -> Answer:
        question = " ".join(question.split())
        if not question:
            raise QueryError("the question is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise QueryError(f"the question is too long ({len(question)} characters, at most {MAX_QUESTION_CHARS})")
        if not 1 <= k <= MAX_K:
            raise QueryError(f"the number of results must be between 1 and {MAX_K}, got {k}")
        if filters.since and filters.until and filters.since > filters.until:
            raise QueryError(f"--since {filters.since} is after --until {filters.until}")

        ranking = self.rank(question, embedder, n=offset + k + 1, filters=filters, per_article=per_article, mode=mode)
        if reranker:
            ranking = self._rerank(question, ranking, reranker, n=offset + k + 1, per_article=per_article)
        picked = ranking.picked
        page, has_more = picked[offset : offset + k], len(picked) > offset + k
        texts = self._texts(picked[: offset + k])
        weak = self._weak(question, embedder, picked[: offset + k], ranking.picked_cosine[: offset + k], texts)

        def vectors_of(words: list[str]) -> np.ndarray:
            return self.word_vectors.of(words, embedder)

        results = []
        shown = zip(page, ranking.picked_cosine[offset : offset + k], ranking.picked_relevance[offset : offset + k])
        for n, (i, score, relevance) in enumerate(shown):
            pid = int(self.passage_ids[i])
            if pid not in texts:  # cannot happen inside one snapshot; never show a blank quote
                continue
            results.append(
                Result(
                    rank=offset + n + 1, score=score, relevance=relevance, passage_id=pid,
                    position=int(self.passage_position[i]),
                    text=texts[pid], article=self.articles[self.passage_article[i]],
                    highlight=best_sentence(question, texts[pid], ranking.query, vectors_of),
                    weak=weak[offset + n],
                    also_in=tuple(self.articles[self.passage_article[d]] for d in ranking.duplicates.get(i, ())),
                )
            )
        # The answer is weak when every passage ranked up to the end of this page is.
        return Answer(
            query=question, results=results, weak=all(weak), excluded_undated=ranking.excluded_undated,
            offset=offset, has_more=has_more, filters=filters.as_dict(),
        )

    def _weak(self, question: str, embedder: Embedder, rows: list[int], cosine: list[float],
              texts: dict[int, str]) -> list[bool]:
        """Which passages are weak answers: those whose cosine similarity to the question is below
        weak_score (comparable across questions, unlike fused scores) and that do not hold the
        question's rare words (names, numbers, jargon: RARE_WORDS_HELD of their weight, in the
        passage or its article's title, publication and authors). docs/retrieval.md has both error
        rates on a labelled set."""
        weak = [c < self.weak_score for c in cosine]
        rare = self.rare_words(question, embedder) if any(weak) else {}
        if not rare:
            return weak
        for at, row in enumerate(rows):
            if weak[at]:
                a = self.articles[self.passage_article[row]]
                text = " ".join([texts.get(int(self.passage_ids[row]), ""), a.title or "", a.source or "", *a.authors])
                weak[at] = rare_share(rare, text) < RARE_WORDS_HELD
        return weak

    def rank(
        self,
        question: str,
        embedder: Embedder,
        *,
        n: int,
        filters: Filters = Filters(),
        per_article: int = PER_ARTICLE,
        penalty: float = SAME_ARTICLE_PENALTY,
        mode: str = DEFAULT_MODE,
    ) -> Ranking:
        """The first n passages (row indices) for a question under filters, by mode, in the order
        shown (_order: `per_article` passages of an article before `penalty` applies; an infinite
        penalty leaves the others out, as evaluation does to rank documents by their best passage)."""
        if mode not in MODES:
            raise QueryError(f"unknown search mode {mode!r} (one of {', '.join(MODES)})")
        article_ok, excluded_undated = self._article_mask(filters)
        keep = None if article_ok.all() else article_ok[self.passage_article]
        if self._usable is not None:  # passages whose vectors are damaged are never candidates
            keep = self._usable if keep is None else keep & self._usable
        if not self.passage_count or (keep is not None and not keep.any()):
            empty = Candidates(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), True)
            return Ranking([], [], [], empty, excluded_undated, {})
        # The keyword search needs no vector: it runs in another thread while the question is embedded.
        keyword = None
        if mode == "keyword":
            keyword = _keyword_threads().submit(self.keyword_hits, question, keep)
        elif mode == "hybrid":
            terms = fts_terms(question)
            # before encode: all three use the tokenizer
            weights, vectors = word_weights(terms, embedder), self.word_vectors.of(terms, embedder)
            keyword = _keyword_threads().submit(self.keyword_coverage, terms, keep, weights, vectors)
        query = embedder.encode([question])[0]
        found = keyword.result() if keyword else None
        if mode == "hybrid":
            found = self._fuse(query, found, keep, terms, embedder)
        elif mode == "keyword":  # BM25 over the words' idf sum: on the scale the article penalty is set for
            rows, bm25 = found
            found = rows, bm25 / max(self.idf_sum(fts_terms(question)), 1e-6)
        pool = max(4 * n, 64)
        while True:  # the article penalty and duplicates can use up a pool: widen it until n are settled
            candidates = self._candidates(query, found, keep, mode, pool)
            duplicates: dict[int, list[int]] = {}
            picked, relevance = self._order(candidates, n, per_article, penalty, duplicates)
            if len(picked) >= n or candidates.complete:
                break
            pool *= 4
        return Ranking(picked, self._cosines(candidates, picked), relevance, candidates, excluded_undated, duplicates,
                       query)

    def _candidates(self, query: np.ndarray, found, keep: np.ndarray | None, mode: str, pool: int) -> Candidates:
        """The best `pool` candidates; `found` is the keyword hits (keyword mode) or the Fusion (hybrid)."""
        if mode == "vector":
            rows, cosine = self.vectors.top(query, pool, keep)
            return Candidates.ranked(rows, cosine, cosine, complete=len(rows) < pool)
        if mode == "keyword":  # only passages that match the words
            k_rows, k_scores = found
            return Candidates.ranked(k_rows, k_scores, self.vectors.dot(query, k_rows), complete=True)
        head = np.lexsort((found.rows, -found.approx_scores))[:pool]
        rows, bonus = found.rows[head], found.bonus[head]
        cosine = self.vectors.dot(query, rows)
        fused = Candidates.ranked(rows, cosine + bonus, cosine, complete=False)
        if len(head) < len(found.rows):  # the caller asks again with a larger pool if it needs more
            return fused
        # Every fused passage is in: the passages past them (only paging that deep gets here) follow
        # by cosine, each scoring at most the last fused one so that they come after all of them
        # and the order of the fused ones never depends on how deep the caller looked.
        v_rows, v_cosine = self.vectors.top(query, pool, keep)
        rest = ~np.isin(v_rows, rows)
        tail = Candidates.ranked(v_rows[rest], v_cosine[rest], v_cosine[rest], complete=False)
        floor = fused.scores[-1] if len(rows) else np.inf
        return Candidates(
            np.concatenate([fused.rows, tail.rows]), np.concatenate([fused.scores, np.minimum(tail.scores, floor)]),
            np.concatenate([fused.cosine, tail.cosine]), complete=len(v_rows) < pool,
        )

    def _fuse(self, query: np.ndarray, coverage_of: "Coverage", keep, terms: list[str], embedder: Embedder) -> "Fusion":
        """Hybrid's candidates, the vectors' and the keywords' best FUSION_DEPTH, scored on cosine +
        keyword coverage + keyword feedback from the best of them (FEEDBACK_WORDS)."""
        # Up to 400 passages are fused on the cosines their int8 codes give (within about 0.002 of
        # the float16 ones; in memory), and only the best `pool` are then rescored on their float16
        # values (_candidates): on a large index those are read from the vector file one by one (at
        # 100k passages, 600 reads a question took 3 ms; more when the file is not in the page cache).
        c_rows = self.vectors.nearest_rows(query, FUSION_DEPTH, keep)
        rows = np.union1d(c_rows, coverage_of.rows[:FUSION_DEPTH])
        passages = self.vectors.approx(rows)  # decoded once for the cosines and both coverages
        cosine = passages @ query
        bonus = HYBRID_WEIGHT * coverage_of(rows, passages)
        if len(rows):
            words = self.feedback_words(terms, int(rows[np.argmax(cosine + bonus)]))
            if words:  # one query for all the words: one per word took twice as long, for the same ranking
                ids, scores = self._engine_top(words, FUSION_DEPTH)
                bm25 = _scores_at(rows, self._rows_of(ids), scores)
                bonus = bonus + HYBRID_WEIGHT * bm25 / self.idf_sum(words)
        return Fusion(rows, cosine + bonus, bonus)

    def feedback_words(self, asked: list[str], row: int) -> list[str]:
        """Hybrid's keyword feedback: the FEEDBACK_WORDS rarest words of the passage at `row` that
        are not in `asked`, have at least 3 letters and are in at most FEEDBACK_COMMON of the passages."""
        pid = int(self.passage_ids[row])
        asked_words = set(asked)
        words = [w for w in fts_terms(self._texts([row]).get(pid, "")) if len(w) > 2 and w not in asked_words]
        counts = {w: self.document_frequency(w) for w in words}
        rare = [w for w in words if 0 < counts[w] <= FEEDBACK_COMMON * self.passage_count]
        return sorted(rare, key=counts.__getitem__)[:FEEDBACK_WORDS]  # the rarest: the highest idf

    @staticmethod
    def _cosines(candidates: Candidates, picked: list[int]) -> list[float]:
        at = {int(r): i for i, r in enumerate(candidates.rows)}
        return [float(candidates.cosine[at[r]]) for r in picked]

    def _rerank(self, question: str, ranking: Ranking, reranker: Reranker, *, n: int, per_article: int) -> Ranking:
        """Re-order the RERANK_DEPTH best passages (before the article penalty) by the cross-encoder."""
        head = ranking.candidates.head(RERANK_DEPTH)
        if not len(head.rows):
            return ranking
        texts = self._texts(head.rows)
        scores = np.asarray(reranker.scores(question, [texts.get(int(self.passage_ids[i]), "") for i in head.rows]), np.float64)
        candidates = Candidates.ranked(head.rows, scores, head.cosine, complete=True)
        duplicates: dict[int, list[int]] = {}
        picked, relevance = self._order(candidates, n, per_article, SAME_ARTICLE_PENALTY, duplicates)
        return Ranking(picked, self._cosines(candidates, picked), relevance, candidates, ranking.excluded_undated,
                       duplicates, ranking.query)

    def keyword_hits(
        self, question: str, keep: np.ndarray | None = None, limit: int = KEYWORD_LIMIT,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and BM25 scores (higher is better) of the best `limit` matching passages, best first:
        from FTS5, or from the tantivy copy on a large index. Rows where keep is False are dropped
        after the limit."""
        rows, scores, _ = self._keyword_search(fts_terms(question), keep, limit)
        return rows, scores

    def _keyword_search(self, terms, keep, limit, weights: dict[str, float] | None = None):
        """keyword_hits; with `weights` (hybrid search) the words are searched one by one, each
        word's BM25 scaled by its weight and added up (BM25 is a sum over the words: exact for the
        passages within each word's best `limit`), and each word's own hits returned as well."""
        if self.tantivy is None:
            terms = self._without_common(terms)
        found_by_word = None
        if weights is None:
            ids, scores = self._engine_top(terms, limit)
            rows = self._rows_of(ids)
        else:
            found_by_word = self._hits_by_word(terms, limit)
            rows, scores = _add_up([r for r, _ in found_by_word.values()],
                                   [weights.get(t, 1.0) * s for t, (_, s) in found_by_word.items()], limit)
        ok = rows >= 0
        if keep is not None:
            ok[ok] = keep[rows[ok]]
        return rows[ok], scores[ok], found_by_word

    def _hits_by_word(self, terms: list[str], limit: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each word's own best `limit` passages: rows and BM25."""
        found = {}
        for t in terms:
            ids, scores = self._engine_top([t], limit)
            rows = self._rows_of(ids)
            found[t] = rows[rows >= 0], scores[rows >= 0]
        return found

    def keyword_coverage(
        self, terms: list[str], keep: np.ndarray | None, weights: dict[str, float], vectors: np.ndarray
    ) -> "Coverage":
        """The keyword side of hybrid search: the best keyword hits (by BM25 with `weights`), and a
        function giving any passages' coverage of the question: the BM25 of each word in the passage
        times the word's weight plus the share of the word the passage's vector misses, (1 -
        cosine(word vector, passage))^MISSED_EXPONENT (the passage as its int8 scan codes hold
        it: in memory, where its float16 row may be on disk), summed and divided by the question's
        idf sum (roughly the BM25 of a passage holding every word once), so comparable across
        questions and addable to a cosine; zero everywhere when the question uses an ordinary word
        no passage has. `vectors`: the words' vectors (word_vectors.py), zero when unknown."""
        # Each word's best FUSION_DEPTH: as good as its best 1000 on the evaluation sets (SciFact
        # 0.7278 against 0.7275), and half the keyword time at 100k passages. (Asking the tantivy
        # copy instead for the words' scores in just the candidate passages took 16 ms at 100k.)
        rows, _, by_word = self._keyword_search(terms, keep, FUSION_DEPTH, weights)
        # An ordinary word (one the model reads whole) that no passage uses: the question is phrased
        # in other words than the corpus, where any keyword match is incidental, so the vectors rank
        # alone (news_shipped +0.026 nDCG@10, paraphrases +0.005; docs/retrieval.md). A word left
        # out as too common (not in by_word) is not missing, nor is a word about the articles
        # themselves ("What did Jason Ditz write?": his name is in the context column, "write" in no text).
        if any(weights[t] < 1.0 and t in by_word and not len(by_word[t][0]) and t not in ABOUT_ARTICLES
               for t in terms):
            return Coverage(self, [], weights, vectors, 0.0, rows[:0], {})
        return Coverage(self, terms, weights, vectors, self.idf_sum(terms), rows, by_word)

    def idf_sum(self, terms: list[str]) -> float:
        """Sum of the words' BM25 idf, as the engine that scores them computes it."""
        engine = self.tantivy
        if engine is not None:
            try:
                return engine.idf_sum(terms)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # see _tantivy_failed
                self._tantivy_failed(engine, exc)
        n = self.passage_count
        # FTS5's idf (sqlite.org/fts5.html#the_bm25_function), floored as FTS5 floors it.
        return sum(max(np.log((n - df + 0.5) / (df + 0.5)), 1e-6) for df in map(self.term_count, terms) if df)

    def _engine_top(self, terms: list[str], limit: int) -> tuple[np.ndarray, np.ndarray]:
        engine = self.tantivy
        if engine is not None:
            try:
                return engine.top(terms, limit, context_weight=CONTEXT_WEIGHT)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # see _tantivy_failed
                self._tantivy_failed(engine, exc)
        return self._fts5_top(terms, limit)

    def _tantivy_failed(self, engine, exc: BaseException) -> None:
        """The tantivy copy failed, e.g. on a damaged file, where its Rust code may panic (pyo3
        raises that as a PanicException, a BaseException): FTS5 answers, the same passages, for
        the rest of this snapshot, and one warning says so."""
        with self._engine_lock:
            if self.tantivy is not engine:
                return  # another thread already switched
            self.tantivy = None
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        log.warning("keyword search uses FTS5: the tantivy copy failed (%s: %s); `corpus-bot index` checks it and "
                    "builds it again", type(exc).__name__, reason)

    def _fts5_top(self, terms: list[str], limit: int) -> tuple[np.ndarray, np.ndarray]:
        match = fts_match(terms) if self.passage_count else ""
        if not match:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        with self._lock:
            found = self._conn.execute(
                # bm25 once per row (naming it twice computed it twice): lower is better.
                "SELECT rowid, bm25(passage_fts, 1.0, ?) AS s FROM passage_fts WHERE passage_fts MATCH ? "
                "ORDER BY s LIMIT ?",
                (CONTEXT_WEIGHT, match, limit),
            ).fetchall()
        ids = np.fromiter((r[0] for r in found), np.int64, len(found))
        scores = np.fromiter((-r[1] for r in found), np.float32, len(found))
        return ids, scores

    def _without_common(self, terms: list[str]) -> list[str]:
        """The terms minus the common ones (COMMON_TERM_SHARE, COMMON_TERM_MIN); the rarest one
        when all are common."""
        limit = max(COMMON_TERM_SHARE * self.passage_count, COMMON_TERM_MIN)
        if len(terms) < 2 or self.passage_count <= limit:
            return terms
        counts = {t: self.term_count(t) for t in terms}
        return [t for t in terms if counts[t] <= limit] or [min(terms, key=counts.get)]

    def document_frequency(self, word: str) -> int:
        """Passages holding the word, as the engine that scores it counts (tantivy: stemmed, in the text)."""
        engine = self.tantivy
        if engine is not None:
            try:
                return engine.doc_freq(word)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # see _tantivy_failed
                self._tantivy_failed(engine, exc)
        return self.term_count(word)

    def term_count(self, term: str) -> int:
        """Passages whose text or context (title, publication, authors) contain the word (as FTS5 tokenizes it),
        cached for this snapshot."""
        if term not in self._term_counts:
            with self._lock:
                count = self._conn.execute(
                    "SELECT count(*) FROM passage_fts WHERE passage_fts MATCH ?", (fts_match([term]),)
                ).fetchone()[0]
            if len(self._term_counts) > 100_000:  # a bound for a bot that runs for months
                self._term_counts.clear()
            self._term_counts[term] = count
        return self._term_counts[term]

    def rare_words(self, question: str, embedder: Embedder) -> dict[str, float]:
        """The question's rare words, each with its weight (its idf as FTS5 computes it; a word no
        passage holds weighs the most): names, numbers and jargon, that is the words it writes with
        a capital letter after its first word, that hold a digit, or that the embedding model cuts
        into pieces (word_weights). Not common words, stopwords or words about the articles
        themselves. A word written in capitals ("US", "GDP") keeps them: rare_share matches it
        only so written, not as "us"."""
        words = WORD.findall(question)
        capitalised = {w.casefold() for w in words[1:] if w[:1].isupper() and len(w) > 1}
        acronyms = {w.casefold(): w for w in words if w.isupper() and len(w) > 1}
        terms = [t for t in fts_terms(question) if t not in ABOUT_ARTICLES]
        weights = word_weights(terms, embedder)
        n = self.passage_count
        rare = {}
        for t in terms:
            if weights[t] == 1.0 or t in capitalised:
                df = self.document_frequency(t)
                idf = np.log((n + 0.5) / 0.5) if not df else max(np.log((n - df + 0.5) / (df + 0.5)), 0.0)
                rare[acronyms.get(t, t)] = float(idf)
        return rare

    def _rows_of(self, passage_ids: np.ndarray) -> np.ndarray:
        """Row index of each passage id in this snapshot, -1 when absent."""
        if self._id_order is None:  # kept with the ids sorted: gathering 1M ids took 3 ms per call
            self._id_order = np.argsort(self.passage_ids, kind="stable")
            self._sorted_ids = self.passage_ids[self._id_order]
        sorted_ids = self._sorted_ids
        if not len(sorted_ids):
            return np.full(len(passage_ids), -1, np.int64)
        at = np.searchsorted(sorted_ids, passage_ids)
        at = np.clip(at, 0, len(sorted_ids) - 1)
        return np.where(sorted_ids[at] == passage_ids, self._id_order[at], -1)

    def _order(
        self, candidates: Candidates, n: int, per_article: int, penalty: float, duplicates: dict[int, list[int]]
    ) -> tuple[list[int], list[float]]:
        """The first n passages in the order shown, and the score each is shown at (its relevance).

        A passage's relevance is its ranking score, less `penalty` when `per_article` passages of its
        article rank above it; the order is by relevance, the ranking's order among equals. It
        depends on the question alone, never on n, so page 2 continues page 1 exactly. A passage that is a near-copy of one ordered before it from another article (a
        syndicated wire story) is not ordered but listed under that one in `duplicates`.

        Candidates outside the pool score at most its last score, so only the passages whose
        relevance is at least that (Candidates.ceiling) are settled: fewer than n means the caller
        needs a larger pool."""
        rows, scores = candidates.rows, candidates.scores
        if not len(rows) or n <= 0:
            return [], []
        # Only the rows looked at are read (from the vector file, one by one on a large index):
        # usually a few more than n, unless the penalty or near-copies push many down.
        vectors = self.vectors.get(rows[: max(2 * n, 16)])
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
                vectors = np.concatenate([vectors, self.vectors.get(rows[at : 2 * at])])
            i = int(i)
            a = int(self.passage_article[i])
            if kept:
                similarity = vectors[kept_at] @ vectors[at]
                j = int(np.argmax(similarity))
                if similarity[j] >= NEAR_DUPLICATE and int(self.passage_article[kept[j]]) != a:
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
        order = sorted(((r, k) for k, r in enumerate(relevance) if r >= floor), key=lambda rk: (-rk[0], rk[1]))[:n]
        return [kept[k] for _, k in order], [r for r, _ in order]

    def context(self, passage_id: int, radius: int = 1) -> list[Result]:
        """The passage and its neighbours in the article, in order (for the bot's "Context" button)."""
        hits = np.nonzero(self.passage_ids == passage_id)[0]
        if not len(hits):
            raise QueryError("that passage is no longer in the index")
        i = int(hits[0])
        a = int(self.passage_article[i])
        lo = max(0, i - radius)
        hi = min(len(self.passage_ids), i + radius + 1)
        rows = [j for j in range(lo, hi) if self.passage_article[j] == a]
        texts = self._texts(rows)
        if passage_id not in texts:
            raise QueryError("that passage cannot be shown: the index needs `corpus-bot index` to repair it")
        return [
            Result(rank=0, score=0.0, passage_id=int(self.passage_ids[j]), position=int(self.passage_position[j]),
                   text=texts[int(self.passage_ids[j])], article=self.articles[a])
            for j in rows if int(self.passage_ids[j]) in texts  # never a blank or misattributed quote
        ]

    def source_names(self) -> list[str]:
        """Distinct publications and titles, for filter suggestions."""
        names = {a.source for a in self.articles if a.source} | {a.title for a in self.articles if a.title}
        return sorted(names, key=str.casefold)


def rare_share(rare: dict[str, float], text: str) -> float:
    """The share of the rare words' weight (SearchIndex.rare_words) that the text holds: each word
    as a whole word, in any case (a word kept in capitals only so written), or with a plural -s."""
    total = sum(rare.values())
    if total <= 0:
        return 0.0
    words = WORD.findall(text)
    written = set(words) | {w.casefold() for w in words}
    held = sum(weight for word, weight in rare.items()
               if word in written or word + "s" in written or word + "es" in written
               or (len(word) > 4 and word.endswith("s") and word[:-1] in written))
    return held / total


def fts_terms(question: str) -> list[str]:
    """The question's words for the keyword query: casefolded, no stopwords, each once."""
    return list(dict.fromkeys(w for w in (m.casefold() for m in WORD.findall(question)) if w not in STOPWORDS))


def fts_match(terms: list[str]) -> str:
    """A safe FTS5 MATCH expression: the words, each quoted, OR-ed together.

    Quoting every token means nothing a user types (quotes, AND/OR/NEAR, -, :, *, parentheses)
    can be read as FTS5 syntax, so a question can never raise a query syntax error."""
    return " OR ".join(f'"{t}"' for t in terms)


_keyword_pool: ThreadPoolExecutor | None = None


def _keyword_threads() -> ThreadPoolExecutor:
    global _keyword_pool
    if _keyword_pool is None:
        _keyword_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="keyword-search")
    return _keyword_pool


FUSION_DEPTH = 200  # candidates taken from each list


@dataclass(frozen=True)
class Fusion:
    """Hybrid's candidates before rescoring: rows, their score on approximate cosines, and the part
    of it that is not the cosine (keyword coverage and feedback)."""

    rows: np.ndarray
    approx_scores: np.ndarray
    bonus: np.ndarray


@dataclass(frozen=True)
class Coverage:
    """SearchIndex.keyword_coverage's answer: `rows`, the best keyword hits, and called with any
    rows, their coverage of the question."""

    index: "SearchIndex"
    terms: list[str]
    weights: dict[str, float]
    vectors: np.ndarray
    idf_sum: float
    rows: np.ndarray
    found_by_word: dict[str, tuple[np.ndarray, np.ndarray]]  # word -> its own best rows and BM25

    def __call__(self, rows: np.ndarray, passages: np.ndarray | None = None) -> np.ndarray:
        """`passages`: the rows' vectors as their int8 codes hold them, when the caller has them."""
        if self.idf_sum <= 0 or not len(rows) or not self.terms:
            return np.zeros(len(rows), np.float32)
        bm25 = _word_scores(self.found_by_word, self.terms, rows)
        matched = bm25.any(axis=0)  # the cosines are needed only where some word matches
        weight = np.zeros_like(bm25)
        if matched.any():
            passages = self.index.vectors.approx(rows[matched]) if passages is None else passages[matched]
            # One matrix-vector product per word: as one matrix product OpenBLAS wakes its threads,
            # which right after the vector scan took 2.8 ms instead of 0.15.
            cosine = np.stack([passages @ v for v in self.vectors])
            missed = (1.0 - np.minimum(np.maximum(cosine, 0.0), 1.0)) ** MISSED_EXPONENT
            weight[:, matched] = np.array([self.weights.get(t, 1.0) for t in self.terms], np.float32)[:, None] + missed
        return (bm25 * weight).sum(0) / self.idf_sum


def _word_scores(found_by_word, terms: list[str], rows: np.ndarray) -> np.ndarray:
    """BM25 of each word (a row) in each passage (a column), from each word's own best hits (0
    beyond them)."""
    out = np.zeros((len(terms), len(rows)), np.float32)
    for j, t in enumerate(terms):
        if t in found_by_word:
            out[j] = _scores_at(rows, *found_by_word[t])
    return out


def _scores_at(rows: np.ndarray, hit_rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The score of each of `rows` among the hits (0 where not a hit)."""
    out = np.zeros(len(rows), np.float32)
    if len(rows):
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        at = np.minimum(np.searchsorted(ordered, hit_rows), len(rows) - 1)
        here = ordered[at] == hit_rows
        out[order[at[here]]] = scores[here]
    return out


def word_weights(terms: list[str], embedder: Embedder) -> dict[str, float]:
    """Keyword weight of each question word in hybrid search: MODEL_READ_WEIGHT for a word the
    embedding model reads as one token of its vocabulary (it places such words well itself), 1 for
    the words it must cut into pieces or that hold a digit (names, jargon, codes: where vectors
    are weak and exact matching is what finds the passage)."""
    overhead = embedder.count_tokens("")  # the special tokens around any text
    return {t: 1.0 if any(c.isdigit() for c in t) or embedder.count_tokens(t) - overhead > 1 else MODEL_READ_WEIGHT
            for t in terms}


def _add_up(ids: list[np.ndarray], scores: list[np.ndarray], limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum scores per id over several lists; the best `limit`, best first."""
    if len(ids) == 1:
        return ids[0], scores[0]
    if not ids:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    unique, at = np.unique(np.concatenate(ids), return_inverse=True)
    total = np.zeros(len(unique), np.float32)
    np.add.at(total, at, np.concatenate(scores))
    best = _top_indices(total, limit)
    return unique[best], total[best]


def _top_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n highest scores, best first."""
    if n < len(scores):
        idx = np.argpartition(-scores, n - 1)[:n]
    else:
        idx = np.arange(len(scores))
    return idx[np.argsort(-scores[idx], kind="stable")]
