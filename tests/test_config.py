"""Settings are validated once, with one line naming the variable, and never echo a secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import cli
from embeddings.config import Settings
from embeddings.errors import ConfigError

TOKEN = "MTA4NzY1NDMyMTAxMjM0NTY3OA.GaBcDe.k3yB0ardSm4shQwErTyUiOpAsDfGhJkLzXcVbN"


@pytest.mark.parametrize(
    "name, value",
    [
        ("DISCORD_GUILD_ID", TOKEN),
        ("ADMIN_USER_IDS", f"123456789012345678,{TOKEN}"),
        ("ADMIN_ROLE_IDS", TOKEN),
        ("MAX_FILE_MB", TOKEN),
        ("WEAK_SCORE", TOKEN),
        ("ASK_COOLDOWN_SECONDS", TOKEN),
        ("ASK_COOLDOWN_RATE", TOKEN),
        ("SEARCH_WORKERS", TOKEN),
        ("SHARD_COUNT", TOKEN),
        ("RECORD_ASKERS", TOKEN),
        ("GAPS_KEEP_DAYS", TOKEN),
        ("REFRESH_EVERY", TOKEN),
        ("ADMIN_CHANNEL_ID", TOKEN),
    ],
)
def test_a_token_pasted_into_another_setting_is_never_echoed(name, value):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({name: value})
    message = str(refused.value)
    assert message.startswith(name) and "not shown" in message and "\n" not in message
    for part in TOKEN.split("."):
        assert part not in message
    # the same through the CLI: one Error line, no traceback, no token
    result = CliRunner().invoke(cli, ["stats"], env={name: value})
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and TOKEN.split(".")[0] not in result.output


@pytest.mark.parametrize(
    "name, value, why",
    [
        ("WEAK_SCORE", "nan", "must be a number from 0 to 1"),
        ("WEAK_SCORE", "inf", "must be a number from 0 to 1"),
        ("WEAK_SCORE", "-0.5", "must be a number from 0 to 1"),
        ("WEAK_SCORE", "1.5", "must be a number from 0 to 1"),
        ("ASK_COOLDOWN_SECONDS", "nan", "must be a number from 0 to 86400"),
        ("ASK_COOLDOWN_SECONDS", "-10", "must be a number from 0 to 86400"),
        ("ASK_COOLDOWN_SECONDS", "1e309", "must be a number from 0 to 86400"),
        ("ASK_COOLDOWN_RATE", "0", "ASK_COOLDOWN_RATE=0 is out of range (1..100)"),
        ("ASK_COOLDOWN_RATE", "2.5", "must be a whole number from 1 to 100"),
        ("MAX_FILE_MB", "-1", "MAX_FILE_MB=-1 is out of range (1..1024)"),
        ("MAX_FILE_MB", "9" * 5000, "not shown"),  # int() of 5,000 digits raised a ValueError traceback
        ("SEARCH_WORKERS", "0", "out of range (1..16)"),
        ("DISCORD_GUILD_ID", "²", "must be a Discord server id"),  # str.isdigit() accepted it; int() raised
        ("ADMIN_USER_IDS", "12,-3", "must be a comma-separated list of Discord ids"),
        ("ADMIN_ROLE_IDS", "99999999999999999999", "must be a comma-separated list"),  # over 64 bits
        ("GAPS_KEEP_DAYS", "0", "GAPS_KEEP_DAYS=0 is out of range (1..36500)"),
        ("RECORD_ASKERS", "maybe", "RECORD_ASKERS must be 1 (on) or 0 (off), got 'maybe'"),
    ],
)
def test_numeric_settings_out_of_their_range_are_refused_with_one_line(name, value, why):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({name: value})
    assert why in str(refused.value) and "\n" not in str(refused.value)


def test_sensible_values_are_accepted():
    settings = Settings.from_env(
        {
            "WEAK_SCORE": "0",
            "ASK_COOLDOWN_SECONDS": "0",
            "ASK_COOLDOWN_RATE": "+5",
            "DISCORD_GUILD_ID": "123456789012345678",
            "ADMIN_USER_IDS": " 1, 2 ,3 ",
            "MAX_FILE_MB": "1024",
        }
    )
    assert (settings.weak_score, settings.ask_cooldown_seconds, settings.ask_cooldown_rate) == (0.0, 0.0, 5)
    assert settings.discord_guild_id == 123456789012345678 and settings.admin_user_ids == {1, 2, 3}
    assert Settings.from_env({}) == Settings()
    assert (Settings().record_askers, Settings().gaps_keep_days) == (False, 90)  # askers are not kept by default
    on = Settings.from_env({"RECORD_ASKERS": "1", "GAPS_KEEP_DAYS": "7"})
    assert (on.record_askers, on.gaps_keep_days) == (True, 7)
    assert Settings.from_env({"RECORD_ASKERS": "0"}).record_askers is False


def test_dotenv_is_read_from_the_working_directory_and_the_environment_wins(tmp_path, monkeypatch):
    """After an install the package's folder holds no .env: the user's folder is the one read."""
    (tmp_path / ".env").write_text("CORPUS_DIR=articles\nINDEX_PATH=store/index.sqlite3\nWEAK_SCORE=0.5\n")
    for name in ("CORPUS_DIR", "INDEX_PATH", "WEAK_SCORE"):
        monkeypatch.delenv(name, raising=False)  # also undoes what reading .env sets
    monkeypatch.setenv("INDEX_PATH", "from-environment.sqlite3")
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env()
    assert settings.corpus_dir == Path("articles") and settings.weak_score == 0.5
    assert settings.index_path == Path("from-environment.sqlite3")


def test_a_dotenv_in_a_parent_folder_is_not_read(tmp_path, monkeypatch):
    """Only the working directory's .env counts, as its relative paths are relative to it."""
    (tmp_path / ".env").write_text("CORPUS_DIR=elsewhere\n")
    (tmp_path / "project").mkdir()
    for name in ("CORPUS_DIR", "INDEX_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path / "project")
    settings = Settings.from_env()
    assert (settings.corpus_dir, settings.index_path) == (Path("corpus"), Path("data/index.sqlite3"))


@pytest.mark.parametrize(
    "env, why",
    [
        ({"SHARD_COUNT": "0"}, "SHARD_COUNT=0 is out of range (1..100000)"),
        ({"SHARD_COUNT": "two"}, "SHARD_COUNT must be a whole number from 1 to 100000, got 'two'"),
        ({"SHARD_IDS": "1"}, "SHARD_IDS needs SHARD_COUNT"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "2"}, "shard ids from 0 to 1 (SHARD_COUNT=2), got '2'"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "0,-1"}, "shard ids from 0 to 1 (SHARD_COUNT=2), got '-1'"),
        ({"SHARD_COUNT": "4", "SHARD_IDS": "1,3,1"}, "SHARD_IDS lists shard 1 twice"),
    ],
)
def test_shard_settings_are_refused_with_one_line(env, why):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert why in str(refused.value) and "\n" not in str(refused.value)


def test_shard_settings():
    assert (Settings().shard_count, Settings().shard_ids) == (None, None)  # Discord's recommended count
    settings = Settings.from_env({"SHARD_COUNT": "4", "SHARD_IDS": " 3, 1,"})
    assert (settings.shard_count, settings.shard_ids) == (4, (1, 3))
    assert Settings.from_env({"SHARD_COUNT": "2", "SHARD_IDS": ""}).shard_ids is None


@pytest.mark.parametrize(
    "raw, seconds",
    [("", None), ("0", None), ("off", None), ("5m", 300.0), ("30m", 1800.0), ("2h", 7200.0), (" 1D ", 86400.0)],
)
def test_refresh_every_is_a_period_with_a_unit_and_off_by_default(raw, seconds):
    assert Settings.from_env({"REFRESH_EVERY": raw}).refresh_every == seconds
    assert Settings.from_env({}).refresh_every is None


@pytest.mark.parametrize("raw", ["30", "4m", "90s", "1.5h", "-1h", "31d", "2 hours", "h"])
def test_a_bad_or_too_short_refresh_period_is_one_line(raw):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"REFRESH_EVERY": raw})
    message = str(refused.value)
    assert message.startswith("REFRESH_EVERY must be a period from 5m to 30d") and "\n" not in message
    assert repr(raw.strip().lower().replace(" ", "")) in message


def test_admin_channel_id_is_a_discord_id():
    assert Settings.from_env({}).admin_channel_id is None
    assert Settings.from_env({"ADMIN_CHANNEL_ID": "123456789012345678"}).admin_channel_id == 123456789012345678
    with pytest.raises(ConfigError, match="^ADMIN_CHANNEL_ID must be a Discord channel id"):
        Settings.from_env({"ADMIN_CHANNEL_ID": "#admins"})
