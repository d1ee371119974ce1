"""Keyword search on the PostgreSQL index: quality and latency against the SQLite index, and its
cost at scale. Each subcommand takes the URL of a PostgreSQL server where this user may create
databases (`python -m embeddings.postgres.local start --data bench/out/postgres` prints one) and
works in scratch databases of its own, dropped afterwards.

    python -m bench.experiments.pg_keywords eval URL SETS
        nDCG@10 and latency p50/p95 per mode (keyword, hybrid) on both stores: each set's evaluation
        index (as `corpus-bot eval` builds it) and a copy of it in PostgreSQL, the same vectors.
    python -m bench.experiments.pg_keywords scale URL [--passages 100000 1000000]
        synthetic postings (words drawn from a Zipf distribution) loaded straight into the keyword
        tables; top-k latency of 1-6 word questions, common words included, as keyword and hybrid
        search ask (the commonest words left out by hybrid.without_common); the tables' size.
    python -m bench.experiments.pg_keywords write URL [--passages 100000]
        seconds to write synthetic passages through store.insert_article, with the keyword
        postings and without them, then to remove 1% of the articles; the tables' size.
    python -m bench.experiments.pg_keywords one-word INDEX_URL [--words 400] [--limit 200]
        on an existing index (the benchmark's, say): one word's best `limit` passages, as hybrid
        search asks for each question word, read best first from the impact order or read whole
        from the packed blocks; p50 ms of each by the word's document frequency (same results
        checked). keywords.READ_WHOLE_BELOW is set from it.

SETS: BEIR-layout folders such as SciFact or tests/fixtures/news_shipped. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .common import CACHE, SETS_HELP

MODES = ("keyword", "hybrid")


@contextmanager
def scratch_database(admin_url: str):
    """A new database on the server of admin_url, its URL, dropped afterwards."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"pgkw_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(**{**conninfo_to_dict(admin_url), "dbname": name})
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _percentiles(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {"p50": round(statistics.median(ms), 2), "p95": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 2)}


# ------------------------------------------------------------------ eval: both stores, same vectors


def copy_into_postgres(data, sqlite_path: Path, url: str, embedder) -> float:
    """The set's documents written into the PostgreSQL index at url as the index job writes them,
    each passage's vector taken from the SQLite evaluation index; seconds the write took."""
    from embeddings import index as job
    from embeddings import model_identity
    from embeddings import store as sqlite_store
    from embeddings.config import Settings
    from embeddings.postgres import indexing, store

    report, progress = job.IndexReport(model=embedder.name), job.Progress(stage="embedding")
    new = job._chunk([job._NewArticle(d, d.key, data.digest, []) for d in data.docs], embedder, report)
    sqlite_conn = sqlite_store.connect_for_reading(sqlite_path)
    try:
        job._embed(
            new,
            embedder,
            progress,
            lambda: None,
            lambda hashes: sqlite_store.vectors_by_embedded_hash(sqlite_conn, hashes, embedder.dimension),
        )
    finally:
        sqlite_conn.close()
    conn = store.connect(url)
    try:
        with store.index_lock(conn, url):
            tokens = job._token_vectors(conn, new, embedder, progress, lambda: None, every_stored=False, replace=False)
            files = model_identity.model_files(embedder.name)
            identity = {
                "probe_vector": model_identity.encode_probe(model_identity.probe(embedder)),
                **({"model_hash": files.digest, "model_files": files.signature} if files else {}),
            }
            started = time.monotonic()
            indexing._commit(
                conn,
                Settings(embedding_model=embedder.name),
                new,
                set(),
                report,
                embedder.dimension,
                store.utc_now(),
                started,
                tokens,
                identity,
                rebuild=False,
                moved=[],
                rehashed={},
            )
            return time.monotonic() - started
    finally:
        conn.close()


def evaluate(admin_url: str, folders: list[str]) -> dict:
    from embeddings.embedder import load_embedder
    from embeddings.evaluate import cached_index, load_beir, run_eval
    from embeddings.postgres.search import load_search_index
    from embeddings.query_model import load_query_embedder
    from embeddings.search import SearchIndex

    embedder = load_embedder(bulk=True)
    results = {}
    for folder in folders:
        data = load_beir(Path(folder))
        path = cached_index(data, embedder.name, CACHE, embedder=embedder)
        questions = load_query_embedder(path, embedder.name)
        with scratch_database(admin_url) as url:
            write_s = copy_into_postgres(data, path, url, embedder)
            stores = {
                "sqlite": SearchIndex.load(path, model_name=embedder.name, weak_score=0.3),
                "postgres": load_search_index(url, model_name=embedder.name, weak_score=0.3),
            }
            found = {"passages": stores["postgres"].passage_count, "postgres_write_s": round(write_s, 1)}
            for mode in MODES:
                for name, index in stores.items():
                    run_eval(data, index, questions, mode=mode)  # warm: caches, pages, threads
                    got = run_eval(data, index, questions, mode=mode)
                    found[f"{mode} {name}"] = {"ndcg@10": got["ndcg@10"], "latency_ms": got["latency_ms"]}
            for index in stores.values():
                index.close()
        results[data.name] = found
    return results


# ------------------------------------------------------------------ scale: synthetic postings

VOCABULARY = 200_000
# A passage's words: 40 to 160, about 100 on average. A word of rank r is drawn with probability
# proportional to 1/r (Zipf, s = 1: floor(VOCABULARY ** u), u uniform), as words are in English text.
_SYNTHETIC_POSTINGS = """
INSERT INTO keyword_postings (lexeme, passage_id, tf, cf, dl)
SELECT 'w' || w, p, count(*), 0, len
FROM (SELECT p, 40 + (p::bigint * 7919) %% 121 AS len FROM generate_series(%(first)s, %(last)s) p) ps,
     LATERAL (SELECT floor(power(%(vocabulary)s::float8, random()))::int AS w FROM generate_series(1, ps.len)) ws
GROUP BY p, w, len
"""


def _load_synthetic(conn, passages: int, batch: int = 50_000) -> dict:
    from embeddings.postgres import store

    conn.execute("ALTER TABLE keyword_postings DROP CONSTRAINT keyword_postings_pkey")  # built once, after
    conn.execute("DROP INDEX keyword_postings_impact")
    started = time.monotonic()
    for first in range(1, passages + 1, batch):
        last = min(first + batch - 1, passages)
        conn.execute(_SYNTHETIC_POSTINGS, {"first": first, "last": last, "vocabulary": VOCABULARY})
    conn.execute("ALTER TABLE keyword_postings ADD PRIMARY KEY (lexeme, passage_id) INCLUDE (tf, cf, dl)")
    conn.execute(
        f"CREATE INDEX keyword_postings_impact ON keyword_postings (lexeme, {store.IMPACT} DESC) "
        "INCLUDE (passage_id, tf, cf, dl)"
    )
    conn.execute("INSERT INTO keyword_lexemes SELECT lexeme, count(*) FROM keyword_postings GROUP BY lexeme")
    conn.execute(
        "UPDATE keyword_stats SET passages = d.n, words = d.w FROM (SELECT count(*) AS n, sum(dl) AS w FROM "
        "(SELECT DISTINCT ON (passage_id) passage_id, dl FROM keyword_postings ORDER BY passage_id) p) d"
    )
    conn.execute("VACUUM ANALYZE keyword_postings")
    conn.execute("VACUUM ANALYZE keyword_lexemes")
    return {"load_s": round(time.monotonic() - started, 1)}


def _questions(count: int, seed: int = 7) -> list[list[str]]:
    """1 to 6 words each, drawn as a text's words are (so about a third of them very common)."""
    rng = np.random.default_rng(seed)
    return [
        [f"w{int(VOCABULARY**u)}" for u in rng.random(int(rng.integers(1, 7)))]  # noqa: S311
        for _ in range(count)
    ]


def _time_questions(url: str, questions: list[list[str]]) -> dict:
    from embeddings.postgres.keywords import PostgresKeywords
    from embeddings.postgres.snapshot import Snapshot
    from embeddings.search.hybrid import DEFAULT_RULE
    from embeddings.search.search_index import KEYWORD_LIMIT

    snapshot = Snapshot(url)
    try:
        engine = PostgresKeywords(snapshot)
        for words in questions[:20]:  # warm: the pages of the commonest words
            engine.top(engine.query_words(words, DEFAULT_RULE), KEYWORD_LIMIT)
        engine = PostgresKeywords(snapshot)  # cold caches of lexemes and frequencies
        keyword, hybrid, postings = [], [], []
        for words in questions:
            started = time.perf_counter()
            terms = engine.query_words(words, DEFAULT_RULE)
            engine.top(terms, KEYWORD_LIMIT)
            keyword.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            for term in terms:  # hybrid asks for each word's own best fusion_depth
                engine.top([term], DEFAULT_RULE.fusion_depth)
            hybrid.append((time.perf_counter() - started) * 1000)
            postings.append(sum(engine.term_count(t) for t in terms))
        by_words: dict[int, list[float]] = {}
        for words, ms in zip(questions, keyword):
            by_words.setdefault(len(words), []).append(ms)
        return {
            "keyword_top_ms": _percentiles(keyword),
            "hybrid_words_top_ms": _percentiles(hybrid),
            "keyword_top_ms_by_question_words": {n: _percentiles(ms) for n, ms in sorted(by_words.items())},
            "postings_read": _percentiles(postings),
        }
    finally:
        snapshot.close()


def _sizes(conn) -> dict[str, int]:
    return {
        table: conn.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()[0] // 2**20
        for table in ("passages", "keyword_postings", "keyword_lexemes")
    }


def scale(admin_url: str, sizes: list[int], questions: int) -> dict:
    from embeddings.postgres import store

    asked = _questions(questions)
    results = {}
    for passages in sizes:
        with scratch_database(admin_url) as url:
            conn = store.connect(url)
            try:
                found = _load_synthetic(conn, passages)
                found["postings"] = conn.execute("SELECT count(*) FROM keyword_postings").fetchone()[0]
                found["lexemes"] = conn.execute("SELECT count(*) FROM keyword_lexemes").fetchone()[0]
                found["size_mb"] = _sizes(conn)
            finally:
                conn.close()
            found.update(_time_questions(url, asked))
        results[passages] = found
    return results


# ------------------------------------------------------------------ write: the cost of postings


ARTICLE_PASSAGES = 10


def _synthetic_articles(passages: int, seed: int = 7):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(VOCABULARY)]
    for a in range(passages // ARTICLE_PASSAGES):
        texts = [
            " ".join(words[int(VOCABULARY**u) - 1] for u in rng.random(int(rng.integers(40, 161))))
            for _ in range(ARTICLE_PASSAGES)
        ]
        yield f"a{a}.txt", texts


def write_cost(admin_url: str, passages: int) -> dict:
    """Seconds to write the passages in one transaction, as an index run does, with the keyword
    postings and without them (store.write_keyword_postings skipped), then to remove 1% of the
    articles; the tables' size."""
    from embeddings.postgres import store

    results = {}
    articles = list(_synthetic_articles(passages))
    removed = [key for key, _ in articles[::100]]
    write_postings = store.write_keyword_postings
    for with_postings in (False, True):
        store.write_keyword_postings = write_postings if with_postings else (lambda conn: store._unposted.pop(conn, 0))
        try:
            with scratch_database(admin_url) as url:
                conn = store.connect(url)
                try:
                    started = time.monotonic()
                    with conn.transaction():
                        for key, texts in articles:
                            _insert(conn, key, texts)
                        store.write_keyword_postings(conn)
                    seconds = time.monotonic() - started
                    size = _sizes(conn)
                    started = time.monotonic()
                    with conn.transaction():  # an incremental run that removes 1% of the articles
                        store.delete_articles(conn, removed)
                    deleted = time.monotonic() - started
                    started = time.monotonic()
                    conn.execute("VACUUM ANALYZE keyword_postings")
                    results["with postings" if with_postings else "without postings"] = {
                        "write_s": round(seconds, 1),
                        "delete_1pct_s": round(deleted, 2),
                        "vacuum_s": round(time.monotonic() - started, 1),
                        "size_mb": size,
                    }
                finally:
                    conn.close()
        finally:
            store.write_keyword_postings = write_postings
    return {passages: results}


def _insert(conn, key: str, texts: list[str]) -> None:
    from embeddings.postgres import store

    store.insert_article(
        conn,
        key=key,
        file=key,
        content_hash=key,
        title=f"title {key}",
        source="synthetic",
        authors=(),
        published=None,
        updated=None,
        url=None,
        description=None,
        passages=texts,
        vectors=np.zeros((len(texts), 8), np.float32),
        indexed_at=store.utc_now(),
    )


BANDS = (1_000, 5_000, 10_000, 20_000, 50_000, 100_000, 10**12)


def one_word(url: str, words: int, limit: int) -> dict:
    from embeddings.postgres.keywords import PostgresKeywords, _best
    from embeddings.postgres.snapshot import Snapshot
    from embeddings.words import fts_terms

    snapshot = Snapshot(url)
    try:
        engine = PostgresKeywords(snapshot)
        texts = [t for (t,) in snapshot.execute("SELECT text FROM passages TABLESAMPLE SYSTEM (1) LIMIT 200")]
        lexemes = engine._lexemes(list(dict.fromkeys(w for t in texts for w in fts_terms(t))))
        picked = sorted({lx for lx in lexemes.values() if lx})
        picked = [picked[i] for i in np.random.default_rng(7).permutation(len(picked))[:words]]
        counts = engine._df(picked)
        by_band: dict[str, dict[str, list[float]]] = {}
        for lexeme in picked:
            idf = engine._idf(counts[lexeme])
            started = time.perf_counter()
            best_first = engine._best_first({lexeme: idf}, limit)[lexeme]
            middle = time.perf_counter()
            whole = _best([engine._postings([lexeme])[lexeme]], [idf], engine._avgdl, limit)
            ended = time.perf_counter()
            assert best_first[0].tolist() == whole[0].tolist() and best_first[1].tolist() == whole[1].tolist()
            band = next(b for b in BANDS if counts[lexeme] < b)
            times = by_band.setdefault(band, {"best_first": [], "whole": []})
            times["best_first"].append((middle - started) * 1000)
            times["whole"].append((ended - middle) * 1000)
        return {
            "passages": engine._passages,
            "limit": limit,
            "p50_ms_by_document_frequency_below": {
                band: {"words": len(t["whole"]), **{k: round(statistics.median(v), 2) for k, v in t.items()}}
                for band, t in sorted(by_band.items())
            },
        }
    finally:
        snapshot.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ev = commands.add_parser("eval", help="nDCG@10 and latency on both stores")
    ev.add_argument("url", help="a PostgreSQL server where this user may create databases")
    ev.add_argument("sets", nargs="+", help=SETS_HELP)
    sc = commands.add_parser("scale", help="top-k latency on synthetic postings")
    sc.add_argument("url")
    sc.add_argument("--passages", type=int, nargs="+", default=[100_000, 1_000_000])
    sc.add_argument("--questions", type=int, default=300)
    wr = commands.add_parser("write", help="write cost of the postings")
    wr.add_argument("url")
    wr.add_argument("--passages", type=int, default=100_000)
    ow = commands.add_parser("one-word", help="one word's best passages: best first, or read whole")
    ow.add_argument("url", help="an index's INDEX_URL")
    ow.add_argument("--words", type=int, default=400)
    ow.add_argument("--limit", type=int, default=200)
    args = parser.parse_args(argv)
    if args.command == "one-word":
        found = one_word(args.url, args.words, args.limit)
    elif args.command == "eval":
        found = evaluate(args.url, args.sets)
    elif args.command == "scale":
        found = scale(args.url, args.passages, args.questions)
    else:
        found = write_cost(args.url, args.passages)
    print(json.dumps(found, indent=2))


if __name__ == "__main__":
    main()
