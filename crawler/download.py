"""HTTP for the crawler: one global rate limit, retries with backoff, Cloudflare stop, verified downloads.

- `RateLimiter`: a next-slot scheduler shared by every thread (API pages and files alike). Slots are
  `1 / rate` apart; `pause_until` pushes every thread back (a Retry-After is a message to the client,
  not to one thread).
- `HttpClient`: one keep-alive `requests.Session` per thread; `fetch(url, read)` retries 429/5xx,
  timeouts, connection errors and whatever `read` calls retryable (a truncated body, an md5 mismatch),
  with exponential backoff and jitter, honouring Retry-After (seconds or an HTTP date). A Cloudflare
  challenge raises `CloudflareChallenge` and flips a shared stop flag: no thread sends another request.
- `download_file`: streams to `*.part` with a size cap, checks that the body is an image (magic bytes
  and Pillow's header decode, decompression-bomb guard) and that its md5 is the API's, fsyncs if asked,
  and returns; the caller renames (`os.replace`) once the name is decided.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import io
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

import requests
from PIL import Image

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
# HTTP client


@dataclass
class FileResult:
    extension: str
    size: int
    width: int
    height: int
    attempts: int


class HttpClient:
    """Rate-limited GETs with retries; one keep-alive session per thread."""

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
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._proxy_cache: dict[str, dict[str, str]] = {}
        self._watch_lock = threading.Lock()
        self._watched: dict[int, tuple[float, requests.Response]] = {}
        self._watchdog: threading.Thread | None = None
        self._closed = False
        self.stopped: CrawlStopped | None = None
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    def session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=2, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            s.headers["User-Agent"] = self.user_agent
            # requests re-reads proxy settings from os.environ on every request (about 0.7 ms here);
            # read them once instead, per host, with the same rules (HTTP(S)_PROXY, NO_PROXY, CA bundle)
            s.trust_env = False
            s.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
            self._local.session = s
            with self._sessions_lock:
                self._sessions.append(s)
        return s

    def _proxies_for(self, url: str) -> dict[str, str]:
        netloc = urlsplit(url).netloc
        proxies = self._proxy_cache.get(netloc)
        if proxies is None:
            proxies = self._proxy_cache[netloc] = requests.utils.get_environ_proxies(url)
        return proxies

    def close(self) -> None:
        self._closed = True
        with self._sessions_lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()

    def fetch(self, url: str, read: Callable[[requests.Response], T]) -> tuple[T, int]:
        """GET `url` and hand the 200 response to `read`; returns `(read's result, attempts)`.

        Retries what can succeed later. Raises GaveUp when attempts run out or a failure is final,
        CrawlStopped (and stops every thread) on a Cloudflare challenge or a Retry-After too long to
        wait. Redirects are followed here (at most `MAX_REDIRECTS`, http(s) only), each hop through
        the rate limiter like any request."""
        last = "no attempt"
        for attempt in range(1, self.retry.attempts + 1):
            throttled = False
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
            except requests.Timeout as err:
                last, retryable, retry_after = f"timeout ({type(err).__name__})", True, None
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as err:
                last, retryable, retry_after = f"connection error ({_short(err)})", True, None
            except requests.RequestException as err:
                last, retryable, retry_after = f"request failed ({_short(err)})", False, None
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
    def _get(self, url: str) -> Iterator[requests.Response]:
        """One rate-limited GET, redirects followed by hand; yields the checked 200 response."""
        for _hop in range(MAX_REDIRECTS + 1):
            if self.stopped is not None:
                raise self.stopped
            self.limiter.acquire()
            if self.stopped is not None:
                raise self.stopped
            with self._count_lock:
                self.requests_sent += 1
            resp = self.session().get(
                url,
                stream=True,
                timeout=self.timeout_s,
                proxies=self._proxies_for(url),
                allow_redirects=False,
            )
            with resp:
                location = resp.headers.get("Location") if resp.is_redirect else None
                if location is None:
                    self._check_status(url, resp)
                    deadline = time.monotonic() + self.body_timeout_s
                    resp.deadline = deadline  # type: ignore[attr-defined]
                    self._watch(resp, deadline)
                    try:
                        yield resp
                    except requests.RequestException:
                        if getattr(resp, "timed_out", False):
                            raise FetchError(
                                f"timeout: the answer took more than {self.body_timeout_s:g} s",
                                retryable=True,
                            ) from None
                        raise
                    finally:
                        self._unwatch(resp)
                    return
            target = urljoin(url, location.strip())
            if urlsplit(target).scheme not in ("http", "https"):
                raise FetchError(f"redirect to a non-HTTP address: {_short_text(target)}", retryable=False)
            url = target
        raise FetchError(f"more than {MAX_REDIRECTS} redirects (last: {_short_text(url)})", retryable=False)

    def _watch(self, resp: requests.Response, deadline: float) -> None:
        """Close `resp`'s socket if its body is still arriving at `deadline`: the read timeout bounds
        each wait for bytes, not a server that trickles one byte at a time."""
        with self._watch_lock:
            self._watched[id(resp)] = (deadline, resp)
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch_loop, name="http-watchdog", daemon=True)
                self._watchdog.start()

    def _unwatch(self, resp: requests.Response) -> None:
        with self._watch_lock:
            self._watched.pop(id(resp), None)

    def _watch_loop(self) -> None:
        period = min(1.0, max(0.05, self.body_timeout_s / 4))
        while not self._closed:
            time.sleep(period)
            now = time.monotonic()
            with self._watch_lock:
                overdue = [r for d, r in self._watched.values() if d < now]
            for resp in overdue:
                resp.timed_out = True  # type: ignore[attr-defined]
                sock = getattr(getattr(resp.raw, "_connection", None), "sock", None)
                with contextlib.suppress(OSError, AttributeError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in recv()

    def _check_status(self, url: str, resp: requests.Response) -> None:
        status = resp.status_code
        if status == 200 and "cf-mitigated" not in {k.lower() for k in resp.headers}:
            return
        body = b""
        if status != 200 or "html" in resp.headers.get("Content-Type", ""):
            body = _read_capped(resp, 65536)
        if is_cloudflare_challenge(status, resp.headers, body):
            if self.stopped is None:
                self.stopped = CloudflareChallenge(url, status)
            raise self.stopped
        if status == 200:
            return
        if status in RETRY_STATUSES:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
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

        def read(resp: requests.Response) -> bytes:
            body = _read_capped(resp, max_bytes + 1)
            if len(body) > max_bytes:
                raise FetchError(f"answer larger than {max_bytes} bytes", retryable=False)
            return body

        body, _ = self.fetch(url, read)
        return body

    def download_file(
        self, url: str, md5: str, part: Path, max_bytes: int, *, fsync: bool = False
    ) -> FileResult:
        """Stream `url` into `part`, verified (size cap, image check, md5), and fsynced if `fsync`.

        The rename that follows is what makes a kill safe (the final name only ever holds a whole,
        verified file); `fsync` adds safety against a power cut, at several ms a file on a slow disk.

        On any failure `part` is removed and GaveUp/CrawlStopped is raised; on success `part` holds the
        exact bytes whose md5 the API announced."""

        def read(resp: requests.Response) -> tuple[str, int, int, int]:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise FetchError(f"too large: {int(length)} bytes > --max-mb cap", retryable=False)
            digest = hashlib.md5()
            size = 0
            kept: list[bytes] | None = []  # small bodies are checked in memory (no second open)
            # raw os calls: no buffered-file layer (isatty, fstat, lseek), fewer GIL hand-overs
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o666)
            try:
                for chunk in resp.iter_content(_CHUNK_BYTES):
                    _check_deadline(resp)
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
                ext, width, height = _check_body(b"".join(kept) if kept is not None else part, resp)
                got = digest.hexdigest()
                if got != md5:
                    raise FetchError(
                        f"md5 mismatch: file {got}, API says {md5} ({size} bytes)", retryable=True
                    )
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            return ext, size, width, height

        try:
            (ext, size, width, height), attempts = self.fetch(url, read)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return FileResult(ext, size, width, height, attempts)


def _check_body(body: Path | bytes, resp: requests.Response) -> tuple[str, int, int]:
    try:
        return check_image(body)
    except FetchError:
        if isinstance(body, Path):
            body = body.read_bytes()[:65536] if body.stat().st_size < 2**20 else b""
        if is_cloudflare_challenge(200, resp.headers, body[:65536]):
            raise CloudflareChallenge(resp.url, 200) from None
        raise


def _check_deadline(resp: requests.Response) -> None:
    deadline = getattr(resp, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise FetchError("timeout: the answer took too long to arrive (trickling)", retryable=True)


def _read_capped(resp: requests.Response, max_bytes: int) -> bytes:
    chunks = []
    size = 0
    for chunk in resp.iter_content(65536):
        _check_deadline(resp)
        chunks.append(chunk)
        size += len(chunk)
        if size >= max_bytes:
            break
    return b"".join(chunks)


def _short(err: Exception) -> str:
    return _short_text(str(err))


def _short_text(text: str) -> str:
    return text if len(text) < 160 else text[:157] + "..."
