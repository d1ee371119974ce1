"""The vector store: int8 scan + float16 rescoring across shards, filters, and the float32 -> float16 migration."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

import embeddings.vectors as vectors_module
from embeddings import store
from embeddings.errors import IndexOutdatedError
from embeddings.migrations import MIGRATIONS, SCHEMA_VERSION, migrate
from embeddings.search import SearchIndex
from embeddings.vectors import VectorMatrix


def clustered(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Unit vectors in 20 clusters, so that many neighbours are close (where rounding could matter)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim)).astype(np.float32)
    v = centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def matrix_of(x: np.ndarray, monkeypatch, shard_rows: int) -> VectorMatrix:
    monkeypatch.setattr(vectors_module, "SHARD_MIN_ROWS", shard_rows)
    monkeypatch.setattr(vectors_module, "CHUNK", 7)  # quantized in uneven blocks that straddle shard boundaries
    return VectorMatrix(x.astype(np.float16))


@pytest.mark.parametrize("shard_rows", [10_000, 300])  # one shard; several shards searched in threads
@pytest.mark.parametrize("dim", [384, 12])  # faiss's SIMD kernel (integer query) and its scalar one
def test_top_finds_the_float32_nearest_neighbours(monkeypatch, shard_rows, dim):
    x = clustered(2000, dim)
    m = matrix_of(x, monkeypatch, shard_rows)
    queries = clustered(50, dim, seed=1)
    found = 0
    for q in queries:
        rows, scores = m.top(q, 10)
        exact = np.argsort(-(x @ q))[:10]
        found += len(set(rows.tolist()) & set(exact.tolist()))
        assert np.all(np.diff(scores) <= 0), "best first"
        np.testing.assert_allclose(scores, x[rows] @ q, atol=2e-3)  # float16 rounding only
    assert found / (10 * len(queries)) >= 0.99


@pytest.mark.parametrize("shard_rows", [20_000, 6_000])
def test_the_prefilter_finds_what_scanning_every_code_finds(monkeypatch, shard_rows):
    """A shard's product-quantized copy picks the candidates whose int8 codes are scored; the
    exact top 10 must survive it, close neighbours (near queries) or not (random ones)."""
    monkeypatch.setattr(vectors_module, "PREFILTER_MIN_ROWS", 5_000)
    x = clustered(12_000)
    scanned = matrix_of(x, monkeypatch, shard_rows)
    prefilters = [vectors_module.prefilter_of(s) for s in scanned.shards]
    assert all(p is not None for p in prefilters)
    prefiltered = VectorMatrix(x.astype(np.float16), scanned.scale, scanned.shards, prefilters)
    rng = np.random.default_rng(2)
    random = rng.standard_normal((20, 64)).astype(np.float32)
    near = x[rng.integers(0, len(x), 20)] + 0.1 * rng.standard_normal((20, 64)).astype(np.float32)
    for q in np.concatenate([random, near]):
        q /= np.linalg.norm(q)
        for k in (10, 200):
            assert prefiltered.top(q, k)[0].tolist() == scanned.top(q, k)[0].tolist()
    keep = np.zeros(len(x), bool)
    keep[::3] = True  # filtered questions scan every code
    assert set(prefiltered.top(x[3], 10, keep)[0].tolist()) <= set(np.flatnonzero(keep).tolist())


def test_small_shards_get_no_prefilter(monkeypatch):
    m = matrix_of(clustered(1000), monkeypatch, 300)
    assert [vectors_module.prefilter_of(s) for s in m.shards] == [None] * len(m.shards)


def test_shards_that_do_not_fit_the_matrix_are_refused(monkeypatch):
    x = clustered(1000)
    m = matrix_of(x, monkeypatch, 300)
    with pytest.raises(ValueError, match="shards hold 1000 vectors of 64 dimensions, not 1001 of 64"):
        VectorMatrix(np.concatenate([x, x[:1]]).astype(np.float16), m.scale, m.shards)


def test_top_only_returns_kept_rows_and_never_more_than_exist(monkeypatch):
    x = clustered(1000)
    m = matrix_of(x, monkeypatch, 300)
    keep = np.zeros(len(x), bool)
    keep[[3, 400, 401, 999]] = True
    rows, scores = m.top(x[400], 10, keep)
    assert sorted(rows.tolist()) == [3, 400, 401, 999]
    assert rows[0] == 400
    assert len(m.top(x[0], 10, np.zeros(len(x), bool))[0]) == 0
    assert len(m.top(x[0], 5000)[0]) == len(x)


def test_get_and_dot_read_back_every_row(monkeypatch):
    x = clustered(1000)
    m = matrix_of(x, monkeypatch, 300)
    rows = np.array([0, 299, 300, 650, 999, 1])
    np.testing.assert_allclose(m.get(rows), x[rows], atol=1e-3)
    np.testing.assert_allclose(m.dot(x[5], rows), x[rows] @ x[5], atol=2e-3)


def test_an_empty_matrix_answers_nothing():
    m = VectorMatrix(np.zeros((0, 8), np.float16))
    assert len(m) == 0
    assert len(m.top(np.ones(8, np.float32), 5)[0]) == 0


def test_old_float32_index_is_converted_and_searches_the_same(tmp_path, fake_embedder):
    """An index written before migration 4 (float32 blobs) is upgraded in place by its owner."""
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, migration in enumerate(MIGRATIONS[:3], start=1):  # the schema as it was before float16
        migration.apply(conn)
        conn.execute(f"PRAGMA user_version = {number}")
    texts = ["the council approved the new bridge", "floods closed the valley road", "a storm hit the coast"]
    vectors = fake_embedder.encode(texts)
    conn.execute("INSERT INTO index_meta VALUES ('model', ?), ('dimension', ?)", (fake_embedder.name, "256"))
    conn.execute(
        "INSERT INTO articles(id, key, file, content_hash, title, passage_count, indexed_at) "
        "VALUES (1, 'a.txt', 'a.txt', 'h', 'A', 3, 'now')"
    )
    conn.executemany("INSERT INTO passages(article_id, position, text) VALUES (1, ?, ?)", list(enumerate(texts)))
    conn.execute("INSERT INTO article_vectors VALUES (1, ?)", (vectors.tobytes(),))
    conn.close()

    with pytest.raises(IndexOutdatedError, match="run `corpus-bot index` to upgrade it"):
        SearchIndex.load(path, model_name=fake_embedder.name, weak_score=0.0)  # reading never migrates
    assert store.upgrade(path)  # what `corpus-bot index`, or the bot at start, does
    index = SearchIndex.load(path, model_name=fake_embedder.name, weak_score=0.0)
    try:
        answer = index.search("floods on the valley road", fake_embedder, k=1)
        assert answer.results[0].text == "floods closed the valley road"
        expected = float(vectors[1] @ fake_embedder.encode(["floods on the valley road"])[0])
        assert answer.results[0].score == pytest.approx(expected, abs=2e-3)
    finally:
        index.close()
    with store.reading(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        (blob,) = conn.execute("SELECT vectors FROM article_vectors").fetchone()
    assert len(blob) == 3 * 256 * 2  # float16 now
    np.testing.assert_allclose(np.frombuffer(blob, np.float16).reshape(3, 256), vectors, atol=1e-3)


def test_a_failed_migration_leaves_the_old_schema(tmp_path, monkeypatch):
    """A migration runs in one transaction: if it fails, the file stays at its old version."""
    path = tmp_path / "index.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, migration in enumerate(MIGRATIONS[:3], start=1):
        migration.apply(conn)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute("INSERT INTO index_meta VALUES ('model', 'm')")
    conn.execute(
        "INSERT INTO articles(id, key, file, content_hash, passage_count, indexed_at) VALUES (1, 'a', 'a', 'h', 1, 'now')"
    )
    conn.execute("INSERT INTO article_vectors VALUES (1, ?)", (b"\x00" * 6,))  # not a float32 array

    with pytest.raises(ValueError):
        migrate(conn)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    assert conn.execute("SELECT length(vectors) FROM article_vectors").fetchone()[0] == 6
