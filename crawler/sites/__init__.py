"""Boorus as data: one module per API family over the small `Site` interface (gallery-dl's way).

A site builds its request URLs, parses an answer into `Page`s of `Post`s (pure functions, tested on
recorded answers) and pages through a query with a `fetch(url) -> bytes` it is given, so rate limits,
retries and Cloudflare stay in `crawler.download`. Another booru of a known family is a row in its
module's table; another family is one module here, registered in `SITES`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "webp")

Fetch = Callable[[str], bytes]


class ApiError(Exception):
    """The API answered, but not with a post list (an error body, an unexpected document)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Post:
    """One post as the crawler needs it, whichever site it came from. `md5` is lowercase hex;
    `file_url` is absolute and cleaned."""

    id: int
    md5: str
    tags: tuple[str, ...]
    rating: str
    width: int
    height: int
    file_url: str
    source: str
    score: int | None

    @property
    def extension(self) -> str | None:
        """The file's extension from its URL if it is a known image type (`jpg`, `png`, ...), else None."""
        return image_extension(self.file_url)


@dataclass(frozen=True)
class Page:
    """One API answer. `records` counts every record, those without a usable file included (so a full
    page is recognised as full); `count` is the query's total where the site tells it; `last_id` the
    smallest id on the page (the keyset bound for the next page)."""

    posts: tuple[Post, ...]
    records: int
    count: int | None = None
    offset: int | None = None
    last_id: int | None = None

    @property
    def skipped(self) -> int:
        return self.records - len(self.posts)


@dataclass
class Listing:
    """What the pager learned while listing, read after (or during) iteration."""

    total: int | None = None  # the query's size, where the site tells it
    requests: int = 0
    keyset_switches: int = 0
    empty_retries: int = 0
    ghosts: int = 0  # records without a usable file (Safebooru's ghosts, Danbooru's banned posts)
    incomplete: str | None = None  # why the listing may have ended early


@dataclass
class Site:
    """A booru: `api_url`, `parse` and `pages` are the family's; `posts` is common to all."""

    base_url: str = ""
    name = ""
    root = ""  # the public instance, used when no base URL is given
    max_page_size = 100

    def __post_init__(self) -> None:
        self.base_url = (self.base_url or self.root).rstrip("/")

    def api_url(self, tags: str, page: int | str, limit: int) -> str:
        raise NotImplementedError

    def parse(self, body: bytes | str) -> Page:
        raise NotImplementedError

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
        """The non-empty pages of `query`, newest first, to the end of the listing."""
        raise NotImplementedError

    def posts(
        self, fetch: Fetch, query: str, *, limit: int | None = None, listing: Listing | None = None, **kwargs
    ) -> Iterator[Post]:
        """The posts of `query` once each (pages can overlap while posts are added), at most `limit`."""
        if limit is not None and limit <= 0:
            return
        page_size = self.max_page_size if limit is None else min(self.max_page_size, limit)
        listing = listing if listing is not None else Listing()
        seen: set[int] = set()
        for page in self.pages(fetch, query, page_size=page_size, listing=listing, **kwargs):
            for post in page.posts:
                if post.id in seen:
                    continue
                seen.add(post.id)
                yield post
                if limit is not None and len(seen) >= limit:
                    return


def image_extension(url: str) -> str | None:
    """The lowercase extension of the URL's file name if it is a known image type, else None.

    Anything else the network sends (`webm`, `swf`, `php`, `jpg/../x`) is refused here, so a file name
    is never built from an arbitrary string."""
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    if "." not in name:
        return None
    ext = name.rsplit(".", 1)[-1].lower()
    return ext if ext in IMAGE_EXTENSIONS else None


def to_int(value: object, default: int | None = 0) -> int | None:
    if value is None or value == "" or isinstance(value, bool):
        return default
    try:
        return int(str(value).strip())
    except ValueError:
        return default


def site_names() -> list[str]:
    return sorted(_registry())


def get_site(name: str, base_url: str | None = None, **options) -> Site:
    """The site called `name` (`safebooru`, `gelbooru`, `danbooru`), at `base_url` if given (another
    instance of the same software). Options a site has no use for are ignored (`fmt` for Danbooru)."""
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown site {name!r}; known: {', '.join(sorted(registry))}")
    cls = registry[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(base_url=base_url or "", **{k: v for k, v in options.items() if k in fields})


def _registry() -> dict[str, type[Site]]:
    from . import danbooru, gelbooru_v02

    return {**gelbooru_v02.SITES, **danbooru.SITES}
