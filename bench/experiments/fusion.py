"""Try fusion rules for hybrid search on BEIR-layout sets; prints nDCG@10 per rule and set.

    python -m bench.experiments.fusion SCIFACT tests/fixtures/news_shipped \
        bench/out/news_lee bench/out/news_lee_paraphrase   # the last two: bench/news_lee/README.md

SCIFACT: a BEIR-layout folder such as SciFact.

Uses the cached evaluation indexes of `corpus-bot eval` (built on first use). Per question the
cosine and BM25 scores of every passage are computed once; each rule then only re-ranks. The
product's rule is not copied here: its variants are HybridRule settings (embeddings/search/hybrid.py)
passed to the search itself (RULE_VARIANTS). The numbers go into docs/retrieval.md.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from embeddings.metrics import evaluate_run
from embeddings.search import Candidates, HybridRule, fts_terms, hybrid, word_weights

from .common import SETS_HELP, full_model_sets


def keyword_scores(index, question):
    """BM25 of every passage (0 where the words do not match)."""
    rows, bm25 = index.keyword_hits(question)
    out = np.zeros(index.passage_count, np.float64)
    out[rows] = bm25
    return out


def term_scores(index, question, embedder, every_vector):
    """Per question word: its BM25 over every passage, whether hybrid search trusts it fully
    (search.hybrid.word_weights: the model's tokenizer cuts it into pieces, or it has a digit), and its
    cosine to every passage (its vector as stored in the index, word_vectors.py)."""
    terms = fts_terms(question)
    weights = word_weights(terms, embedder)
    word_vectors = index.word_vectors.of(terms, embedder)
    out = []
    for (term, weight), vector in zip(weights.items(), word_vectors):
        rows, bm25 = index.keyword_hits(term, limit=index.passage_count)
        scores = np.zeros(index.passage_count, np.float64)
        scores[rows] = bm25
        out.append((scores, weight == 1.0, every_vector @ vector))
    return out


def word_weight(blind, cos, other_weight=0.25, exponent=5):
    """A word's keyword weight in each passage under the product's rule (hybrid.word_weight), with
    the weight of a word the model reads whole and the exponent as parameters."""
    return hybrid.word_weight(1.0 if blind else other_weight, cos, HybridRule(missed_exponent=exponent))


def missed(cos, terms, question_idf, beta, exponent, other_weight=0.25):
    """The product's coverage (cosine + beta x each word's BM25 times word_weight, over the
    question's idf sum) from precomputed (bm25, cut-up, word cosine) terms, for sweeping its settings."""
    if question_idf <= 0:
        return cos
    kw = sum((s * word_weight(blind, c, other_weight, exponent) for s, blind, c in terms), np.zeros_like(cos))
    return cos + beta * kw / question_idf


def graded(cos, terms, question_idf, beta, other_weight):
    """Coverage where words the model reads whole count other_weight, words it cannot read 1."""
    kw = sum((s if blind else other_weight * s for s, blind, _ in terms), np.zeros_like(cos))
    return coverage(cos, kw, beta, question_idf)


def vector_top_gated(cos, kw, question_idf, beta, k=5):
    """Coverage damped by how much of the question the vector's top k passages contain: low when
    the question is phrased in other words than the corpus, where BM25's hits are incidental."""
    if question_idf <= 0:
        return cos
    gate = min(float(kw[top(cos, k)].max()) / question_idf, 1.0)
    return coverage(cos, kw, beta * gate, question_idf)


def coverage(cos, kw, beta, question_idf):
    return cos + (beta * kw / question_idf if question_idf > 0 else 0)


def rrf(cos, kw, k=60, depth=1000):
    out = np.zeros_like(cos)
    for scores in (cos, kw):
        order = np.argsort(-scores, kind="stable")[:depth]
        order = order[scores[order] > (0 if scores is kw else -np.inf)]
        out[order] += 1.0 / (k + np.arange(1, len(order) + 1))
    return out


def top(scores, n=100):
    idx = np.argpartition(-scores, min(n, len(scores) - 1))[:n]
    return idx[np.argsort(-scores[idx])]


def minmax(cos, kw, alpha=0.5, n=100):
    out = np.full_like(cos, -1.0)
    c_top, k_top = top(cos, n), top(kw, n)
    cand = np.union1d(c_top, k_top[kw[k_top] > 0])
    c_lo, c_hi = cos[c_top].min(), cos[c_top].max()
    k_hi = kw[k_top].max() if kw.max() > 0 else 1.0
    cn = (cos[cand] - c_lo) / max(c_hi - c_lo, 1e-9)
    kn = kw[cand] / k_hi
    out[cand] = (1 - alpha) * cn + alpha * kn
    return out


def zscore(cos, kw, n=100, w_kw=1.0, adaptive=False):
    out = np.full_like(cos, -1e9)
    c_top, k_top = top(cos, n), top(kw, n)
    cand = np.union1d(c_top, k_top[kw[k_top] > 0])

    def z(s, t):
        mu, sd = s[t].mean(), s[t].std() + 1e-9
        return (s[cand] - mu) / sd, (s[t[0]] - mu) / sd

    cz, c_dec = z(cos, c_top)
    if kw.max() > 0:
        kz, k_dec = z(kw, k_top)
    else:
        kz, k_dec = np.zeros_like(cz), 0.0
    if adaptive:
        # weight each list by how decisive its top hit is (its own z-score), normalised
        wc, wk = max(c_dec, 1e-3), max(k_dec, 1e-3)
        out[cand] = (wc * cz + wk * kz) / (wc + wk)
    else:
        out[cand] = cz + w_kw * kz
    return out


def cos_plus_bm25(cos, kw, beta=0.1):
    # cosine scale preserved: add a share of BM25 normalised by the best BM25 of the question
    m = kw.max()
    return cos + (beta * kw / m if m > 0 else 0)


def rerank_vector_top(cos, kw, n=20, beta=0.2, z=False):
    """Keyword only re-orders the vector top n (never brings in a passage the vectors missed):
    cosine + beta x BM25 / best BM25 among them, or with z=True + beta x z(BM25) x sd(cosine)."""
    top_n = top(cos, n)
    out = cos - 10.0
    k = kw[top_n]
    if z:
        bonus = beta * (k - k.mean()) / k.std() * cos[top_n].std() if k.std() > 0 else 0
    else:
        bonus = beta * k / k.max() if k.max() > 0 else 0
    out[top_n] = cos[top_n] + bonus
    return out


RULES = {
    "vector": lambda c, k: c,
    "keyword": lambda c, k: np.where(k > 0, k, -1e9),
    "rrf60": rrf,
    "rrf20": lambda c, k: rrf(c, k, k=20),
    **{f"minmax a={a}": (lambda a: lambda c, k: minmax(c, k, a))(a) for a in (0.3, 0.4, 0.5)},
    **{f"z w={w}": (lambda w: lambda c, k: zscore(c, k, w_kw=w))(w) for w in (0.5, 0.75, 1.0)},
    "z adaptive": lambda c, k: zscore(c, k, adaptive=True),
    **{f"cos+{b}*bm25/max": (lambda b: lambda c, k: cos_plus_bm25(c, k, b))(b) for b in (0.05, 0.1, 0.2)},
    **{
        f"vector top{n} + {b}*bm25/max": (lambda n, b: lambda c, k: rerank_vector_top(c, k, n, b))(n, b)
        for n in (10, 20, 50)
        for b in (0.05, 0.1, 0.2)
    },
    **{
        f"vector top{n} + {b}*z(bm25)": (lambda n, b: lambda c, k: rerank_vector_top(c, k, n, b, z=True))(n, b)
        for n in (10, 20, 50)
        for b in (0.25, 0.5, 1.0)
    },
}


# Rules of cosine and BM25 only take the question's idf too, so every rule is called one way.
RULES = {name: (lambda rule: lambda c, k, idf, terms: rule(c, k))(rule) for name, rule in RULES.items()}
RULES.update(
    {
        f"cos+{b}*coverage": (lambda b: lambda c, k, idf, terms: coverage(c, k, b, idf))(b)
        for b in (0.1, 0.2, 0.3, 0.5, 0.7)
    }
)
# which words to trust (graded), and when to trust them (gated)
RULES.update(
    {
        f"cos+{b}*coverage, model-read words x{w}": (lambda b, w: lambda c, k, idf, terms: graded(c, terms, idf, b, w))(
            b, w
        )
        for w in (0.0, 0.1, 0.25, 0.5)
        for b in (0.3, 0.5, 0.7)
    }
)
RULES.update(
    {
        f"cos+{b}*coverage x vector-top-5 coverage": (
            lambda b: lambda c, k, idf, terms: vector_top_gated(c, k, idf, b)
        )(b)
        for b in (0.3, 0.5, 0.7)
    }
)
# the product's rule (a match counts more where the passage's vector misses the word,
# plus keyword feedback), run by the search itself with other settings (0.225 and 5: the default).
RULE_VARIANTS = {
    f"hybrid rule weight={b}, missed^{a}": HybridRule(weight=b, missed_exponent=a)
    for b in (0.2, 0.225, 0.25)
    for a in (3, 4, 5, 6)
}
RULE_VARIANTS["hybrid rule without feedback"] = HybridRule(feedback_words=0)


def rank_documents(index, scores, n=100):
    """The keys of the n best documents, each ranked by its best passage (what eval scores)."""
    scores = scores.astype(np.float64)
    order = np.argsort(-scores, kind="stable")
    order = order[np.isfinite(scores[order]) & (scores[order] > -1e8)]
    picked, _ = index._order(Candidates(order, scores[order], scores[order], True), n, 1, math.inf, {})
    return [index.articles[index.passage_article[i]].key for i in picked]


def rank_by_rule(index, embedder, question, rule, n=100):
    """The keys of the n best documents under a HybridRule, as `corpus-bot eval` ranks them."""
    ranking = index.rank(question, embedder, n=n, per_article=1, penalty=math.inf, mode="hybrid", rule=rule)
    return [index.articles[index.passage_article[i]].key for i in ranking.picked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", help=SETS_HELP)
    for embedder, data, _, index in full_model_sets(parser.parse_args().folders):
        qids = list(data.qrels)
        qv = embedder.encode([data.queries[q] for q in qids])
        every_vector = index.vectors.get(np.arange(index.passage_count))
        per_q = [
            (
                every_vector @ qv[i],
                keyword_scores(index, data.queries[q]),
                index.idf_sum(fts_terms(data.queries[q])),
                term_scores(index, data.queries[q], embedder, every_vector),
            )
            for i, q in enumerate(qids)
        ]
        print(f"\n{data.name}: {len(qids)} queries, {index.passage_count} passages")
        for name, rule in RULES.items():
            run = {}
            for q, (c, k, idf, terms) in zip(qids, per_q):
                run[q] = rank_documents(index, rule(c, k, idf, terms))
            m = evaluate_run(run, data.qrels)
            print(f"  {name:<22} ndcg@10 {m['ndcg@10']:.4f}  recall@100 {m['recall@100']:.4f}")
        for name, rule in RULE_VARIANTS.items():
            run = {q: rank_by_rule(index, embedder, data.queries[q], rule) for q in qids}
            m = evaluate_run(run, data.qrels)
            print(f"  {name:<22} ndcg@10 {m['ndcg@10']:.4f}  recall@100 {m['recall@100']:.4f}")


if __name__ == "__main__":
    main()
