"""All configuration, read once from the environment and an optional `.env` file.

The `.env` file is the one in the working directory (where the command runs), never one beside
the installed package; a variable set in the environment wins over the same name in `.env`.
Relative paths (CORPUS_DIR, INDEX_PATH) are relative to the working directory. Every value has a
default that works with no `.env` at all; `.env.example` documents each one.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import load_dotenv

from .errors import ConfigError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


# A value longer than this is not shown in an error: a Discord id has at most 20 digits, and a
# long value in the wrong variable is most likely a token pasted there.
_SHOWN_CHARACTERS = 20
_MAX_DISCORD_ID = 2**64 - 1  # ids are 64-bit snowflakes


def _shown(raw: str) -> str:
    """raw quoted for an error message, or only its length when it may be a secret."""
    if len(raw) > _SHOWN_CHARACTERS:
        return f"a value of {len(raw)} characters (not shown: it may be a secret)"
    return repr(raw)


def _int(env: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not re.fullmatch(r"[+-]?[0-9]{1,18}", raw):
        raise ConfigError(f"{name} must be a whole number from {lo} to {hi}, got {_shown(raw)}")
    value = int(raw)
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range ({lo}..{hi})")
    return value


def _float(env: dict[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number from {lo:g} to {hi:g}, got {_shown(raw)}") from None
    if not math.isfinite(value) or not lo <= value <= hi:  # NaN compares false with everything
        raise ConfigError(f"{name} must be a number from {lo:g} to {hi:g}, got {_shown(raw)}")
    return value


def _flag(env: dict[str, str], name: str) -> bool:
    raw = env.get(name, "").strip()
    if raw.lower() in ("", "0", "false", "no", "off"):
        return False
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 1 (on) or 0 (off), got {_shown(raw)}")


def _discord_id(name: str, raw: str, what: str) -> int:
    """A Discord id (a snowflake: ASCII digits, 64 bits)."""
    if not re.fullmatch(r"[0-9]{1,20}", raw) or int(raw) > _MAX_DISCORD_ID:
        raise ConfigError(f"{name} must be {what}, got {_shown(raw)}")
    return int(raw)


def _date_order(env: dict[str, str]) -> str | None:
    raw = env.get("DATE_ORDER", "").strip().upper()
    if not raw:
        return None
    if raw not in ("DMY", "MDY"):
        raise ConfigError(f"DATE_ORDER={raw!r} must be DMY (05.03.2024 is 5 March) or MDY (03/05/2024 is March 5)")
    return raw


def _index_url(env: dict[str, str]) -> str:
    raw = env.get("INDEX_URL", "").strip()
    if raw and not raw.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "INDEX_URL must be a postgresql:// URL (postgresql://user:password@host:5432/database); "
            "for an index file set INDEX_PATH"
        )
    return raw


def _ids(env: dict[str, str], name: str) -> frozenset[int]:
    raw = env.get(name, "").replace(" ", "")
    return frozenset(
        _discord_id(name, part, "a comma-separated list of Discord ids (digits)") for part in raw.split(",") if part
    )


# Far above what the largest bots run (Discord recommends one shard per 1,000 servers or so).
_MAX_SHARDS = 100_000


def _shards(env: dict[str, str]) -> tuple[int | None, tuple[int, ...] | None]:
    """SHARD_COUNT and SHARD_IDS. Both empty: Discord's recommended count, every shard in this
    process. SHARD_IDS splits the shards across processes, which must all agree on the count."""
    raw_ids = env.get("SHARD_IDS", "").replace(" ", "").strip(",")
    count = _int(env, "SHARD_COUNT", 0, 1, _MAX_SHARDS) or None
    if not raw_ids:
        return count, None
    if count is None:
        raise ConfigError(
            "SHARD_IDS needs SHARD_COUNT: set SHARD_COUNT to the total number of shards across all processes"
        )
    ids = []
    for part in raw_ids.split(","):
        if not re.fullmatch(r"[0-9]{1,6}", part) or int(part) >= count:
            raise ConfigError(
                f"SHARD_IDS must be a comma-separated list of shard ids from 0 to {count - 1} "
                f"(SHARD_COUNT={count}), got {_shown(part)}"
            )
        if int(part) in ids:
            raise ConfigError(f"SHARD_IDS lists shard {int(part)} twice; each shard runs in one process only")
        ids.append(int(part))
    return count, tuple(sorted(ids))


#: REFRESH_EVERY: seconds per unit; the bot fetches feeds and re-indexes at most this often.
_PERIOD_UNITS = {"m": 60, "h": 3600, "d": 86400}
MIN_REFRESH_SECONDS = 5 * 60  # a feed fetched more often than this gains nothing but load on its site
MAX_REFRESH_SECONDS = 30 * 86400


def _refresh_every(env: dict[str, str]) -> float | None:
    """REFRESH_EVERY such as 30m, 2h or 1d, in seconds; None (off) when empty, 0 or off."""
    raw = env.get("REFRESH_EVERY", "").strip().lower().replace(" ", "")
    if raw in ("", "0", "off"):
        return None
    match = re.fullmatch(r"([0-9]{1,6})([mhd])", raw)
    seconds = int(match[1]) * _PERIOD_UNITS[match[2]] if match else 0
    if not MIN_REFRESH_SECONDS <= seconds <= MAX_REFRESH_SECONDS:
        raise ConfigError(
            "REFRESH_EVERY must be a period from 5m to 30d such as 30m, 2h or 1d (m minutes, h hours, d days), "
            f"or empty for no scheduled refresh; got {_shown(raw)}"
        )
    return float(seconds)


@dataclass(frozen=True)
class Settings:
    corpus_dir: Path = Path("corpus")
    index_path: Path = Path("data/index.sqlite3")
    # A postgresql:// URL: the index in PostgreSQL (embeddings/postgres/) instead of the file at
    # index_path. Not shown in repr: it may hold a password.
    index_url: str = field(default="", repr=False)
    embedding_model: str = DEFAULT_MODEL
    # Optional cross-encoder that re-orders the top RERANK_DEPTH passages; off when empty.
    rerank_model: str = ""
    max_file_bytes: int = 10 * 1024 * 1024
    # How numeric dates such as 03/05/2024 are read where the article's language does not decide;
    # None leaves them undated.
    date_order: str | None = None
    # Cosine under which a passage that lacks the question's rare words is weak; calibrated in docs/retrieval.md.
    weak_score: float = 0.30
    # Discord side (read here so configuration lives in one place; the bot package uses them).
    discord_token: str = field(default="", repr=False)
    discord_guild_id: int | None = None
    admin_user_ids: frozenset[int] = frozenset()
    admin_role_ids: frozenset[int] = frozenset()
    ask_cooldown_seconds: float = 10.0
    ask_cooldown_rate: int = 3
    search_workers: int = 2
    # Gateway shards: None asks Discord for its recommended count and runs every shard here.
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None
    # News feeds (embeddings/feeds/): fetching stays on public hosts unless allowed here (tests, intranets).
    feeds_allow_private_hosts: bool = False
    feeds_max_new_per_fetch: int = 100
    feeds_host_interval_seconds: float = 1.0
    feeds_timeout_seconds: float = 20.0
    feeds_max_bytes: int = 5 * 1024 * 1024
    # Weak questions asked in Discord (embeddings/gaps.py): whether the asker's user id is kept
    # with them (off: only the text, the time and the server), and for how many days they are kept.
    record_askers: bool = False
    gaps_keep_days: int = 90
    # Scheduled refresh in the bot: fetch the feeds and re-index every this many seconds (None: off).
    # from_env keeps it within MIN_REFRESH_SECONDS..MAX_REFRESH_SECONDS.
    refresh_every: float | None = None
    # The channel where the bot posts what a scheduled refresh changed or what failed (None: the log only).
    admin_channel_id: int | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, *, dotenv: bool = True) -> Settings:
        if env is None:
            if dotenv:
                # An explicit path: without one, python-dotenv searches upwards from the calling
                # module's folder, which after an install is site-packages, not the user's folder.
                load_dotenv(Path.cwd() / ".env", override=False)
            env = dict(os.environ)
        guild = env.get("DISCORD_GUILD_ID", "").strip()
        admin_channel = env.get("ADMIN_CHANNEL_ID", "").strip()
        shard_count, shard_ids = _shards(env)
        return cls(
            corpus_dir=Path(env.get("CORPUS_DIR") or "corpus"),
            index_path=Path(env.get("INDEX_PATH") or "data/index.sqlite3"),
            index_url=_index_url(env),
            embedding_model=(env.get("EMBEDDING_MODEL") or DEFAULT_MODEL).strip(),
            rerank_model=env.get("RERANK_MODEL", "").strip(),
            max_file_bytes=_int(env, "MAX_FILE_MB", 10, 1, 1024) * 1024 * 1024,
            date_order=_date_order(env),
            weak_score=_float(env, "WEAK_SCORE", 0.30, 0.0, 1.0),
            discord_token=env.get("DISCORD_TOKEN", "").strip(),
            discord_guild_id=_discord_id("DISCORD_GUILD_ID", guild, "a Discord server id (digits)") if guild else None,
            admin_user_ids=_ids(env, "ADMIN_USER_IDS"),
            admin_role_ids=_ids(env, "ADMIN_ROLE_IDS"),
            ask_cooldown_seconds=_float(env, "ASK_COOLDOWN_SECONDS", 10.0, 0.0, 86400.0),  # 0: no cooldown
            ask_cooldown_rate=_int(env, "ASK_COOLDOWN_RATE", 3, 1, 100),
            search_workers=_int(env, "SEARCH_WORKERS", 2, 1, 16),
            shard_count=shard_count,
            shard_ids=shard_ids,
            feeds_allow_private_hosts=_flag(env, "FEEDS_ALLOW_PRIVATE_HOSTS"),
            feeds_max_new_per_fetch=_int(env, "FEEDS_MAX_NEW_PER_FETCH", 100, 1, 100_000),
            feeds_host_interval_seconds=_float(env, "FEEDS_HOST_INTERVAL_SECONDS", 1.0, 0.0, 3600.0),
            feeds_timeout_seconds=_float(env, "FEEDS_TIMEOUT_SECONDS", 20.0, 0.01, 600.0),
            feeds_max_bytes=_int(env, "FEEDS_MAX_MB", 5, 1, 1024) * 1024 * 1024,
            record_askers=_flag(env, "RECORD_ASKERS"),
            gaps_keep_days=_int(env, "GAPS_KEEP_DAYS", 90, 1, 36500),
            refresh_every=_refresh_every(env),
            admin_channel_id=(
                _discord_id("ADMIN_CHANNEL_ID", admin_channel, "a Discord channel id (digits)")
                if admin_channel
                else None
            ),
        )
