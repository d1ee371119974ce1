"""The index job: corpus folder -> parse -> passages -> vectors -> one atomic commit to SQLite.

Incremental: a file whose bytes (and sidecar) hash the same as last time is not parsed or embedded
again. Atomic: everything is computed first and written in one short transaction at the end, so a
crash or Ctrl-C at any point leaves the previous index complete. One run at a time: a lock file
(flock, so it also works across processes and is released if the process dies).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import derived, model_identity, store, tantivy_index, vector_file, word_vectors
from .chunk import make_passages
from .config import Settings
from .embedder import Embedder, load_embedder
from .errors import IndexBusyError, IndexRefusedError, IndexWriteError, ModelMismatchError, RemovalsRefusedError
from .migrations import embedded_hash
from .parse import ArticleDoc, LeftOut, SkipFile, iter_corpus_files, load_file, parse_file, sidecar_bytes
from .terminal import counted, one_line

log = logging.getLogger(__name__)

#: A run that would remove more than half of the indexed articles, and more than this many, is
#: refused unless the removals are confirmed: a CORPUS_DIR pointing at the wrong folder would
#: otherwise empty the index in one run.
SAFE_REMOVALS = 5


def _write_failure(exc: sqlite3.Error, index_path: Path) -> IndexWriteError | None:
    """A clear message for an SQLite error that means "cannot write here"; None for other errors."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_READONLY"):
        why = "the index file or its folder is read-only"
    elif name == "SQLITE_FULL":
        why = "the disk is full"
    elif name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")):
        why = "a write failed (disk full, file size limit or read-only storage)"
    else:
        return None
    return IndexWriteError(f"could not write the index at {index_path}: {why} ({exc}); the previous index is unchanged")


def _check_writable(conn: sqlite3.Connection) -> None:
    """Fail before the (long) parse and embed stages when the file cannot be written at all.
    A write statement that changes nothing still needs a write transaction, which a read-only
    file refuses; nothing is written."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("DELETE FROM index_meta WHERE key = ''")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


@dataclass
class Progress:
    stage: str  # scanning | embedding | words | committing | keyword index | vector file | done
    words_total: int = 0  # vocabulary tokens of new words to embed (word_vectors.py)
    files_scanned: int = 0
    files_total: int = 0
    passages_embedded: int = 0
    passages_total: int = 0
    elapsed: float = 0.0  # seconds since the run started
    embedding_since: float = 0.0  # value of elapsed when embedding began (model loading excluded from the rate)
    keyword_indexed: int = 0  # passages copied into the tantivy keyword index (large indexes only)
    index_passages: int = 0  # passages in the committed index

    @property
    def rate(self) -> float:
        seconds = self.elapsed - self.embedding_since
        return self.passages_embedded / seconds if seconds > 0 and self.passages_embedded else 0.0

    @property
    def eta_seconds(self) -> float | None:
        if self.stage != "embedding" or not self.rate:
            return None
        return (self.passages_total - self.passages_embedded) / self.rate

    def describe(self) -> str:
        if self.stage == "keyword index":
            return f"keyword index: {self.keyword_indexed}/{self.index_passages} passages"
        if self.stage == "vector file":
            return f"vector file: writing {self.index_passages} passages' vectors"
        if self.stage == "words":
            return f"words: embedding {self.words_total} vocabulary tokens"
        text = f"{self.stage}: {self.files_scanned}/{self.files_total} files scanned"
        if self.passages_total:
            text += f", {self.passages_embedded}/{self.passages_total} passages embedded"
            if self.rate:
                text += f" ({self.rate:.0f}/s"
                text += f", ETA {self.eta_seconds:.0f}s)" if self.eta_seconds is not None else ")"
        return text


@dataclass
class IndexReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (corpus path, reason)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # files in no article format (.docx, images, ...)
    hidden: int = 0  # hidden files and folders (name starting with '.'), counted, not listed
    passages_embedded: int = 0  # passages the model embedded in this run
    articles_total: int = 0
    passages_total: int = 0
    seconds: float = 0.0
    model: str = ""
    renamed: list[tuple[str, str]] = field(default_factory=list)  # (old corpus path, new): moved, not embedded
    passages_reused: int = 0  # passages of new or changed articles whose stored vectors were reused

    def to_json(self) -> dict:
        data = asdict(self)
        data["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        data["warnings"] = [{"path": p, "warning": w} for p, w in self.warnings]
        data["renamed"] = [{"from": old, "to": new} for old, new in self.renamed]
        return data

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} removed, "
            + (f"{len(self.renamed)} renamed, " if self.renamed else "")
            + f"{len(self.unchanged)} unchanged, {len(self.skipped)} skipped; "
            f"{counted(self.passages_embedded, 'passage')} embedded"
            + (f" ({self.passages_reused} reused from the index)" if self.passages_reused else "")
            + f" in {self.seconds:.1f}s; "
            f"index: {counted(self.articles_total, 'article')}, {counted(self.passages_total, 'passage')}"
        )

    def file_lines(self) -> list[str]:
        """One line per file added, changed or removed, so a run says which, not only how many."""
        return [
            one_line(f"{what} {path}")
            for what, paths in (("added", self.added), ("changed", self.changed), ("removed", self.removed))
            for path in paths
        ]

    def problem_lines(self) -> list[str]:
        """One line per skipped file and warning; a name or reason holding a newline or an escape
        sequence is shown escaped, so it can neither fake a line nor drive a terminal."""
        return (
            [one_line(f"skipped {path}: {reason}") for path, reason in self.skipped]
            + [one_line(f"warning {path}: {text}") for path, text in self.warnings]
            + [one_line(f"ignored {path}: not an article format") for path in self.ignored]
            + (
                [
                    f"ignored {counted(self.hidden, 'hidden file or folder', 'hidden files and folders')} (name starting with '.')"
                ]
                if self.hidden
                else []
            )
        )

    def lines(self) -> list[str]:
        renamed = [one_line(f"renamed: {old} -> {new}") for old, new in self.renamed]
        return [self.summary(), *renamed, *self.file_lines(), *self.problem_lines()]


@contextmanager
def index_lock(index_path: Path):
    """Exclusive, non-blocking, per index file; the kernel drops it if the holder dies."""
    lock_path = index_path.with_name(index_path.name + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise IndexWriteError(
            f"could not write the index at {index_path}: cannot create the lock file {lock_path} "
            f"({exc.strerror or exc}); the previous index is unchanged"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise IndexBusyError(
                f"another index run is in progress on {index_path} (pid {holder}); try again when it ends"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError as exc:
            raise IndexWriteError(
                f"could not write the index at {index_path}: cannot write the lock file {lock_path} "
                f"({exc.strerror or exc}); the previous index is unchanged"
            ) from None
        yield
    finally:
        os.close(fd)


def _fault_point(stage: str) -> None:
    """Test hook: CORPUS_BOT_CRASH_AT=<stage> kills the process right here, with no clean-up."""
    if os.environ.get("CORPUS_BOT_CRASH_AT") == stage:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class _NewArticle:
    doc: ArticleDoc
    file: str
    content_hash: str
    passages: list[str]
    vectors: np.ndarray | None = None


def run_index(
    settings: Settings,
    *,
    rebuild: bool = False,
    allow_removals: bool = False,
    embedder: Embedder | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> IndexReport:
    """Bring the index at settings.index_path up to date with settings.corpus_dir.

    RemovalsRefusedError, with nothing written, when the run would remove more than half of the
    indexed articles (and more than SAFE_REMOVALS) and allow_removals is False. A rebuild is held
    to the same rule: rebuilding from the wrong folder is the same mistake."""
    started_wall, started = store.utc_now(), time.monotonic()
    corpus = settings.corpus_dir
    if not corpus.is_dir():
        raise IndexRefusedError(f"corpus folder {corpus} does not exist or is not a folder (set CORPUS_DIR)")

    store.check_index_path(settings.index_path)
    store.check_owner(settings.index_path)  # another program's database: refused before even the lock file is made
    with index_lock(settings.index_path):
        leftovers = remove_leftovers(settings.index_path)
        conn = None
        try:
            conn = store.connect_for_writing(settings.index_path)
            _check_writable(conn)
            report = _update(conn, settings, rebuild, allow_removals, embedder, on_progress, started_wall, started)
            report.warnings[:0] = leftovers
            return report
        except sqlite3.Error as exc:
            # "Cannot write here" (read-only, disk full, size limit) and "damaged" get a clear
            # message; the transaction never committed, so the previous index is intact.
            raise (
                _write_failure(exc, settings.index_path) or store.damage_error(exc, settings.index_path) or exc
            ) from None
        finally:
            if conn is not None:
                conn.close()


# What an interrupted run leaves beside the index: derived copies being built or swapped out
# (derived.replace), a query model export (query_model.export_query_model), an evaluation index
# (build_index); each named after the pid of the run that made it.
_LEFTOVER = (
    r"(?:\.(?:vectors|tantivy)\.(?:building|old)|\.query-model\.(?:tmp|old)|\.building)-(\d+)(?:-wal|-shm|-journal)?"
)


def remove_leftovers(index_path: Path, *, locked: bool = True) -> list[tuple[str, str]]:
    """Remove what killed runs left beside the index (a vector file being built is as large as
    the vectors: 1.2 GB at 1M passages) and say what was removed, as report warnings.

    Called by a run that holds the index lock (`locked`): no other run can be writing them, so
    every one goes, even one whose pid a process of another program has taken since. Without the
    lock, only those whose process is gone."""
    pattern = re.compile(re.escape(index_path.name) + _LEFTOVER)
    removed = []
    try:
        names = os.listdir(index_path.parent)
    except OSError:
        return removed
    for name in sorted(names):
        match = pattern.fullmatch(name)
        if not match or (not locked and _alive(int(match.group(1)))):
            continue
        path = index_path.parent / name
        size = _size(path)
        try:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        except OSError as exc:
            log.warning("could not remove %s, left by an interrupted run: %s", path, exc)
            continue
        removed.append(
            ("(leftovers)", f"removed {name} ({size / 1e6:.1f} MB), left by an interrupted run (pid {match.group(1)})")
        )
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _size(path: Path) -> int:
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        return path.lstat().st_size
    except OSError:
        return 0


def check_model(meta: dict, settings: Settings, rebuild: bool):
    """The model files of EMBEDDING_MODEL, after refusing a run that would mix its vectors with those
    of another model, or of the same model's changed files, in one index (any store)."""
    if meta.get("model") and meta["model"] != settings.embedding_model and not rebuild:
        raise ModelMismatchError(
            f"the index was built with {meta['model']!r} but EMBEDDING_MODEL is {settings.embedding_model!r}; "
            "run `corpus-bot index --rebuild` to re-embed everything with the new model"
        )
    files = model_identity.model_files(settings.embedding_model, meta)
    if (
        files
        and meta.get("model_hash")
        and files.digest != meta["model_hash"]
        and not rebuild
        and meta.get("model") == settings.embedding_model
    ):
        raise ModelMismatchError(
            f"the files of model {settings.embedding_model!r} changed since the index was built with them; "
            "run `corpus-bot index --rebuild` to re-embed everything with them"
        )
    return files


def insert_articles(db, conn, new, now: str) -> None:
    """Write the run's new articles through `db`, the store module (SQLite's or PostgreSQL's)."""
    for article in new:
        doc = article.doc
        db.insert_article(
            conn,
            key=doc.key,
            file=article.file,
            content_hash=article.content_hash,
            title=doc.title,
            source=doc.source,
            authors=doc.authors,
            published=doc.published,
            updated=doc.updated,
            url=doc.url,
            description=doc.description,
            passages=article.passages,
            vectors=article.vectors,
            indexed_at=now,
        )


def account(
    report, new, kept_keys, moved, moved_keys, previous_keys, file_of, previous_passages, corpus, allow_removals
) -> None:
    """Sort the run's articles into added, changed, removed and unchanged, and refuse a run that would
    remove most of the index or leave it empty (any store), before anything is written."""
    new_keys = {a.doc.key for a in new}
    for key in sorted(new_keys):
        (report.changed if key in previous_keys else report.added).append(key)
    report.removed = sorted(previous_keys - new_keys - kept_keys - moved_keys)
    report.unchanged = sorted(kept_keys)
    present = {a.file for a in new} | {file_of[k] for k in kept_keys}
    _check_removals(
        _gone(report.removed, file_of, present),
        len(previous_keys),
        len(new_keys | kept_keys | moved_keys),
        corpus,
        allow_removals,
    )
    # Every stored article has at least one passage, so the new index is empty exactly when
    # nothing new survived chunking and nothing is kept.
    if not new and not kept_keys and not moved and previous_passages > 0:
        raise IndexRefusedError(
            f"this run would leave the index empty ({corpus} has no indexable articles: "
            f"{len(report.skipped)} skipped); the previous index is kept"
        )


def _update(conn, settings, rebuild, allow_removals, embedder, on_progress, started_wall, started) -> IndexReport:
    """One locked run on an open, writable index: scan, embed, then the single commit."""
    corpus = settings.corpus_dir
    meta = store.read_meta(conn)
    files = check_model(meta, settings, rebuild)
    report = IndexReport(model=settings.embedding_model)
    stored = store.stored_files(conn)
    previous = {} if rebuild else _without_damaged_vectors(conn, stored, report)
    previous_keys = {k for f in stored.values() for k in f.keys}
    previous_passages = store.passage_count(conn)

    progress = Progress(stage="scanning")

    def tick() -> None:
        progress.elapsed = time.monotonic() - started
        if on_progress:
            on_progress(progress)

    new, kept_files, moved = _scan(corpus, settings, previous, report, progress, tick)
    report.renamed = moved
    _fault_point("parse")
    moved_keys = {k for old, _ in moved for k in previous[old].keys}  # old keys, kept under the new name
    file_of = {k: f for f, s in stored.items() for k in s.keys}
    # Checked before the model loads, so a wrong folder is refused in a moment; again before the
    # commit, since chunking may drop an article.
    found = {a.doc.key for a in new} | {k for f in kept_files for k in previous[f].keys} | moved_keys
    present = {a.file for a in new} | set(kept_files)
    _check_removals(
        _gone(previous_keys - found, file_of, present), len(previous_keys), len(found), corpus, allow_removals
    )

    # An index from before the token table gets its stored words' vectors once.
    backfill = (
        not rebuild and previous_passages > 0 and not conn.execute("SELECT 1 FROM token_vectors LIMIT 1").fetchone()
    )
    damaged_tokens = [] if rebuild else word_vectors.damaged_tokens(conn, int(meta.get("dimension") or 0))
    if damaged_tokens:
        report.warnings.append(
            ("(word vectors)", f"{len(damaged_tokens)} stored word vectors were damaged; embedded again")
        )
    tokens: tuple[list[int], np.ndarray] = ([], np.zeros((0, 0), np.float32))
    identity = {"model_hash": files.digest, "model_files": files.signature} if files else {}
    # An index from before the probe vector was recorded gets it (the model is loaded once for it).
    if new or backfill or damaged_tokens or (previous_passages and not meta.get("probe_vector")):
        embedder = embedder or load_embedder(settings.embedding_model, bulk=True)
        _check_dimension(meta, embedder, rebuild)
        new = _chunk(new, embedder, report)
        kept_by_file: set[str] = {k for f in kept_files for k in previous[f].keys} | moved_keys
        new, same = _settle(conn, new, previous, kept_by_file, moved, report)
        reusable = (
            (lambda hashes: {})
            if rebuild
            else (lambda hashes: store.vectors_by_embedded_hash(conn, hashes, embedder.dimension))
        )
        report.passages_embedded, report.passages_reused = _embed(new, embedder, progress, tick, reusable)
        identity["probe_vector"] = _check_probe(meta, embedder, rebuild)
        tokens = _token_vectors(
            conn, new, embedder, progress, tick, every_stored=backfill, replace=rebuild, also=damaged_tokens
        )
    else:
        same = {}
    _fault_point("embed")

    kept_keys = {k for f in kept_files for k in previous[f].keys} | set(same)
    account(
        report, new, kept_keys, moved, moved_keys, previous_keys, file_of, previous_passages, corpus, allow_removals
    )

    progress.stage = "committing"
    tick()
    dimension = embedder.dimension if embedder else int(meta.get("dimension", 0)) or None
    changes = _commit(
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
        replace_tokens=rebuild,
        moved=moved,
        rehashed=same,
    )
    _fault_point("after-commit")
    _refresh_query_model(settings, embedder, report)
    _refresh_tantivy(settings, changes, report, progress, tick)
    _refresh_vector_file(settings, report, progress, tick)
    progress.stage = "done"
    tick()
    return report


def _gone(removing, file_of: dict[str, str], present: set[str]) -> list[str]:
    """The removed articles whose file gave no article this run: what a wrong folder removes. Those
    of a file still read (records deleted from it, or keyed anew) are the file's edit."""
    return [k for k in removing if file_of.get(k) not in present]


def _check_removals(removing, indexed: int, found: int, corpus: Path, allowed: bool) -> None:
    if not allowed and len(removing) > SAFE_REMOVALS and 2 * len(removing) > indexed:
        raise RemovalsRefusedError(len(removing), indexed, str(corpus), found)


def _refresh_query_model(settings: Settings, embedder: Embedder | None, report: IndexReport) -> None:
    """Export the ONNX query model beside the index when it is missing or is not this index's
    (query_model.refresh: made by an older version, from other model files, damaged).

    Not part of the index's transaction: questions fall back to the full model without it, so a
    failed export is a warning, never a failed run."""
    from . import query_model

    try:
        done = query_model.refresh(settings.index_path, settings.embedding_model, embedder)
    except Exception as exc:
        _warn_derived(report, "(query model)", "not exported", "questions use the full model, slower to start", exc)
        return
    if done.startswith("exported again"):
        report.warnings.append(("(query model)", done))


def _without_damaged_vectors(
    conn, stored: dict[str, store.StoredFile], report: IndexReport
) -> dict[str, store.StoredFile]:
    """The stored files less those holding an article whose vectors are damaged (store.damaged_vectors),
    so that this run parses and embeds them again, saying so."""
    damaged = store.damaged_vectors(conn)
    if not damaged:
        return stored
    for key, why in sorted(damaged.items()):
        report.warnings.append((key, f"its stored vectors were damaged ({why}); embedded again"))
    return {f: s for f, s in stored.items() if not damaged.keys() & set(s.keys)}


def _scan(corpus, settings, previous, report, progress, tick):
    """Read, hash and parse every changed file; returns (new articles, unchanged files, moved files
    as (old path, new path)).

    A new path whose bytes (and sidecar) hash the same as an indexed file's that is no longer
    there, with the same suffix, is that file moved: its articles are renamed, nothing is parsed."""
    unreadable: list[OSError] = []
    left_out = LeftOut()
    paths = iter_corpus_files(corpus, unreadable, left_out)
    _report_left_out(left_out, report)
    moved: list[tuple[str, str]] = []
    progress.files_total = len(paths)
    new: list[_NewArticle] = []
    kept_files: list[str] = []
    for error in unreadable:
        # Its files were not seen: keep what was indexed from it rather than remove it all.
        folder = Path(error.filename).relative_to(corpus).as_posix() if error.filename else "."
        under = [f for f in previous if folder == "." or f.startswith(folder + "/")]
        kept_files += under
        kept = f"; its {len(under)} indexed file{'s are' if len(under) != 1 else ' is'} kept" if under else ""
        report.skipped.append(
            (one_line(folder + "/"), f"cannot read the folder: {one_line(error.strerror or error)}{kept}")
        )
    listed = {path.relative_to(corpus).as_posix() for path in paths}
    gone_by_hash: dict[str, list[str]] = {}  # content hash -> indexed files no longer there
    for file in sorted(set(previous) - listed - set(kept_files)):
        gone_by_hash.setdefault(previous[file].content_hash, []).append(file)
    root = corpus.resolve()  # once, not per file
    names_in: dict[Path, set[str]] = {}  # folder -> its entries, to find sidecars without a stat each
    # DATE_ORDER changes what a file's dates read, so under another order every file is read again
    read_as = b"\0date order\0" + settings.date_order.encode() if settings.date_order else b""
    for path in paths:
        rel = path.relative_to(corpus).as_posix()
        progress.files_scanned += 1
        tick()
        if not _is_utf8(rel):
            # Its key could not be stored (SQLite text is UTF-8): every run failed at commit.
            report.skipped.append((one_line(rel), "the file name is not valid UTF-8; rename the file"))
            continue
        try:
            data = load_file(path, root, settings.max_file_bytes)
            if path.parent not in names_in:
                names_in[path.parent] = _entries(path.parent)
            sidecar = sidecar_bytes(path, names_in[path.parent])
            content_hash = hashlib.sha256(data + b"\0sidecar\0" + sidecar + read_as).hexdigest()
            if rel in previous and previous[rel].content_hash == content_hash:
                kept_files.append(rel)
                continue
            old = next((f for f in gone_by_hash.get(content_hash, ()) if _suffix(f) == _suffix(rel)), None)
            if rel not in previous and old is not None:
                gone_by_hash[content_hash].remove(old)
                moved.append((old, rel))
                continue
            if rel in previous and previous[rel].content_hash == "":  # set by migration 7
                report.warnings.append(
                    (
                        rel,
                        "its records are now keyed by their id or content, no longer by "
                        "their place in the file: citations of it by number changed",
                    )
                )
            record_problems: list[tuple[str, str]] = []
            docs = parse_file(rel, data, sidecar, date_order=settings.date_order, skipped=record_problems)
            report.skipped += [(one_line(where), one_line(reason)) for where, reason in record_problems]
        except SkipFile as exc:
            reason = one_line(exc)  # may quote a symlink's target: any bytes
            if rel in previous:
                # Never lose a good article to a bad edit: keep what was indexed and say so.
                kept_files.append(rel)
                report.skipped.append((rel, f"{reason} (kept the previously indexed version)"))
            else:
                report.skipped.append((rel, reason))
            continue
        for doc in docs:
            report.warnings += [(doc.key, w) for w in doc.warnings]
            new.append(_NewArticle(doc, rel, content_hash, []))
    return new, kept_files, moved


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _shown(article: _NewArticle | store.StoredArticle) -> tuple:
    """What an article shows and quotes, without its key: two articles with the same are copies."""
    if isinstance(article, store.StoredArticle):
        return (
            article.title,
            article.source,
            article.authors,
            article.published,
            article.updated,
            article.url,
            article.description,
            article.passages,
        )
    doc = article.doc
    return (
        doc.title,
        doc.source,
        doc.authors,
        doc.published.isoformat() if doc.published else None,
        doc.updated.isoformat() if doc.updated else None,
        doc.url,
        doc.description,
        tuple(article.passages),
    )


def _settle(
    conn,
    new: list[_NewArticle],
    previous: dict[str, store.StoredFile],
    kept: set[str],
    moved: list[tuple[str, str]],
    report: IndexReport,
    db=store,
) -> tuple[list[_NewArticle], dict[str, str]]:
    """The new articles less those already indexed as they are, and the keys of those (articles of
    a changed file that did not change themselves: only their file's hash is updated) with the
    file's new hash.

    An article identical to another (same text and metadata: a byte-identical copy of a file) is
    indexed once, the first in the order files are read, or the one already in the index; the
    other is skipped, saying so. Copies with other metadata (a story syndicated by another
    publication) are all indexed; a search shows them once, with "also in". `db`: the store module
    conn belongs to (this one, or embeddings.postgres.store)."""
    previous_keys = {k for f in previous.values() for k in f.keys}
    stored = db.stored_articles(conn, sorted(a.doc.key for a in new if a.doc.key in previous_keys))
    same: dict[str, str] = {}
    rest = []
    for article in new:
        old = stored.get(article.doc.key)
        if old is not None and _shown(old) == _shown(article):
            same[article.doc.key] = article.content_hash
        else:
            rest.append(article)
    kept = kept | set(same)
    renamed_to = {old: new_name for old, new_name in moved}
    candidates = db.keys_starting_with(conn, sorted({embedded_hash(a.passages[0]) for a in rest}))
    stored_copies = db.stored_articles(conn, sorted({k for keys in candidates.values() for k in keys} & kept))
    first_of: dict[tuple, str] = {}
    for key, article in sorted(stored_copies.items()):
        first_of.setdefault(_shown(article), _moved_key(key, renamed_to))
    unique = []
    for article in rest:
        shown = _shown(article)
        if shown in first_of:
            report.skipped.append(
                (article.doc.key, f"duplicate of {first_of[shown]} (same text and metadata): indexed once")
            )
            continue
        first_of[shown] = article.doc.key
        unique.append(article)
    return unique, same


def _moved_key(key: str, renamed_to: dict[str, str]) -> str:
    """An indexed article's key once its file's move (old path -> new path) is committed."""
    for old, new in renamed_to.items():
        if key == old or key.startswith(old + "#"):
            return new + key[len(old) :]
    return key


def _report_left_out(left_out: LeftOut, report: IndexReport) -> None:
    report.ignored += [one_line(path) for path in left_out.not_articles]
    report.hidden += left_out.hidden
    for path in left_out.orphan_sidecars:
        report.skipped.append(
            (
                one_line(path),
                "metadata sidecar with no article beside it (the sidecar of a.txt "
                "is a.meta.json in the same folder): was the article renamed or removed?",
            )
        )
    for path in left_out.linked_folders:
        report.skipped.append(
            (
                one_line(path + "/"),
                "a symlink to a folder, not followed (only files inside the corpus "
                "folder, or symlinks to such files, are read)",
            )
        )


def _is_utf8(name: str) -> bool:
    """False for a name holding bytes that are not UTF-8 (os.walk gives them as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _entries(folder: Path) -> set[str] | None:
    try:
        return set(os.listdir(folder))
    except OSError:  # gone since the walk: sidecar_bytes looks file by file
        return None


def _chunk(new: list[_NewArticle], embedder: Embedder, report: IndexReport) -> list[_NewArticle]:
    kept = []
    for article in new:
        doc = article.doc
        article.passages = make_passages(
            doc.paragraphs, count_tokens=embedder.count_tokens, max_tokens=embedder.max_tokens
        )
        if article.passages:
            kept.append(article)
        else:
            report.skipped.append((doc.key, "no article text to index"))
    return kept


def _embed(
    new: list[_NewArticle],
    embedder: Embedder,
    progress: Progress,
    tick,
    reusable: Callable[[list[str]], dict[str, np.ndarray]] = lambda hashes: {},
) -> tuple[int, int]:
    """Give every new article its passages' vectors: a text embedded once per run, and not at all
    when the index holds a vector for it (`reusable`: by embedded-text hash; a moved, re-keyed,
    edited or copied article embeds only its new passages). Returns (embedded, reused)."""
    hashes = [[embedded_hash(p) for p in a.passages] for a in new]
    text_of = {h: p for a, article_hashes in zip(new, hashes) for h, p in zip(article_hashes, a.passages)}
    vector_of = reusable(sorted(text_of))
    missing = [h for h in text_of if h not in vector_of]
    progress.stage = "embedding"
    progress.passages_total = len(missing)
    tick()
    progress.embedding_since = progress.elapsed

    def on_batch(n: int) -> None:
        progress.passages_embedded += n
        _fault_point("mid-embed")
        tick()

    texts = [text_of[h] for h in missing]
    vectors = embedder.encode(texts, on_batch=on_batch) if texts else np.zeros((0, embedder.dimension), np.float32)
    vector_of.update(zip(missing, vectors))
    for article, article_hashes in zip(new, hashes):
        article.vectors = np.stack([vector_of[h] for h in article_hashes]).astype(np.float32, copy=False)
    return len(missing), sum(map(len, hashes)) - len(missing)


def _token_vectors(
    conn, new, embedder, progress, tick, *, every_stored: bool, replace: bool, also: list[int] = ()
) -> tuple[list[int], np.ndarray]:
    """The vocabulary tokens of the new articles' words (text, title, publication: what the keyword
    index holds) that the index has no usable vector for, and `also` (damaged ones), and their
    vectors (word_vectors.py)."""
    texts = [t for a in new for t in (*a.passages, a.doc.title or "", a.doc.source or "")]
    if every_stored:
        texts += [r[0] for r in conn.execute("SELECT text FROM passages")]
        texts += [f"{r[0] or ''} {r[1] or ''}" for r in conn.execute("SELECT title, source FROM articles")]
    tokens = sorted(set(word_vectors.missing_tokens(conn, texts, embedder, stored=not replace)) | set(also))
    progress.stage, progress.words_total = "words", len(tokens)
    tick()
    return tokens, embedder.token_vectors(tokens) if tokens else np.zeros((0, embedder.dimension), np.float32)


def backfill_token_vectors(index_path: Path, embedder: Embedder) -> int:
    """Give an index written before the token table its stored words' vectors (what the next index
    run would do); the number of tokens embedded."""
    conn = store.connect_for_writing(index_path)
    try:
        if conn.execute("SELECT 1 FROM token_vectors LIMIT 1").fetchone():
            return 0
        tokens = _token_vectors(
            conn, [], embedder, Progress(stage="words"), lambda: None, every_stored=True, replace=False
        )
        conn.execute("BEGIN IMMEDIATE")
        word_vectors.insert(conn, *tokens)
        conn.execute("COMMIT")
        return len(tokens[0])
    finally:
        conn.close()


def _check_probe(meta: dict, embedder: Embedder, rebuild: bool) -> str:
    """The embedder's probe vector (model_identity.py) for index_meta, once it is shown to be the
    index's: a model that changed under the same name (a folder given by its hub name has no
    file hash) would put other vectors beside the stored ones."""
    vector = model_identity.probe(embedder)
    recorded = model_identity.decode_probe(meta.get("probe_vector"))
    problem = None if rebuild or recorded is None else model_identity.probe_mismatch(vector, recorded)
    if problem:
        raise ModelMismatchError(
            f"{embedder.name!r} is not the model this index was built with ({problem}); "
            "run `corpus-bot index --rebuild` to re-embed everything with it"
        )
    return model_identity.encode_probe(vector)


def record_model_identity(index_path: Path, embedder: Embedder) -> None:
    """Give an index written before model identities were recorded (model_identity.py) the
    embedder's, as the next index run would (for cached evaluation indexes)."""
    conn = store.connect_for_writing(index_path)
    try:
        files = model_identity.model_files(embedder.name)
        conn.execute("BEGIN IMMEDIATE")
        store.write_meta(
            conn,
            probe_vector=model_identity.encode_probe(model_identity.probe(embedder)),
            **({"model_hash": files.digest, "model_files": files.signature} if files else {}),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _check_dimension(meta: dict, embedder: Embedder, rebuild: bool) -> None:
    stored = int(meta.get("dimension", 0) or 0)
    if stored and stored != embedder.dimension and not rebuild:
        raise ModelMismatchError(
            f"the index holds {stored}-dimensional vectors but {embedder.name!r} makes {embedder.dimension}; "
            "run `corpus-bot index --rebuild`"
        )


def _refresh_tantivy(
    settings: Settings, changes: tantivy_index.Changes, report: IndexReport, progress: Progress, tick
) -> None:
    """Build the tantivy copy of the keyword index of a large index (embeddings/tantivy_index.py).

    After the commit, like the query model: without it keyword search falls back to FTS5, slower
    at this size but the same passages, so a failure is a warning, never a failed run."""
    progress.stage, progress.index_passages = "keyword index", report.passages_total

    def on_passage(n: int) -> None:
        progress.keyword_indexed = n
        tick()

    try:
        done = tantivy_index.refresh(settings.index_path, changes, on_passage=on_passage)
    except Exception as exc:
        _warn_derived(
            report, "(keyword index)", "tantivy copy not built", "keyword search uses FTS5, slower at this size", exc
        )
        return
    if done.startswith("built again"):
        report.warnings.append(("(keyword index)", f"tantivy copy {done}"))


def _refresh_vector_file(settings: Settings, report: IndexReport, progress: Progress, tick) -> None:
    """Write the vectors of a large index as files beside it (embeddings/vector_file.py).

    After the commit: without them a search loads the vectors from SQLite, slower to start and
    holding more memory but the same answers, so a failure is a warning, never a failed run."""
    progress.stage, progress.index_passages = "vector file", report.passages_total
    if report.passages_total >= derived.LARGE_INDEX:
        tick()
    try:
        done = vector_file.refresh(settings.index_path)
    except Exception as exc:
        _warn_derived(report, "(vector file)", "not written", "the vectors load from SQLite, slower at this size", exc)
        return
    if done.startswith("built again"):
        report.warnings.append(("(vector file)", done.replace("built", "written", 1)))


def _warn_derived(report: IndexReport, what: str, failed: str, meanwhile: str, exc: Exception) -> None:
    """A copy derived after the commit could not be made: a warning in the report, never a failed run."""
    log.warning("%s %s: %s", what, failed, exc)
    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    report.warnings.append((what, f"{failed} ({reason}); {meanwhile}"))


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
    replace_tokens: bool = False,
    moved: list[tuple[str, str]] = (),
    rehashed: dict[str, str] | None = None,
) -> tantivy_index.Changes:
    """The one write transaction of a run. `moved`: files whose articles are renamed as they are;
    `rehashed`: unchanged articles of a changed file, with the file's new hash."""
    now = store.utc_now()
    conn.execute("BEGIN IMMEDIATE")
    try:
        previous = store.read_meta(conn).get("generation")
        removed = store.passage_ids_of(conn, sorted(stale_keys))
        store.delete_articles(conn, sorted(stale_keys))
        for old, new_name in moved:
            store.move_file(conn, old, new_name)
        by_hash: dict[str, list[str]] = {}
        for key, content_hash in (rehashed or {}).items():
            by_hash.setdefault(content_hash, []).append(key)
        for content_hash, keys in by_hash.items():
            store.set_content_hash(conn, keys, content_hash)
        if replace_tokens:  # a rebuild may change the model: its token vectors go with it
            conn.execute("DELETE FROM token_vectors")
        word_vectors.insert(conn, *tokens)
        _fault_point("mid-write")
        insert_articles(store, conn, new, now)
        report.articles_total = conn.execute("SELECT COUNT(*) FROM articles").fetchone()[0]
        report.passages_total = store.passage_count(conn)
        report.seconds = round(time.monotonic() - started, 3)
        meta = {"model": settings.embedding_model, "built": now, **identity}  # model_identity.py
        if new or stale_keys or moved or not previous:
            meta["generation"] = store.new_generation()  # derived copies (tantivy) are tagged with it
        if dimension:
            meta["dimension"] = str(dimension)
        store.write_meta(conn, **meta)
        store.record_run(conn, started=started_wall, seconds=report.seconds, report=report.to_json())
        added = store.passage_ids_of(conn, [a.doc.key for a in new])
        _fault_point("before-commit")
        conn.execute("COMMIT")
        return tantivy_index.Changes(previous, removed, added)
    except BaseException:
        # After an I/O error SQLite may already have rolled back; a failing ROLLBACK must not hide
        # the error that explains what happened.
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as again:
                log.warning("rollback after a failed index write also failed: %s", again)
        raise


def build_index(
    index_path: Path,
    docs: list[ArticleDoc],
    *,
    embedder: Embedder,
    source_hash: str,
    on_progress: Callable[[Progress], None] | None = None,
) -> IndexReport:
    """Write a new index file holding exactly docs (for evaluation sets, which are not a corpus folder).

    Written to a temporary file and renamed into place, so an interrupted build leaves nothing behind."""
    started_wall, started = store.utc_now(), time.monotonic()
    tmp = index_path.with_name(index_path.name + f".building-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    report = IndexReport(model=embedder.name)
    progress = Progress(stage="embedding", files_total=len(docs), files_scanned=len(docs))

    def tick() -> None:
        progress.elapsed = time.monotonic() - started
        if on_progress:
            on_progress(progress)

    new = _chunk([_NewArticle(d, d.key, source_hash, []) for d in docs], embedder, report)
    report.passages_embedded, report.passages_reused = _embed(new, embedder, progress, tick)
    report.added = [a.doc.key for a in new]
    conn = store.connect_for_writing(tmp)
    try:
        settings = Settings(embedding_model=embedder.name)
        tokens = _token_vectors(conn, new, embedder, progress, tick, every_stored=False, replace=False)
        files = model_identity.model_files(embedder.name)
        identity = {
            "probe_vector": model_identity.encode_probe(model_identity.probe(embedder)),
            **({"model_hash": files.digest, "model_files": files.signature} if files else {}),
        }
        _commit(conn, settings, new, set(), report, embedder.dimension, started_wall, started, tokens, identity)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    os.replace(tmp, index_path)
    return report
