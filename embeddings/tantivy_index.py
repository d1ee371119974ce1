"""A tantivy copy of the keyword index, in a folder beside the SQLite file, for large indexes.

FTS5 (inside the SQLite file, committed with the vectors) computes BM25 for every passage that
matches any question word; at a million passages that alone takes longer than an answer may.
tantivy keeps the same words with block-max pruning and finds the BM25 top k in milliseconds.

It is derived data, never the source of truth: built after the index job's commit from one read
snapshot, and tagged with that snapshot's `generation` (index_meta). A search uses it only when
the tag equals the generation of the snapshot it searches; a missing, stale or unreadable copy
means FTS5 answers instead. Only indexes of derived.LARGE_INDEX passages or more get one: below that
FTS5 is fast enough, and its scores are the ones the fusion was tuned on (docs/retrieval.md).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import derived, store

log = logging.getLogger(__name__)

ANALYZER = "english"
WRITER_HEAP = 256 * 1024**2
MAX_UPDATE_SHARE = 0.25  # of the passages changed by a run, above which a fresh build replaces updating in place


def folder_for(index_path: Path) -> Path:
    return derived.folder_for(index_path, ".tantivy")


def _analyzer():
    import tantivy

    # FTS5's 'porter unicode61 remove_diacritics 2' in tantivy's terms (its stemmer is Snowball).
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(64))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def _schema():
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_integer_field("id", stored=False, indexed=True, fast=True)  # indexed: deletable by id
    for name in ("text", "context"):
        builder.add_text_field(name, stored=False, tokenizer_name=ANALYZER, index_option="freq")
    return builder.build()


def _open(folder: Path, *, create: bool = False):
    import tantivy

    index = tantivy.Index(_schema(), path=str(folder), reuse=False) if create else tantivy.Index.open(str(folder))
    index.register_tokenizer(ANALYZER, _analyzer())
    return index


def keyword_engine(index_path: Path, generation: str | None, passages: int) -> str:
    """What keyword search on this index state uses: "fts5", "tantivy", or FTS5 with the reason."""
    if passages < derived.LARGE_INDEX:
        return "fts5"
    why = derived.why_not_used(folder_for(index_path), generation, "tantivy copy")
    return "tantivy" if why is None else f"fts5 ({why})"


@dataclass(frozen=True)
class Changes:
    """What one index run committed, so the copy can be updated in place instead of rebuilt."""

    previous_generation: str | None
    removed: list[int]  # passage ids the run deleted (changed articles included)
    added: list[int]  # passage ids it inserted


def refresh(index_path: Path, changes: Changes | None = None, on_passage: Callable[[int], None] | None = None) -> str:
    """Bring the copy beside index_path in line with its committed state; say what was done.

    Removes it when the index is below derived.LARGE_INDEX; keeps it when its tag is current and every
    file hashes as written (derived.verify); applies `changes` in place when the copy holds the
    state they were made to, verifies, and they are small; else builds a new one in a temporary
    folder and swaps it in ("built again (why)" when a current copy was damaged). A search that
    opened the old copy keeps reading it (its files stay mapped until it is closed)."""
    folder = folder_for(index_path)
    with store.reading(index_path) as conn:
        conn.execute("BEGIN")  # the tag and the passages from one snapshot
        generation = store.read_meta(conn).get("generation")
        passages = store.passage_count(conn)
        if passages < derived.LARGE_INDEX or not generation:
            return derived.remove(folder)
        tag = derived.read_tag(folder)
        damage = None
        if tag and tag in (generation, changes.previous_generation if changes else None):
            damage = derived.verify(folder) or _unreadable(folder)
        if tag == generation and damage is None:
            if derived.changed_files(folder):
                derived.restamp(folder)  # the same bytes with new modification times (a copied folder)
            return "current"
        if (
            changes
            and tag
            and tag == changes.previous_generation
            and damage is None
            and len(changes.removed) + len(changes.added) <= MAX_UPDATE_SHARE * passages
        ):
            try:
                _update(conn, folder, changes, generation)
                return "updated"
            except (ValueError, OSError) as exc:
                log.warning("updating the tantivy keyword index failed (%s); building it anew", exc)
        derived.replace(folder, lambda tmp: _build(conn, tmp, on_passage), generation)
    return f"built again ({damage})" if damage and tag == generation else "built"


def _unreadable(folder: Path) -> str | None:
    """Why tantivy cannot open the copy (None when it can)."""
    try:
        _open(folder)
        return None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a panic in its Rust code reaches Python as a BaseException
        return f"tantivy cannot open it ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})"


def _passages(conn, ids: list[int] | None = None):
    """(id, text, context: title, publication and authors) of every passage, or of those ids."""
    sql = f"SELECT p.id, p.text, {store.PASSAGE_CONTEXT} FROM passages p JOIN articles a ON a.id = p.article_id"
    if ids is None:
        return conn.execute(sql)
    return conn.execute(sql + " WHERE p.id IN (SELECT value FROM json_each(?))", (json.dumps(ids),))


def _add(writer, rows, on_passage: Callable[[int], None] | None = None) -> None:
    import tantivy

    for done, (passage_id, text, context) in enumerate(rows, 1):
        writer.add_document(tantivy.Document(id=passage_id, text=text, context=context))
        if on_passage and done % 10_000 == 0:
            on_passage(done)


def _build(conn, folder: Path, on_passage: Callable[[int], None] | None) -> None:
    writer = _open(folder, create=True).writer(WRITER_HEAP, num_threads=max(1, min(4, os.cpu_count() or 1)))
    _add(writer, _passages(conn), on_passage)
    writer.commit()
    writer.wait_merging_threads()


def _update(conn, folder: Path, changes: Changes, generation: str) -> None:
    verified = derived.read_checksums(folder)  # refresh() verified them just now
    writer = _open(folder).writer(WRITER_HEAP, num_threads=1)
    derived.write_tag(folder, "updating")  # a search opening the copy meanwhile uses FTS5
    for passage_id in changes.removed:
        writer.delete_documents_by_term("id", passage_id)
    _add(writer, _passages(conn, changes.added))
    writer.commit()
    writer.wait_merging_threads()
    del writer  # its files are final once it is gone
    derived.seal(folder, generation, verified)  # only the new and rewritten files are hashed


class TantivyIndex:
    """The BM25 top k over the copy; open() returns None unless it matches the snapshot."""

    def __init__(self, index) -> None:
        import tantivy

        self._tantivy = tantivy
        self._index = index
        self._searcher = index.searcher()
        self._schema = index.schema
        self._analyzer = _analyzer()

    @classmethod
    def open(cls, index_path: Path, generation: str | None) -> TantivyIndex | None:
        folder = folder_for(index_path)
        if not generation or not folder.is_dir():
            return None
        if not derived.is_current(folder, generation):
            log.info("keyword search uses FTS5: %s is from another state of the index (run `corpus-bot index`)", folder)
            return None
        changed = derived.changed_files(folder)
        if changed:
            log.warning(
                "keyword search uses FTS5: the tantivy copy in %s is damaged (%s); `corpus-bot index` builds it again",
                folder,
                changed,
            )
            return None
        try:
            return cls(_open(folder))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # written by an incompatible tantivy, or a panic on a damaged file
            log.warning("keyword search uses FTS5: cannot open %s: %s", folder, str(exc).splitlines()[0][:200])
            return None

    def _tokens(self, words: list[str]) -> list[str]:
        """The words as indexed (stemmed), each once."""
        return list(dict.fromkeys(token for w in words for token in self._analyzer.analyze(w)))

    def top(self, words: list[str], limit: int, *, context_weight: float) -> tuple[np.ndarray, np.ndarray]:
        """Passage ids and BM25 scores of the best `limit` passages matching any of the words, the
        context field (title, publication, authors) weighted by context_weight."""
        tv = self._tantivy
        tokens = self._tokens(words)
        if not tokens:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        clauses = []
        for token in tokens:
            clauses.append((tv.Occur.Should, tv.Query.term_query(self._schema, "text", token)))
            context = tv.Query.term_query(self._schema, "context", token)
            clauses.append((tv.Occur.Should, tv.Query.boost_query(context, context_weight)))
        # count=False: counting every match would defeat the pruning that makes this fast.
        hits = self._searcher.search(tv.Query.boolean_query(clauses), limit, count=False).hits
        ids = self._searcher.fast_field_values("id", [address for _, address in hits])
        return np.asarray(ids, np.int64), np.asarray([score for score, _ in hits], np.float32)

    def doc_freq(self, word: str) -> int:
        """Passages whose text holds the word (its stem; the most of its tokens')."""
        return max((self._searcher.doc_freq("text", token) for token in self._tokens([word])), default=0)

    def idf_sum(self, words: list[str]) -> float:
        """Sum of tantivy's BM25 idf of the words (in the passage text), for keyword coverage."""
        n = self._searcher.num_docs
        total = 0.0
        for token in self._tokens(words):
            df = self._searcher.doc_freq("text", token)
            if df:
                total += float(np.log(1 + (n - df + 0.5) / (df + 0.5)))  # tantivy's (Lucene's) idf
        return total
