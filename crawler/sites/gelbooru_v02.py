"""Gelbooru 0.2 and its instances (Safebooru, Gelbooru, any other by `--base-url`): `index.php?page=dapi`.

Quirks of the live services handled here:
- an empty result in JSON mode is an empty body, not `[]`;
- errors arrive with HTTP 200 as `<response success="false" reason="..."/>`, in XML even when `json=1`
  was asked (deep paging past the offset cap, "search down");
- `hash` (JSON) / `md5` (XML) is the md5; the `image` file name is not;
- "ghost" records (image, directory and hash null, `file_url` ending in `images//`) are skipped;
- `file_url` may carry `//` in its path and a `?<id>` suffix;
- a page can come back empty for a moment before the total (`count`, XML only) is reached;
- `pid` is a page index and `limit` is at most 100; offsets past 200,000 are refused, so deep crawls
  switch to keyset paging (`id:<LAST_ID`, pid=0).
"""

from __future__ import annotations

import html
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from . import ApiError, Fetch, Listing, Page, Post, Site
from . import to_int as _int

MAX_PAGE_SIZE = 100
OFFSET_CAP = 200_000
INSTANCES = {  # another Gelbooru 0.2 booru is a row here (or --base-url with either name)
    "safebooru": {"root": "https://safebooru.org"},
    "gelbooru": {"root": "https://gelbooru.com"},
}
DEFAULT_BASE_URL = INSTANCES["safebooru"]["root"]
_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")
_RATINGS = {"s": "safe", "g": "general", "q": "questionable", "e": "explicit"}


@dataclass
class GelbooruV02(Site):
    """The dapi post list; `fmt` xml carries the total (`count`), json is smaller."""

    fmt: str = "xml"
    offset_cap: int = OFFSET_CAP
    empty_retries: int = 3
    error_retries: int = 2
    max_page_size = MAX_PAGE_SIZE

    def api_url(self, tags: str, page: int | str = 0, limit: int = MAX_PAGE_SIZE) -> str:
        return api_url(self.base_url, tags, int(page), limit, self.fmt)

    def parse(self, body: bytes | str) -> Page:
        return parse_posts(body, self.base_url)

    def pages(
        self, fetch: Fetch, query: str, *, page_size: int, listing: Listing, **kwargs
    ) -> Iterator[Page]:
        return iter_pages(
            fetch,
            query,
            base_url=self.base_url,
            fmt=self.fmt,
            page_size=page_size,
            offset_cap=self.offset_cap,
            empty_retries=self.empty_retries,
            error_retries=self.error_retries,
            listing=listing,
            **kwargs,
        )


SITES: dict[str, type[Site]] = {
    name: type(name.title(), (GelbooruV02,), {"name": name, "root": row["root"], "__module__": __name__})
    for name, row in INSTANCES.items()
}


# --------------------------------------------------------------------------------------------------
# URLs


def api_url(base_url: str, tags: str, pid: int = 0, limit: int = MAX_PAGE_SIZE, fmt: str = "xml") -> str:
    """The post-list URL: `index.php?page=dapi&s=post&q=index&tags=...&limit=...&pid=...[&json=1]`."""
    if fmt not in ("json", "xml"):
        raise ValueError(f"format must be 'json' or 'xml', got {fmt!r}")
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be 1..{MAX_PAGE_SIZE}, got {limit}")
    params = {"page": "dapi", "s": "post", "q": "index", "tags": tags, "limit": limit, "pid": max(0, pid)}
    if fmt == "json":
        params["json"] = 1
    return f"{base_url.rstrip('/')}/index.php?{urlencode(params)}"


def clean_file_url(
    file_url: str | None, base_url: str, directory: object = None, image: object = None
) -> str | None:
    """An absolute download URL, or None when the record has no usable file.

    Uses `file_url` when it names a file, else `images/{directory}/{image}` under `base_url`.
    Collapses repeated slashes in the path and drops a numeric `?<id>` suffix."""
    base = urlsplit(base_url if "://" in base_url else "https://" + base_url)
    candidates = []
    if file_url:
        candidates.append(str(file_url).strip())
    if directory not in (None, "") and image not in (None, ""):
        candidates.append(f"/images/{directory}/{image}")
    for raw in candidates:
        if raw.startswith("//"):
            raw = f"{base.scheme}:{raw}"
        elif raw.startswith("/"):
            raw = urlunsplit((base.scheme, base.netloc, raw, "", ""))
        elif not urlsplit(raw).scheme:
            raw = urlunsplit((base.scheme, base.netloc, "/" + raw, "", ""))
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            continue
        path = re.sub(r"/{2,}", "/", parts.path)
        name = path.rsplit("/", 1)[-1]
        if not name or name in (".", ".."):
            continue
        query = "" if parts.query.isdigit() else parts.query
        return urlunsplit((parts.scheme, parts.netloc, path, query, ""))
    return None


# --------------------------------------------------------------------------------------------------
# Parsing (pure)


def normalize_rating(value: object) -> str:
    """`s` -> `safe`, `g` -> `general`, `q` -> `questionable`, `e` -> `explicit`; words kept (lowercased);
    missing -> ``."""
    text = str(value or "").strip().lower()
    return _RATINGS.get(text, text)


def post_from_record(record: dict, base_url: str = DEFAULT_BASE_URL) -> Post | None:
    """A `Post` from one JSON object or XML `<post>` attribute dict; None for ghosts and broken records."""
    post_id = _int(record.get("id"), None)
    md5 = record.get("hash") or record.get("md5")
    if post_id is None or post_id <= 0 or not isinstance(md5, str) or not _MD5.match(md5.strip()):
        return None
    url = clean_file_url(record.get("file_url"), base_url, record.get("directory"), record.get("image"))
    if url is None:
        return None
    tags = record.get("tags") or ""
    if isinstance(tags, list):
        tags = " ".join(str(t) for t in tags)
    tags = str(tags)
    if "&" in tags:  # the JSON API sends tags HTML-escaped: hand_on_another&#039;s_head, :&lt;
        tags = html.unescape(tags)
    return Post(
        id=post_id,
        md5=md5.strip().lower(),
        tags=tuple(tags.split()),
        rating=normalize_rating(record.get("rating")),
        width=_int(record.get("width")) or 0,
        height=_int(record.get("height")) or 0,
        file_url=url,
        source=str(record.get("source") or ""),
        score=_int(record.get("score"), None),
    )


def _page_from_records(records: list, base_url: str, count: int | None, offset: int | None) -> Page:
    posts = []
    ids = []
    for record in records:
        if not isinstance(record, dict):
            continue
        rid = _int(record.get("id"), None)
        if rid is not None and rid > 0:
            ids.append(rid)
        post = post_from_record(record, base_url)
        if post is not None:
            posts.append(post)
    return Page(tuple(posts), len(records), count, offset, min(ids) if ids else None)


def _bytes(body: bytes | str) -> bytes:
    data = body.encode() if isinstance(body, str) else body
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data  # a UTF-8 byte-order mark


def parse_xml_posts(body: bytes | str, base_url: str = DEFAULT_BASE_URL) -> Page:
    """Parse an XML answer: `<posts count offset><post .../></posts>`.

    Raises `ApiError` for `<response success="false" reason=...>`, `<error>`, and any document that is
    not a post list (an empty `<comments/>` must not read as "no posts"). Posts may carry their fields
    as attributes (Safebooru, Gelbooru 0.2) or as child elements (gelbooru.com since 2019)."""
    data = _bytes(body).lstrip()
    if b"<!DOCTYPE" in data[:1024] or b"<!ENTITY" in data:
        raise ApiError("refusing an XML answer with a DOCTYPE/ENTITY declaration")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        snippet = data[:80].decode("utf-8", "replace")
        raise ApiError(f"answer is neither a post list nor an error ({err}): {snippet!r}") from None
    if root.tag == "response":
        reason = root.get("reason") or (root.text or "").strip() or "no reason given"
        raise ApiError(reason)
    if root.tag == "error":
        raise ApiError((root.text or "").strip() or "error")
    if root.tag != "posts":
        raise ApiError(f"expected a <posts> list, got <{root.tag}>")
    records = []
    for child in root:
        if child.tag != "post":
            continue
        record = dict(child.attrib)
        for field in child:  # <post><id>1</id><md5>...</md5>...</post>
            if len(field) == 0 and field.tag not in record:
                record[field.tag] = (field.text or "").strip()
        records.append(record)
    return _page_from_records(
        records, base_url, _int(root.get("count"), None), _int(root.get("offset"), None)
    )


def parse_json_posts(body: bytes | str, base_url: str = DEFAULT_BASE_URL) -> Page:
    """Parse a JSON answer (`json=1`). An empty body is an empty page; an XML body (the service's
    errors ignore `json=1`) is parsed as XML, so its errors raise `ApiError`. gelbooru.com's form
    (`{"@attributes": {...}, "post": [...]}`) is read too, and its error objects raise."""
    data = _bytes(body).strip()
    if not data:
        return Page((), 0)
    if data.startswith(b"<"):
        return parse_xml_posts(data, base_url)
    try:
        decoded = json.loads(data)
    except ValueError as err:
        raise ApiError(f"answer is not JSON ({err}): {data[:80]!r}") from None
    count = offset = None
    if isinstance(decoded, dict):  # gelbooru.com style: {"@attributes": {...}, "post": [...]}
        if "id" not in decoded and "post" not in decoded and "@attributes" not in decoded:
            reason = next((str(decoded[k]) for k in ("message", "reason", "error") if decoded.get(k)), None)
            raise ApiError(
                reason or f"expected a list of posts, got an object with keys {sorted(decoded)[:8]}"
            )
        attrs = decoded.get("@attributes") or {}
        count, offset = _int(attrs.get("count"), None), _int(attrs.get("offset"), None)
        decoded = [decoded] if "id" in decoded else (decoded.get("post") or [])
        if isinstance(decoded, dict):
            decoded = [decoded]
    if not isinstance(decoded, list):
        raise ApiError(f"expected a JSON list of posts, got {type(decoded).__name__}")
    return _page_from_records(decoded, base_url, count, offset)


def parse_posts(body: bytes | str, base_url: str = DEFAULT_BASE_URL) -> Page:
    """Parse a post-list answer in either format (sniffed: the service may answer XML to `json=1`)."""
    data = _bytes(body)
    if data.lstrip()[:1] == b"<":
        return parse_xml_posts(data, base_url)
    return parse_json_posts(data, base_url)


# --------------------------------------------------------------------------------------------------
# Pagination


def iter_pages(
    fetch: Callable[[str], bytes],
    query: str,
    *,
    base_url: str = DEFAULT_BASE_URL,
    fmt: str = "xml",
    page_size: int = MAX_PAGE_SIZE,
    offset_cap: int = OFFSET_CAP,
    empty_retries: int = 3,
    error_retries: int = 2,
    retry_delay_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    listing: Listing | None = None,
) -> Iterator[Page]:
    """Yield the non-empty pages of `query`, newest first, until the end of the listing.

    Offset paging (`pid`) until the next page would reach past `offset_cap`, then keyset paging
    (`id:<LAST_ID`, pid=0), also when the service refuses a deep page. A transient empty page is
    retried `empty_retries` times (only while the total is not reached, or when no total is known);
    an error body is retried `error_retries` times. Every loop is bounded: an error body is never
    mistaken for an empty page (gallery-dl's endless loop)."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {page_size}")
    listing = listing if listing is not None else Listing()
    base_tags = " ".join(t for t in query.split() if not t.startswith("id:<"))
    keyset: int | None = None
    pid = 0
    segment_total: int | None = None  # `count` for the current keyset segment
    segment_seen = 0
    last_id: int | None = None
    empty_tries = error_tries = 0
    after_short = False
    while True:
        if last_id is not None and pid * page_size + page_size > offset_cap:
            keyset, pid, segment_total, segment_seen = last_id, 0, None, 0
            after_short = False
            listing.keyset_switches += 1
        tags = f"{base_tags} id:<{keyset}".strip() if keyset is not None else base_tags
        body = fetch(api_url(base_url, tags, pid, page_size, fmt))
        listing.requests += 1
        try:
            page = parse_posts(body, base_url)
        except ApiError as err:
            if last_id is not None and (keyset != last_id or pid != 0):
                # the deep-paging refusal: continue below the last id seen
                keyset, pid, segment_total, segment_seen = last_id, 0, None, 0
                listing.keyset_switches += 1
                continue
            error_tries += 1
            if error_tries > error_retries:
                raise ApiError(f"{err.reason} (query {query!r}, pid {pid}, {error_tries} tries)") from None
            sleep(retry_delay_s * 2 ** (error_tries - 1))
            continue
        error_tries = 0
        if segment_total is None and page.count is not None:
            segment_total = page.count
            if listing.total is None:
                listing.total = page.count
        if page.records == 0:
            if after_short:
                return
            unfinished = segment_total is None or segment_seen < segment_total
            if unfinished and empty_tries < empty_retries:
                empty_tries += 1
                listing.empty_retries += 1
                sleep(retry_delay_s * empty_tries)
                continue
            if segment_total is not None and segment_seen < segment_total:
                listing.incomplete = (
                    f"listing ended at {segment_seen} of {segment_total} posts: "
                    f"{empty_tries + 1} empty answers in a row"
                )
            return
        empty_tries = 0
        listing.ghosts += page.skipped
        yield page
        segment_seen += page.records
        if page.last_id is not None:
            last_id = page.last_id if last_id is None else min(last_id, page.last_id)
        if segment_total is not None and segment_seen >= segment_total:
            return
        short = page.records < page_size
        if short and segment_total is None:
            return
        # a short page before `count` is reached: the count was stale, or the server pages by fewer
        # than asked; go on, but an empty page after it is the end (no retries)
        after_short = short
        pid += 1
