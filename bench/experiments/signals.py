"""More signals on top of the default hybrid; prints nDCG@10 per rule and set.

    python -m bench.experiments.signals SCIFACT tests/fixtures/news_shipped \
        bench/out/news_lee bench/out/news_lee_paraphrase

SCIFACT: a BEIR-layout folder such as SciFact.

Each rule adds one signal to the default rule (fusion.missed, β 0.225, a 5), over the
same per-question scores as fusion.py:
- the article title's own vector: + g × cos(question, title) (or only what it adds over the
  passage's cosine);
- word pairs: + g × BM25 of each pair of adjacent question words as a phrase or NEAR group,
  over the question's idf sum (a sequential-dependence model);
- BM25's k1 and b: FTS5 fixes them at 1.2 / 0.75, so each word's frequency is solved back from
  its FTS5 score and the passage's length (passage_fts_docsize) and scored again;
- query expansion: each question word's nearest whole-word tokens (stored token vectors, cosine
  >= thr) searched as extra words, weighted by that cosine × lam.
Documents are ranked by their best passage, without the per-article cap (as in fusion.py).
"""

from __future__ import annotations

import argparse
import sqlite3

import numpy as np

from embeddings.metrics import ndcg_at
from embeddings.search import CONTEXT_WEIGHT, fts_terms
from embeddings.words import STOPWORDS, WORD

from .common import SETS_HELP, full_model_sets, rows_of
from .fusion import missed, rank_documents, term_scores, word_weight

K1, B = 1.2, 0.75  # FTS5's bm25 constants


def _varints(blob: bytes) -> list[int]:
    out, value = [], 0
    for byte in blob:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            out.append(value)
            value = 0
    return out


def passage_lengths(conn, index) -> np.ndarray:
    """Tokens per passage over both FTS5 columns, as bm25 counts them (docsize shadow table)."""
    size = {pid: sum(_varints(blob)) for pid, blob in conn.execute("SELECT id, sz FROM passage_fts_docsize")}
    return np.array([size[int(pid)] for pid in index.passage_ids], np.float64)


def fts_scores(conn, index, match: str) -> np.ndarray:
    out = np.zeros(index.passage_count, np.float64)
    found = conn.execute(
        "SELECT rowid, -bm25(passage_fts, 1.0, ?) FROM passage_fts WHERE passage_fts MATCH ?", (CONTEXT_WEIGHT, match)
    ).fetchall()
    if found:
        rows = rows_of(index, [r[0] for r in found])
        out[rows[rows >= 0]] = np.array([r[1] for r in found])[rows >= 0]
    return out


def word_pairs(question: str) -> list[tuple[str, str]]:
    words = [w for w in (m.casefold() for m in WORD.findall(question)) if w not in STOPWORDS]
    return [p for p in dict.fromkeys(zip(words, words[1:])) if p[0] != p[1]]


class Vocabulary:
    """The index's whole-word tokens and their stored vectors, for expansion neighbours."""

    def __init__(self, conn, embedder):
        rows = conn.execute("SELECT token, vector FROM token_vectors").fetchall()
        words = embedder.sentence_transformer.tokenizer.convert_ids_to_tokens([r[0] for r in rows])
        keep = [i for i, w in enumerate(words) if w.isalpha() and len(w) > 2 and w not in STOPWORDS]
        self.words = [words[i] for i in keep]
        vectors = np.stack([np.frombuffer(rows[i][1], np.float16).astype(np.float32) for i in keep])
        self.vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def neighbours(self, vector: np.ndarray, exclude: set[str], n: int = 5, floor: float = 0.55):
        sims = self.vectors @ (vector / (np.linalg.norm(vector) + 1e-9))
        for j in np.argsort(-sims)[:n]:
            # a crude stem test keeps a word's own inflections out ("attack" for "attacks")
            if sims[j] >= floor and self.words[j][:5] not in exclude:
                yield self.words[j], float(sims[j]), self.vectors[j]


def question_data(index, conn, vocabulary, embedder, question, qvector, every_vector, titles, lengths):
    terms = term_scores(index, question, embedder, every_vector)
    words = fts_terms(question)
    n = index.passage_count
    data = {
        "cos": every_vector @ qvector,
        "terms": terms,
        "idf": index.idf_sum(words),
        "title": titles @ qvector if titles is not None else None,
    }
    pairs = word_pairs(question)
    data["pairs"] = {
        kind: [fts_scores(conn, index, form.format(a=a, b=b)) for a, b in pairs]
        for kind, form in (("phrase", '"{a}" + "{b}"'), ("near5", 'NEAR("{a}" "{b}", 5)'))
    }
    # each word's frequency solved back from its FTS5 score: s = idf f (k1+1) / (f + k1 (1 - b + b D/avgdl))
    freqs = []
    for (scores, blind, cos), word in zip(terms, words):
        idf = index.idf_sum([word])
        f = np.zeros(n)
        hit = scores > 0
        if idf > 1e-6:
            k = K1 * (1 - B + B * lengths[hit] / lengths.mean())
            f[hit] = scores[hit] * k / (idf * (K1 + 1) - scores[hit])
        freqs.append((f, idf, blind, cos))
    data["freqs"] = freqs
    expansions = []
    for vector in index.word_vectors.of(words, embedder):
        for other, sim, other_vector in vocabulary.neighbours(vector, {w[:5] for w in words}):
            rows, bm25 = index.keyword_hits(other, limit=n)
            scores = np.zeros(n)
            scores[rows] = bm25
            expansions.append((sim, scores, every_vector @ other_vector))
    data["expansions"] = expansions
    return data


def default(q):
    return missed(q["cos"], q["terms"], q["idf"], 0.225, 5)


def with_title(g, gain_only=False):
    def rule(q):
        if q["title"] is None:
            return default(q)
        extra = np.maximum(0, q["title"] - q["cos"]) if gain_only else q["title"]
        return default(q) + g * extra

    return rule


def with_pairs(kind, g):
    return lambda q: default(q) + (g * sum(q["pairs"][kind]) / q["idf"] if q["pairs"][kind] and q["idf"] > 0 else 0)


def with_bm25(k1, b, lengths):
    def rule(q):
        if q["idf"] <= 0:
            return q["cos"]
        total = np.zeros_like(q["cos"])
        for f, idf, blind, cos in q["freqs"]:
            # rescaled by (K1+1)/(k1+1) so a saturated word scores as before and β keeps its meaning
            scores = idf * f * (k1 + 1) / (f + k1 * (1 - b + b * lengths / lengths.mean())) * (K1 + 1) / (k1 + 1)
            total += scores * word_weight(blind, cos)
        return q["cos"] + 0.225 * total / q["idf"]

    return rule


def with_expansion(threshold, lam):
    def rule(q):
        if q["idf"] <= 0:
            return default(q)
        extra = sum(
            (sim * s * word_weight(False, c) for sim, s, c in q["expansions"] if sim >= threshold),
            np.zeros_like(q["cos"]),
        )
        return default(q) + lam * 0.225 * extra / q["idf"]

    return rule


def rules(lengths):
    out = {"default hybrid": default}
    out.update({f"+ {g} x title cosine": with_title(g) for g in (0.1, 0.2, 0.3, 0.5)})
    out.update({f"+ {g} x max(0, title - passage cosine)": with_title(g, True) for g in (0.1, 0.2, 0.3)})
    out.update({f"+ {g} x {kind} pairs": with_pairs(kind, g) for kind in ("phrase", "near5") for g in (0.05, 0.1, 0.2)})
    out.update(
        {f"BM25 k1 {k1} b {b}": with_bm25(k1, b, lengths) for k1 in (0.9, 1.2, 1.6, 2.0) for b in (0.4, 0.6, 0.9)}
    )
    out.update(
        {f"expansion cos >= {t}, x {lam}": with_expansion(t, lam) for t in (0.6, 0.65, 0.7) for lam in (0.25, 0.5, 1.0)}
    )
    return out


def main(folders: list[str]) -> None:
    for embedder, data, path, index in full_model_sets(folders):
        conn = sqlite3.connect(path)
        vocabulary = Vocabulary(conn, embedder)
        lengths = passage_lengths(conn, index)
        every_vector = index.vectors.get(np.arange(index.passage_count))
        keys = [index.articles[index.passage_article[i]].key for i in range(index.passage_count)]
        title_of = {doc.key: doc.title or "" for doc in data.docs}
        distinct = sorted({t for t in title_of.values() if t})
        titles = None
        if distinct:
            vectors = dict(zip(distinct, embedder.encode(distinct)))
            titles = np.stack([vectors.get(title_of[k], np.zeros(every_vector.shape[1], np.float32)) for k in keys])
        qids = list(data.qrels)
        qvectors = embedder.encode([data.queries[q] for q in qids])
        per_q = [
            question_data(
                index, conn, vocabulary, embedder, data.queries[q], qvectors[i], every_vector, titles, lengths
            )
            for i, q in enumerate(qids)
        ]
        print(f"\n{data.name}: {len(qids)} queries, {index.passage_count} passages")
        for name, rule in rules(lengths).items():
            total = sum(
                ndcg_at(rank_documents(index, rule(question), 10), data.qrels[q], 10)
                for q, question in zip(qids, per_q)
            )
            print(f"  {name:<40} ndcg@10 {total / len(qids):.4f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help=SETS_HELP)
    main(parser.parse_args().folders)
