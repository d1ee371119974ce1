"""Coverage gaps: the questions asked in Discord that the corpus could not answer well.

Every /ask whose answer is weak (Answer.weak) is kept in the index's `weak_questions` table: its
text, the time (UTC) and the server (guild id; none in a direct message). The asker's user id is
kept only with RECORD_ASKERS=1. Records older than GAPS_KEEP_DAYS are deleted whenever one is
recorded, and never listed, so the table stays bounded. The CLI's own questions are not recorded:
they are the admin's.

`corpus-bot gaps` and /gaps list them grouped: wordings equal once case, spacing and punctuation
are set aside are one wording, counted; wordings whose question embeddings are close (COSINE_SAME)
are one group, led by its most asked wording. Without the question model only equal wordings
are merged: shared words cannot tell a rewording from a neighbouring question (refugees who fled
to Pakistan, or to Iran), so they group nothing rather than the wrong things. Most asked first.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import sqlite3
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .config import Settings
from .errors import IndexMissingError

log = logging.getLogger(__name__)

INSERT = "INSERT INTO weak_questions(asked, guild_id, user_id, question) VALUES (?, ?, ?, ?)"
PRUNE = "DELETE FROM weak_questions WHERE asked < ?"

# Two wordings whose question vectors are at least this close ask for the same missing coverage.
# Measured with all-MiniLM-L6-v2 on rewordings of one question against other questions, some on a
# neighbouring topic (refugees to Pakistan / to Iran): below it rewordings split into two lines;
# above it neighbouring questions start to share one.
COSINE_SAME = 0.80
# Wordings grouped by meaning, most asked first; the rest (asked rarely, at the end of the list)
# are merged only when equal. Embedding is what listing costs: this bounds it to seconds.
MOST_GROUPED = 500
_WORD = re.compile(r"\w+")


def asked_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def _oldest_kept(settings: Settings, now: dt.datetime) -> str:
    return _iso(now - dt.timedelta(days=settings.gaps_keep_days))


# ------------------------------------------------------------------------------------- recording


def record_weak_question(
    settings: Settings,
    question: str,
    *,
    guild_id: int | None,
    user_id: int | None,
    now: dt.datetime | None = None,
) -> None:
    """Keep one weak question in the index the settings name, and delete the records older than
    GAPS_KEEP_DAYS in the same transaction. The user id is dropped unless RECORD_ASKERS is on.
    Blocking (the bot calls note_weak_question); raises when the index cannot take the write."""
    now = now or asked_now()
    row = (
        _iso(now),
        None if guild_id is None else str(guild_id),
        str(user_id) if settings.record_askers and user_id is not None else None,
        question,
    )
    oldest = _oldest_kept(settings, now)
    if settings.index_url:
        from .postgres import store as postgres_store

        conn = postgres_store.connect(settings.index_url, migrate_schema=False)
        try:
            with conn.transaction():
                conn.execute(INSERT.replace("?", "%s"), row)
                conn.execute(PRUNE.replace("?", "%s"), (oldest,))
        finally:
            conn.close()
        return
    from . import store

    path = settings.index_path
    if not path.is_file():  # connecting would create an empty database there
        raise IndexMissingError(f"no index file at {path}")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {store.BUSY_TIMEOUT_MS}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(INSERT, row)
            conn.execute(PRUNE, (oldest,))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()


async def note_weak_question(settings: Settings, question: str, *, guild_id: int | None, user_id: int | None) -> bool:
    """record_weak_question from a thread, for the bot once the answer is sent: a failure is one
    warning in the log, never an error for the person who asked. False when nothing was kept."""
    try:
        await asyncio.to_thread(record_weak_question, settings, question, guild_id=guild_id, user_id=user_id)
    except Exception as exc:
        log.warning("could not record a weak question in %s: %s", _shown(settings), exc)
        return False
    return True


def _shown(settings: Settings) -> str:
    if settings.index_url:
        from .postgres.store import shown

        return shown(settings.index_url)
    return str(settings.index_path)


# --------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class WeakQuestion:
    asked: str  # UTC, ISO 8601
    guild_id: str | None
    question: str


def read_weak_questions(
    settings: Settings,
    *,
    since: dt.date | None = None,
    guild_id: int | None = None,
    now: dt.datetime | None = None,
) -> tuple[list[WeakQuestion], dict[str, str]]:
    """The weak questions kept (not older than GAPS_KEEP_DAYS), asked on or after since (UTC) and
    in the server guild_id when given, oldest first; and the index's metadata (for its model)."""
    oldest = _oldest_kept(settings, now or asked_now())
    if since is not None:
        oldest = max(oldest, _iso(dt.datetime.combine(since, dt.time(), dt.UTC)))
    sql = "SELECT asked, guild_id, question FROM weak_questions WHERE asked >= ?"
    params: tuple = (oldest,)
    if guild_id is not None:
        sql += " AND guild_id = ?"
        params += (str(guild_id),)
    sql += " ORDER BY asked, id"
    if settings.index_url:
        from .postgres import store as postgres_store

        with postgres_store.reading(settings.index_url) as conn:
            rows = conn.execute(sql.replace("?", "%s"), params).fetchall()
            meta = postgres_store.read_meta(conn)
    else:
        from . import store

        with store.reading(settings.index_path) as conn:
            rows = conn.execute(sql, params).fetchall()
            meta = store.read_meta(conn)
    return [WeakQuestion(*row) for row in rows], meta


# -------------------------------------------------------------------------------------- grouping


def normalised(question: str) -> str:
    """The question with case, spacing and punctuation set aside: wordings equal here are one."""
    return " ".join(_WORD.findall(unicodedata.normalize("NFKC", question).casefold()))


@dataclass
class Wording:
    question: str  # its spelling most often asked (the latest of equals)
    count: int


@dataclass
class Gap:
    """One group of weak questions: its most asked wording, how often and when it was asked, and
    in how many servers; `wordings` are its distinct wordings, most asked first."""

    question: str
    count: int
    first_asked: str
    last_asked: str
    servers: int
    wordings: list[Wording]

    def to_json(self) -> dict:
        return {
            "question": self.question,
            "count": self.count,
            "first_asked": self.first_asked,
            "last_asked": self.last_asked,
            "servers": self.servers,
            "wordings": [{"question": w.question, "count": w.count} for w in self.wordings],
        }


def group_weak_questions(
    asked: Sequence[WeakQuestion], embed: Callable[[list[str]], np.ndarray] | None = None
) -> list[Gap]:
    """Group the weak questions: equal normalised wordings merged and counted, then wordings that
    ask for the same thing (by embed, cosine >= COSINE_SAME; none without it) gathered
    under the most asked one. Wordings are compared with each group's leading wording only, so a
    group never drifts from it by a chain of small steps."""
    by_key: dict[str, list[WeakQuestion]] = {}
    for q in asked:  # oldest first: later spellings win ties
        by_key.setdefault(normalised(q.question) or q.question.strip(), []).append(q)
    keys = sorted(by_key, key=lambda k: (-len(by_key[k]), -_latest(by_key[k]), k))
    wordings = []
    for key in keys:
        spellings: dict[str, int] = {}
        for q in by_key[key]:
            spellings[q.question] = spellings.get(q.question, 0) + 1
        shown = max(reversed(list(spellings)), key=lambda s: spellings[s])
        wordings.append(Wording(shown, len(by_key[key])))
    members = _gathered(wordings, embed) if embed is not None else [[i] for i in range(len(wordings))]
    gaps = []
    for group in members:
        records = [q for i in group for q in by_key[keys[i]]]
        times = sorted(q.asked for q in records)
        gaps.append(
            Gap(
                question=wordings[group[0]].question,
                count=len(records),
                first_asked=times[0],
                last_asked=times[-1],
                servers=len({q.guild_id for q in records if q.guild_id is not None}),
                wordings=[wordings[i] for i in group],
            )
        )
    gaps.sort(key=lambda g: (-g.count, _neg_time(g.last_asked), g.question))
    return gaps


def _latest(records: list[WeakQuestion]) -> float:
    return max(dt.datetime.fromisoformat(q.asked).timestamp() for q in records)


def _neg_time(iso: str) -> float:
    return -dt.datetime.fromisoformat(iso).timestamp()


def _gathered(wordings: list[Wording], embed: Callable[[list[str]], np.ndarray]) -> list[list[int]]:
    """The wordings (most asked first) in groups: each of the first MOST_GROUPED joins the group
    whose leading wording is closest, when at least COSINE_SAME close, else leads a group of its
    own, as every later wording does."""
    vectors = np.asarray(embed([w.question for w in wordings[:MOST_GROUPED]]), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms > 0, norms, 1)
    leaders = np.empty_like(vectors)
    members: list[list[int]] = []
    for i, vector in enumerate(vectors):
        if members:
            cosines = leaders[: len(members)] @ vector
            closest = int(np.argmax(cosines))
            if cosines[closest] >= COSINE_SAME:
                members[closest].append(i)
                continue
        leaders[len(members)] = vector
        members.append([i])
    return members + [[i] for i in range(len(vectors), len(wordings))]


def list_weak_questions(
    settings: Settings,
    *,
    since: dt.date | None = None,
    guild_id: int | None = None,
    embed: Callable[[list[str]], np.ndarray] | None = None,
) -> tuple[list[Gap], int]:
    """The groups of weak questions (read_weak_questions, then group_weak_questions) and how many
    questions they hold. Blocking: the bot calls it from a thread."""
    asked, _ = read_weak_questions(settings, since=since, guild_id=guild_id)
    return group_weak_questions(asked, embed if len(asked) > 1 else None), len(asked)
