"""The crawl's state in SQLite (`DIR/archive.sqlite`, WAL): files stored, posts seen per query, failures.

Resume and dedup come from here: a post whose md5 is in `files` (and whose file is still on disk) is
never fetched again, whichever query meets it. One connection shared by the worker threads behind a
lock. Changes are buffered and written in one transaction every `commit_every_s` seconds (or
`commit_every` changes, and on `flush` / `close`); reads see buffered changes. A change is only
recorded after the file it describes is complete under its final name (verified, then renamed; fsynced
first with `--fsync`), so a kill -9 loses at most the last fraction of a second of rows, and the crawl
finds those files again on disk, hashes them and registers them (crawl.py). After a power cut without
`--fsync`, a stored file whose size no longer matches its row is fetched again. Batching matters: sqlite3
drops the GIL on every statement, and with many download threads each drop is a contended hand-over.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    md5 TEXT PRIMARY KEY,         -- lowercase hex, as the API gives it and as verified
    path TEXT NOT NULL,           -- the stored copy, relative to the crawl folder (POSIX slashes)
    size INTEGER NOT NULL,
    post_id INTEGER NOT NULL,
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS posts (
    query TEXT NOT NULL,
    post_id INTEGER NOT NULL,
    md5 TEXT NOT NULL,
    status TEXT NOT NULL,         -- done | failed | skipped
    how TEXT,                     -- done: downloaded | found | hardlink | symlink | none
    reason TEXT,                  -- failed / skipped: why
    attempts INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (query, post_id)
);
CREATE TABLE IF NOT EXISTS failures (   -- history: every failure ever recorded, oldest first
    query TEXT NOT NULL,
    post_id INTEGER NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS queries (
    query TEXT PRIMARY KEY,
    folder TEXT NOT NULL,
    total INTEGER,
    started_at REAL,
    finished_at REAL
);
"""
_UPSERT_FILE = "INSERT OR REPLACE INTO files (md5, path, size, post_id, added_at) VALUES (?,?,?,?,?)"
_DELETE_FILE = "DELETE FROM files WHERE md5=?"
_UPSERT_POST = (
    "INSERT OR REPLACE INTO posts (query, post_id, md5, status, how, reason, attempts, updated_at)"
    " VALUES (?,?,?,?,?,?,?,?)"
)
_INSERT_FAILURE = "INSERT INTO failures (query, post_id, reason, attempts, at) VALUES (?,?,?,?,?)"
_POST_COLUMNS = "query, post_id, md5, status, how, reason, attempts"


@dataclass(frozen=True)
class StoredFile:
    md5: str
    path: str
    size: int
    post_id: int


@dataclass(frozen=True)
class PostState:
    query: str
    post_id: int
    md5: str
    status: str
    how: str | None
    reason: str | None
    attempts: int


class Archive:
    """Thread-safe access to the crawl state. Paths are stored relative to the crawl folder."""

    def __init__(self, path: Path, *, commit_every_s: float = 0.5, commit_every: int = 512):
        self.path = Path(path)
        self.commit_every_s = commit_every_s
        self.commit_every = commit_every
        self._lock = threading.Lock()
        self._pending: list[tuple[str, tuple]] = []
        self._pending_files: dict[str, StoredFile | None] = {}  # None: deleted
        self._pending_posts: dict[tuple[str, int], PostState] = {}
        self._last_flush = time.monotonic()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} was written by a newer crawler (schema {version})")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def flush(self) -> None:
        """Write every buffered change (one transaction)."""
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            self._db.close()  # _flush_locked ended any transaction

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _flush_locked(self) -> None:
        self._last_flush = time.monotonic()
        if not self._pending:
            if self._db.in_transaction:
                self._db.execute("COMMIT")  # end the standing read transaction
            return
        pending, self._pending = self._pending, []
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
        try:
            i = 0
            while i < len(pending):  # runs of one statement go through executemany
                sql = pending[i][0]
                j = i
                while j < len(pending) and pending[j][0] == sql:
                    j += 1
                self._db.executemany(sql, [args for _, args in pending[i:j]])
                i = j
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            self._pending = pending + self._pending
            raise
        self._pending_files.clear()
        self._pending_posts.clear()

    def _read(self, sql: str, args: tuple) -> list[tuple]:
        # reads run inside a standing (deferred) transaction: one shared lock for many lookups instead
        # of a lock/unlock pair of fcntl calls per lookup; the next flush commits it
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
        return self._db.execute(sql, args).fetchall()

    def _write(self, statements: list[tuple[str, tuple]]) -> None:
        """Buffer changes (the caller updated the pending views under the same lock)."""
        self._pending.extend(statements)
        if (
            len(self._pending) >= self.commit_every
            or time.monotonic() - self._last_flush >= self.commit_every_s
        ):
            self._flush_locked()

    # files -------------------------------------------------------------------------------------------

    def stored_file(self, md5: str) -> StoredFile | None:
        with self._lock:
            if md5 in self._pending_files:
                return self._pending_files[md5]
            rows = self._read("SELECT md5, path, size, post_id FROM files WHERE md5=?", (md5,))
        return StoredFile(*rows[0]) if rows else None

    def forget_file(self, md5: str) -> None:
        """The stored copy is gone (deleted by hand): the next query that meets the md5 fetches it."""
        with self._lock:
            self._pending_files[md5] = None
            self._write([(_DELETE_FILE, (md5,))])

    # posts -------------------------------------------------------------------------------------------

    def post_state(self, query: str, post_id: int) -> PostState | None:
        with self._lock:
            state = self._pending_posts.get((query, post_id))
            if state is not None:
                return state
            rows = self._read(
                f"SELECT {_POST_COLUMNS} FROM posts WHERE query=? AND post_id=?", (query, post_id)
            )
        return PostState(*rows[0]) if rows else None

    def _set_post(self, state: PostState, extra: list[tuple[str, tuple]] | None = None) -> None:
        now = time.time()
        s = state
        self._pending_posts[(s.query, s.post_id)] = s
        row = (s.query, s.post_id, s.md5, s.status, s.how, s.reason, s.attempts, now)
        self._write([*(extra or []), (_UPSERT_POST, row)])

    def record_done(
        self,
        query: str,
        post_id: int,
        md5: str,
        how: str,
        stored: StoredFile | None = None,
        attempts: int = 0,
    ) -> None:
        """Mark the post done for `query`; with `stored`, also register the file (same transaction)."""
        with self._lock:
            extra = []
            if stored is not None:
                self._pending_files[stored.md5] = stored
                extra.append(
                    (_UPSERT_FILE, (stored.md5, stored.path, stored.size, stored.post_id, time.time()))
                )
            self._set_post(PostState(query, post_id, md5, "done", how, None, attempts), extra)

    def record_failed(self, query: str, post_id: int, md5: str, reason: str, attempts: int) -> None:
        with self._lock:
            failure = (_INSERT_FAILURE, (query, post_id, reason, attempts, time.time()))
            self._set_post(PostState(query, post_id, md5, "failed", None, reason, attempts), [failure])

    def record_skipped(self, query: str, post_id: int, md5: str, reason: str) -> None:
        with self._lock:
            self._set_post(PostState(query, post_id, md5, "skipped", None, reason, 0))

    def posts(self, query: str | None = None, status: str | None = None) -> list[PostState]:
        sql = f"SELECT {_POST_COLUMNS} FROM posts WHERE 1=1"
        args: list = []
        if query is not None:
            sql += " AND query=?"
            args.append(query)
        if status is not None:
            sql += " AND status=?"
            args.append(status)
        with self._lock:
            self._flush_locked()
            rows = self._db.execute(sql + " ORDER BY query, post_id", args).fetchall()
        return [PostState(*r) for r in rows]

    def failure_history(self, query: str | None = None) -> list[tuple[str, int, str, int]]:
        sql = "SELECT query, post_id, reason, attempts FROM failures"
        args: tuple = ()
        if query is not None:
            sql += " WHERE query=?"
            args = (query,)
        with self._lock:
            self._flush_locked()
            return self._db.execute(sql + " ORDER BY rowid", args).fetchall()

    # queries -----------------------------------------------------------------------------------------

    def query_started(self, query: str, folder: str) -> None:
        sql = (
            "INSERT INTO queries (query, folder, started_at) VALUES (?,?,?)"
            " ON CONFLICT(query) DO UPDATE SET started_at=excluded.started_at, finished_at=NULL"
        )
        with self._lock:
            self._write([(sql, (query, folder, time.time()))])

    def query_finished(self, query: str, total: int | None) -> None:
        with self._lock:
            self._write(
                [("UPDATE queries SET finished_at=?, total=? WHERE query=?", (time.time(), total, query))]
            )
            self._flush_locked()
