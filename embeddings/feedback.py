"""Votes on answers, and their export as a BEIR-layout evaluation set.

A 👍 on an answer judges its first quoted passage relevant (grade 1); a 👎 judges every quoted
passage not relevant (grade 0). `export_feedback` writes `corpus.jsonl` (every passage of the
index, id `path#position`), `queries.jsonl` and `qrels.tsv`, so `corpus-bot eval DIR` turns a
server's own questions into its regression test. Writes from the bot go through aiosqlite so the
event loop never waits on the disk; on an index in PostgreSQL the votes are in its `feedback` table,
written with psycopg (the bot calls `record_feedback_in_postgres` from a thread).
"""

from __future__ import annotations

import json
from pathlib import Path

import aiosqlite

from . import store
from .answer import Answer
from .errors import CorpusBotError

INSERT = "INSERT INTO feedback(created, user_id, question, mode, vote, results) VALUES (?, ?, ?, ?, ?, ?)"


def _row(answer: Answer, *, user_id: int | str, vote: int, mode: str) -> tuple:
    if vote not in (-1, 1):
        raise ValueError(f"vote must be 1 or -1, got {vote!r}")
    shown = [{"path": r.article.key, "position": r.position + 1, "text": r.text} for r in answer.results]
    return (store.utc_now(), str(user_id), answer.query, mode, vote, json.dumps(shown, ensure_ascii=False))


async def record_feedback(index_path: Path, answer: Answer, *, user_id: int | str, vote: int, mode: str) -> None:
    row = _row(answer, user_id=user_id, vote=vote, mode=mode)
    async with aiosqlite.connect(index_path, isolation_level=None) as db:
        await db.execute(f"PRAGMA busy_timeout = {store.BUSY_TIMEOUT_MS}")
        await db.execute("BEGIN IMMEDIATE")
        await db.execute(INSERT, row)
        await db.execute("COMMIT")


def record_feedback_in_postgres(url: str, answer: Answer, *, user_id: int | str, vote: int, mode: str) -> None:
    """record_feedback for the index in PostgreSQL at url (blocking: call it from a thread). A
    connection per vote: votes are rare, and nothing is held while the server restarts."""
    from .postgres import store as postgres_store

    row = _row(answer, user_id=user_id, vote=vote, mode=mode)
    conn = postgres_store.connect(url, migrate_schema=False)
    try:
        conn.execute(INSERT.replace("?", "%s"), row)
    finally:
        conn.close()


def feedback_rows(conn) -> list[dict]:
    return [
        {
            "id": r[0],
            "created": r[1],
            "user_id": r[2],
            "question": r[3],
            "mode": r[4],
            "vote": r[5],
            "results": json.loads(r[6]),
        }
        for r in conn.execute("SELECT id, created, user_id, question, mode, vote, results FROM feedback ORDER BY id")
    ]


def _refuse_used_destination(out_dir: Path) -> None:
    if out_dir.is_dir():
        try:
            used = next(out_dir.iterdir(), None) is not None
        except OSError as exc:
            raise CorpusBotError(f"cannot export to {out_dir}: {exc.strerror or exc}") from None
        if used:
            raise CorpusBotError(
                f"{out_dir} is not empty: give a new or empty folder to export to "
                "(an earlier export there is left as it is)"
            )
    elif out_dir.exists() or out_dir.is_symlink():
        raise CorpusBotError(f"{out_dir} exists and is not a folder: give a new or empty folder to export to")


def export_feedback(index_path: Path, out_dir: Path) -> dict:
    """Write the evaluation set into a new or empty folder; returns counts for the report.

    An existing file or a folder with entries is refused before anything is read or written: an
    earlier export (its judgments, maybe edited by hand) or unrelated files are never overwritten.
    """
    _refuse_used_destination(out_dir)
    with store.reading(index_path) as conn:
        conn.execute("BEGIN")
        passages, votes = _passages_and_votes(conn)
    return _write_evaluation_set(passages, votes, out_dir)


def export_feedback_from_postgres(url: str, out_dir: Path) -> dict:
    """export_feedback for the index in PostgreSQL at url: the same files from the same votes,
    read in one snapshot (the votes and the passages they are checked against)."""
    from .postgres import store as postgres_store

    _refuse_used_destination(out_dir)
    with postgres_store.reading(url) as conn:
        passages, votes = _passages_and_votes(conn)
    return _write_evaluation_set(passages, votes, out_dir)


def _passages_and_votes(conn) -> tuple[list, list[dict]]:
    passages = conn.execute(
        "SELECT a.key, p.position, p.text, a.title FROM passages p JOIN articles a ON a.id = p.article_id"
    ).fetchall()
    # Sorted here, by code point: PostgreSQL would order the keys by its database's collation.
    return sorted(passages, key=lambda row: (row[0], row[1])), feedback_rows(conn)


def _write_evaluation_set(passages: list, votes: list[dict], out_dir: Path) -> dict:
    current = {f"{key}#{pos + 1}": text for key, pos, text, _ in passages}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusBotError(f"cannot create the folder {out_dir}: {exc.strerror or exc}") from None
    with (out_dir / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for key, pos, text, title in passages:
            f.write(
                json.dumps({"_id": f"{key}#{pos + 1}", "title": title or "", "text": text}, ensure_ascii=False) + "\n"
            )
    judgments: dict[str, dict[str, int]] = {}
    questions: dict[str, str] = {}
    stale = 0
    for vote in votes:
        qid = questions.setdefault(vote["question"], f"q{len(questions) + 1}")
        judged = vote["results"][:1] if vote["vote"] > 0 else vote["results"]
        for shown in judged:
            doc = f"{shown['path']}#{shown['position']}"
            if current.get(doc) != shown["text"]:
                stale += 1  # the passage changed or left the index since the vote
                continue
            grade = 1 if vote["vote"] > 0 else 0
            # A later vote overrides an earlier one on the same passage.
            judgments.setdefault(qid, {})[doc] = grade
    with (out_dir / "queries.jsonl").open("w", encoding="utf-8") as f:
        for text, qid in questions.items():
            f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with (out_dir / "qrels.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, judged in judgments.items():
            for doc, grade in judged.items():
                f.write(f"{qid}\t{doc}\t{grade}\n")
    relevant = sum(1 for j in judgments.values() if any(g > 0 for g in j.values()))
    return {
        "votes": len(votes),
        "questions": len(questions),
        "with_relevant": relevant,
        "passages": len(passages),
        "stale_judgments": stale,
    }
