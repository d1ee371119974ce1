"""The index job into PostgreSQL: the SQLite job's scan, chunking, duplicate rule and embedding
(embeddings/index.py), then one transaction that writes the run, under the advisory lock that
lets one run at a time write to the database, from any host.

Incremental by content hash, as the SQLite job: an unchanged file is neither parsed nor embedded,
a moved one is renamed, and a passage whose text the index already holds reuses its vector. The
same refusals hold: a run that would empty the index or remove most of it, and another model.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from .. import index as job
from ..config import Settings
from ..embedder import Embedder
from ..errors import IndexRefusedError
from ..index import IndexReport, Progress
from . import store


def run_index(
    settings: Settings,
    url: str,
    *,
    rebuild: bool = False,
    allow_removals: bool = False,
    embedder: Embedder | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> IndexReport:
    """Bring the index at url up to date with settings.corpus_dir (as embeddings.index.run_index)."""
    started_wall, started = store.utc_now(), time.monotonic()
    corpus = settings.corpus_dir
    if not corpus.is_dir():
        raise IndexRefusedError(f"corpus folder {corpus} does not exist or is not a folder (set CORPUS_DIR)")
    conn = store.connect(url)
    try:
        with store.index_lock(conn, url):
            return _update(conn, settings, rebuild, allow_removals, embedder, on_progress, started_wall, started)
    finally:
        conn.close()


def _update(conn, settings, rebuild, allow_removals, embedder, on_progress, started_wall, started) -> IndexReport:
    corpus = settings.corpus_dir
    meta = store.read_meta(conn)
    files = job.check_model(meta, settings, rebuild)
    report = IndexReport(model=settings.embedding_model)
    stored = store.stored_files(conn)
    previous = {} if rebuild else stored
    previous_keys = {k for f in stored.values() for k in f.keys}
    previous_passages = store.passage_count(conn)
    progress = Progress(stage="scanning")

    def tick() -> None:
        progress.elapsed = time.monotonic() - started
        if on_progress:
            on_progress(progress)

    new, kept_files, moved = job._scan(corpus, settings, previous, report, progress, tick)
    report.renamed = moved
    moved_keys = {k for old, _ in moved for k in previous[old].keys}
    file_of = {k: f for f, s in stored.items() for k in s.keys}
    found = {a.doc.key for a in new} | {k for f in kept_files for k in previous[f].keys} | moved_keys
    present = {a.file for a in new} | set(kept_files)
    job._check_removals(
        job._gone(previous_keys - found, file_of, present), len(previous_keys), len(found), corpus, allow_removals
    )

    tokens: tuple[list[int], np.ndarray] = ([], np.zeros((0, 0), np.float32))
    identity = {"model_hash": files.digest, "model_files": files.signature} if files else {}
    same: dict[str, str] = {}
    if new:
        embedder = embedder or job.load_embedder(settings.embedding_model, bulk=True)
        job._check_dimension(meta, embedder, rebuild)
        new = job._chunk(new, embedder, report)
        kept_by_file = {k for f in kept_files for k in previous[f].keys} | moved_keys
        new, same = job._settle(conn, new, previous, kept_by_file, moved, report, db=store)
        reusable = (lambda hashes: {}) if rebuild else (lambda hashes: store.vectors_by_embedded_hash(conn, hashes))
        report.passages_embedded, report.passages_reused = job._embed(new, embedder, progress, tick, reusable)
        identity["probe_vector"] = job._check_probe(meta, embedder, rebuild)
        tokens = job._token_vectors(conn, new, embedder, progress, tick, every_stored=False, replace=rebuild)

    kept_keys = {k for f in kept_files for k in previous[f].keys} | set(same)
    job.account(
        report, new, kept_keys, moved, moved_keys, previous_keys, file_of, previous_passages, corpus, allow_removals
    )

    progress.stage = "committing"
    tick()
    dimension = embedder.dimension if embedder else int(meta.get("dimension", 0)) or None
    _commit(
        conn,
        settings,
        new,
        previous_keys - kept_keys - moved_keys,
        report,
        dimension,
        started_wall,
        started,
        tokens,
        identity,
        rebuild=rebuild,
        moved=moved,
        rehashed=same,
    )
    job._fault_point("after-commit")
    progress.stage = "done"
    tick()
    return report


def _commit(
    conn,
    settings,
    new,
    stale_keys,
    report,
    dimension,
    started_wall,
    started,
    tokens,
    identity,
    *,
    rebuild: bool,
    moved,
    rehashed: dict[str, str],
) -> None:
    """The run's one transaction: all of it is in the index, or none of it."""
    now = store.utc_now()
    with conn.transaction():
        store.delete_articles(conn, sorted(stale_keys))
        for old, new_name in moved:
            store.move_file(conn, old, new_name)
        by_hash: dict[str, list[str]] = {}
        for key, content_hash in rehashed.items():
            by_hash.setdefault(content_hash, []).append(key)
        for content_hash, keys in by_hash.items():
            store.set_content_hash(conn, keys, content_hash)
        if rebuild:  # a rebuild may change the model: its token vectors go with it
            conn.execute("DELETE FROM token_vectors")
        store.insert_token_vectors(conn, *tokens)
        if dimension:
            store.ensure_vector_index(conn, dimension)
        job._fault_point("mid-write")
        job.insert_articles(store, conn, new, now)
        store.write_keyword_postings(conn)
        report.articles_total = conn.execute("SELECT count(*) FROM articles").fetchone()[0]
        report.passages_total = store.passage_count(conn)
        report.seconds = round(time.monotonic() - started, 3)
        meta = {"model": settings.embedding_model, "built": now, **identity}
        if new or stale_keys or moved or not store.read_meta(conn).get("generation"):
            meta["generation"] = store.new_generation()
        if dimension:
            meta["dimension"] = str(dimension)
        store.write_meta(conn, **meta)
        store.record_run(conn, started=started_wall, seconds=report.seconds, report=report.to_json())
        job._fault_point("before-commit")
