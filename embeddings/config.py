"""All configuration, read once from the environment and an optional `.env` file.

Every value has a default that works with no `.env` at all; `.env.example` documents each one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import load_dotenv

from .errors import ConfigError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def _int(env: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range ({lo}..{hi})")
    return value


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _ids(env: dict[str, str], name: str) -> frozenset[int]:
    raw = env.get(name, "").replace(" ", "")
    ids = set()
    for part in filter(None, raw.split(",")):
        if not part.isdigit():
            raise ConfigError(f"{name} must be a comma-separated list of Discord ids, got {part!r}")
        ids.add(int(part))
    return frozenset(ids)


@dataclass(frozen=True)
class Settings:
    corpus_dir: Path = Path("corpus")
    index_path: Path = Path("data/index.sqlite3")
    embedding_model: str = DEFAULT_MODEL
    # Optional cross-encoder that re-orders the top RERANK_DEPTH passages; off when empty.
    rerank_model: str = ""
    max_file_bytes: int = 10 * 1024 * 1024
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

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, *, dotenv: bool = True) -> "Settings":
        if env is None:
            if dotenv:
                load_dotenv(override=False)
            env = dict(os.environ)
        guild = env.get("DISCORD_GUILD_ID", "").strip()
        if guild and not guild.isdigit():
            raise ConfigError(f"DISCORD_GUILD_ID must be a Discord server id (digits), got {guild!r}")
        return cls(
            corpus_dir=Path(env.get("CORPUS_DIR") or "corpus"),
            index_path=Path(env.get("INDEX_PATH") or "data/index.sqlite3"),
            embedding_model=(env.get("EMBEDDING_MODEL") or DEFAULT_MODEL).strip(),
            rerank_model=env.get("RERANK_MODEL", "").strip(),
            max_file_bytes=_int(env, "MAX_FILE_MB", 10, 1, 1024) * 1024 * 1024,
            weak_score=_float(env, "WEAK_SCORE", 0.30),
            discord_token=env.get("DISCORD_TOKEN", "").strip(),
            discord_guild_id=int(guild) if guild else None,
            admin_user_ids=_ids(env, "ADMIN_USER_IDS"),
            admin_role_ids=_ids(env, "ADMIN_ROLE_IDS"),
            ask_cooldown_seconds=_float(env, "ASK_COOLDOWN_SECONDS", 10.0),
            ask_cooldown_rate=_int(env, "ASK_COOLDOWN_RATE", 3, 1, 100),
            search_workers=_int(env, "SEARCH_WORKERS", 2, 1, 16),
        )
