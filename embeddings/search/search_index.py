"""Search: cosine similarity over the passage vectors, held in memory (embeddings.vectors) or searched
where a store keeps them (engines.VectorSearch).

SearchIndex answers questions over one snapshot: it loads the vectors from a vector source and
asks a keyword engine (engines.py), runs the keyword side in a thread while the question is
embedded, keeps the snapshot's caches, and hands the scores' inputs to the hybrid rule
(hybrid.py) and the ranked candidates to the order they are shown in (order.py).

A `SearchIndex` is an immutable snapshot of one committed index state: vectors, passage ids and
article metadata are loaded in one read transaction, and that transaction stays open so passage
texts fetched later come from the same state even while a re-index commits a new one. Callers
swap in a fresh `SearchIndex` after a re-index (the bot) or load one per process (the CLI).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import store, tantivy_index
from ..answer import Answer, Article, Result
from ..embedder import Embedder, Reranker
from ..errors import IndexDamagedError, ModelMismatchError, QueryError
from ..highlight import best_sentence
from ..search_options import DEFAULT_K, DEFAULT_MODE, MAX_K, MODES, check_question_text  # noqa: F401 (re-exported)
from ..word_vectors import WordVectors
from ..words import fts_terms
from . import engines, hybrid
from .engines import Fts5Keywords, KeywordEngine, KeywordFallback, TantivyKeywords
from .hybrid import DEFAULT_RULE, HybridRule
from .order import PER_ARTICLE, SAME_ARTICLE_PENALTY, Candidates, order

log = logging.getLogger("embeddings.search")  # the package's name: what logs and their readers know

MAX_QUESTION_CHARS = 2000
KEYWORD_LIMIT = 1000
RERANK_DEPTH = 50  # passages a cross-encoder re-orders (it costs a model call per passage)


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
        self.meta = meta
        self.articles: list[Article] = articles
        self.vectors: engines.VectorSearch = vectors
        self.passage_ids = passage_ids
        self.passage_article = passage_article  # index into self.articles
        self.passage_position = passage_position
        self.weak_score = weak_score
        self._id_order: np.ndarray | None = None  # lazily built id -> row lookup
        self._sorted_ids: np.ndarray | None = None
        self._usable: np.ndarray | None = None  # False for passages whose vectors are damaged (_leave_out)
        self.damaged: dict[str, str] = {}
        self._fts5 = Fts5Keywords(conn, self._lock, len(passage_ids))
        self.keyword: KeywordEngine = self._fts5  # keyword_engine(): the tantivy copy on a large index
        self.word_vectors = WordVectors.load(conn, int(meta.get("dimension") or 0))
        # Publication dates as day ordinals (0 = undated) so date filters are one vector comparison.
        self._published = np.array([a.published.toordinal() if a.published else 0 for a in articles], dtype=np.int64)

    @classmethod
    def load(cls, index_path: Path, *, model_name: str, weak_score: float) -> SearchIndex:
        with store.damage_reported(index_path):
            return cls._load(index_path, model_name=model_name, weak_score=weak_score)

    @classmethod
    def _load(cls, index_path: Path, *, model_name: str, weak_score: float) -> SearchIndex:
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
            dim = int(meta.get("dimension") or 0)
            total = sum(a.passages for a in articles)
            loaded = engines.load_vectors(engines.vector_sources(conn, index_path, meta.get("generation"), total, dim))
            index = cls.from_snapshot(conn, meta, articles, loaded, weak_score=weak_score, where=index_path)
        except BaseException:
            conn.close()
            raise
        index.keyword = engines.keyword_engine(index._fts5, index_path, meta.get("generation"), index.passage_count)
        return index

    @classmethod
    def from_snapshot(
        cls,
        conn,
        meta: dict,
        articles: list[Article],
        loaded: engines.LoadedVectors,
        *,
        weak_score: float,
        where: object,
    ) -> SearchIndex:
        """A snapshot from what a store read in one transaction (conn still holds it): the articles,
        ordered by key, and the vectors a VectorSource loaded, in article id then position order."""
        row_of = {a.id: i for i, a in enumerate(articles)}
        total = sum(a.passages for a in articles)
        vectors, ids, owners = loaded.vectors, loaded.passage_ids, loaded.owners
        counts = np.array([articles[row_of[a]].passages for a in owners], dtype=np.int64)
        passage_article = np.repeat(np.array([row_of[a] for a in owners], dtype=np.int32), counts)
        passage_position = (np.arange(len(ids)) - np.repeat(np.cumsum(counts) - counts, counts)).astype(np.int32)
        if not (len(ids) == total == len(passage_article)):
            raise IndexDamagedError(
                f"the index at {where} is inconsistent ({len(ids)} passages, {total} vectors): "
                "run `corpus-bot index --rebuild`"
            )
        index = cls(conn, meta, articles, vectors, ids, passage_article, passage_position, weak_score)
        index._leave_out(loaded.damaged_rows, loaded.damaged)
        return index

    @property
    def tantivy(self) -> tantivy_index.TantivyIndex | None:
        """The tantivy copy keyword search uses (None: FTS5, or the copy failed). Setting it to None
        makes keyword search use FTS5, as on a small index; setting a copy, that copy."""
        engine = self.keyword
        first = engine.first if isinstance(engine, KeywordFallback) else None
        return first.index if first is not None else None

    @tantivy.setter
    def tantivy(self, copy: tantivy_index.TantivyIndex | None) -> None:
        self.keyword = self._fts5 if copy is None else KeywordFallback(TantivyKeywords(copy), self._fts5)

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
            self.damaged[article.key] = (
                why.get(article.id) or f"{n} of its {article.passages} vectors are not unit vectors"
            )
        listed = "; ".join(f"{key} ({reason})" for key, reason in list(self.damaged.items())[:5])
        log.warning(
            "%d passages of %d articles are left out of search because their stored vectors are damaged; "
            "`corpus-bot index` embeds them again: %s%s",
            len(rows),
            len(self.damaged),
            listed,
            " ..." if len(self.damaged) > 5 else "",
        )

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
            found = {
                pid: rest
                for pid, *rest in self._conn.execute(
                    f"SELECT id, article_id, position, text FROM passages WHERE id IN ({marks})", ids
                )
            }
        texts, wrong = {}, set()
        for row, pid in zip(rows, ids):
            article, position = self.articles[self.passage_article[row]], int(self.passage_position[row])
            article_id, stored_position, text = found.get(pid, (None, None, None))
            if (article_id, stored_position) != (article.id, position):
                log.warning(
                    "passage %d left out: it is not paragraph %d of %s, where this index's vectors put it; "
                    "`corpus-bot index` writes the vector file again",
                    pid,
                    position + 1,
                    article.key,
                )
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
                bool,
                len(self.articles),
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
        rule: HybridRule = DEFAULT_RULE,
    ) -> Answer:
        question = " ".join(question.split())
        if not question:
            raise QueryError("the question is empty")
        check_question_text(question)
        if len(question) > MAX_QUESTION_CHARS:
            raise QueryError(f"the question is too long ({len(question)} characters, at most {MAX_QUESTION_CHARS})")
        if not 1 <= k <= MAX_K:
            raise QueryError(f"the number of results must be between 1 and {MAX_K}, got {k}")
        if filters.since and filters.until and filters.since > filters.until:
            raise QueryError(f"--since {filters.since} is after --until {filters.until}")

        ranking = self.rank(
            question, embedder, n=offset + k + 1, filters=filters, per_article=per_article, mode=mode, rule=rule
        )
        if reranker:
            ranking = self._rerank(question, ranking, reranker, n=offset + k + 1, per_article=per_article)
        picked = ranking.picked
        page, has_more = picked[offset : offset + k], len(picked) > offset + k
        texts = self._texts(picked[: offset + k])
        weak = self._weak(question, embedder, picked[: offset + k], ranking.picked_cosine[: offset + k], texts, rule)

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
                    rank=offset + n + 1,
                    score=score,
                    relevance=relevance,
                    passage_id=pid,
                    position=int(self.passage_position[i]),
                    text=texts[pid],
                    article=self.articles[self.passage_article[i]],
                    highlight=best_sentence(question, texts[pid], ranking.query, vectors_of),
                    weak=weak[offset + n],
                    also_in=tuple(self.articles[self.passage_article[d]] for d in ranking.duplicates.get(i, ())),
                )
            )
        # The answer is weak when every passage ranked up to the end of this page is.
        return Answer(
            query=question,
            results=results,
            weak=all(weak),
            excluded_undated=ranking.excluded_undated,
            offset=offset,
            has_more=has_more,
            filters=filters.as_dict(),
        )

    def _weak(
        self,
        question: str,
        embedder: Embedder,
        rows: list[int],
        cosine: list[float],
        texts: dict[int, str],
        rule: HybridRule,
    ) -> list[bool]:
        """Which passages are weak answers: those whose cosine similarity to the question is below
        weak_score (comparable across questions, unlike fused scores) and that do not hold the
        question's rare words (names, numbers, jargon: rule.rare_words_held of their weight, in the
        passage or its article's title, publication and authors). docs/retrieval.md has both error
        rates on a labelled set."""
        weak = [c < self.weak_score for c in cosine]
        rare = self.rare_words(question, embedder, rule) if any(weak) else {}
        if not rare:
            return weak
        for at, row in enumerate(rows):
            if weak[at]:
                a = self.articles[self.passage_article[row]]
                text = " ".join([texts.get(int(self.passage_ids[row]), ""), a.title or "", a.source or "", *a.authors])
                weak[at] = hybrid.rare_share(rare, text) < rule.rare_words_held
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
        rule: HybridRule = DEFAULT_RULE,
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
            keyword = _keyword_threads().submit(self.keyword_hits, question, keep, KEYWORD_LIMIT, rule)
        elif mode == "hybrid":
            terms = fts_terms(question)
            # before encode: all three use the tokenizer
            weights, vectors = hybrid.word_weights(terms, embedder, rule), self.word_vectors.of(terms, embedder)
            keyword = _keyword_threads().submit(self.keyword_coverage, terms, keep, weights, vectors, rule)
        query = embedder.encode([question])[0]
        found = None
        if mode == "hybrid":
            found = self._fuse(query, keyword, keep, terms, rule)
        elif mode == "keyword":
            rows, bm25 = keyword.result()
            found = rows, hybrid.keyword_scores(bm25, self.idf_sum(fts_terms(question)))
        pool = max(4 * n, 64)
        while True:  # the article penalty and duplicates can use up a pool: widen it until n are settled
            candidates = self._candidates(query, found, keep, mode, pool)
            duplicates: dict[int, list[int]] = {}
            picked, relevance = self._order(candidates, n, per_article, penalty, duplicates)
            if len(picked) >= n or candidates.complete:
                break
            pool *= 4
        return Ranking(
            picked, self._cosines(candidates, picked), relevance, candidates, excluded_undated, duplicates, query
        )

    def _candidates(self, query: np.ndarray, found, keep: np.ndarray | None, mode: str, pool: int) -> Candidates:
        """The best `pool` candidates; `found` is the keyword hits (keyword mode) or the Fusion (hybrid)."""
        if mode == "vector":
            rows, cosine = self.vectors.top(query, pool, keep)
            return Candidates.ranked(rows, cosine, cosine, complete=len(rows) < pool)
        if mode == "keyword":  # only passages that match the words, best first: the pool's cosines only
            k_rows, k_scores = found
            rows = k_rows[:pool]
            return Candidates.ranked(
                rows, k_scores[:pool], self.vectors.dot(query, rows), complete=len(rows) == len(k_rows)
            )
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
            np.concatenate([fused.rows, tail.rows]),
            np.concatenate([fused.scores, np.minimum(tail.scores, floor)]),
            np.concatenate([fused.cosine, tail.cosine]),
            complete=len(v_rows) < pool,
        )

    def _fuse(self, query: np.ndarray, keyword: Future, keep, terms: list[str], rule: HybridRule) -> Fusion:
        """Hybrid's candidates, the vectors' and the keywords' best rule.fusion_depth, scored by the
        hybrid rule: cosine + keyword coverage + keyword feedback from the best of them. `keyword`:
        the keyword side's Coverage, still being found while the vectors are searched."""
        # Up to 400 passages are fused on the cosines their int8 codes give (within about 0.002 of
        # the float16 ones; in memory), and only the best `pool` are then rescored on their float16
        # values (_candidates): on a large index those are read from the vector file one by one, and
        # each read costs more when the file is not in the page cache.
        c_rows = self.vectors.nearest_rows(query, rule.fusion_depth, keep)
        coverage_of: Coverage = keyword.result()
        rows = np.union1d(c_rows, coverage_of.rows[: rule.fusion_depth])
        passages = self.vectors.approx(rows)  # decoded once for the cosines and both coverages
        cosine = passages @ query
        bonus = hybrid.keyword_bonus(coverage_of(rows, passages), rule)
        if len(rows):
            words = self.feedback_words(terms, int(rows[np.argmax(cosine + bonus)]), rule)
            if words:  # one query for all the words: one per word took twice as long, for the same ranking
                ids, scores = self._engine_top(words, rule.fusion_depth)
                bm25 = _scores_at(rows, self._rows_of(ids), scores)
                bonus = bonus + hybrid.feedback_bonus(bm25, self.idf_sum(words), rule)
        return Fusion(rows, cosine + bonus, bonus)

    def feedback_words(self, asked: list[str], row: int, rule: HybridRule = DEFAULT_RULE) -> list[str]:
        """Hybrid's keyword feedback words from the passage at `row` (hybrid.feedback_words)."""
        words = fts_terms(self._texts([row]).get(int(self.passage_ids[row]), ""))
        return hybrid.feedback_words(words, asked, self.keyword.document_frequencies, self.passage_count, rule)

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
        scores = np.asarray(
            reranker.scores(question, [texts.get(int(self.passage_ids[i]), "") for i in head.rows]), np.float64
        )
        candidates = Candidates.ranked(head.rows, scores, head.cosine, complete=True)
        duplicates: dict[int, list[int]] = {}
        picked, relevance = self._order(candidates, n, per_article, SAME_ARTICLE_PENALTY, duplicates)
        return Ranking(
            picked,
            self._cosines(candidates, picked),
            relevance,
            candidates,
            ranking.excluded_undated,
            duplicates,
            ranking.query,
        )

    def keyword_hits(
        self,
        question: str,
        keep: np.ndarray | None = None,
        limit: int = KEYWORD_LIMIT,
        rule: HybridRule = DEFAULT_RULE,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and BM25 scores (higher is better) of the best `limit` matching passages, best first:
        from FTS5, or from the tantivy copy on a large index. Rows where keep is False are dropped
        after the limit; `rule`: its common-word pruning."""
        rows, scores, _ = self._keyword_search(fts_terms(question), keep, limit, rule)
        return rows, scores

    def _keyword_search(self, terms, keep, limit, rule: HybridRule, weights: dict[str, float] | None = None):
        """keyword_hits; with `weights` (hybrid search) the words are searched one by one, each
        word's BM25 scaled by its weight and added up (BM25 is a sum over the words: exact for the
        passages within each word's best `limit`), and each word's own hits returned as well."""
        terms = self.keyword.query_words(terms, rule)
        found_by_word = None
        if weights is None:
            ids, scores = self._engine_top(terms, limit)
            rows = self._rows_of(ids)
        else:
            found_by_word = self._hits_by_word(terms, limit)
            rows, scores = _add_up(
                [r for r, _ in found_by_word.values()],
                [weights.get(t, 1.0) * s for t, (_, s) in found_by_word.items()],
                limit,
            )
        ok = rows >= 0
        if keep is not None:
            ok[ok] = keep[rows[ok]]
        return rows[ok], scores[ok], found_by_word

    def _hits_by_word(self, terms: list[str], limit: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each word's own best `limit` passages: rows and BM25."""
        found = {}
        for t, (ids, scores) in zip(terms, self.keyword.top_each(terms, limit)):
            rows = self._rows_of(ids)
            found[t] = rows[rows >= 0], scores[rows >= 0]
        return found

    def keyword_coverage(
        self,
        terms: list[str],
        keep: np.ndarray | None,
        weights: dict[str, float],
        vectors: np.ndarray,
        rule: HybridRule = DEFAULT_RULE,
    ) -> Coverage:
        """The keyword side of hybrid search: the best keyword hits (by BM25 with `weights`), and a
        function giving any passages' coverage of the question (hybrid.coverage; the passages as
        their int8 scan codes hold them: in memory, where a float16 row may be on disk); zero
        everywhere when the question is phrased otherwise (hybrid.phrased_otherwise). `vectors`:
        the words' vectors (word_vectors.py), zero when unknown."""
        # Each word's best rule.fusion_depth: as good as its best 1000 on the evaluation sets, and half
        # the keyword time on large indexes. (Asking the tantivy copy instead for the words' scores
        # in just the candidate passages was slower.)
        rows, _, by_word = self._keyword_search(terms, keep, rule.fusion_depth, rule, weights)
        if hybrid.phrased_otherwise(terms, weights, {t: len(found) for t, (found, _) in by_word.items()}):
            return Coverage(self, [], weights, vectors, 0.0, rows[:0], {}, rule)
        # While the question is embedded: the fusion asks for these rows' vectors next.
        self.vectors.read_ahead(rows[: rule.fusion_depth])
        return Coverage(self, terms, weights, vectors, self.idf_sum(terms), rows, by_word, rule)

    def idf_sum(self, terms: list[str]) -> float:
        """Sum of the words' BM25 idf, as the engine that scores them computes it."""
        return self.keyword.idf_sum(terms)

    def _engine_top(self, terms: list[str], limit: int) -> tuple[np.ndarray, np.ndarray]:
        return self.keyword.top(terms, limit)

    def document_frequency(self, word: str) -> int:
        """Passages holding the word, as the engine that scores it counts (tantivy: stemmed, in the text)."""
        return self.keyword.document_frequency(word)

    def term_count(self, term: str) -> int:
        """Passages whose text or context (title, publication, authors) contain the word, as FTS5
        counts them (whichever engine scores), cached for this snapshot."""
        return self._fts5.term_count(term)

    def rare_words(self, question: str, embedder: Embedder, rule: HybridRule = DEFAULT_RULE) -> dict[str, float]:
        """The question's rare words (hybrid.rare_candidates), each with its weight
        (hybrid.rare_weight, on the document frequency of the engine that scores it)."""
        terms = [t for t in fts_terms(question) if t not in hybrid.ABOUT_ARTICLES]
        forms = hybrid.rare_candidates(question, terms, hybrid.word_weights(terms, embedder, rule))
        return {form: hybrid.rare_weight(self.passage_count, self.document_frequency(t)) for t, form in forms.items()}

    def _rows_of(self, passage_ids: np.ndarray) -> np.ndarray:
        """Row index of each passage id in this snapshot, -1 when absent."""
        if self._id_order is None:  # kept with the ids sorted: sorting them per call is slow on large indexes
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
        return order(
            candidates,
            n,
            per_article,
            penalty,
            duplicates,
            article_of=self.passage_article,
            vectors_of=self.vectors.get,
        )

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
            Result(
                rank=0,
                score=0.0,
                passage_id=int(self.passage_ids[j]),
                position=int(self.passage_position[j]),
                text=texts[int(self.passage_ids[j])],
                article=self.articles[a],
            )
            for j in rows
            if int(self.passage_ids[j]) in texts  # never a blank or misattributed quote
        ]

    def source_names(self) -> list[str]:
        """Distinct publications and titles, for filter suggestions."""
        names = {a.source for a in self.articles if a.source} | {a.title for a in self.articles if a.title}
        return sorted(names, key=str.casefold)


_keyword_pool: ThreadPoolExecutor | None = None


def _keyword_threads() -> ThreadPoolExecutor:
    global _keyword_pool
    if _keyword_pool is None:
        _keyword_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="keyword-search")
    return _keyword_pool


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

    index: SearchIndex
    terms: list[str]
    weights: dict[str, float]
    vectors: np.ndarray
    idf_sum: float
    rows: np.ndarray
    found_by_word: dict[str, tuple[np.ndarray, np.ndarray]]  # word -> its own best rows and BM25
    rule: HybridRule

    def __call__(self, rows: np.ndarray, passages: np.ndarray | None = None) -> np.ndarray:
        """`passages`: the rows' vectors as their int8 codes hold them, when the caller has them."""
        if self.idf_sum <= 0 or not len(rows) or not self.terms:
            return np.zeros(len(rows), np.float32)
        bm25 = _word_scores(self.found_by_word, self.terms, rows)
        matched = hybrid.matched(bm25)  # the cosines are needed only where some word matches
        cosine = None
        if matched.any():
            passages = self.index.vectors.approx(rows[matched]) if passages is None else passages[matched]
            # One matrix-vector product per word: as one matrix product OpenBLAS wakes its threads,
            # which right after the vector scan is many times slower.
            cosine = np.stack([passages @ v for v in self.vectors])
        weights = [self.weights.get(t, 1.0) for t in self.terms]
        return hybrid.coverage(bm25, weights, cosine, self.idf_sum, self.rule)


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
    idx = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    return idx[np.argsort(-scores[idx], kind="stable")]
