"""HTTP for the crawler on urllib3: one global rate limit, retries with backoff, Cloudflare stop, verified files.

- `RateLimiter`: next-slot scheduling shared by every thread (API pages and files alike); a Retry-After
  pauses them all.
- `HttpClient`: one urllib3 pool shared by the workers (a `ProxyManager` where HTTP(S)_PROXY says so,
  NO_PROXY with CIDR ranges honoured; TLS from the system store, SSL_CERT_FILE, or REQUESTS_CA_BUNDLE).
  `fetch(url, read)` follows redirects through the rate limit and retries 429/5xx, timeouts, broken
  answers and whatever `read` calls retryable, honouring Retry-After. A body has `body_timeout_s` in all.
- `download_file`: streams into `*.part` under a size cap, checks the image and the API's md5; the caller
  renames. Workers may share a `gate`: a small body is received whole, then stored holding it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import json
import os
import random
import re
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

import urllib3

T = TypeVar("T")

USER_AGENT = "lineart-colorizer-crawler/0.1 (+https://github.com/; polite: rate-limited, resumable)"
MAX_REDIRECTS = 5
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PLAIN_TARGET = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]+")
_CHUNK_BYTES = 256 * 1024
_IN_MEMORY_CHECK_BYTES = 8 * 1024 * 1024
_PILLOW_LOCK = threading.Lock()
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
    import email.utils  # only for an HTTP-date Retry-After

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
    from PIL import Image  # here, not at the top: `crawler crawl --help` stays quick

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
# Proxies and TLS from the environment


def environ_proxy(scheme: str, host: str) -> str | None:
    """The proxy for `scheme://host` from HTTP(S)_PROXY / ALL_PROXY, None when NO_PROXY excludes the host
    (names, `.domain` suffixes, `*`, and CIDR ranges such as 127.0.0.0/8) or no proxy is set."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy:
        return None
    no_proxy = proxies.get("no", "")
    if urllib.request.proxy_bypass_environment(host, proxies) or _in_networks(host, no_proxy):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _in_networks(host: str, no_proxy: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    for entry in no_proxy.replace(" ", ",").split(","):
        with contextlib.suppress(ValueError):
            if "/" in entry and address in ipaddress.ip_network(entry.strip(), strict=False):
                return True
    return False


def ssl_context():
    """REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (a file or a folder) when set; else the system store, where
    OpenSSL honours SSL_CERT_FILE and SSL_CERT_DIR."""
    import ssl

    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle and os.path.isdir(bundle):
        return ssl.create_default_context(capath=bundle)
    return ssl.create_default_context(cafile=bundle or None)


# --------------------------------------------------------------------------------------------------
# HTTP client


@dataclass
class FileResult:
    extension: str
    size: int
    width: int
    height: int
    attempts: int


class _Deadlines:
    """A thread that shuts down answers still being read past their deadline (a server trickling bytes:
    each read within the read timeout, the whole never ending). It looks twice a second, so that a
    request costs two dict operations and no lock."""

    POLL_S = 0.25

    def __init__(self):
        self._live: dict[int, tuple[float, urllib3.BaseHTTPResponse]] = {}
        self._expired: set[int] = set()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def watch(self, resp: urllib3.BaseHTTPResponse, deadline: float) -> None:
        self._live[id(resp)] = (deadline, resp)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
            self._thread.start()

    def done(self, resp: urllib3.BaseHTTPResponse) -> bool:
        """Stop watching; True if the deadline had passed and the body was cut."""
        self._live.pop(id(resp), None)
        if id(resp) in self._expired:
            self._expired.discard(id(resp))
            return True
        return False

    def close(self) -> None:
        self._closed.set()

    def _run(self) -> None:
        while not self._closed.wait(self.POLL_S):
            now = time.monotonic()
            for key, (deadline, resp) in list(self._live.items()):
                if deadline <= now and self._live.pop(key, None) is not None:
                    self._expired.add(key)
                    with contextlib.suppress(Exception):
                        resp.shutdown()  # the reading thread's recv returns at once


class HttpClient:
    """Rate-limited GETs with retries over one shared urllib3 pool (see the module docstring)."""

    def __init__(
        self,
        limiter: RateLimiter,
        retry: RetryPolicy = RetryPolicy(),
        *,
        timeout_s: tuple[float, float] = (10.0, 60.0),
        body_timeout_s: float = 300.0,
        user_agent: str = USER_AGENT,
        sleep: Callable[[float], None] = time.sleep,
        connections: int = 10,
    ):
        self.limiter = limiter
        self.retry = retry
        self.body_timeout_s = body_timeout_s
        self._sleep = sleep
        self._connections = connections  # kept alive per host: one per worker, else they are re-opened
        self._managers: dict[str | None, urllib3.PoolManager] = {}  # by proxy (None: direct)
        self._routes: dict[tuple[str, str], tuple] = {}  # (scheme, host:port) -> (pool, proxy manager)
        headers = {"User-Agent": user_agent, "Accept": "*/*", "Accept-Encoding": "identity"}
        # API pages compress well; images do not, and a compressed one could inflate past the size cap
        self._page_headers = {**headers, "Accept-Encoding": "gzip, deflate"}
        self._request_kw = dict(
            headers=headers,
            preload_content=False,
            redirect=False,  # followed in _get, each hop through the rate limiter
            retries=False,  # fetch() retries, through the rate limiter
            timeout=urllib3.Timeout(connect=timeout_s[0], read=timeout_s[1]),
        )
        self._lock = threading.Lock()
        self._ssl = None
        self._deadlines = _Deadlines()
        self._throttles = 0  # "too fast" answers in a row, from any thread (see _throttle_delay_s)
        self._throttle_window_end = 0.0
        self.stopped: CrawlStopped | None = None
        self.requests_sent = 0

    def close(self) -> None:
        self._deadlines.close()
        with self._lock:
            managers, self._managers = list(self._managers.values()), {}
        for manager in managers:
            manager.clear()

    def fetch(
        self, url: str, read: Callable[[urllib3.BaseHTTPResponse], T], *, compressed: bool = False
    ) -> tuple[T, int]:
        """GET `url` and hand the 200 answer to `read`; returns `(read's result, attempts)`.

        Raises GaveUp when the attempts run out or a failure is final, CrawlStopped (and stops every
        thread) on a Cloudflare challenge or a Retry-After too long to wait."""
        last = "no attempt"
        for attempt in range(1, self.retry.attempts + 1):
            throttled, retry_after = False, None
            try:
                with self._get(url, compressed) as resp:
                    return read(resp), attempt
            except CrawlStopped as err:
                if self.stopped is None:
                    self.stopped = err
                raise
            except FetchError as err:
                last, retryable, retry_after = err.reason, err.retryable, err.retry_after_s
                throttled = err.throttled
                if retry_after is not None and retry_after > self.retry.max_retry_after_s:
                    if self.stopped is None:
                        self.stopped = ServerAsksToWait(url, err.status or 0, retry_after)
                    raise self.stopped from None
            except urllib3.exceptions.TimeoutError as err:
                last, retryable = f"timeout ({type(err).__name__})", True
            except urllib3.exceptions.HTTPError as err:  # refused, reset, TLS, a broken answer
                last, retryable = f"connection error ({_short(err)})", True
            if not retryable or attempt == self.retry.attempts:
                raise GaveUp(last, attempt)
            if retry_after:  # every thread waits: the server asked
                self.limiter.pause_for(retry_after)
            elif throttled:  # "too fast" without a Retry-After: every thread backs off
                self.limiter.pause_for(self._throttle_delay_s())
            else:
                self._sleep(self.retry.delay_s(attempt))
        raise GaveUp(last, self.retry.attempts)  # pragma: no cover - the loop returns or raises

    def _throttle_delay_s(self) -> float:
        """The back-off for every thread after a "too fast" answer without a Retry-After. The server throttles
        the client, not one thread: a 429 that comes within one back-off of the previous pause's end (the
        threads' first requests after it) doubles the back-off, whichever thread receives it; a 429 after a
        quiet spell starts again from `retry.base_s`."""
        with self._lock:
            now = time.monotonic()
            self._throttles = self._throttles + 1 if now <= self._throttle_window_end else 1
            delay = self.retry.delay_s(self._throttles)
            self._throttle_window_end = now + 2 * delay  # the pause, then as long again
        return delay

    @contextlib.contextmanager
    def _get(self, url: str, compressed: bool = False) -> Iterator[urllib3.BaseHTTPResponse]:
        """One GET per hop, each through the rate limiter; yields the checked 200 answer, whose body
        must be read within `body_timeout_s`."""
        for _hop in range(MAX_REDIRECTS + 1):
            if self.stopped is not None:
                raise self.stopped
            self.limiter.acquire()
            if self.stopped is not None:
                raise self.stopped
            with self._lock:
                self.requests_sent += 1
            resp = self._request(url, compressed)
            try:
                location = resp.headers.get("location") if resp.status in _REDIRECTS else None
                if location is None:
                    self._check_status(url, resp)
                    self._deadlines.watch(resp, time.monotonic() + self.body_timeout_s)
                    try:
                        yield resp
                    except BaseException:
                        if self._deadlines.done(resp):
                            raise FetchError(
                                f"timeout: the answer took more than {self.body_timeout_s:g} s",
                                retryable=True,
                            ) from None
                        raise
                    self._deadlines.done(resp)
                    return
                resp.drain_conn()
            finally:
                if not resp.closed:  # not read to its end: the connection cannot serve another request
                    resp.close()
                resp.release_conn()
            url = urljoin(url, location.strip())
            if urlsplit(url).scheme not in ("http", "https"):
                raise FetchError(f"redirect to a non-HTTP address: {_short_text(url)}", retryable=False)
        raise FetchError(f"more than {MAX_REDIRECTS} redirects (last: {_short_text(url)})", retryable=False)

    def _request(self, url: str, compressed: bool = False) -> urllib3.BaseHTTPResponse:
        parts = urlsplit(url)
        route = self._routes.get((parts.scheme, parts.netloc))
        if route is None or route[0].pool is None:  # new host, or a pool the manager let go
            route = self._route(parts.scheme.lower(), parts.hostname, url)
            self._routes[(parts.scheme, parts.netloc)] = route
        pool, proxy = route
        kw = {**self._request_kw, "headers": self._page_headers} if compressed else self._request_kw
        if proxy is not None:
            return proxy.urlopen("GET", url, **kw)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not _PLAIN_TARGET.fullmatch(target):  # spaces, non-ASCII: percent-encoded by urllib3
            target = urllib3.util.parse_url(url).request_uri
        return pool.urlopen("GET", target, assert_same_host=False, **kw)

    def _route(self, scheme: str, host: str | None, url: str) -> tuple:
        """The connection pool for the URL's host, and the ProxyManager when the environment names a proxy."""
        if scheme not in ("http", "https") or not host:
            raise FetchError(f"invalid URL: {_short_text(url)}", retryable=False)
        with self._lock:
            proxy = environ_proxy(scheme, host)
            manager = self._managers.get(proxy)
            if manager is None:
                kw = {"num_pools": 64, "maxsize": self._connections}
                manager = urllib3.ProxyManager(proxy, **kw) if proxy else urllib3.PoolManager(**kw)
                self._managers[proxy] = manager
            if scheme == "https" and "ssl_context" not in manager.connection_pool_kw:
                if self._ssl is None:
                    self._ssl = ssl_context()  # built on the first HTTPS request: it reads the CA store
                manager.connection_pool_kw["ssl_context"] = self._ssl
            return manager.connection_from_url(url), (manager if proxy else None)

    def _check_status(self, url: str, resp: urllib3.BaseHTTPResponse) -> None:
        status, headers = resp.status, resp.headers
        if status == 200 and "cf-mitigated" not in headers:
            return
        body = resp.read(65536) if status != 200 else b""
        if is_cloudflare_challenge(status, headers, body):
            if self.stopped is None:
                self.stopped = CloudflareChallenge(url, status)
            raise self.stopped
        if status in RETRY_STATUSES:
            raise FetchError(
                f"HTTP {status}",
                retryable=True,
                retry_after_s=parse_retry_after(headers.get("retry-after")),
                throttled=status in (429, 503),
                status=status,
            )
        if status != 200:
            raise FetchError(f"HTTP {status}{_message(body)}", retryable=False, status=status)

    # conveniences ------------------------------------------------------------------------------------

    def get_bytes(self, url: str, max_bytes: int = 64 * 1024 * 1024) -> bytes:
        """The whole body of a small answer (an API page)."""

        def read(resp: urllib3.BaseHTTPResponse) -> bytes:
            body = b"".join(_chunks(resp, max_bytes))
            if "html" in resp.headers.get("content-type", "") and is_cloudflare_challenge(
                200, resp.headers, body
            ):
                raise CloudflareChallenge(url, 200)
            return body

        body, _ = self.fetch(url, read, compressed=True)
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
        """Stream `url` into `part`, verified (size cap, image check, md5), fsynced if `fsync`.

        With a `gate`, a body of known length up to 8 MB is received whole first, then written and
        checked holding the gate: the threads wait for the network together and take turns at the CPU
        and disk work. On failure `part` is removed and GaveUp / CrawlStopped raised."""

        def read(resp: urllib3.BaseHTTPResponse) -> tuple[str, int, int, int]:
            length = resp.length_remaining
            if length is not None and length > max_bytes:
                raise FetchError(f"too large: {length} bytes > --max-mb cap", retryable=False)
            chunks: Iterable[bytes] = _chunks(resp, max_bytes)
            held: contextlib.AbstractContextManager = contextlib.nullcontext()
            if gate is not None and length is not None and length <= _IN_MEMORY_CHECK_BYTES:
                chunks, held = (resp.read(),), gate  # the network wait happens here, outside the gate
            digest = hashlib.md5()
            size = 0
            kept: list[bytes] | None = []  # small bodies are checked in memory (no second open)
            fd = -1
            try:
                with held:
                    fd = os.open(
                        part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o666
                    )
                    for chunk in chunks:
                        size += len(chunk)
                        digest.update(chunk)
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view) :]
                        if kept is not None:
                            kept.append(chunk)
                            if size > _IN_MEMORY_CHECK_BYTES:
                                kept = None
                    body: Path | bytes = part if kept is None else b"".join(kept)
                    ext, width, height = _check_body(body, resp, url)
                    got = digest.hexdigest()
                    if got != md5:
                        raise FetchError(
                            f"md5 mismatch: file {got}, API says {md5} ({size} bytes)", retryable=True
                        )
                if fsync:  # outside the gate: the disk may take milliseconds
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


def _chunks(resp: urllib3.BaseHTTPResponse, max_bytes: int) -> Iterator[bytes]:
    """The decoded body in pieces, refused past `max_bytes` (counted as it arrives: chunked bodies too)."""
    size = 0
    for chunk in resp.stream(_CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(f"too large: more than {max_bytes} bytes (--max-mb cap)", retryable=False)
        yield chunk


def _check_body(body: Path | bytes, resp: urllib3.BaseHTTPResponse, url: str) -> tuple[str, int, int]:
    try:
        return check_image(body)
    except FetchError:
        if isinstance(body, Path):
            body = body.read_bytes()[:65536] if body.stat().st_size < 2**20 else b""
        if is_cloudflare_challenge(200, resp.headers, body[:65536]):
            raise CloudflareChallenge(url, 200) from None
        raise


def _message(body: bytes) -> str:
    """`: <message>` from a JSON error body (`{"message": ...}`, as Danbooru answers a refused search)."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return ""
    said = decoded.get("message") or decoded.get("reason") if isinstance(decoded, dict) else None
    return f": {_short_text(str(said))}" if said else ""


def _short(err: Exception) -> str:
    return _short_text(str(err))


def _short_text(text: str) -> str:
    return text if len(text) < 160 else text[:157] + "..."
