"""The one HTTP client for feeds, article pages and robots.txt, on the standard library.

Feeds name URLs chosen by others, so every request is checked: http/https only; the host's
addresses must all be public (not private, loopback, link-local, reserved, multicast) for the
first request and every redirect, unless private hosts are allowed; the connection goes to the
address that was checked (a second lookup could answer otherwise); time, size and redirects are
bounded; requests to one host are spaced; robots.txt is obeyed. Every failure is a FetchError
whose message is one line naming the URL.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
import zlib
from dataclasses import dataclass, field
from email.message import Message
from importlib import metadata
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

from ..errors import CorpusBotError

_REDIRECTS = (301, 302, 303, 307, 308)


def _version() -> str:
    try:
        return metadata.version("corpus-bot")
    except metadata.PackageNotFoundError:
        return "0"


USER_AGENT = f"corpus-bot/{_version()} (+news feed reader)"


class FetchError(CorpusBotError):
    """A request that failed; the message is one line that names the URL."""


class RefusedAddressError(FetchError):
    """The URL's host resolves to an address this client may not reach."""


class HttpStatusError(FetchError):
    """The server answered with an error status (404, 500, ...)."""

    def __init__(self, url: str, status: int):
        self.status = status
        super().__init__(f"{url}: HTTP {status} {http.client.responses.get(status, '')}".rstrip())


class RobotsDisallowError(FetchError):
    """robots.txt of the host forbids the page."""


def address_kind(address: str) -> str | None:
    """What makes an address unreachable for a public fetch ('loopback', 'private', ...), None when public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id is not part of the address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "private"  # shared address space (100.64/10) and the like


def resolve(host: str, port: int) -> list[str]:
    """The host's addresses (a module function so that tests can answer for names offline)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def check_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, or a one-line FetchError."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchError(f"invalid URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"invalid URL {url!r}: only http:// and https:// URLs with a host can be fetched")
    if any(c in url for c in " \r\n\t"):
        raise FetchError(f"invalid URL {url!r}: it contains spaces or line breaks")
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


@dataclass
class Response:
    url: str  # after redirects
    status: int
    headers: Message
    body: bytes
    private: bool = False  # some host on the way resolved to a non-public address (allowed)

    @property
    def not_modified(self) -> bool:
        return self.status == 304


class _Connection(http.client.HTTPConnection):
    """A connection to one address checked beforehand, with TLS for https checked against the host name."""

    def __init__(self, host: str, port: int, address: str, tls: bool, connect_timeout: float, read_timeout: float):
        super().__init__(host, port, timeout=read_timeout)
        self._address, self._tls, self._connect_timeout = address, tls, connect_timeout

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), timeout=self._connect_timeout)
        sock.settimeout(self.timeout)
        if self._tls:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        self.sock = sock


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB"


@dataclass
class HttpClient:
    allow_private: bool = False
    timeout: float = 20.0  # to connect, and for each read
    max_bytes: int = 5 * 1024 * 1024
    max_redirects: int = 5
    host_interval: float = 1.0  # seconds between two requests to one host
    user_agent: str = USER_AGENT
    _last_request: dict[str, float] = field(default_factory=dict)
    _robots: dict[tuple[str, str, int], RobotFileParser | FetchError] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings) -> HttpClient:
        return cls(
            allow_private=settings.feeds_allow_private_hosts,
            timeout=settings.feeds_timeout_seconds,
            max_bytes=settings.feeds_max_bytes,
            host_interval=settings.feeds_host_interval_seconds,
        )

    def _addresses(self, url: str, host: str, port: int, allow_private: bool) -> tuple[list[str], bool]:
        try:
            addresses = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise FetchError(f"{url}: cannot find host {host} ({getattr(exc, 'strerror', None) or exc})") from None
        if not addresses:
            raise FetchError(f"{url}: cannot find host {host} (no address)")
        kinds = {a: address_kind(a) for a in addresses}
        refused = next((a for a, kind in kinds.items() if kind), None)
        if refused and not allow_private:
            raise RefusedAddressError(
                f"{url}: refused: {host} is a {kinds[refused]} address ({refused}); only public hosts are "
                "fetched (FEEDS_ALLOW_PRIVATE_HOSTS=1 allows private ones)"
            )
        return addresses, refused is not None

    def _wait_for(self, host: str) -> None:
        last = self._last_request.get(host)
        if last is not None:
            pause = last + self.host_interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        self._last_request[host] = time.monotonic()

    def _once(self, url: str, headers: dict[str, str], allow_private: bool) -> tuple[Response, str | None]:
        scheme, host, port = check_url(url)
        addresses, private = self._addresses(url, host, port, allow_private)
        self._wait_for(host)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        error: OSError | None = None
        for address in addresses:
            conn = _Connection(host, port, address, scheme == "https", self.timeout, self.timeout)
            try:
                conn.request("GET", target, headers=headers)
                reply = conn.getresponse()
                if reply.status in _REDIRECTS and reply.getheader("Location"):
                    return Response(url, reply.status, reply.headers, b"", private), urljoin(
                        url, reply.getheader("Location")
                    )
                return Response(url, reply.status, reply.headers, self._body(url, reply), private), None
            except TimeoutError:
                raise FetchError(f"{url}: timed out (no answer within {self.timeout:g} s)") from None
            except ssl.SSLError as exc:
                raise FetchError(f"{url}: TLS failed ({exc.reason or exc})") from None
            except (http.client.HTTPException, ConnectionError) as exc:
                if isinstance(exc, ConnectionRefusedError):
                    error = exc
                    continue
                raise FetchError(f"{url}: the server's answer is broken ({type(exc).__name__}: {exc})") from None
            except OSError as exc:
                error = exc
            finally:
                conn.close()
        raise FetchError(f"{url}: cannot connect ({getattr(error, 'strerror', None) or error})")

    def _body(self, url: str, reply: http.client.HTTPResponse) -> bytes:
        too_large = FetchError(f"{url}: larger than {_megabytes(self.max_bytes)}")
        length = reply.getheader("Content-Length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            raise too_large
        deadline = time.monotonic() + 3 * self.timeout  # a page trickled a byte at a time ends too
        chunks, size = [], 0
        while chunk := reply.read1(64 * 1024):
            size += len(chunk)
            if size > self.max_bytes:
                raise too_large
            if time.monotonic() > deadline:
                raise FetchError(f"{url}: timed out (the answer took longer than {3 * self.timeout:g} s)")
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = (reply.getheader("Content-Encoding") or "").strip().lower()
        if encoding in ("gzip", "deflate"):
            inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
            try:
                body = inflate.decompress(body, self.max_bytes + 1)
            except zlib.error as exc:
                raise FetchError(f"{url}: cannot decompress the answer ({exc})") from None
            if len(body) > self.max_bytes:
                raise too_large
        return body

    def get(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        allow_private: bool | None = None,
        robots: bool = True,
    ) -> Response:
        """The answer to GET url after redirects: 2xx or 304 (conditional GET with etag/last_modified);
        any other status, and every refusal, is a FetchError."""
        allow = self.allow_private if allow_private is None else allow_private and self.allow_private
        headers = {"User-Agent": self.user_agent, "Accept-Encoding": "gzip", "Connection": "close"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        seen = [url]
        private = False
        while True:
            if robots:
                self._check_robots(url, allow)
            response, location = self._once(url, headers, allow)
            private = private or response.private
            if location is None:
                break
            if location in seen:
                raise FetchError(f"{seen[0]}: redirect loop ({location} redirects back)")
            if len(seen) > self.max_redirects:
                raise FetchError(f"{seen[0]}: too many redirects (more than {self.max_redirects})")
            seen.append(location)
            url = location
        response.private = private
        if response.status != 304 and not 200 <= response.status < 300:
            raise HttpStatusError(url, response.status)
        return response

    def _check_robots(self, url: str, allow_private: bool) -> None:
        scheme, host, port = check_url(url)
        key = (scheme, host, port)
        if key not in self._robots:
            robots_url = f"{scheme}://{urlsplit(url).netloc}/robots.txt"
            parser = RobotFileParser(robots_url)
            try:
                answer = self.get(robots_url, allow_private=allow_private, robots=False)
                parser.parse(answer.body.decode("utf-8", "replace").splitlines())
            except RefusedAddressError as exc:  # decided per request, never kept
                raise RefusedAddressError(_about(url, exc)) from None
            except HttpStatusError as exc:
                if exc.status in (401, 403):
                    parser.disallow_all = True
                else:  # no robots.txt: everything is allowed
                    parser.allow_all = True
            except FetchError as exc:  # the host does not answer: neither will the page; say it once
                self._robots[key] = exc
            if key not in self._robots:
                self._robots[key] = parser
        robots = self._robots[key]
        if isinstance(robots, FetchError):
            raise FetchError(_about(url, robots))
        if not robots.can_fetch(self.user_agent, url):
            raise RobotsDisallowError(f"{url}: robots.txt of {host} disallows it")


def _about(url: str, exc: FetchError) -> str:
    """exc's reason told about url (the request that met it was for the host's robots.txt)."""
    return f"{url}: {str(exc).split(': ', 1)[-1]}"
