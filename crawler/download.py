"""HTTP for the crawler: one global rate limit, retries with backoff, Cloudflare stop, verified downloads.

- `RateLimiter`: a next-slot scheduler shared by every thread (API pages and files alike). Slots are
  `1 / rate` apart; `pause_until` pushes every thread back (a Retry-After is a message to the client,
  not to one thread).
- `HttpClient`: HTTP/1.1 spoken directly on one keep-alive socket per thread and host (`requests`
  cost more CPU per file than all the rest of a download); `fetch(url, read)` retries 429/5xx,
  timeouts, connection errors and whatever `read` calls retryable (a truncated body, an md5 mismatch),
  with exponential backoff and jitter, honouring Retry-After (seconds or an HTTP date). A whole answer
  has `body_timeout_s` (each socket wait is cut to what is left of it), so a trickling server cannot
  hold a worker. A Cloudflare challenge raises `CloudflareChallenge` and flips a shared stop flag: no
  thread sends another request.
- `download_file`: streams to `*.part` with a size cap, checks that the body is an image (magic bytes
  and Pillow's header decode, decompression-bomb guard) and that its md5 is the API's, fsyncs if asked,
  and returns; the caller renames (`os.replace`) once the name is decided. With a `gate` (the crawl's
  workers share one) a small body is received whole first and stored holding the gate: the threads
  wait for the network together but take turns at the CPU and disk work.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import random
import re
import socket
import struct
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, unquote, urljoin, urlsplit

T = TypeVar("T")

USER_AGENT = "lineart-colorizer-crawler/0.1 (+https://github.com/; polite: rate-limited, resumable)"
MAX_REDIRECTS = 5
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
_CHUNK_BYTES = 256 * 1024
_PILLOW_LOCK = threading.Lock()
_IN_MEMORY_CHECK_BYTES = 8 * 1024 * 1024
_DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's default MAX_IMAGE_PIXELS, used if someone set it to None

_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)
FORMAT_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp"}


class CrawlStopped(Exception):
    """The crawl must stop (a Cloudflare challenge was seen): nothing more is sent."""


class CloudflareChallenge(CrawlStopped):
    def __init__(self, url: str, status: int):
        super().__init__(
            f"stopped: Cloudflare answered HTTP {status} with a browser challenge for {url}. The site is "
            "shielding itself from this client; the crawl stopped instead of retrying. Wait (hours), then "
            "re-run with a lower --rate (the crawl resumes where it stopped)."
        )
        self.url = url
        self.status = status


class ServerAsksToWait(CrawlStopped):
    def __init__(self, url: str, status: int, seconds: float):
        hours = f" ({seconds / 3600:.1f} h)" if seconds >= 3600 else ""
        super().__init__(
            f"stopped: the server answered HTTP {status} with Retry-After {seconds:.0f} s{hours} for {url}. "
            "The crawl stopped instead of waiting that long or ignoring it; re-run the same command later "
            "(it resumes where it stopped), with a lower --rate."
        )
        self.url = url
        self.status = status
        self.seconds = seconds


class FetchError(Exception):
    """A request that failed; `retryable` says whether trying again can help."""

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
        throttled: bool = False,
        status: int | None = None,
    ):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.throttled = throttled  # 429 / 503: the server says the client is too fast (all threads wait)
        self.status = status


class GaveUp(Exception):
    """Every attempt failed; `reason` is the last failure, `attempts` how many were made."""

    def __init__(self, reason: str, attempts: int):
        super().__init__(f"{reason} (after {attempts} attempt{'s' if attempts != 1 else ''})")
        self.reason = reason
        self.attempts = attempts


# --------------------------------------------------------------------------------------------------
# Rate limit and retry policy


class RateLimiter:
    """At most `rate_per_s` acquisitions per second across all threads; 0 means unlimited.

    A next-slot scheduler: each `acquire` takes the next free slot (`1 / rate_per_s` after the previous
    one) and sleeps until it. No bursts, so the long-run rate is the one asked, whatever the number of
    threads. `pause_until` (a Retry-After) holds every caller back, also when unlimited."""

    def __init__(
        self,
        rate_per_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate_per_s < 0:
            raise ValueError(f"rate must be >= 0 requests/s (0 = unlimited), got {rate_per_s}")
        self.rate_per_s = rate_per_s
        self.interval_s = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = 0.0
        self._paused_until = 0.0

    def acquire(self) -> float:
        """Wait for the next slot; returns the seconds waited."""
        if not self.interval_s and self._clock() >= self._paused_until:
            return 0.0  # unlimited and not paused: no lock to contend for
        with self._lock:
            now = self._clock()
            slot = max(now, self._next, self._paused_until)
            if self.interval_s:
                self._next = slot + self.interval_s
        delay = slot - now
        if delay > 0:
            self._sleep(delay)
        return max(delay, 0.0)

    def pause_until(self, deadline: float) -> None:
        """No slot before `deadline` (on this limiter's clock)."""
        with self._lock:
            self._paused_until = max(self._paused_until, deadline)
            self._next = max(self._next, deadline)

    def pause_for(self, seconds: float) -> None:
        self.pause_until(self._clock() + seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; waits `base_s * 2**n` (capped at `max_delay_s`) with +-50% jitter, or the
    server's Retry-After when it gives one (refused beyond `max_retry_after_s`)."""

    attempts: int = 5
    base_s: float = 1.0
    max_delay_s: float = 60.0
    max_retry_after_s: float = 600.0
    jitter: float = 0.5

    def delay_s(self, failures: int, rng: random.Random | None = None) -> float:
        """Backoff before the try after `failures` failed ones (1 = after the first failure)."""
        raw = min(self.max_delay_s, self.base_s * 2 ** (failures - 1))
        r = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return min(self.max_delay_s, raw * r)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date. None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:  # not in the RFC, but some servers send "1.5"
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if 0 <= seconds < float("inf") else None
    import email.utils  # here: 7 ms of imports that a crawl without an HTTP-date Retry-After never needs

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def is_cloudflare_challenge(status: int, headers: Mapping[str, str], body: bytes) -> bool:
    """Cloudflare's browser challenge: `cf-mitigated: challenge`, or a 403/503 HTML page with its markers."""
    lower = {k.lower(): v for k, v in headers.items()}
    if lower.get("cf-mitigated", "").strip().lower() == "challenge":
        return True
    if status not in (403, 503, 429, 200):
        return False
    head = body[:65536]
    markers = (b"Just a moment...", b"cf_chl", b"challenge-platform", b"cf-browser-verification")
    if status == 200:  # a 200 is a challenge only with the unmistakable markers
        return b"cf_chl" in head or b"challenge-platform" in head
    return any(m in head for m in markers)


# --------------------------------------------------------------------------------------------------
# Images


def sniff_format(head: bytes) -> str | None:
    """The image format from the first bytes (`JPEG`, `PNG`, `GIF`, `WEBP`), None if none of them."""
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def check_image(source: Path | bytes) -> tuple[str, int, int]:
    """Check that a file (a path, or its bytes) really is an image; return `(extension, width, height)`.

    Both the magic bytes and Pillow's header decode must agree on a known format. Pillow's
    decompression-bomb limit is enforced as an error (its warning threshold, not only its 2x error).
    Raises FetchError (retryable: a server that sent an HTML page may send the image next time)."""
    if isinstance(source, bytes | bytearray | memoryview):
        head = bytes(source[:64])
        opened = io.BytesIO(source)
    else:
        with open(source, "rb") as f:
            head = f.read(64)
        opened = source
    from PIL import Image  # here, not at the top: `crawler crawl` starts 10 ms sooner

    magic = sniff_format(head)
    if magic is None:
        text = head.lstrip().lower()
        html = text.startswith((b"<!doctype", b"<html", b"<head", b"<body"))
        kind = "an HTML page" if html else "not an image"
        raise FetchError(f"not an image: the body is {kind} ({head[:24]!r})", retryable=True)
    try:
        # Pillow's bomb warning as an error; the filter change is process-wide, hence the lock
        with _PILLOW_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(opened) as img:
                fmt, (width, height) = img.format, img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise FetchError(f"decompression bomb refused: {err}", retryable=False) from None
    except Exception as err:  # Pillow raises many kinds for broken headers
        raise FetchError(f"not an image: Pillow cannot read its header ({err})", retryable=True) from None
    if fmt != magic:
        raise FetchError(f"not an image: magic bytes say {magic}, Pillow says {fmt}", retryable=True)
    limit = Image.MAX_IMAGE_PIXELS or _DEFAULT_MAX_PIXELS
    if width * height > limit:
        raise FetchError(
            f"decompression bomb refused: {width}x{height} = {width * height} pixels > {limit}",
            retryable=False,
        )
    if width <= 0 or height <= 0:
        raise FetchError(f"not an image: size {width}x{height}", retryable=True)
    return FORMAT_EXTENSIONS[fmt], width, height


# --------------------------------------------------------------------------------------------------
# HTTP/1.1 over one keep-alive socket per thread and host


class ProtocolError(Exception):
    """The server broke HTTP (a bad status line, a body cut short, a broken chunk): retryable."""


class NetworkError(Exception):
    """A socket failed (refused, reset, DNS, TLS): retryable. Not an OSError, so that a file system
    error while writing the body is never mistaken for one."""


class ConnectTimeout(NetworkError):
    pass


class ReadTimeout(NetworkError):
    pass


class _WholeTimeout(Exception):
    """The whole answer took longer than `body_timeout_s` (a server trickling bytes)."""


class _Stale(Exception):
    """A kept-alive connection the server had closed before answering: try once more on a new one."""


_ACCEPT_ENCODING = "gzip, deflate"
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"
_NEEDS_QUOTING = re.compile(r"[^A-Za-z0-9\-._~!#$%&'()*+,/:;=?@\[\]]")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_HEADER_BYTES = 64 * 1024


def _environ_proxy(scheme: str, host: str) -> str | None:
    """The proxy from HTTP(S)_PROXY / ALL_PROXY for this host, None if NO_PROXY excludes it (or none)."""
    import urllib.request  # once per host; its imports cost 12 ms of start-up

    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy:
        return None
    if urllib.request.proxy_bypass_environment(host, proxies):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


class Response:
    """A response whose body the caller reads with `chunks()`; headers are in `headers` (lowercase keys)."""

    __slots__ = (
        "_body_done", "_conn", "_decoder", "_deadline", "_drop", "_left", "_mode", "headers", "status", "url"
    )  # fmt: skip

    def __init__(
        self,
        conn: _Connection,
        url: str,
        status: int,
        headers: dict[str, str],
        deadline: float,
        drop: Callable[[_Connection], None],
    ):
        self._conn = conn
        self._drop = drop
        self.url = url
        self.status = status
        self.headers = headers
        self._deadline = deadline
        self._body_done = False
        te = headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        if status in (204, 304) or 100 <= status < 200:
            self._mode, self._left = "length", 0
        elif "chunked" in te:
            self._mode, self._left = "chunked", 0
        elif length is not None and length.strip().isdigit():
            self._mode, self._left = "length", int(length)
        else:
            self._mode, self._left = "close", -1
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = _Deflate()
        else:
            self._decoder = None

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    @property
    def encoded(self) -> bool:
        """The body is compressed (gzip / deflate): its decoded size is not its Content-Length."""
        return self._decoder is not None

    @property
    def content_length(self) -> int | None:
        """The body's length on the wire when Content-Length frames it (None for chunked or close-delimited
        bodies: a Content-Length beside `Transfer-Encoding: chunked` is ignored, as HTTP/1.1 says)."""
        return self._left if self._mode == "length" else None

    def chunks(self, size: int = _CHUNK_BYTES) -> Iterator[bytes]:
        """The body, decoded (gzip / deflate), in pieces of at most about `size` bytes."""
        if self._decoder is None:
            yield from self._raw_chunks(size)
            return
        decoder = self._decoder
        try:  # at most `size` bytes out of each call: a gzip bomb cannot get past the size cap
            for raw in self._raw_chunks(size):
                data = decoder.decompress(raw, size)
                while True:
                    if data:
                        yield data
                    tail = decoder.unconsumed_tail
                    if not tail:
                        break
                    data = decoder.decompress(tail, size)
            rest = decoder.flush()
        except zlib.error as err:
            encoding = self.headers.get("content-encoding")
            raise ProtocolError(f"the {encoding} body cannot be decoded ({err})") from None
        if rest:
            yield rest

    def _raw_chunks(self, size: int) -> Iterator[bytes]:
        conn = self._conn
        if self._mode == "length":
            left = self._left
            while left > 0:
                data = conn.read_some(min(left, size), self._deadline)
                if not data:
                    raise ProtocolError(f"body cut short: {self._left - left} of {self._left} bytes")
                left -= len(data)
                yield data
        elif self._mode == "chunked":
            while True:
                line = conn.read_line(self._deadline)
                try:
                    n = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
                if n == 0:
                    while conn.read_line(self._deadline):  # trailers, up to the empty line
                        pass
                    break
                while n > 0:
                    data = conn.read_some(min(n, size), self._deadline)
                    if not data:
                        raise ProtocolError("chunked body cut short")
                    n -= len(data)
                    yield data
                if conn.read_line(self._deadline):
                    raise ProtocolError("chunk not followed by CRLF")
        else:  # until the server closes the connection
            conn.keep_alive = False
            while True:
                data = conn.read_some(size, self._deadline)
                if not data:
                    break
                yield data
        self._body_done = True

    def drain(self, max_bytes: int = 65536) -> bytes:
        """Up to `max_bytes` of the body (an error page); the connection is reused if that was all."""
        out = []
        size = 0
        for chunk in self.chunks(65536):
            out.append(chunk)
            size += len(chunk)
            if size >= max_bytes:
                break
        return b"".join(out)

    def release(self) -> None:
        """Keep the connection for the next request if this answer was read to its end, else close it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._body_done and conn.keep_alive and not conn.buffered:
            conn.idle()
        else:
            self._drop(conn)


class _Deflate:
    """`Content-Encoding: deflate`: zlib-wrapped as the RFC says, or raw deflate as some servers send."""

    def __init__(self):
        self._obj = zlib.decompressobj()
        self._first = True

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        if self._first:
            self._first = False
            try:
                return self._obj.decompress(data, max_length)
            except zlib.error:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._obj.decompress(data, max_length)

    @property
    def unconsumed_tail(self) -> bytes:
        return self._obj.unconsumed_tail

    def flush(self) -> bytes:
        return self._obj.flush()


def _timeval(seconds: float) -> bytes:
    """A `struct timeval` for SO_RCVTIMEO / SO_SNDTIMEO (never 0, which would mean "no timeout")."""
    usec = max(1000, int(round(seconds * 1e6)))
    return struct.pack("ll", usec // 1_000_000, usec % 1_000_000)


_KERNEL_TIMEOUTS = sys.platform.startswith("linux") and struct.calcsize("l") == 8


def _ssl_socket_types() -> tuple[type, ...]:
    ssl = sys.modules.get("ssl")
    return (ssl.SSLSocket,) if ssl is not None else ()


class _Connection:
    """One TCP (or TLS) connection with a read buffer; `keep_alive` false once it must not be reused."""

    def __init__(self, sock: socket.socket, read_timeout_s: float, kernel_timeouts: bool = False):
        self.sock = sock
        # plain TCP on Linux: a blocking socket whose timeouts the kernel keeps (SO_RCVTIMEO): Python's own
        # timeout polls before every recv and send, two system calls (and GIL hand-overs) a request
        self._kernel_timeouts = kernel_timeouts
        self._rbuf = memoryview(bytearray(_CHUNK_BYTES))  # recv_into: no 256 KB allocation per read
        self.read_timeout_s = read_timeout_s
        self._timeout = read_timeout_s
        self._buf = b""
        self.keep_alive = True
        self.reused = False
        self.closed = False

    @property
    def buffered(self) -> bool:
        return bool(self._buf)

    def idle(self) -> None:
        self.reused = True  # from now on, a connection the server closed meanwhile is `_Stale`

    def close(self) -> None:
        self.closed = True
        self.keep_alive = False
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as err:
            if self.reused:
                raise _Stale() from None
            raise NetworkError(f"send: {err}") from None

    def _recv(self, n: int, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _WholeTimeout()
        timeout = self.read_timeout_s if remaining > self.read_timeout_s else remaining
        if timeout != self._timeout:
            if self._kernel_timeouts:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(timeout))
            else:
                self.sock.settimeout(timeout)
            self._timeout = timeout
        rbuf = self._rbuf
        if n > len(rbuf):
            n = len(rbuf)
        try:
            got = self.sock.recv_into(rbuf, n)
            return rbuf[:got].tobytes()
        except (TimeoutError, BlockingIOError):  # BlockingIOError: SO_RCVTIMEO ran out
            if time.monotonic() >= deadline - 0.001:
                raise _WholeTimeout() from None
            raise ReadTimeout(f"no byte in {timeout:g} s") from None
        except OSError as err:
            raise NetworkError(f"recv: {err}") from None

    def read_some(self, n: int, deadline: float) -> bytes:
        """At most `n` bytes (what is buffered first); b"" when the server closed the connection."""
        buf = self._buf
        if buf:
            if len(buf) <= n:
                self._buf = b""
                return buf
            self._buf = buf[n:]
            return buf[:n]
        return self._recv(n, deadline)

    def read_line(self, deadline: float, limit: int = _MAX_HEADER_BYTES) -> bytes:
        """One line without its CRLF (chunk sizes, trailers)."""
        buf = self._buf
        while True:
            i = buf.find(b"\n")
            if i >= 0:
                self._buf = buf[i + 1 :]
                return buf[:i].rstrip(b"\r")
            if len(buf) > limit:
                raise ProtocolError("line too long")
            data = self._recv(65536, deadline)
            if not data:
                raise ProtocolError("connection closed in the middle of a line")
            buf += data

    def read_head(self, deadline: float) -> tuple[int, dict[str, str]]:
        """The status line and headers (lowercase names; repeated headers joined with ", ")."""
        buf = self._buf
        start = 0
        while True:
            end = buf.find(b"\r\n\r\n", start)
            if end >= 0:
                break
            if len(buf) > _MAX_HEADER_BYTES:
                raise ProtocolError("response headers too long")
            try:
                data = self._recv(262144, deadline)
            except ReadTimeout:
                raise
            except NetworkError:
                if not buf and self.reused:  # reset by a server that had closed it while idle
                    raise _Stale() from None
                raise
            if not data:
                if not buf and self.reused:
                    raise _Stale()
                raise ProtocolError("connection closed before the answer" if not buf else "headers cut short")
            start = max(0, len(buf) - 3)
            buf = buf + data if buf else data
        self._buf = buf[end + 4 :]
        lines = buf[:end].decode("latin-1").split("\r\n")
        status_line = lines[0].split(None, 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/") or not status_line[1].isdigit():
            raise ProtocolError(f"not an HTTP answer: {_short_text(lines[0])!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            name = name.strip().lower()
            value = value.strip()
            if name in headers:
                headers[name] = f"{headers[name]}, {value}"
            else:
                headers[name] = value
        connection = headers.get("connection", "").lower()
        if "close" in connection or (status_line[0] == "HTTP/1.0" and "keep-alive" not in connection):
            self.keep_alive = False
        return int(status_line[1]), headers


# --------------------------------------------------------------------------------------------------
# HTTP client


@dataclass
class FileResult:
    extension: str
    size: int
    width: int
    height: int
    attempts: int


class HttpClient:
    """Rate-limited GETs with retries; one keep-alive connection per thread and host.

    HTTP/1.1 is spoken here directly over the socket (Content-Length, chunked and close-delimited
    bodies, gzip/deflate, HTTPS with the CA bundle of REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE / certifi,
    HTTP(S)_PROXY and NO_PROXY read once per host): `requests` cost about 1 ms of CPU a file, more than
    everything else a download does. A kept-alive connection the server closed meanwhile is replaced
    at once (the request had not reached it); every other failure goes through `fetch`'s retries."""

    def __init__(
        self,
        limiter: RateLimiter,
        retry: RetryPolicy = RetryPolicy(),
        *,
        timeout_s: tuple[float, float] = (10.0, 60.0),
        body_timeout_s: float = 300.0,
        user_agent: str = USER_AGENT,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.limiter = limiter
        self.retry = retry
        self.timeout_s = timeout_s  # (connect, between two reads)
        self.body_timeout_s = body_timeout_s  # a whole answer (a server that trickles bytes forever)
        self.user_agent = user_agent
        self._sleep = sleep
        self._local = threading.local()
        self._conns: set[_Connection] = set()
        self._conns_lock = threading.Lock()
        self._proxy_cache: dict[tuple[str, str], str | None] = {}
        self._ssl_context = None
        self._closed = False
        self.stopped: CrawlStopped | None = None
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    def close(self) -> None:
        self._closed = True
        with self._conns_lock:
            conns = list(self._conns)
            self._conns.clear()
        for conn in conns:
            conn.close()

    def fetch(self, url: str, read: Callable[[Response], T]) -> tuple[T, int]:
        """GET `url` and hand the 200 response to `read`; returns `(read's result, attempts)`.

        Retries what can succeed later. Raises GaveUp when attempts run out or a failure is final,
        CrawlStopped (and stops every thread) on a Cloudflare challenge or a Retry-After too long to
        wait. Redirects are followed here (at most `MAX_REDIRECTS`, http(s) only), each hop through
        the rate limiter like any request."""
        last = "no attempt"
        for attempt in range(1, self.retry.attempts + 1):
            throttled = False
            retry_after = None
            try:
                with self._get(url) as resp:
                    return read(resp), attempt
            except CrawlStopped as err:
                if self.stopped is None:
                    self.stopped = err
                raise
            except FetchError as err:
                last, retryable, retry_after = err.reason, err.retryable, err.retry_after_s
                throttled = err.throttled
                if retry_after is not None and retry_after > self.retry.max_retry_after_s:
                    stop = ServerAsksToWait(url, err.status or 0, retry_after)
                    if self.stopped is None:
                        self.stopped = stop
                    raise self.stopped from None
            except _WholeTimeout:
                last, retryable = f"timeout: the answer took more than {self.body_timeout_s:g} s", True
            except ConnectTimeout:
                last, retryable = "timeout (ConnectTimeout)", True
            except ReadTimeout:
                last, retryable = "timeout (ReadTimeout)", True
            except (NetworkError, ProtocolError) as err:
                last, retryable = f"connection error ({_short(err)})", True
            if not retryable or attempt == self.retry.attempts:
                raise GaveUp(last, attempt)
            if retry_after:  # every thread waits: the server asked
                self.limiter.pause_for(retry_after)
            elif throttled:  # "too fast" without a Retry-After (or 0): every thread backs off
                self.limiter.pause_for(self.retry.delay_s(attempt))
            else:
                self._sleep(self.retry.delay_s(attempt))
        raise GaveUp(last, self.retry.attempts)  # pragma: no cover - the loop returns or raises

    @contextlib.contextmanager
    def _get(self, url: str) -> Iterator[Response]:
        """One rate-limited GET, redirects followed by hand; yields the checked 200 response."""
        for _hop in range(MAX_REDIRECTS + 1):
            if self.stopped is not None:
                raise self.stopped
            self.limiter.acquire()
            if self.stopped is not None:
                raise self.stopped
            with self._count_lock:
                self.requests_sent += 1
            resp = self._request(url)
            try:
                location = resp.header("location") if resp.status in _REDIRECTS else None
                if location is None:
                    self._check_status(url, resp)
                    yield resp
                    return
                resp.drain()
            finally:
                resp.release()
            target = urljoin(url, location.strip())
            if urlsplit(target).scheme not in ("http", "https"):
                raise FetchError(f"redirect to a non-HTTP address: {_short_text(target)}", retryable=False)
            url = target
        raise FetchError(f"more than {MAX_REDIRECTS} redirects (last: {_short_text(url)})", retryable=False)

    def _request(self, url: str) -> Response:
        """Send one GET and read the answer's head; the body is left to the caller."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        if scheme not in ("http", "https") or not host:
            raise FetchError(f"invalid URL: {_short_text(url)}", retryable=False)
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise FetchError(f"invalid URL (port): {_short_text(url)}", retryable=False) from None
        proxy = self._proxy_for(scheme, host)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        if _NEEDS_QUOTING.search(target):  # spaces, non-ASCII: percent-encoded as requests does
            target = quote(target, safe=_URL_SAFE)
        host_header = f"[{host}]" if ":" in host else host
        if port != (443 if scheme == "https" else 80):
            host_header += f":{port}"
        lines = [
            f"GET {f'{scheme}://{host_header}{target}' if proxy and scheme == 'http' else target} HTTP/1.1",
            f"Host: {host_header}",
            f"User-Agent: {self.user_agent}",
            f"Accept-Encoding: {_ACCEPT_ENCODING}",
            "Accept: */*",
            "Connection: keep-alive",
        ]
        if parts.username is not None:
            lines.append(f"Authorization: {_basic_auth(parts.username, parts.password)}")
        if proxy and scheme == "http":
            auth = _proxy_auth(proxy)
            if auth:
                lines.append(f"Proxy-Authorization: {auth}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "strict")
        deadline = time.monotonic() + self.body_timeout_s
        key = (scheme, host, port, proxy)
        conns = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(key)
        for _ in range(2):
            if conn is None or conn.closed:
                conn = conns[key] = self._connect(scheme, host, port, proxy)
            try:
                conn.send(head)
                status, headers = conn.read_head(deadline)
            except _Stale:  # the server closed it while it was idle: a new one, at once
                self._drop(conn)
                conn = None
                continue
            except BaseException:
                self._drop(conn)
                raise
            return Response(conn, url, status, headers, deadline, self._drop)
        raise ProtocolError("the server closed two connections in a row without answering")

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        with self._conns_lock:
            self._conns.discard(conn)

    def _proxy_for(self, scheme: str, host: str) -> str | None:
        key = (scheme, host)
        try:
            return self._proxy_cache[key]
        except KeyError:
            proxy = self._proxy_cache[key] = _environ_proxy(scheme, host)
            return proxy

    def _context(self):
        if self._ssl_context is None:
            import ssl

            cafile = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if not cafile:
                try:
                    import certifi

                    cafile = certifi.where()
                except ImportError:
                    cafile = None
            if cafile and os.path.isdir(cafile):
                self._ssl_context = ssl.create_default_context(capath=cafile)
            else:
                self._ssl_context = ssl.create_default_context(cafile=cafile)
        return self._ssl_context

    def _connect(self, scheme: str, host: str, port: int, proxy: str | None) -> _Connection:
        if self._closed:
            raise NetworkError("the client is closed")
        connect_s, read_s = self.timeout_s
        address = (host, port)
        if proxy:
            p = urlsplit(proxy)
            address = (p.hostname or "", p.port or (443 if p.scheme == "https" else 80))
        try:
            sock = socket.create_connection(address, timeout=connect_s)
        except TimeoutError:
            raise ConnectTimeout(f"connect to {address[0]}:{address[1]}") from None
        except OSError as err:
            raise NetworkError(f"connect to {address[0]}:{address[1]}: {err}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if proxy and urlsplit(proxy).scheme == "https":
                sock = self._context().wrap_socket(sock, server_hostname=address[0])
            if proxy and scheme == "https":  # a tunnel through the proxy, then TLS end to end
                tunnel = _Connection(sock, connect_s)
                auth = _proxy_auth(proxy)
                request = f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                if auth:
                    request += f"Proxy-Authorization: {auth}\r\n"
                tunnel.send((request + "\r\n").encode("latin-1"))
                status, _ = tunnel.read_head(time.monotonic() + connect_s)
                if status != 200:
                    raise NetworkError(f"the proxy refused the tunnel to {host}:{port} (HTTP {status})")
            if scheme == "https":
                sock = self._context().wrap_socket(sock, server_hostname=host)
            kernel_timeouts = _KERNEL_TIMEOUTS and not isinstance(sock, _ssl_socket_types())
            if kernel_timeouts:
                sock.settimeout(None)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(read_s))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(read_s))
            else:
                sock.settimeout(read_s)
        except TimeoutError:
            sock.close()
            raise ConnectTimeout(f"TLS handshake with {host}:{port}") from None
        except OSError as err:
            sock.close()
            raise NetworkError(f"{host}:{port}: {err}") from None
        except BaseException:
            sock.close()
            raise
        conn = _Connection(sock, read_s, kernel_timeouts)
        with self._conns_lock:
            self._conns.add(conn)
        return conn

    def _check_status(self, url: str, resp: Response) -> None:
        status = resp.status
        headers = resp.headers
        if status == 200 and "cf-mitigated" not in headers:
            return
        body = b""
        if status != 200 or "html" in headers.get("content-type", ""):
            body = resp.drain(65536)
        if is_cloudflare_challenge(status, headers, body):
            if self.stopped is None:
                self.stopped = CloudflareChallenge(url, status)
            raise self.stopped
        if status == 200:
            return
        if status in RETRY_STATUSES:
            retry_after = parse_retry_after(headers.get("retry-after"))
            raise FetchError(
                f"HTTP {status}",
                retryable=True,
                retry_after_s=retry_after,
                throttled=status in (429, 503),
                status=status,
            )
        raise FetchError(f"HTTP {status}", retryable=False, status=status)

    # conveniences ------------------------------------------------------------------------------------

    def get_bytes(self, url: str, max_bytes: int = 64 * 1024 * 1024) -> bytes:
        """The whole body of a small answer (an API page)."""

        def read(resp: Response) -> bytes:
            body = resp.drain(max_bytes + 1)
            if len(body) > max_bytes:
                raise FetchError(f"answer larger than {max_bytes} bytes", retryable=False)
            return body

        body, _ = self.fetch(url, read)
        return body

    def download_file(
        self,
        url: str,
        md5: str,
        part: Path,
        max_bytes: int,
        *,
        fsync: bool = False,
        gate: contextlib.AbstractContextManager | None = None,
    ) -> FileResult:
        """Stream `url` into `part`, verified (size cap, image check, md5), and fsynced if `fsync`.

        The rename that follows is what makes a kill safe (the final name only ever holds a whole,
        verified file); `fsync` adds safety against a power cut, at several ms a file on a slow disk.

        `gate` (a lock shared by the download threads): a body of known length up to 8 MB is first
        read whole from the network, then written and checked holding the gate, so that the threads
        wait for the network in parallel but do the CPU and disk work of their files one at a time.
        Larger, chunked and compressed bodies are streamed to disk as they come, without the gate.

        On any failure `part` is removed and GaveUp/CrawlStopped is raised; on success `part` holds the
        exact bytes whose md5 the API announced."""

        def read(resp: Response) -> tuple[str, int, int, int]:
            length = resp.content_length
            if length is not None and length > max_bytes:
                raise FetchError(f"too large: {length} bytes > --max-mb cap", retryable=False)
            chunks: Iterable[bytes] = resp.chunks(_CHUNK_BYTES)
            held: contextlib.AbstractContextManager = contextlib.nullcontext()
            if (
                gate is not None
                and length is not None
                and length <= _IN_MEMORY_CHECK_BYTES
                and not resp.encoded
            ):
                chunks, held = list(chunks), gate  # the network wait happens here, outside the gate
            digest = hashlib.md5()
            size = 0
            kept: list[bytes] | None = []  # small bodies are checked in memory (no second open)
            fd = -1
            try:
                with held:
                    # raw os calls: no buffered-file layer (isatty, fstat, lseek), fewer GIL hand-overs
                    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
                    fd = os.open(part, flags, 0o666)
                    for chunk in chunks:
                        size += len(chunk)
                        if size > max_bytes:
                            raise FetchError(
                                f"too large: more than {max_bytes} bytes (--max-mb cap)", retryable=False
                            )
                        digest.update(chunk)
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view) :]
                        if kept is not None:
                            kept.append(chunk)
                            if size > _IN_MEMORY_CHECK_BYTES:
                                kept = None
                    if kept is not None:
                        body: Path | bytes = kept[0] if len(kept) == 1 else b"".join(kept)
                    else:
                        body = part
                    ext, width, height = _check_body(body, resp)
                    got = digest.hexdigest()
                    if got != md5:
                        raise FetchError(
                            f"md5 mismatch: file {got}, API says {md5} ({size} bytes)", retryable=True
                        )
                if fsync:  # outside the gate: the disk may take milliseconds, other threads need not wait
                    os.fsync(fd)
            finally:
                if fd >= 0:
                    os.close(fd)
            return ext, size, width, height

        try:
            (ext, size, width, height), attempts = self.fetch(url, read)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return FileResult(ext, size, width, height, attempts)


def _basic_auth(user: str | None, password: str | None) -> str:
    raw = f"{unquote(user or '')}:{unquote(password or '')}".encode("latin-1", "replace")
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _proxy_auth(proxy: str) -> str | None:
    p = urlsplit(proxy)
    return _basic_auth(p.username, p.password) if p.username is not None else None


def _check_body(body: Path | bytes, resp: Response) -> tuple[str, int, int]:
    try:
        return check_image(body)
    except FetchError:
        if isinstance(body, Path):
            body = body.read_bytes()[:65536] if body.stat().st_size < 2**20 else b""
        if is_cloudflare_challenge(200, resp.headers, body[:65536]):
            raise CloudflareChallenge(resp.url, 200) from None
        raise


def _short(err: Exception) -> str:
    return _short_text(str(err))


def _short_text(text: str) -> str:
    return text if len(text) < 160 else text[:157] + "..."
