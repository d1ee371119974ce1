"""A small in-process fake of Discord's REST API and gateway for tests.

The REAL, unpatched discord.py client logs in to it: only two class attributes
are redirected (``discord.http.Route.BASE`` and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``), see
:meth:`FakeDiscord.patched`.  Everything else (login, ``setup_hook``, command
sync, gateway READY / GUILD_CREATE, interaction dispatch, app-command checks,
cooldowns, error handlers, the webhook/interaction HTTP path, rate-limit
retries) is discord.py's own code.

Typical use (plain ``asyncio.run``, no pytest-asyncio needed)::

    from tests.fake_discord import running_bot, run

    def test_echo():
        async def main():
            bot = build_bot()                      # guild_ready_timeout=0.05 !
            async with running_bot(bot) as fake:   # starts fake, logs in, waits for ready
                rec = await fake.send_slash("echo", {"text": "hi"})
                final = await rec.wait_final(timeout=5)
                assert rec.deferred and rec.response_delay < 3
                assert final.payload["embeds"][0]["description"] == "hi"
        run(main())

Ids exposed as attributes (``fake.guild_id``, ``fake.app_id`` ...) are ``int``;
ids inside JSON payloads are strings, as on the real API.

Behaviour modelled after the real API (and useful to test against):

* an interaction can be acknowledged once (second callback -> 400 code 40060)
  and only within ``callback_deadline`` seconds of delivery (-> 404 code 10062
  "Unknown interaction"), like Discord's 3 s window;
* after a ``type 5`` defer, the FIRST followup edits the loading message
  instead of creating a new one, and keeps the defer's ephemeral flag (Discord's
  documented backwards-compatibility behaviour);
* 429 answers carry ``retry_after`` plus ``Retry-After``/``X-RateLimit-*`` and a
  ``Via`` header (discord.py treats a 429 without ``Via`` as a Cloudflare ban and
  raises instead of retrying);
* JSON responses carry ``Content-Type: application/json`` exactly (discord.py
  treats ``application/json; charset=utf-8`` as text).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import itertools
import json
import re
import secrets
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import discord
import discord.gateway
import discord.http
import yarl
from aiohttp import WSMsgType, web

__all__ = [
    "FakeDiscord",
    "InteractionRecord",
    "Event",
    "Fault",
    "running_bot",
    "run",
    "MANAGE_GUILD",
    "ADMINISTRATOR",
    "DEFAULT_MEMBER_PERMISSIONS",
    "ROUTE_CALLBACK",
    "ROUTE_FOLLOWUP",
    "ROUTE_WEBHOOK_MESSAGE",
    "ROUTE_ORIGINAL",
    "ROUTE_SYNC",
    "ROUTE_CHANNEL_MESSAGES",
]

MANAGE_GUILD: int = discord.Permissions.manage_guild.flag  # 1 << 5
ADMINISTRATOR: int = discord.Permissions.administrator.flag  # 1 << 3
#: what an ordinary member typically has (no manage_guild / administrator).
DEFAULT_MEMBER_PERMISSIONS: int = discord.Permissions(
    view_channel=True,
    send_messages=True,
    read_message_history=True,
    embed_links=True,
    attach_files=True,
    add_reactions=True,
    use_application_commands=True,
).value
#: permissions of the bot in the channel (``app_permissions``).
DEFAULT_APP_PERMISSIONS: int = (discord.Permissions.text() | discord.Permissions(view_channel=True)).value

# Route patterns (regex, matched with re.search against the path after /api/v10)
ROUTE_CALLBACK = r"^/interactions/\d+/[^/]+/callback$"
ROUTE_FOLLOWUP = r"^/webhooks/\d+/[^/]+$"  # POST = followup.send
ROUTE_WEBHOOK_MESSAGE = r"^/webhooks/\d+/[^/]+/messages/[^/]+$"  # GET/PATCH/DELETE
ROUTE_ORIGINAL = r"^/webhooks/\d+/[^/]+/messages/@original$"
ROUTE_SYNC = r"^/applications/\d+/(guilds/\d+/)?commands$"
ROUTE_CHANNEL_MESSAGES = r"^/channels/\d+/messages$"

DISCORD_EPOCH_MS = 1420070400000
MSG_FLAG_EPHEMERAL = 1 << 6
MSG_FLAG_LOADING = 1 << 7

# Callback types whose payload carries message content.
_MESSAGE_CALLBACKS = (4, 7)


def _now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


def _json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # NB: exactly "application/json" -- discord.py's json_or_text compares the header verbatim.
    h = {"Content-Type": "application/json"}
    if headers:
        h.update(headers)
    return web.Response(status=status, body=json.dumps(data).encode(), headers=h)


def _error(status: int, code: int, message: str) -> web.Response:
    return _json_response({"code": code, "message": message}, status=status)


# --------------------------------------------------------------------------- records


@dataclass
class Event:
    """One HTTP request the bot made for an interaction (or a channel)."""

    time: float  #: time.monotonic() at arrival
    method: str
    path: str  #: path after /api/v10
    kind: str  #: "callback" | "followup" | "edit" | "get" | "delete" | "channel_message" | other
    payload: dict[str, Any] | None  #: JSON body (or the payload_json part of multipart)
    status: int = 200  #: status the fake answered
    query: dict[str, str] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)  #: [{"name", "filename", "content": bytes}]
    message: dict[str, Any] | None = None  #: snapshot of the resulting message, if any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def callback_type(self) -> int | None:
        return (self.payload or {}).get("type") if self.kind == "callback" else None

    @property
    def data(self) -> dict[str, Any]:
        """Message-ish body: ``payload["data"]`` for callbacks, else the payload."""
        if self.kind == "callback":
            return (self.payload or {}).get("data") or {}
        return self.payload or {}

    @property
    def content(self) -> str | None:
        return self.data.get("content")

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return self.data.get("embeds") or []

    @property
    def flags(self) -> int:
        return int(self.data.get("flags") or 0)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & MSG_FLAG_EPHEMERAL)

    @property
    def allowed_mentions(self) -> dict[str, Any] | None:
        return self.data.get("allowed_mentions")

    @property
    def components(self) -> list[dict[str, Any]]:
        return self.data.get("components") or []

    @property
    def is_content(self) -> bool:
        """True for requests that carry message content (message/update callbacks, followups, edits)."""
        if self.kind == "callback":
            return self.callback_type in _MESSAGE_CALLBACKS
        return self.kind in ("followup", "edit")


class InteractionRecord:
    """Everything the bot did in answer to one dispatched interaction."""

    def __init__(self, fake: FakeDiscord, payload: dict[str, Any]):
        self.fake = fake
        self.payload = payload  #: the INTERACTION_CREATE ``d`` that was dispatched
        self.id: int = int(payload["id"])
        self.token: str = payload["token"]
        self.type: int = payload["type"]
        self.delivered_at: float = 0.0  #: time.monotonic() right after the gateway frame was sent
        self.events: list[Event] = []
        self.acknowledged: bool = False
        #: set once Discord would answer 10062 for this interaction (deadline missed or
        #: an injected 10062); every later callback/webhook request then gets 10062 too.
        self.expired: bool = False
        self.original_message_id: int | None = None
        self.followup_ids: list[int] = []
        self._first_followup_edits_original = False
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        evs = ", ".join(f"{e.method} {e.kind}:{e.status}" for e in self.events)
        return f"<InteractionRecord id={self.id} type={self.type} events=[{evs}]>"

    # -- derived views -------------------------------------------------------------
    @property
    def ok_events(self) -> list[Event]:
        return [e for e in self.events if e.ok]

    @property
    def callback(self) -> Event | None:
        """The (first) successful initial response, or None."""
        return next((e for e in self.events if e.kind == "callback" and e.ok), None)

    @property
    def callback_type(self) -> int | None:
        cb = self.callback
        return cb.callback_type if cb else None

    @property
    def deferred(self) -> bool:
        return self.callback_type in (5, 6)

    @property
    def response_delay(self) -> float | None:
        """Seconds between delivery and the successful initial response."""
        cb = self.callback
        return None if cb is None else cb.time - self.delivered_at

    @property
    def ephemeral(self) -> bool:
        """Whether the original response is ephemeral (flag 64 on defer/message)."""
        orig = self.original
        if orig is not None and self.type != 3:
            return bool(orig.get("flags", 0) & MSG_FLAG_EPHEMERAL)
        cb = self.callback
        return bool(cb and cb.ephemeral)

    @property
    def original(self) -> dict[str, Any] | None:
        """Current state of the original response message (for component
        interactions: the message the component belongs to)."""
        if self.original_message_id is None:
            return None
        return self.fake.messages.get(self.original_message_id)

    @property
    def followups(self) -> list[dict[str, Any]]:
        return [self.fake.messages[i] for i in self.followup_ids if i in self.fake.messages]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Original (if any) followed by followups, current state."""
        out = [self.original] if self.original is not None else []
        return out + self.followups

    @property
    def content_events(self) -> list[Event]:
        return [e for e in self.events if e.ok and e.is_content]

    @property
    def choices(self) -> list[dict[str, Any]] | None:
        """Autocomplete choices (callback type 8), or None."""
        cb = self.callback
        if cb is None or cb.callback_type != 8:
            return None
        return cb.data.get("choices", [])

    # -- waiting ------------------------------------------------------------------
    def _touch(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[InteractionRecord], Any], timeout: float = 5.0) -> Any:
        """Wait until ``predicate(self)`` is truthy; return its value. TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s: {self!r}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_response(self, timeout: float = 5.0) -> Event:
        """Wait for the successful initial response (callback)."""
        return await self.wait_for(lambda r: r.callback, timeout)

    async def wait_final(self, timeout: float = 5.0, settle: float = 0.1) -> Event:
        """Wait for a content-bearing response (message callback, followup or
        edit), then until no new request arrived for ``settle`` seconds; return
        the last content event (``.payload`` is what the bot sent,
        ``.message`` the resulting message)."""
        deadline = time.monotonic() + timeout
        await self.wait_for(lambda r: r.content_events, timeout)
        while True:
            n = len(self.events)
            await asyncio.sleep(min(settle, max(0.0, deadline - time.monotonic())))
            if len(self.events) == n or time.monotonic() >= deadline:
                return self.content_events[-1]


@dataclass
class Fault:
    """An injected failure: the next ``remaining`` matching requests get ``status``/``body``."""

    pattern: re.Pattern[str]
    method: str
    status: int
    body: Any
    headers: dict[str, str]
    remaining: int
    delay: float = 0.0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.remaining > 0 and self.method in ("*", method) and bool(self.pattern.search(path))


class _GatewayConn:
    def __init__(self, ws: web.WebSocketResponse, compress: bool):
        self.ws = ws
        self.zobj = zlib.compressobj() if compress else None
        self.lock = asyncio.Lock()
        self.identified = asyncio.Event()
        self.shard: list[int] | None = None  #: [id, count] from IDENTIFY

    def serves(self, guild_id: int | None) -> bool:
        """Whether Discord sends this guild's events (a DM's when None) on this connection."""
        if self.shard is None:
            return True
        shard_id, count = self.shard
        return shard_id == (0 if guild_id is None else (guild_id >> 22) % count)

    async def send(self, obj: dict[str, Any]) -> None:
        raw = json.dumps(obj)
        async with self.lock:
            if self.zobj is not None:
                data = self.zobj.compress(raw.encode()) + self.zobj.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(data)
            else:
                await self.ws.send_str(raw)


# --------------------------------------------------------------------------- the fake


class FakeDiscord:
    """Fake Discord REST (``/api/v10``) + gateway (``/``) on 127.0.0.1, random port.

    Public attributes (ids are ints):
      ``port``, ``app_id``, ``guild_id``, ``channel_id``, ``owner_id``, ``bot_user``
      (user payload dict), ``guild`` (GUILD_CREATE payload), ``channel`` (text channel
      payload), ``default_member`` (member used when none is given),
      ``messages`` (id -> current message dict), ``interactions`` (list of records),
      ``requests`` (every REST request as :class:`Event`), ``channel_messages``
      (events for ``POST /channels/{id}/messages``), ``global_commands`` /
      ``guild_commands`` (what ``tree.sync`` PUT, with ids), ``sync_calls``,
      ``heartbeats`` (monotonic receive times), ``heartbeat_interval`` (seconds),
      ``identify_payloads``, ``gateway_query``, ``gateway_received`` (all gateway frames).

    Knobs: ``invalid_token`` (``GET /users/@me`` -> 401), ``callback_deadline``
    (seconds, None = unlimited), ``app_permissions``, ``compress_gateway``,
    ``recommended_shards`` (the ``shards`` of ``GET /gateway/bot``), ``required_shards`` (an
    IDENTIFY with fewer shards is closed with 4011, "Sharding required").

    Sharding as on Discord: a connection that IDENTIFYs with ``shard`` [id, count] gets the
    guilds with ``(guild_id >> 22) % count == id`` (in READY and GUILD_CREATE), and only their
    events; DM events go to shard 0. :meth:`add_guild` adds a guild on a chosen shard,
    ``dispatched`` records which shard each event was sent on.
    """

    def __init__(
        self,
        *,
        heartbeat_interval_ms: int = 1000,
        callback_deadline: float | None = 3.0,
        compress_gateway: bool = True,
        bot_name: str = "FakeBot",
        guild_name: str = "Fake Guild",
        channel_name: str = "general",
    ) -> None:
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.callback_deadline = callback_deadline
        self.compress_gateway = compress_gateway
        self.invalid_token = False
        self.app_permissions = DEFAULT_APP_PERMISSIONS
        self.recommended_shards = 1
        self.required_shards = 1
        self.port: int = 0

        self._counter = itertools.count(1)
        self.app_id: int = self.snowflake()
        self.owner_id: int = self.snowflake()
        self.guild_id: int = self.snowflake()
        self.channel_id: int = self.snowflake()
        self.dm_channel_id: int = self.snowflake()
        self.session_id = secrets.token_hex(16)

        self.bot_user: dict[str, Any] = {
            "id": str(self.app_id),  # a bot's user id equals its application id
            "username": bot_name,
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
            "public_flags": 0,
        }
        self.owner_user = self.make_user(self.owner_id, name="owner")
        self.default_member = self.make_member(name="alice", permissions=DEFAULT_MEMBER_PERMISSIONS)
        #: every guild the bot is in (id -> GUILD_CREATE payload); ``guild`` is the first.
        self.guilds: dict[int, dict[str, Any]] = {}
        self.guild = self._make_guild(self.guild_id, self.channel_id, guild_name, channel_name)
        self.channel: dict[str, Any] = self.guild["channels"][0]
        self.everyone_role: dict[str, Any] = self.guild["roles"][0]

        # recordings
        self.messages: dict[int, dict[str, Any]] = {}
        self.interactions: list[InteractionRecord] = []
        self._by_id: dict[int, InteractionRecord] = {}
        self._by_token: dict[str, InteractionRecord] = {}
        self.requests: list[Event] = []
        self.channel_messages: list[Event] = []
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.sync_calls: list[Event] = []
        self.heartbeats: list[float] = []
        self.identify_payloads: list[dict[str, Any]] = []
        self.gateway_query: dict[str, str] = {}
        self.gateway_received: list[tuple] = []
        #: (shard [id, count] of the connection or None when it identified without one, event, d)
        self.dispatched: list[tuple[list[int] | None, str, Any]] = []
        self.faults: list[Fault] = []
        self.seq = 0

        self._conns: list[_GatewayConn] = []
        self._identified = asyncio.Event() if _has_loop() else None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> FakeDiscord:
        if self._identified is None:
            self._identified = asyncio.Event()
        app = web.Application()
        app.router.add_get("/", self._ws_handler)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest_handler)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        # backlog: the default (128) drops the SYNs of a burst of new connections (200 interactions
        # answered at once); the client's kernel retries them only after 1 s, which would show
        # as a 1 s "defer delay" that real Discord does not cause.
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        for conn in list(self._conns):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1000)
        self._conns.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @contextlib.contextmanager
    def patched(self) -> Iterator[FakeDiscord]:
        """Point discord.py at this fake (Route.BASE + DEFAULT_GATEWAY); restore on exit."""
        old_base = discord.http.Route.BASE
        old_gw = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.base_url
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield self
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gw

    # ------------------------------------------------------------------ factories
    def snowflake(self, shard: tuple[int, int] | None = None) -> int:
        """A fresh snowflake whose timestamp is 'now' (increasing); with ``shard`` (id, count),
        one whose timestamp is moved back up to count - 1 ms so that, as a guild id, it belongs
        to that shard."""
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        if shard is not None:
            ms -= (ms - shard[0]) % shard[1]
        return (ms << 22) | (next(self._counter) & 0x3FFFFF)

    def add_guild(self, *, shard: tuple[int, int] | None = None, name: str = "Other Guild") -> int:
        """Another guild the bot is in (with a text channel and the same members), on ``shard``
        (id, count) if given; returns its id. Add guilds before the bot connects."""
        gid = self.snowflake(shard)
        self._make_guild(gid, self.snowflake(), name, "general")
        return gid

    def _make_guild(self, gid: int, cid: int, name: str, channel_name: str) -> dict[str, Any]:
        everyone_role: dict[str, Any] = {
            "id": str(gid),
            "name": "@everyone",
            "permissions": str(DEFAULT_MEMBER_PERMISSIONS),
            "position": 0,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
            "icon": None,
            "unicode_emoji": None,
        }
        channel: dict[str, Any] = {
            "id": str(cid),
            "type": 0,
            "guild_id": str(gid),
            "name": channel_name,
            "position": 0,
            "permission_overwrites": [],
            "parent_id": None,
            "topic": None,
            "nsfw": False,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "flags": 0,
        }
        bot_member = self.make_member(int(self.bot_user["id"]), name=self.bot_user["username"], bot=True)
        bot_member["user"] = self.bot_user
        owner_member = self.make_member(self.owner_id, name="owner", permissions=ADMINISTRATOR)
        owner_member["user"] = self.owner_user
        members = [_strip_perms(m) for m in (bot_member, owner_member, self.default_member)]
        guild: dict[str, Any] = {
            "id": str(gid),
            "name": name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [everyone_role],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": str(cid),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": _now_iso(),
            "large": False,
            "unavailable": False,
            "member_count": len(members),  # == len(members): no chunking needed
            "voice_states": [],
            "members": members,
            "channels": [channel],
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }
        self.guilds[gid] = guild
        return guild

    def make_user(self, user_id: int | None = None, *, name: str = "user", bot: bool = False) -> dict[str, Any]:
        uid = user_id if user_id is not None else self.snowflake()
        return {
            "id": str(uid),
            "username": name,
            "discriminator": "0",
            "global_name": name.title(),
            "avatar": None,
            "bot": bot,
            "public_flags": 0,
        }

    def make_member(
        self,
        user_id: int | None = None,
        *,
        permissions: int = 0,
        roles: Sequence[int] = (),
        name: str | None = None,
        nick: str | None = None,
        bot: bool = False,
    ) -> dict[str, Any]:
        """Interaction ``member`` payload. ``permissions`` is what app-command
        permission checks read (``Interaction.permissions``)."""
        uid = user_id if user_id is not None else self.snowflake()
        return {
            "user": self.make_user(uid, name=name or f"user{uid % 10000}", bot=bot),
            "roles": [str(r) for r in roles],
            "nick": nick,
            "avatar": None,
            "banner": None,
            "joined_at": _now_iso(),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
            "permissions": str(int(permissions)),
        }

    def make_message(
        self,
        content: str = "",
        *,
        author: dict[str, Any] | None = None,
        channel_id: int | None = None,
        embeds: list[dict[str, Any]] | None = None,
        store: bool = True,
    ) -> dict[str, Any]:
        """A message by ``author`` (a user dict; default: the default member's user) in the text channel."""
        mid = self.snowflake()
        msg = {
            "id": str(mid),
            "channel_id": str(channel_id or self.channel_id),
            "guild_id": str(self.guild_id),
            "author": author or self.default_member["user"],
            "content": content,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": embeds or [],
            "components": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        if store:
            self.messages[mid] = msg
        return msg

    # ------------------------------------------------------------------ commands
    @property
    def synced_commands(self) -> list[dict[str, Any]]:
        """All commands currently registered (global + every guild), as returned to the bot.
        Guild commands carry ``guild_id``."""
        out = list(self.global_commands)
        for cmds in self.guild_commands.values():
            out.extend(cmds)
        return out

    def command(self, name: str, *, type: int = 1, guild: bool = True) -> dict[str, Any] | None:
        """Find a synced command (guild first when ``guild``), or None."""
        pools = ([self.guild_commands.get(self.guild_id, [])] if guild else []) + [self.global_commands]
        for pool in pools:
            for c in pool:
                if c["name"] == name and c.get("type", 1) == type:
                    return c
        return None

    def can_use(self, name: str, member: dict[str, Any] | None = None, *, type: int = 1) -> bool:
        """Would Discord show this command to ``member``? (``default_member_permissions``)."""
        cmd = self.command(name, type=type)
        if cmd is None:
            return False
        required = cmd.get("default_member_permissions")
        if required is None:
            return True
        perms = int((member or self.default_member).get("permissions", 0))
        if perms & ADMINISTRATOR:
            return True
        req = int(required)
        return req != 0 and perms & req == req

    # ------------------------------------------------------------------ faults
    def fail_next(
        self,
        pattern: str,
        status: int = 500,
        body: Any = None,
        *,
        method: str = "*",
        count: int = 1,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Answer the next ``count`` requests whose path (after /api/v10) matches the
        regex ``pattern`` (and ``method``, "*" = any) with ``status``/``body``.
        ``delay`` sleeps before answering (use status=0 to only delay, then handle normally)."""
        if body is None:
            body = {"code": 0, "message": f"{status}: injected by FakeDiscord"}
        f = Fault(re.compile(pattern), method.upper(), status, body, dict(headers or {}), count, delay)
        self.faults.append(f)
        return f

    def rate_limit_next(
        self,
        pattern: str,
        retry_after: float = 0.2,
        *,
        method: str = "*",
        count: int = 1,
        is_global: bool = False,
    ) -> Fault:
        """Next ``count`` matching requests get a realistic 429."""
        headers = {
            "Retry-After": str(max(1, int(retry_after + 0.999))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            "X-RateLimit-Bucket": "fakebucket" + secrets.token_hex(4),
            "X-RateLimit-Scope": "global" if is_global else "user",
            "Via": "1.1 google",  # discord.py: a 429 without Via is a Cloudflare ban -> no retry
        }
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global, "code": 0}
        return self.fail_next(pattern, 429, body, method=method, count=count, headers=headers)

    def unknown_interaction_next(self, pattern: str = ROUTE_CALLBACK, *, count: int = 1, method: str = "*") -> Fault:
        """Next matching request -> 404 ``{"code": 10062, "message": "Unknown interaction"}``."""
        return self.fail_next(
            pattern, 404, {"code": 10062, "message": "Unknown interaction"}, method=method, count=count
        )

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for f in self.faults:
            if f.matches(method, path):
                f.remaining -= 1
                f.hits += 1
                return f
        return None

    # ------------------------------------------------------------------ gateway
    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        self.gateway_query = dict(request.query)
        compress = self.compress_gateway and request.query.get("compress") == "zlib-stream"
        conn = _GatewayConn(ws, compress)
        self._conns.append(conn)
        try:
            await conn.send({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None})
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                op, d = frame.get("op"), frame.get("d")
                now = time.monotonic()
                self.gateway_received.append((now, op, d))
                if op == 1:
                    self.heartbeats.append(now)
                    await conn.send({"op": 11, "d": None, "s": None, "t": None})
                elif op == 2:
                    self.identify_payloads.append(d)
                    conn.shard = (d or {}).get("shard")
                    if self.invalid_token:
                        await ws.close(code=4004, message=b"Authentication failed.")
                        break
                    if (conn.shard or [0, 1])[1] < self.required_shards:
                        await ws.close(code=4011, message=b"Sharding required.")
                        break
                    await self._send_ready(conn)
                elif op == 6:  # RESUME
                    await self._dispatch_on(conn, "RESUMED", {})
                elif op == 8:  # REQUEST_GUILD_MEMBERS
                    await self._dispatch_on(
                        conn,
                        "GUILD_MEMBERS_CHUNK",
                        {
                            "guild_id": str(self.guild_id),
                            "members": self.guild["members"],
                            "chunk_index": 0,
                            "chunk_count": 1,
                            "not_found": [],
                            "nonce": (d or {}).get("nonce"),
                        },
                    )
        finally:
            if conn in self._conns:
                self._conns.remove(conn)
        return ws

    async def _send_ready(self, conn: _GatewayConn) -> None:
        ready = {
            "v": 10,
            "user": self.bot_user,
            "guilds": [{"id": str(gid), "unavailable": True} for gid in self.guilds if conn.serves(gid)],
            "session_id": self.session_id,
            "resume_gateway_url": self.gateway_url,
            "shard": conn.shard or [0, 1],
            "application": {"id": str(self.app_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "user_settings": {},
            "presences": [],
            "geo_ordered_rtc_regions": [],
            "guild_join_requests": [],
        }
        await self._dispatch_on(conn, "READY", ready)
        for gid, guild in self.guilds.items():
            if conn.serves(gid):
                await self._dispatch_on(conn, "GUILD_CREATE", guild)
        conn.identified.set()
        assert self._identified is not None
        self._identified.set()

    async def _dispatch_on(self, conn: _GatewayConn, event: str, data: Any) -> None:
        self.seq += 1
        self.dispatched.append((conn.shard, event, data))
        await conn.send({"op": 0, "t": event, "s": self.seq, "d": data})

    async def dispatch(self, event: str, data: Any) -> float:
        """Send a DISPATCH (op 0) to the connected client (to the shard of the payload's
        guild_id); returns the monotonic send time."""
        assert self._identified is not None, "start() the fake first"
        await asyncio.wait_for(self._identified.wait(), 10)
        gid = data.get("guild_id") if isinstance(data, dict) else None
        gid = int(gid) if gid is not None else None
        conns = [c for c in self._conns if c.identified.is_set() and not c.ws.closed and c.serves(gid)]
        if not conns:
            raise RuntimeError(f"no identified gateway connection serves guild {gid}")
        for c in conns:
            await self._dispatch_on(c, event, data)
        return time.monotonic()

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat_interval_ms / 1000.0

    def heartbeat_gaps(self) -> list[float]:
        hb = self.heartbeats
        return [b - a for a, b in zip(hb, hb[1:])]

    # ------------------------------------------------------------------ interactions
    def _interaction_base(
        self,
        itype: int,
        data: dict[str, Any] | None,
        *,
        member: dict[str, Any] | None,
        dm_user: dict[str, Any] | None,
        locale: str = "en-US",
        message: dict[str, Any] | None = None,
        guild_id: int | None = None,
    ) -> dict[str, Any]:
        iid = self.snowflake()
        guild = self.guilds[guild_id or self.guild_id]
        gid, channel = guild["id"], guild["channels"][0]
        p: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.app_id),
            "type": itype,
            "token": f"fake{iid}{secrets.token_hex(16)}",
            "version": 1,
            "attachment_size_limit": 10 * 1024 * 1024,
            "app_permissions": str(self.app_permissions),
            "locale": locale,
            "entitlements": [],
        }
        if data is not None:
            p["data"] = data
        if dm_user is not None:
            p["user"] = dm_user
            p["channel_id"] = str(self.dm_channel_id)
            p["channel"] = {
                "id": str(self.dm_channel_id),
                "type": 1,
                "recipients": [dm_user],
                "last_message_id": None,
                "flags": 0,
            }
            p["context"] = 1
            p["authorizing_integration_owners"] = {"0": str(self.guild_id)}
        else:
            p["guild_id"] = gid
            p["guild"] = {"id": gid, "locale": "en-US", "features": []}
            p["guild_locale"] = "en-US"
            p["channel_id"] = channel["id"]
            p["channel"] = dict(channel)
            p["member"] = member if member is not None else self.default_member
            p["context"] = 0
            p["authorizing_integration_owners"] = {"0": gid}
        if message is not None:
            p["message"] = message
        return p

    async def send_interaction(self, payload: dict[str, Any]) -> InteractionRecord:
        """Dispatch a raw INTERACTION_CREATE payload and start recording it."""
        rec = InteractionRecord(self, payload)
        self.interactions.append(rec)
        self._by_id[rec.id] = rec
        self._by_token[rec.token] = rec
        if payload["type"] == 3 and payload.get("message"):
            rec.original_message_id = int(payload["message"]["id"])
        rec.delivered_at = await self.dispatch("INTERACTION_CREATE", payload)
        return rec

    def _command_data(self, name: str, ctype: int, dm: bool) -> dict[str, Any]:
        cmd = self.command(name, type=ctype, guild=not dm)
        data: dict[str, Any] = {"id": cmd["id"] if cmd else str(self.snowflake()), "name": name, "type": ctype}
        if cmd is not None and cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        return data

    def _build_options(
        self, name: str, options: None | dict[str, Any] | list[dict[str, Any]], focused: str | None = None
    ) -> tuple:
        """Build option payloads (+ resolved) from {name: value}. Types come from the synced
        command when known, else are inferred: str 3, int 4, bool 5, float 10; a member
        dict (from make_member) -> user option (6) with resolved data."""
        if options is None:
            return [], {}
        if isinstance(options, list):
            return options, {}
        cmd = self.command(name) or {}
        known = {o["name"]: o.get("type") for o in cmd.get("options", [])}
        out: list[dict[str, Any]] = []
        resolved: dict[str, dict[str, Any]] = {}
        for key, value in options.items():
            t = known.get(key)
            if isinstance(value, dict) and "user" in value:  # member
                uid = value["user"]["id"]
                resolved.setdefault("users", {})[uid] = value["user"]
                resolved.setdefault("members", {})[uid] = {k: v for k, v in value.items() if k != "user"}
                opt = {"name": key, "type": t or 6, "value": uid}
            elif isinstance(value, dict) and "username" in value:  # user
                resolved.setdefault("users", {})[value["id"]] = value
                opt = {"name": key, "type": t or 6, "value": value["id"]}
            else:
                if t is None:
                    if isinstance(value, bool):
                        t = 5
                    elif isinstance(value, int):
                        t = 4
                    elif isinstance(value, float):
                        t = 10
                    elif isinstance(value, str):
                        t = 3
                    else:
                        raise TypeError(f"cannot infer option type for {key}={value!r}; pass a raw list")
                opt = {"name": key, "type": t, "value": value}
            if focused is not None and key == focused:
                opt["focused"] = True
            out.append(opt)
        return out, resolved

    async def send_slash(
        self,
        name: str,
        options: None | dict[str, Any] | list[dict[str, Any]] = None,
        *,
        member: dict[str, Any] | None = None,
        dm_user: dict[str, Any] | None = None,
        locale: str = "en-US",
        guild_id: int | None = None,
    ) -> InteractionRecord:
        """Dispatch ``/name`` (interaction type 2, data.type 1). ``dm_user`` (a user dict)
        sends it from a DM instead of the guild channel; ``guild_id`` from the channel of
        another guild (see :meth:`add_guild`; commands synced to ``guild_id`` only are not
        found there: sync them globally)."""
        data = self._command_data(name, 1, dm_user is not None)
        opts, resolved = self._build_options(name, options)
        data["options"] = opts
        if resolved:
            data["resolved"] = resolved
        p = self._interaction_base(2, data, member=member, dm_user=dm_user, locale=locale, guild_id=guild_id)
        return await self.send_interaction(p)

    async def autocomplete(
        self,
        name: str,
        options: dict[str, Any] | list[dict[str, Any]],
        focused: str,
        *,
        member: dict[str, Any] | None = None,
        dm_user: dict[str, Any] | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """Dispatch an autocomplete (type 4) for option ``focused``; read ``rec.choices``."""
        data = self._command_data(name, 1, dm_user is not None)
        opts, _ = self._build_options(name, options, focused=focused)
        if isinstance(options, dict) and focused not in options:
            opts.append({"name": focused, "type": 3, "value": "", "focused": True})
        data["options"] = opts
        p = self._interaction_base(4, data, member=member, dm_user=dm_user, locale=locale)
        return await self.send_interaction(p)

    async def send_message_command(
        self,
        name: str,
        target_message: str | dict[str, Any],
        *,
        member: dict[str, Any] | None = None,
        author: dict[str, Any] | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """Dispatch a message context-menu command (type 2, data.type 3) on a message
        (a dict, or text for a new message by ``author``)."""
        msg = target_message if isinstance(target_message, dict) else self.make_message(target_message, author=author)
        data = self._command_data(name, 3, False)
        data["target_id"] = msg["id"]
        data["resolved"] = {"messages": {msg["id"]: msg}}
        p = self._interaction_base(2, data, member=member, dm_user=None, locale=locale)
        return await self.send_interaction(p)

    async def click(
        self,
        message: InteractionRecord | dict[str, Any] | int,
        custom_id: str,
        *,
        member: dict[str, Any] | None = None,
        component_type: int = 2,
        values: list[str] | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """Click a component (type 3 interaction). ``message``: a message dict, a message
        id, or an InteractionRecord (its newest message having ``custom_id``)."""
        msg: dict[str, Any] | None
        if isinstance(message, InteractionRecord):
            msg = next((m for m in reversed(message.messages) if _has_custom_id(m, custom_id)), None)
            if msg is None:
                raise LookupError(f"no message of {message!r} has a component {custom_id!r}")
        elif isinstance(message, int):
            msg = self.messages[message]
        else:
            msg = self.messages.get(int(message["id"]), message)
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = values
        is_dm = "guild_id" not in msg
        p = self._interaction_base(
            3,
            data,
            member=member,
            dm_user=(member or self.default_member)["user"] if is_dm else None,
            locale=locale,
            message=json.loads(json.dumps(msg)),
        )
        return await self.send_interaction(p)

    async def send_message(self, content: str, *, member: dict[str, Any] | None = None) -> dict[str, Any]:
        """Dispatch MESSAGE_CREATE in the text channel (for prefix commands / on_message)."""
        member = member or self.default_member
        msg = self.make_message(content, author=member["user"])
        payload = dict(msg)
        payload["member"] = _strip_perms({k: v for k, v in member.items() if k != "user"})
        await self.dispatch("MESSAGE_CREATE", payload)
        return msg

    async def wait_for(
        self, record: InteractionRecord, predicate: Callable[[InteractionRecord], Any], timeout: float = 5.0
    ) -> Any:
        return await record.wait_for(predicate, timeout)

    # ------------------------------------------------------------------ REST
    async def _read_body(self, request: web.Request) -> tuple:
        ctype = request.headers.get("Content-Type", "")
        files: list[dict[str, Any]] = []
        payload = None
        if ctype.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                else:
                    files.append({"name": part.name, "filename": part.filename, "content": await part.read()})
        else:
            raw = await request.read()
            if raw:
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = {"_raw": raw.decode(errors="replace")}
        return payload, files

    async def _rest_handler(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        path = "/" + request.match_info["tail"]
        method = request.method
        payload, files = await self._read_body(request)
        ev = Event(now, method, path, _kind(method, path), payload, 200, dict(request.query), files)
        self.requests.append(ev)
        rec = self._record_for(path)
        if rec is not None:
            rec.events.append(ev)
        try:
            fault = self._take_fault(method, path)
            if fault is not None:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status:
                    ev.status = fault.status
                    if rec is not None and isinstance(fault.body, dict) and fault.body.get("code") == 10062:
                        rec.expired = True
                    if isinstance(fault.body, (dict, list)):
                        return _json_response(fault.body, fault.status, fault.headers)
                    return web.Response(status=fault.status, text=str(fault.body), headers=fault.headers)
            if not request.headers.get("Authorization", "").startswith("Bot ") and not path.startswith(
                ("/webhooks/", "/interactions/")
            ):
                ev.status = 401
                return _error(401, 0, "401: Unauthorized")
            if rec is not None and rec.expired:
                ev.status = 404
                return _error(404, 10062, "Unknown interaction")
            resp = await self._route(request, method, path, payload, ev, rec)
            ev.status = resp.status
            return resp
        finally:
            if rec is not None:
                rec._touch()

    def _record_for(self, path: str) -> InteractionRecord | None:
        m = re.match(r"^/interactions/(\d+)/([^/]+)/callback$", path)
        if m:
            return self._by_id.get(int(m.group(1)))
        m = re.match(r"^/webhooks/\d+/([^/]+)", path)
        if m:
            return self._by_token.get(m.group(1))
        return None

    async def _route(
        self,
        request: web.Request,
        method: str,
        path: str,
        payload: Any,
        ev: Event,
        rec: InteractionRecord | None,
    ) -> web.Response:
        if path == "/users/@me" and method == "GET":
            if self.invalid_token:
                return _error(401, 0, "401: Unauthorized")
            return _json_response(self.bot_user)
        if path in ("/oauth2/applications/@me", "/applications/@me") and method == "GET":
            return _json_response(self._application())
        if path in ("/gateway", "/gateway/bot") and method == "GET":
            body: dict[str, Any] = {"url": self.gateway_url.rstrip("/")}
            if path.endswith("/bot"):
                body.update(
                    shards=self.recommended_shards,
                    session_start_limit={"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
                )
            return _json_response(body)

        m = re.match(r"^/applications/(\d+)(?:/guilds/(\d+))?/commands$", path)
        if m:
            gid = int(m.group(2)) if m.group(2) else None
            if method == "PUT":
                cmds = [self._register_command(c, gid) for c in (payload or [])]
                if gid is None:
                    self.global_commands = cmds
                else:
                    self.guild_commands[gid] = cmds
                self.sync_calls.append(ev)
                return _json_response(cmds)
            if method == "GET":
                return _json_response(self.global_commands if gid is None else self.guild_commands.get(gid, []))

        m = re.match(r"^/interactions/(\d+)/([^/]+)/callback$", path)
        if m and method == "POST":
            return self._callback(rec, m.group(2), payload or {}, ev)

        m = re.match(r"^/webhooks/(\d+)/([^/]+)(?:/messages/([^/]+))?$", path)
        if m:
            if rec is None or int(m.group(1)) != self.app_id:
                return _error(404, 10015, "Unknown Webhook")
            if m.group(3) is None:
                if method == "POST":
                    return self._followup(rec, payload or {}, ev, request.query.get("wait", "0") not in ("0", "false"))
            else:
                return self._webhook_message(rec, method, m.group(3), payload or {}, ev)

        m = re.match(r"^/channels/(\d+)/messages(?:/(\d+))?$", path)
        if m:
            cid = int(m.group(1))
            if method == "POST" and m.group(2) is None:
                msg = self._new_message(payload or {}, channel_id=cid, mtype=0)
                ev.message = _snapshot(msg)
                self.channel_messages.append(ev)
                return _json_response(msg)
            if m.group(2) is not None:
                mid = int(m.group(2))
                msg = self.messages.get(mid)
                if msg is None:
                    return _error(404, 10008, "Unknown Message")
                if method == "GET":
                    return _json_response(msg)
                if method == "PATCH":
                    _apply_edit(msg, payload or {})
                    ev.message = _snapshot(msg)
                    return _json_response(msg)
                if method == "DELETE":
                    self.messages.pop(mid, None)
                    return web.Response(status=204)

        m = re.match(r"^/guilds/(\d+)$", path)
        if m and int(m.group(1)) in self.guilds and method == "GET":
            return _json_response(self.guilds[int(m.group(1))])
        channels = {c["id"]: c for g in self.guilds.values() for c in g["channels"]}
        m = re.match(r"^/channels/(\d+)$", path)
        if m and m.group(1) in channels and method == "GET":
            return _json_response(channels[m.group(1)])
        return _error(404, 0, f"404: Not Found (FakeDiscord has no route for {method} {path})")

    def _application(self) -> dict[str, Any]:
        return {
            "id": str(self.app_id),
            "name": self.bot_user["username"],
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self.owner_user,
            "verify_key": "0" * 64,
            "team": None,
            "flags": 0,
            "summary": "",
            "rpc_origins": [],
            "terms_of_service_url": None,
            "privacy_policy_url": None,
            "interactions_endpoint_url": None,
            "tags": [],
            "redirect_uris": [],
            "bot": self.bot_user,
        }

    def _register_command(self, cmd: dict[str, Any], gid: int | None) -> dict[str, Any]:
        pool = self.global_commands if gid is None else self.guild_commands.get(gid, [])
        old = next((c for c in pool if c["name"] == cmd["name"] and c.get("type", 1) == cmd.get("type", 1)), None)
        out = {
            "type": 1,
            "description": "",
            "options": [],
            "default_member_permissions": None,
            "nsfw": False,
            "version": str(self.snowflake()),
            **cmd,
            "id": old["id"] if old else str(self.snowflake()),
            "application_id": str(self.app_id),
        }
        if gid is not None:
            out["guild_id"] = str(gid)
        return out

    # -- messages
    def _new_message(
        self,
        data: dict[str, Any],
        *,
        channel_id: int | None = None,
        mtype: int = 20,
        rec: InteractionRecord | None = None,
        flags: int = 0,
    ) -> dict[str, Any]:
        mid = self.snowflake()
        in_dm = rec is not None and "guild_id" not in rec.payload
        cid = channel_id or (int(rec.payload["channel_id"]) if rec is not None else self.channel_id)
        msg: dict[str, Any] = {
            "id": str(mid),
            "channel_id": str(cid),
            "author": self.bot_user,
            "content": data.get("content") or "",
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": bool(data.get("tts", False)),
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": _attachments(data),
            "embeds": data.get("embeds") or [],
            "components": data.get("components") or [],
            "pinned": False,
            "type": mtype,
            "flags": flags,
        }
        if not in_dm:
            msg["guild_id"] = rec.payload["guild_id"] if rec is not None else str(self.guild_id)
        if rec is not None:
            msg["webhook_id"] = str(self.app_id)
            msg["application_id"] = str(self.app_id)
            user = rec.payload.get("member", {}).get("user") or rec.payload.get("user")
            msg["interaction_metadata"] = {
                "id": str(rec.id),
                "type": rec.type,
                "user": user,
                "authorizing_integration_owners": rec.payload.get("authorizing_integration_owners", {}),
            }
        if "poll" in data:
            msg["poll"] = data["poll"]
        self.messages[mid] = msg
        return msg

    def _callback_response(self, rec: InteractionRecord, ctype: int, msg: dict[str, Any] | None) -> web.Response:
        inter: dict[str, Any] = {"id": str(rec.id), "type": rec.type}
        body: dict[str, Any] = {"interaction": inter}
        if msg is not None:
            inter["response_message_id"] = msg["id"]
            inter["response_message_loading"] = bool(msg.get("flags", 0) & MSG_FLAG_LOADING)
            inter["response_message_ephemeral"] = bool(msg.get("flags", 0) & MSG_FLAG_EPHEMERAL)
            body["resource"] = {"type": ctype, "message": msg}
        else:
            body["resource"] = {"type": ctype}
        return _json_response(body)

    def _callback(self, rec: InteractionRecord | None, token: str, payload: dict[str, Any], ev: Event) -> web.Response:
        if rec is None or rec.token != token:
            return _error(404, 10062, "Unknown interaction")
        if self.callback_deadline is not None and ev.time - rec.delivered_at > self.callback_deadline:
            rec.expired = True
            return _error(404, 10062, "Unknown interaction")
        if rec.acknowledged:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        rec.acknowledged = True
        ctype = payload.get("type")
        data = payload.get("data") or {}
        flags = int(data.get("flags") or 0)
        msg: dict[str, Any] | None = None
        if ctype == 4:
            msg = self._new_message(data, rec=rec, flags=flags & ~MSG_FLAG_LOADING)
            rec.original_message_id = int(msg["id"])
        elif ctype == 5:
            msg = self._new_message({}, rec=rec, flags=(flags & MSG_FLAG_EPHEMERAL) | MSG_FLAG_LOADING)
            rec.original_message_id = int(msg["id"])
            rec._first_followup_edits_original = True
        elif ctype == 7:
            if rec.original is None:
                return _error(400, 40004, "Interaction has no message to update")
            msg = rec.original
            _apply_edit(msg, data)
        # 6 (deferred update), 8 (autocomplete), 9 (modal): nothing to create
        if msg is not None:
            ev.message = _snapshot(msg)
        return self._callback_response(rec, ctype, msg)

    def _followup(self, rec: InteractionRecord, payload: dict[str, Any], ev: Event, wait: bool) -> web.Response:
        if not rec.acknowledged:
            return _error(404, 10015, "Unknown Webhook")
        if rec._first_followup_edits_original and rec.original is not None:
            # Discord: the first followup after a type-5 defer edits the loading message,
            # keeping the defer's ephemeral state.
            rec._first_followup_edits_original = False
            msg = rec.original
            keep = msg.get("flags", 0) & MSG_FLAG_EPHEMERAL
            _apply_edit(msg, {k: v for k, v in payload.items() if k != "flags"})
            msg["flags"] = (int(payload.get("flags") or 0) & ~(MSG_FLAG_EPHEMERAL | MSG_FLAG_LOADING)) | keep
        else:
            rec._first_followup_edits_original = False
            msg = self._new_message(payload, rec=rec, flags=int(payload.get("flags") or 0))
            rec.followup_ids.append(int(msg["id"]))
        ev.message = _snapshot(msg)
        return _json_response(msg) if wait else web.Response(status=204)

    def _webhook_message(
        self, rec: InteractionRecord, method: str, which: str, payload: dict[str, Any], ev: Event
    ) -> web.Response:
        if which == "@original":
            mid = rec.original_message_id
        else:
            mid = int(which) if which.isdigit() else None
            if mid is not None and mid != rec.original_message_id and mid not in rec.followup_ids:
                mid = None
        msg = self.messages.get(mid) if mid is not None else None
        if msg is None:
            return _error(404, 10008, "Unknown Message")
        if method == "GET":
            return _json_response(msg)
        if method == "PATCH":
            if mid == rec.original_message_id:
                rec._first_followup_edits_original = False
            _apply_edit(msg, payload)
            msg["flags"] = msg.get("flags", 0) & ~MSG_FLAG_LOADING
            ev.message = _snapshot(msg)
            return _json_response(msg)
        if method == "DELETE":
            self.messages.pop(mid, None)
            return web.Response(status=204)
        return _error(405, 0, "405: Method Not Allowed")


# --------------------------------------------------------------------------- helpers


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def _strip_perms(member: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in member.items() if k != "permissions"}


def _kind(method: str, path: str) -> str:
    if re.match(ROUTE_CALLBACK, path):
        return "callback"
    if re.match(ROUTE_FOLLOWUP, path):
        return "followup" if method == "POST" else method.lower()
    if re.match(ROUTE_WEBHOOK_MESSAGE, path):
        return {"PATCH": "edit", "GET": "get", "DELETE": "delete"}.get(method, method.lower())
    if re.match(ROUTE_CHANNEL_MESSAGES, path) and method == "POST":
        return "channel_message"
    if re.match(ROUTE_SYNC, path):
        return "sync" if method == "PUT" else method.lower()
    return method.lower()


def _attachments(data: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for a in data.get("attachments") or []:
        out.append(
            {
                "id": str(a.get("id", 0)),
                "filename": a.get("filename", "file"),
                "size": 0,
                "url": "https://cdn.invalid/" + str(a.get("filename", "file")),
                "proxy_url": "https://cdn.invalid/" + str(a.get("filename", "file")),
                "description": a.get("description"),
            }
        )
    return out


def _apply_edit(msg: dict[str, Any], data: dict[str, Any]) -> None:
    for key in ("content", "embeds", "components", "poll"):
        if key in data:
            msg[key] = data[key] if data[key] is not None else ([] if key != "content" else "")
    if "attachments" in data:
        msg["attachments"] = _attachments(data)
    if "flags" in data and data["flags"] is not None:
        msg["flags"] = (msg.get("flags", 0) & (MSG_FLAG_EPHEMERAL | MSG_FLAG_LOADING)) | int(data["flags"])
    msg["edited_timestamp"] = _now_iso()


def _snapshot(msg: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(msg))


def _has_custom_id(obj: Any, custom_id: str) -> bool:
    if isinstance(obj, dict):
        if obj.get("custom_id") == custom_id:
            return True
        return any(_has_custom_id(v, custom_id) for v in obj.values() if isinstance(v, (dict, list)))
    if isinstance(obj, list):
        return any(_has_custom_id(v, custom_id) for v in obj)
    return False


# --------------------------------------------------------------------------- bot runner


@contextlib.asynccontextmanager
async def running_bot(
    bot: discord.Client,
    fake: FakeDiscord | None = None,
    *,
    token: str = "fake-bot-token",
    ready_timeout: float = 10.0,
    **fake_kwargs: Any,
) -> AsyncIterator[FakeDiscord]:
    """Start ``fake`` (or a new ``FakeDiscord(**fake_kwargs)``), patch discord.py to use
    it, ``await bot.login(token)`` (runs ``setup_hook``), run ``bot.connect()`` in a task,
    wait for ``bot.wait_until_ready()``; yield the fake; then close bot and fake.

    Build the bot with ``guild_ready_timeout=0.05`` or readiness takes ~2 s.
    Exceptions from login (e.g. ``discord.LoginFailure``) or from connect propagate.
    """
    if fake is None:
        fake = FakeDiscord(**fake_kwargs)
    own = fake._runner is None  # we start it, so we stop it
    if own:
        await fake.start()
    connect_task: asyncio.Task | None = None
    try:
        with fake.patched():
            try:
                await bot.login(token)
                connect_task = asyncio.create_task(bot.connect(reconnect=False), name="fake-discord-connect")
                ready_task = asyncio.create_task(bot.wait_until_ready())
                done, _ = await asyncio.wait(
                    {connect_task, ready_task}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if ready_task not in done:
                    ready_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await ready_task
                    if connect_task in done:
                        connect_task.result()  # raises the connect error
                        raise RuntimeError("bot.connect() returned before the bot was ready")
                    raise TimeoutError(f"bot not ready within {ready_timeout}s")
                yield fake
            finally:
                await bot.close()
                if connect_task is not None:
                    with contextlib.suppress(TimeoutError, asyncio.CancelledError, discord.ConnectionClosed):
                        await asyncio.wait_for(connect_task, 5)
    finally:
        if own:
            await fake.stop()


def run(coro: Any, timeout: float = 30.0) -> Any:
    """``asyncio.run(coro)`` with an overall timeout (for sync pytest tests)."""

    async def _main() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(_main())
