"""`crawler crawl`: list each query, download what is missing, resume after any stop.

One query at a time (so "the first query's folder holds the file" is well defined); inside a query
the main thread pages through the API and W worker threads download, all through one rate limiter.
Every post ends in exactly one of: new (downloaded now), had (already on disk for this query),
linked (stored by another query or post: placed by hard link / symlink / sidecar only), skipped (not an
image: webm, swf, ...), failed (with its reason, also in the archive).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .archive import Archive, StoredFile
from .download import CrawlStopped, GaveUp, HttpClient, RateLimiter, RetryPolicy
from .layout import (
    ensure_query_folder,
    place_copy,
    relative_file,
    same_file,
    write_sidecar,
)
from .sites import IMAGE_EXTENSIONS, ApiError, Listing, Post, get_site
from .sites.gelbooru_v02 import OFFSET_CAP

ARCHIVE_NAME = "archive.sqlite"
LOCK_NAME = ".crawl.lock"
_LEFTOVER_SUFFIXES = (".part", ".tmp", ".link-tmp")


@dataclass(frozen=True)
class CrawlOptions:
    site: str = "safebooru"  # crawler.sites: safebooru | gelbooru | danbooru
    base_url: str | None = None  # another instance of the site's software; None: the site itself
    rate_per_s: float = 2.0  # every request (API pages and files) shares it; 0 = unlimited
    workers: int = 4
    limit: int | None = None  # posts per query
    fmt: str = (
        "xml"  # Gelbooru 0.2: xml gives the total (`count`) for the progress bar and the empty-page check
    )
    max_bytes: int = 50 * 1024 * 1024
    retry: RetryPolicy = RetryPolicy()
    offset_cap: int = OFFSET_CAP
    page_retry_delay_s: float = 0.5
    timeout_s: tuple[float, float] = (10.0, 60.0)
    progress: bool = True
    fsync: bool = False  # each file fsynced before its rename: survives a power cut, costs ms a file
    one_cpu: bool = True  # the crawl's threads share one processor (Linux; see `_on_one_cpu`)


@dataclass(frozen=True)
class Failure:
    query: str
    post_id: int
    reason: str
    attempts: int

    @property
    def kind(self) -> str:
        """The reason without its details ("md5 mismatch", "HTTP 404", "not an image")."""
        return self.reason.split(":")[0].split(" (")[0].strip()


@dataclass
class QueryReport:
    query: str
    folder: str
    listed: int = 0
    total: int | None = None
    outcomes: Counter = field(default_factory=Counter)
    error: str | None = None  # the listing itself failed
    notes: list[str] = field(default_factory=list)


@dataclass
class CrawlSummary:
    queries: list[QueryReport] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    stopped: str | None = None
    requests: int = 0
    elapsed_s: float = 0.0

    def count(self, outcome: str) -> int:
        return sum(q.outcomes[outcome] for q in self.queries)

    @property
    def ok(self) -> bool:
        return not self.failures and self.stopped is None and not any(q.error for q in self.queries)

    def format(self) -> str:
        lines = []
        for q in self.queries:
            of = f" of {q.total}" if q.total is not None else ""
            o = q.outcomes
            lines.append(
                f"{q.query!r} -> {q.folder}/: {q.listed}{of} listed; {o['new']} new, {o['had']} already had, "
                f"{o['linked']} linked, {o['skipped']} skipped, {o['failed']} failed"
            )
            lines += [f"  note: {n}" for n in q.notes]
            if q.error:
                lines.append(f"  listing failed: {q.error}")
        lines.append(
            f"total: {self.count('new')} new, {self.count('had')} already had, {self.count('linked')} linked "
            f"(stored once, under the first query), {self.count('skipped')} skipped (not images), "
            f"{len(self.failures)} failed; {self.requests} requests in {self.elapsed_s:.1f} s"
        )
        if self.failures:
            kinds = Counter(f.kind for f in self.failures)
            lines.append("failed, by reason: " + ", ".join(f"{k} ({n})" for k, n in kinds.most_common()))
            for f in self.failures[:20]:
                lines.append(f"  {f.query!r} post {f.post_id}: {f.reason} (after {f.attempts} attempts)")
            if len(self.failures) > 20:
                lines.append(f"  ... {len(self.failures) - 20} more (table `failures` in {ARCHIVE_NAME})")
        if self.stopped:
            lines.append(self.stopped)
        return "\n".join(lines)


@contextlib.contextmanager
def dir_lock(out_dir: Path) -> Iterator[None]:
    """One crawl at a time per DIR (released by the OS even after kill -9)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock
        yield
        return
    with open(out_dir / LOCK_NAME, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another crawl is writing into {out_dir} (lock {LOCK_NAME})") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Crawler:
    """Runs queries into `out_dir` (see `crawl`)."""

    def __init__(self, out_dir: Path, options: CrawlOptions, archive: Archive, client: HttpClient):
        self.out_dir = out_dir
        self.options = options
        self.archive = archive
        self.client = client
        self.site = get_site(options.site, options.base_url, fmt=options.fmt, offset_cap=options.offset_cap)
        self._locks_guard = threading.Lock()
        self._md5_locks: dict[str, threading.Lock] = {}
        self._summary_lock = threading.Lock()
        # One worker at a time does the CPU and disk work of a fetched file (write, md5, image check,
        # rename, sidecar, archive row); the network waits stay parallel. With more threads runnable than
        # cores, every system call would hand the GIL to another thread.
        self._store_gate = threading.Lock()

    @contextlib.contextmanager
    def _md5_lock(self, md5: str) -> Iterator[None]:
        # two posts with one md5 in flight at once: the second waits, then links to the first
        with self._locks_guard:
            lock = self._md5_locks.setdefault(md5, threading.Lock())
        with lock:
            yield

    # one post ----------------------------------------------------------------------------------------

    def process(
        self, query: str, folder: Path, post: Post, on_disk: dict[int, list[str]]
    ) -> tuple[str, Failure | None]:
        """Bring `post` into `folder`; returns (outcome, failure or None)."""
        if post.extension is None:
            self.archive.record_skipped(query, post.id, post.md5, f"not an image file: {post.file_url}")
            return "skipped", None
        sidecar = folder / f"{post.id}.json"
        with self._md5_lock(post.md5):
            stored = self.archive.stored_file(post.md5)
            stored_path = self.out_dir / stored.path if stored else None
            if stored is not None and not _intact(stored_path, stored.size):
                self.archive.forget_file(post.md5)  # deleted or damaged by hand: fetch again
                stored = stored_path = None
            if stored is not None and stored_path is not None:
                return self._place_stored(query, folder, post, stored, stored_path, sidecar), None
            found = self._find_on_disk(folder, post, on_disk)
            if found is not None:
                size = found.stat().st_size
                write_sidecar(folder, post, query, found.name)
                rel = f"{folder.name}/{found.name}"  # folders are direct children of out_dir
                self.archive.record_done(
                    query, post.id, post.md5, "found", StoredFile(post.md5, rel, size, post.id)
                )
                return "had", None
            part = folder / f"{post.id}.part"
            try:
                result = self.client.download_file(
                    post.file_url,
                    post.md5,
                    part,
                    self.options.max_bytes,
                    fsync=self.options.fsync,
                    gate=self._store_gate,
                )
            except GaveUp as err:
                self.archive.record_failed(query, post.id, post.md5, err.reason, err.attempts)
                return "failed", Failure(query, post.id, err.reason, err.attempts)
            final = folder / f"{post.id}.{result.extension}"
            with self._store_gate:
                os.replace(part, final)
                write_sidecar(folder, post, query, final.name)
                rel = f"{folder.name}/{final.name}"
                self.archive.record_done(
                    query,
                    post.id,
                    post.md5,
                    "downloaded",
                    StoredFile(post.md5, rel, result.size, post.id),
                    result.attempts,
                )
            return "new", None

    def _place_stored(
        self, query: str, folder: Path, post: Post, stored: StoredFile, stored_path: Path, sidecar: Path
    ) -> str:
        """The md5 is stored already (by an earlier query, or an earlier post of this one)."""
        own = folder / f"{post.id}{stored_path.suffix}"
        state = self.archive.post_state(query, post.id)
        done_before = state is not None and state.status == "done"
        complete = done_before and sidecar.exists()
        if own == stored_path or same_file(own, stored_path):  # this post's own file, or its link
            if not complete:
                how = "downloaded" if own == stored_path else ("symlink" if own.is_symlink() else "hardlink")
                write_sidecar(folder, post, query, own.name)
                self.archive.record_done(query, post.id, post.md5, how)
            return "had" if done_before or own == stored_path else "linked"
        if complete and state is not None and state.how == "none":
            return "had"
        how = place_copy(stored_path, own)
        file_field = own.name if how != "none" else relative_file(stored_path, folder)
        write_sidecar(folder, post, query, file_field)
        self.archive.record_done(query, post.id, post.md5, how)
        return "had" if done_before else "linked"

    def _find_on_disk(self, folder: Path, post: Post, on_disk: dict[int, list[str]]) -> Path | None:
        """A complete file of this post left by a run killed before it reached the archive (or an
        archive deleted by hand): kept when its md5 is right, removed when it is not."""
        for name in on_disk.pop(post.id, []):
            path = folder / name
            if path.is_symlink() or not path.is_file():
                continue
            if _md5_of(path) == post.md5:
                return path
            path.unlink(missing_ok=True)
        return None

    # one query ---------------------------------------------------------------------------------------

    def run_query(self, query: str, summary: CrawlSummary, bar_factory: Callable[..., Any]) -> None:
        folder = ensure_query_folder(self.out_dir, query)
        report = QueryReport(query, folder.name)
        summary.queries.append(report)
        self.archive.query_started(query, folder.name)
        on_disk = _scan_folder(folder)
        listing = Listing()
        opts = self.options
        posts = self.site.posts(
            self.client.get_bytes,
            query,
            limit=opts.limit,
            listing=listing,
            retry_delay_s=opts.page_retry_delay_s,
        )
        bar = bar_factory(desc=_short_query(query), unit="file")
        work = _Feed(max(16, 8 * opts.workers))  # the pager stays ahead (a page fetch is a network wait)
        abort = threading.Event()

        def worker() -> None:
            while True:
                post = work.get()
                if post is None:
                    return
                if abort.is_set() or self.client.stopped is not None:
                    continue  # drain: stopped by Cloudflare or interrupted
                try:
                    outcome, failure = self._process_checked(query, folder, post, on_disk)
                except CrawlStopped:
                    abort.set()
                    continue
                except Exception as err:  # a bug: recorded, the crawl goes on
                    reason = f"internal error: {type(err).__name__}: {err}"
                    outcome, failure = "failed", Failure(query, post.id, reason, 0)
                with self._summary_lock:
                    report.outcomes[outcome] += 1
                    if failure is not None:
                        summary.failures.append(failure)
                    bar.update(1)

        threads = [
            threading.Thread(target=worker, name=f"crawl-{i}", daemon=True) for i in range(opts.workers)
        ]
        for t in threads:
            t.start()
        try:
            for post in posts:
                if bar.total is None and listing.total is not None:
                    bar.total = min(listing.total, opts.limit) if opts.limit else listing.total
                    bar.refresh()
                if abort.is_set() or self.client.stopped is not None:
                    break
                report.listed += 1
                work.put(post)
        except CrawlStopped:
            pass
        except (ApiError, GaveUp) as err:
            report.error = str(err)
        except BaseException:  # Ctrl-C: finish the downloads under way, start no new one
            abort.set()
            raise
        finally:
            for _ in threads:
                work.put(None)
            for t in threads:
                t.join()
            bar.close()
        report.total = listing.total
        if listing.incomplete:
            report.notes.append(listing.incomplete)
        if listing.ghosts:
            report.notes.append(
                f"{listing.ghosts} records without a file skipped (ghosts, banned or deleted posts)"
            )
        if self.client.stopped is not None:
            summary.stopped = str(self.client.stopped)
            return
        _fsync_dir(folder)
        self.archive.query_finished(query, listing.total)

    def _process_checked(self, query: str, folder: Path, post: Post, on_disk: dict[int, list[str]]):
        if self.client.stopped is not None:
            raise self.client.stopped
        try:
            return self.process(query, folder, post, on_disk)
        except OSError as err:
            reason = f"file system error: {err}"
            self.archive.record_failed(query, post.id, post.md5, reason, 0)
            return "failed", Failure(query, post.id, reason, 0)


def crawl(
    queries: Sequence[str],
    out_dir: Path,
    options: CrawlOptions = CrawlOptions(),
    *,
    client: HttpClient | None = None,
    bar_file=None,
) -> CrawlSummary:
    """Crawl each query into `out_dir/<folder_for_query(query)>/`; state in `out_dir/archive.sqlite`."""
    if options.workers < 1:
        raise ValueError(f"workers must be >= 1, got {options.workers}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary = CrawlSummary()
    own_client = client is None
    if client is None:
        client = HttpClient(
            RateLimiter(options.rate_per_s),
            options.retry,
            timeout_s=options.timeout_s,
            connections=options.workers + 1,  # the workers and the pager, each kept alive
        )

    def bar_factory(**kw) -> Any:
        if not options.progress:
            return _NoBar()
        from tqdm import tqdm  # imported only when a bar is shown

        return tqdm(file=bar_file or sys.stderr, dynamic_ncols=True, **kw)

    try:
        with (
            _on_one_cpu(options.one_cpu),
            dir_lock(out_dir),
            Archive(out_dir / ARCHIVE_NAME) as archive,
        ):
            crawler = Crawler(out_dir, options, archive, client)
            for query in queries:
                crawler.run_query(query, summary, bar_factory)
                if summary.stopped:
                    break
    finally:
        summary.requests = client.requests_sent
        summary.elapsed_s = time.monotonic() - started
        if own_client:
            client.close()
    return summary


@contextlib.contextmanager
def _on_one_cpu(enabled: bool) -> Iterator[None]:
    """Keep the calling thread, and so every thread it starts, on the processor it runs on; restored after.

    Python threads hand the GIL to each other at every network wait and file write; handed between
    processors, each hand-over wakes the other core and costs more than the second core gives to a
    crawler whose work is mostly Python (BENCHMARKS.md). Only Linux lets a thread choose."""
    setaffinity = getattr(os, "sched_setaffinity", None)
    allowed = os.sched_getaffinity(0) if setaffinity is not None and enabled else set()
    pinned = False
    if len(allowed) > 1:
        with contextlib.suppress(OSError):  # a container that forbids it: run as the OS places us
            setaffinity(0, {_current_cpu(allowed)})
            pinned = True
    try:
        yield
    finally:
        if pinned:
            with contextlib.suppress(OSError):
                setaffinity(0, allowed)


def _current_cpu(allowed: set[int]) -> int:
    """The processor this thread is running on (where the OS found room for it), else the lowest allowed."""
    try:
        with open("/proc/thread-self/stat", "rb") as f:
            cpu = int(f.read().rsplit(b")", 1)[1].split()[36])  # field 39, `processor`
    except (OSError, ValueError, IndexError):
        return min(allowed)
    return cpu if cpu in allowed else min(allowed)


class _Feed:
    """The pager's posts for the workers: a bounded FIFO whose producer, once it is full, sleeps until it
    has drained to half (`queue.Queue` woke it for every item taken: a thread switch a file)."""

    def __init__(self, size: int):
        self.size = size
        self.low = size // 2
        self._items: deque = deque()
        lock = threading.Lock()
        self._not_empty = threading.Condition(lock)
        self._not_full = threading.Condition(lock)

    def put(self, item) -> None:
        with self._not_full:
            while len(self._items) >= self.size:
                self._not_full.wait()
            self._items.append(item)
            self._not_empty.notify()

    def get(self):
        with self._not_empty:
            while not self._items:
                self._not_empty.wait()
            item = self._items.popleft()
            if len(self._items) <= self.low:
                self._not_full.notify()
            return item


class _NoBar:
    """What `run_query` asks of a progress bar, doing nothing (`--no-progress`)."""

    total: int | None = None

    def update(self, n: int = 1) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def _scan_folder(folder: Path) -> dict[int, list[str]]:
    """Remove what a killed run left half-written; index `<id>.<ext>` files by id."""
    found: dict[int, list[str]] = {}
    with os.scandir(folder) as it:
        for entry in it:
            name = entry.name
            if name.endswith(_LEFTOVER_SUFFIXES):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                continue
            stem, _, ext = name.partition(".")
            if stem.isdigit() and ext.lower() in IMAGE_EXTENSIONS:
                found.setdefault(int(stem), []).append(name)
    return found


def _intact(path: Path | None, size: int) -> bool:
    try:
        return path is not None and path.stat().st_size == size
    except OSError:
        return False


def _fsync_dir(folder: Path) -> None:
    # the renames of this query's files reach the disk too
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _short_query(query: str) -> str:
    return query if len(query) <= 30 else query[:27] + "..."
