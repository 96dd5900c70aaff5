"""Danbooru and its instances: the JSON API, `posts.json?tags=...&limit=...&page=...`.

- `limit` is at most 200; pages are walked by keyset, `page=b<ID>` (the posts below ID, newest first),
  which has no depth limit (numbered pages stop at 1000). A query with an `order:` term cannot be walked
  by id, so it takes numbered pages.
- Field names: `md5`, `file_url`, `tag_string`, `image_width`/`image_height`, `rating` g/s/q/e
  (general, sensitive, questionable, explicit).
- Banned and some deleted posts come without `file_url` (and `md5`) for visitors: skipped and counted.
- Errors are JSON objects `{"success": false, "message": ...}`, usually with a 4xx status.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from . import ApiError, Fetch, Listing, Page, Post, Site, to_int

MAX_PAGE_SIZE = 200
NUMBERED_PAGE_CAP = 1000
_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")
_RATINGS = {"g": "general", "s": "sensitive", "q": "questionable", "e": "explicit"}


@dataclass
class Danbooru(Site):
    name = "danbooru"
    root = "https://danbooru.donmai.us"
    max_page_size = MAX_PAGE_SIZE
    error_retries: int = 2

    def api_url(self, tags: str, page: int | str = 1, limit: int = MAX_PAGE_SIZE) -> str:
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be 1..{MAX_PAGE_SIZE}, got {limit}")
        return f"{self.base_url}/posts.json?{urlencode({'tags': tags, 'limit': limit, 'page': page})}"

    def parse(self, body: bytes | str) -> Page:
        return parse_posts(body, self.base_url)

    def pages(
        self,
        fetch: Fetch,
        query: str,
        *,
        page_size: int,
        listing: Listing,
        retry_delay_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[Page]:
        numbered = any(t.startswith("order:") for t in query.split())
        page: int | str = 1
        errors = 0
        while True:
            body = fetch(self.api_url(query, page, page_size))
            listing.requests += 1
            try:
                result = self.parse(body)
            except ApiError as err:
                errors += 1
                if errors > self.error_retries:
                    raise ApiError(f"{err.reason} (query {query!r}, page {page}, {errors} tries)") from None
                sleep(retry_delay_s * 2 ** (errors - 1))
                continue
            errors = 0
            if result.records == 0:
                return
            listing.ghosts += result.skipped
            yield result
            if result.records < page_size or result.last_id is None:
                return
            if numbered:
                if page == NUMBERED_PAGE_CAP:
                    listing.incomplete = f"an order: query stops at page {NUMBERED_PAGE_CAP}"
                    return
                page = int(page) + 1
            else:
                page = f"b{result.last_id}"


SITES: dict[str, type[Site]] = {"danbooru": Danbooru}


def post_from_record(record: dict, base_url: str = Danbooru.root) -> Post | None:
    """A `Post` from one record; None for posts without a file (banned, deleted) or broken records."""
    post_id = to_int(record.get("id"), None)
    md5 = record.get("md5")
    url = record.get("file_url")
    if post_id is None or post_id <= 0 or not isinstance(md5, str) or not _MD5.match(md5):
        return None
    if not isinstance(url, str) or not url.strip():
        return None
    url = url.strip()
    if url.startswith("/"):
        url = base_url.rstrip("/") + url
    if urlsplit(url).scheme not in ("http", "https"):
        return None
    rating = str(record.get("rating") or "").strip().lower()
    return Post(
        id=post_id,
        md5=md5.lower(),
        tags=tuple(str(record.get("tag_string") or "").split()),
        rating=_RATINGS.get(rating, rating),
        width=to_int(record.get("image_width")) or 0,
        height=to_int(record.get("image_height")) or 0,
        file_url=url,
        source=str(record.get("source") or ""),
        score=to_int(record.get("score"), None),
    )


def parse_posts(body: bytes | str, base_url: str = Danbooru.root) -> Page:
    """Parse a `posts.json` answer: a list of posts, or an error object (raises ApiError)."""
    data = body.encode() if isinstance(body, str) else body
    try:
        decoded = json.loads(data) if data.strip() else []
    except ValueError as err:
        raise ApiError(f"answer is not JSON ({err}): {data[:80]!r}") from None
    if isinstance(decoded, dict):
        reason = decoded.get("message") or decoded.get("reason") or decoded.get("error")
        raise ApiError(
            str(reason or f"expected a list of posts, got an object with keys {sorted(decoded)[:8]}")
        )
    if not isinstance(decoded, list):
        raise ApiError(f"expected a JSON list of posts, got {type(decoded).__name__}")
    records = [r for r in decoded if isinstance(r, dict)]
    ids = [i for i in (to_int(r.get("id"), None) for r in records) if i is not None and i > 0]
    posts = tuple(p for p in (post_from_record(r, base_url) for r in records) if p is not None)
    return Page(posts, len(decoded), None, None, min(ids) if ids else None)
