"""Keyword search over the index in PostgreSQL (the keyword-engine seam): BM25 as FTS5 computes it
(k1 1.2, b 0.75, the context at CONTEXT_WEIGHT), from the postings the index job derives from each
passage's tsvector (store.py: keyword_postings, keyword_lexemes, keyword_stats), so PostgreSQL's
full-text parser and stemmer decide what a word is, and a question reads only its words' postings.

One word's best passages are read best first from a btree in an order that bounds BM25
(keyword_postings_impact), stopping early; several words' postings are read whole, packed by
blocks of passages (keyword_blocks), and scored here. A word's document frequency is one row of
keyword_lexemes; the corpus's size and average length are read once per snapshot.
"""

from __future__ import annotations

import numpy as np

from ..search import hybrid
from ..search.engines import CONTEXT_WEIGHT
from ..search.hybrid import HybridRule
from . import store
from .snapshot import Snapshot

K1, B = 1.2, 0.75  # FTS5's bm25() constants, so scores compare with the SQLite index's

# Every posting of the lexemes, packed by blocks of passage ids (store.py: keyword_blocks).
_BLOCKS = "SELECT lexeme, postings FROM keyword_blocks WHERE lexeme = ANY(%s::text[]) ORDER BY lexeme, block"


# Each lexeme's first postings in the order of keyword_postings_impact, best first: enough of them
# for the best few passages of one word (PostgresKeywords._best_first). Handed over packed, in that
# order, each with its impact: where the rest of the postings start, after any prefix of them.
_HEADS = f"""
SELECT l.lexeme, (
    SELECT string_agg(int8send(passage_id) || int2send(tf) || int2send(cf) || int4send(dl) || float8send(impact),
                      ''::bytea ORDER BY impact DESC)
    FROM (SELECT passage_id, tf, cf, dl, {store.IMPACT} AS impact FROM keyword_postings
          WHERE lexeme = l.lexeme COLLATE "C" ORDER BY {store.IMPACT} DESC LIMIT %s) head)
FROM unnest(%s::text[]) AS l(lexeme)
"""
_HEAD_POSTING = np.dtype(store.POSTING.descr + [("impact", ">f8")])


# A word in fewer passages than this has its best passages found by reading all its postings
# packed (one read) rather than best first (a read or more of the impact order): measured faster
# there (`python -m bench.experiments.pg_keywords one-word`).
READ_WHOLE_BELOW = 20_000


class PostgresKeywords:
    """Keyword search in the index's postings, read through the connections of a snapshot
    (snapshot.py). Words are cut and stemmed by the text search configuration, as the passages were."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        ((passages, words),) = snapshot.execute("SELECT passages, words FROM keyword_stats")
        self._passages, self._avgdl = int(passages), max(words / passages if passages else 0.0, 1.0)
        self._lexeme: dict[str, str | None] = {}
        self._counts: dict[str, int] = {}  # lexeme -> passages holding it, in this snapshot
        self._depth = 1  # how deep the last best-first read had to go (_best_first), in powers of 4

    def _lexemes(self, words: list[str]) -> dict[str, str | None]:
        found = {w: self._lexeme[w] for w in words if w in self._lexeme}
        new = [w for w in dict.fromkeys(words) if w not in found]
        if new:
            rows = self._snapshot.execute(
                f"SELECT (SELECT min(lexeme) FROM unnest(to_tsvector('{store.TEXT_SEARCH_CONFIG}', w))) "
                "FROM unnest(%s::text[]) WITH ORDINALITY AS x(w, n) ORDER BY n",
                ([store.keyword_text(w) for w in new],),
            )
            found.update((word, lexeme) for word, (lexeme,) in zip(new, rows))
            if len(self._lexeme) > 100_000:  # a bound for a bot that runs for months
                self._lexeme.clear()
            self._lexeme.update(found)
        return found

    def _df(self, lexemes: list[str]) -> dict[str, int]:
        found = {lx: self._counts[lx] for lx in lexemes if lx in self._counts}
        new = [lx for lx in dict.fromkeys(lexemes) if lx not in found]
        if new:
            stored = dict(
                self._snapshot.execute("SELECT lexeme, df FROM keyword_lexemes WHERE lexeme = ANY(%s::text[])", (new,))
            )
            found.update((lx, stored.get(lx, 0)) for lx in new)
            if len(self._counts) > 100_000:
                self._counts.clear()
            self._counts.update(found)
        return found

    def document_frequencies(self, words: list[str]) -> list[int]:
        """Passages holding each word in their text or context: two round trips at most, whatever
        the number of words, and none for words this snapshot has seen."""
        lexemes = self._lexemes(words)
        counts = self._df([lx for lx in lexemes.values() if lx])
        return [counts[lexemes[w]] if lexemes[w] else 0 for w in words]

    def term_count(self, word: str) -> int:
        return self.document_frequencies([word])[0]

    document_frequency = term_count

    def _idf(self, df: int) -> float:
        return max(float(np.log((self._passages - df + 0.5) / (df + 0.5))), 1e-6)  # FTS5's, floored as it does

    def idf_sum(self, words: list[str]) -> float:
        return sum(self._idf(df) for df in self.document_frequencies(words) if df)

    def query_words(self, terms: list[str], rule: HybridRule) -> list[str]:
        # As FTS5, every passage a word holds is scored: a common word costs more than it adds.
        self.document_frequencies(terms)  # in one read: without_common asks for them one by one
        return hybrid.without_common(terms, self.term_count, self._passages, rule)

    def top(self, terms: list[str], limit: int) -> tuple[np.ndarray, np.ndarray]:
        lexemes = sorted({lx for lx in self._lexemes(terms).values() if lx})
        if len(lexemes) == 1:
            return self._each({lexemes[0]}, limit)[lexemes[0]]
        idfs = self._idfs(lexemes)
        if not idfs:
            return _NOTHING
        # Several words: every posting of each is scored, read packed (a value per block of
        # passages, not a btree row per posting). Reading them best first instead (the threshold
        # algorithm) needs each candidate's postings of the other words by a btree probe each,
        # and was slower at every corpus size measured.
        postings = self._postings(list(idfs))
        return _best([postings.get(lx, _NO_POSTINGS) for lx in idfs], list(idfs.values()), self._avgdl, limit)

    def top_each(self, words: list[str], limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each word's own best `limit` passages: two reads at most for all the words (their
        postings, and the common ones' first postings), and another for each time some common
        word needs more of them."""
        lexemes = self._lexemes(words)
        found = self._each({lx for lx in lexemes.values() if lx}, limit)
        return [found.get(lexemes[w], _NOTHING) for w in words]

    def _idfs(self, lexemes) -> dict[str, float]:
        """Each lexeme some passage holds, with its idf, in order."""
        counts = self._df(sorted(lexemes)) if self._passages else {}
        return {lx: self._idf(n) for lx, n in counts.items() if n}

    def _each(self, lexemes: set[str], limit: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each lexeme's best `limit` passages: those of a lexeme in few passages (READ_WHOLE_BELOW)
        from all its postings, the others' best first (_best_first)."""
        idfs = self._idfs(lexemes)
        whole = [lx for lx in idfs if self._counts.get(lx, 0) < READ_WHOLE_BELOW]
        found = {lx: _NOTHING for lx in lexemes}
        if whole:
            postings = self._postings(whole)
            found.update((lx, _best([postings.get(lx, _NO_POSTINGS)], [idfs[lx]], self._avgdl, limit)) for lx in whole)
        found.update(self._best_first({lx: idf for lx, idf in idfs.items() if lx not in whole}, limit))
        return found

    def _postings(self, lexemes: list[str]) -> dict[str, np.ndarray]:
        """Every posting of the lexemes, in passage id order, read packed (store.py: keyword_blocks)."""
        packed: dict[str, list[bytes]] = {}
        for lexeme, postings in self._snapshot.execute(_BLOCKS, (lexemes,), binary=True):
            packed.setdefault(lexeme, []).append(postings)
        return {lexeme: np.frombuffer(b"".join(blocks), store.POSTING) for lexeme, blocks in packed.items()}

    def _slack(self) -> tuple[float, float]:
        """(D, slack): a posting's BM25 for one word grows with f / (dl + D), D = avgdl (1 - b) / b;
        the impact order's f and D differ from these by at most the factor slack, so a posting
        after the last one read has f / (dl + D) at most that one's impact times slack."""
        distance = self._avgdl * (1 - B) / B
        return distance, max(1.0, CONTEXT_WEIGHT / store.IMPACT_CONTEXT) * max(1.0, store.IMPACT_LENGTH / distance)

    def _best_first(self, idfs: dict[str, float], limit: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each lexeme's best `limit` passages, reading its postings best first by the impact order
        and stopping where none of the rest can pass the last one kept: the same passages and
        scores as from every posting, from a fraction of a common word's postings.

        How far a word must be read depends on how far the impact order is from BM25's for the
        corpus's passage lengths: each read starts as deep as the last one turned out to need."""
        if not idfs:
            return {}
        distance, slack = self._slack()
        first = max(limit, 64)
        depth, deepest = first * self._depth, first
        found, pending = {}, dict(idfs)
        while pending:
            for lexeme, packed in self._snapshot.execute(_HEADS, (depth, sorted(pending)), binary=True):
                head = np.frombuffer(packed or b"", _HEAD_POSTING)
                ids = head["passage_id"].astype(np.int64)
                f = head["tf"].astype(np.float64) + CONTEXT_WEIGHT * head["cf"]
                dl = head["dl"].astype(np.float64)
                # in _best's order of operations, so the scores are the same to the last bit
                scores = pending[lexeme] * f * (K1 + 1) / (f + K1 * ((1 - B) + B * dl / self._avgdl))
                # the shallowest read that would have been enough: a power of 4 times `first`
                reach, read = first, None
                while read is None and reach <= len(head):
                    kept = np.lexsort((ids[:reach], -scores[:reach]))[:limit]
                    weakest = kept[-1]
                    if f[weakest] / (dl[weakest] + distance) > head["impact"][reach - 1] * slack * (1 + 1e-9):
                        read = reach
                    reach *= 4
                if read is None and len(head) == depth:  # the rest could still pass: read deeper
                    continue
                deepest = max(deepest, read or len(head))
                kept = np.lexsort((ids, -scores))[:limit]
                found[lexeme] = ids[kept], scores[kept].astype(np.float32)
                del pending[lexeme]
            depth *= 4
        self._depth = 1
        while first * self._depth < deepest:
            self._depth *= 4
        return found


_NOTHING = (np.zeros(0, np.int64), np.zeros(0, np.float32))
_NO_POSTINGS = np.zeros(0, store.POSTING)


def _best(postings: list[np.ndarray], idfs: list[float], avgdl: float, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The best `limit` passages by BM25 summed over the words whose postings are given, ties by
    passage id."""
    ids, scores = [], []
    for p, idf in zip(postings, idfs):
        f = p["tf"].astype(np.float64) + CONTEXT_WEIGHT * p["cf"]
        ids.append(p["passage_id"].astype(np.int64))
        scores.append(idf * f * (K1 + 1) / (f + K1 * ((1 - B) + B * p["dl"] / avgdl)))
    ids, scores = np.concatenate(ids), np.concatenate(scores)
    if not len(ids):
        return _NOTHING
    if len(postings) > 1:
        # each word's ids come in order: a stable sort merges those runs, and keeps each passage's
        # scores in the words' order, so the sums never depend on how the sort went
        by_id = np.argsort(ids, kind="stable")
        ids, scores = ids[by_id], scores[by_id]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        ids, scores = ids[starts], np.add.reduceat(scores, starts)
    best = np.arange(len(scores))
    if len(scores) > limit:  # the passages scoring at least the limit-th best, then ordered
        best = np.flatnonzero(scores >= np.partition(scores, len(scores) - limit)[len(scores) - limit])
    order = best[np.lexsort((ids[best], -scores[best]))][:limit]
    return ids[order], scores[order].astype(np.float32)
