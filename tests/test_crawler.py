"""Crawler, pure parts: the sites' parsers on answers recorded from the live services, pagination over fake
APIs, folder names for hostile queries, the rate limiter's precision, image and Cloudflare checks.

End-to-end crawls against the local server are in test_crawler_e2e.py.
"""

from __future__ import annotations

import io
import json
import random
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from crawler.download import (
    FetchError,
    RateLimiter,
    RetryPolicy,
    check_image,
    is_cloudflare_challenge,
    parse_retry_after,
)
from crawler.layout import (
    MAX_FOLDER_CHARS,
    QUERY_FILE,
    ensure_query_folder,
    folder_for_query,
    place_copy,
    query_for_folder,
    read_folder_query,
    sidecar_dict,
)
from crawler.sites import ApiError, Listing, Post, danbooru, get_site, image_extension, site_names
from crawler.sites.gelbooru_v02 import (
    OFFSET_CAP,
    GelbooruV02,
    api_url,
    clean_file_url,
    parse_json_posts,
    parse_posts,
    parse_xml_posts,
    post_from_record,
)

FIXTURES = (
    Path(__file__).resolve().parent / "data" / "fixtures" / "safebooru"
)  # copied from ../shared/fixtures


def fixture(name: str, site: str = "safebooru") -> bytes:
    """A recorded answer. A missing fixture folder is a failure, not a skip: the parsers would go untested."""
    folder = FIXTURES.parent / site
    if not folder.is_dir():
        pytest.fail(
            f"recorded API answers not found at {folder}: they are part of the repository "
            f"(tests/data/fixtures/{site}); restore them with git"
        )
    path = folder / name
    if not path.is_file():
        pytest.fail(f"fixture {name} missing from {folder}")
    return path.read_bytes()


def iter_posts(fetch, query, *, fmt="xml", offset_cap=OFFSET_CAP, empty_retries=3, error_retries=2, limit=None,
               listing=None, sleep=None):  # fmt: skip
    """The Gelbooru 0.2 pager as the crawler drives it (`Site.posts`), without sleeping."""
    site = GelbooruV02("http://x", fmt=fmt, offset_cap=offset_cap, empty_retries=empty_retries,
                       error_retries=error_retries)  # fmt: skip
    return site.posts(fetch, query, limit=limit, listing=listing, sleep=sleep or no_sleep)


# --------------------------------------------------------------------------------------------------
# The recorded answers, read as the live service means them


def test_every_recorded_answer_is_covered_here():
    names = {p.name for p in FIXTURES.iterdir()} if FIXTURES.is_dir() else set()
    fixture("README.md")  # fails clearly when the folder is missing
    assert {p.name for p in (FIXTURES.parent / "danbooru").iterdir()} == {"README.md", "posts_2023.json"}
    covered = {
        "README.md",
        "safebooru_post_2025.json",
        "safebooru_ghost_record.json",
        "safebooru_deep_page_error.xml",
        "gelbooru_com_results_2017.xml",
        "tbib_tags.xml",
        "tbib_comments_empty.xml",
    }
    assert names <= covered, f"new fixtures without a test: {sorted(names - covered)}"


def test_json_post_2025_hash_is_the_md5_not_the_file_name():
    page = parse_json_posts(fixture("safebooru_post_2025.json"))
    assert page.records == 1 and page.count is None and page.last_id == 6077620
    (post,) = page.posts
    assert post.id == 6077620
    assert post.md5 == "563c6fbe5761ac4ba720ae0da9a15b8a"  # `hash`, not the 40-hex `image` name
    assert post.file_url == "https://safebooru.org/images/539/6fef5929e6e09703b1493c6e5802fa5e4f189639.jpg"
    assert post.rating == "general" and post.score is None
    assert (post.width, post.height) == (2160, 1215)
    assert post.source == "https://www.threads.com/@diva_hyxpk/post/DOghRhxEgeM"  # escaped slashes undone
    assert len(post.tags) == 42 and post.tags[0] == "6+girls" and "clumsy_nun_(diva)" in post.tags
    assert post.extension == "jpg"
    assert parse_posts(fixture("safebooru_post_2025.json")) == page  # sniffing picks JSON


def test_ghost_record_is_skipped_but_counted_as_a_record():
    record = json.loads(fixture("safebooru_ghost_record.json"))
    assert post_from_record(record) is None
    page = parse_json_posts(b"[" + fixture("safebooru_ghost_record.json") + b"]")
    assert page.posts == () and page.records == 1 and page.skipped == 1
    assert page.last_id == 14029915  # keyset paging can still move past it


def test_deep_page_error_raises_even_when_json_was_asked():
    body = fixture("safebooru_deep_page_error.xml")
    for parse in (parse_posts, parse_json_posts, parse_xml_posts):
        with pytest.raises(ApiError) as err:
            parse(body)
        assert err.value.reason == "Search error: API limited due to abuse."


def test_gelbooru_2017_xml_list():
    page = parse_xml_posts(fixture("gelbooru_com_results_2017.xml"))
    assert page.count == 2249332 and page.offset == 0 and page.records == 20 and len(page.posts) == 20
    first = page.posts[0]
    assert first.id == 3889506 and first.md5 == "e70f631ce2bc1ab02b371489d81dceaa"
    assert first.file_url == "https://simg3.gelbooru.com/images/e7/0f/e70f631ce2bc1ab02b371489d81dceaa.jpg"
    assert first.rating == "safe"  # one-letter ratings spelled out
    assert first.score == 0 and (first.width, first.height) == (880, 863)
    assert first.tags[0] == "2boys" and first.tags[-1] == "white_hair"  # padding spaces gone
    assert first.source.startswith("https://i.pximg.net/")
    third = page.posts[2]
    assert "luck_&_logic" in third.tags and "hand_on_another's_chest" in third.tags  # entities decoded
    assert page.last_id == min(p.id for p in page.posts)
    assert all(len(p.md5) == 32 for p in page.posts)


def test_tag_endpoint_and_comments_are_not_post_lists():
    # valid XML without posts must not read as "no posts" (that is how gallery-dl loops forever)
    for name in ("tbib_tags.xml", "tbib_comments_empty.xml"):
        with pytest.raises(ApiError, match="expected a <posts> list"):
            parse_posts(fixture(name))


def test_empty_json_body_is_an_empty_page_and_garbage_is_an_error():
    assert parse_json_posts(b"") == parse_json_posts(b"  \n") == parse_posts(b"")
    assert parse_posts(b"").records == 0
    with pytest.raises(ApiError):
        parse_posts(b"{not json")
    with pytest.raises(ApiError):
        parse_posts(b"<html><body>502 Bad Gateway</body>")
    with pytest.raises(ApiError, match="DOCTYPE"):
        parse_posts(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><posts count="1"/>')


def test_file_url_cleaning():
    base = "https://safebooru.org"
    assert clean_file_url("https://safebooru.org//images/539/x.jpg?6077620", base) == (
        "https://safebooru.org/images/539/x.jpg"
    )
    assert clean_file_url(None, base, 539, "abc.png") == "https://safebooru.org/images/539/abc.png"
    assert clean_file_url("https://safebooru.org/images//", base, 539, "abc.png").endswith("/539/abc.png")
    assert clean_file_url("https://safebooru.org/images//", base, None, None) is None
    assert clean_file_url("//safebooru.org/images/1/a.gif", base) == "https://safebooru.org/images/1/a.gif"
    assert (
        clean_file_url("/images/1/a.gif", "http://127.0.0.1:8000") == "http://127.0.0.1:8000/images/1/a.gif"
    )
    assert clean_file_url("javascript:alert(1)", base) is None


def test_extensions_from_the_network_are_sanitized():
    assert image_extension("https://x/images/1/a.JPG?5") == "jpg"
    assert image_extension("https://x/images/1/a.jpeg") == "jpeg"
    for url in (
        "https://x/a.webm",
        "https://x/a.php",
        "https://x/a",
        "https://x/a.jpg/..",
        "https://x/a.png%2F..%2Fb",
    ):
        assert image_extension(url) is None, url


def test_api_url():
    url = api_url("https://safebooru.org/", "1girl solo -monochrome", pid=3, limit=100, fmt="json")
    assert url.startswith("https://safebooru.org/index.php?page=dapi&s=post&q=index&")
    assert "tags=1girl+solo+-monochrome" in url and "pid=3" in url and "limit=100" in url and "json=1" in url
    assert "json" not in api_url("https://safebooru.org", "a", fmt="xml")
    with pytest.raises(ValueError):
        api_url("https://safebooru.org", "a", limit=101)


def test_sidecar_has_the_design_fields():
    post = parse_json_posts(fixture("safebooru_post_2025.json")).posts[0]
    side = sidecar_dict(post, "6+girls nun", "6077620.jpg")
    assert set(side) >= {
        "id",
        "md5",
        "tags",
        "rating",
        "width",
        "height",
        "file_url",
        "source",
        "score",
        "query",
    }
    assert side["tags"] == list(post.tags) and side["query"] == "6+girls nun" and side["score"] is None
    json.dumps(side)


# --------------------------------------------------------------------------------------------------
# Pagination over a fake API that behaves like the service


class FakeApi:
    """Posts with the given ids, newest first; `pid`/`limit`/`id:<` paging; the deep-paging error past
    `cap`; `empty_answers` transient empty pages (at the given request numbers)."""

    def __init__(self, ids, *, cap=200_000, fmt="xml", empty_at=(), error_always=False):
        self.ids = sorted(ids, reverse=True)
        self.cap, self.fmt, self.empty_at, self.error_always = cap, fmt, set(empty_at), error_always
        self.urls: list[str] = []
        self.errors = 0

    def __call__(self, url: str) -> bytes:
        from urllib.parse import parse_qs, urlsplit

        self.urls.append(url)
        q = {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}
        limit, pid = int(q["limit"]), int(q["pid"])
        ids = self.ids
        for tag in q["tags"].split():
            if tag.startswith("id:<"):
                ids = [i for i in ids if i < int(tag[4:])]
        if self.error_always or pid * limit >= self.cap:
            self.errors += 1
            return fixture("safebooru_deep_page_error.xml")
        page = ids[pid * limit : pid * limit + limit]
        if len(self.urls) in self.empty_at:
            page = []
        md5 = "0123456789abcdef0123456789abcdef"
        if self.fmt == "json":
            recs = [{"id": i, "hash": md5, "directory": 1, "image": f"{i}.png", "tags": "a"} for i in page]
            return json.dumps(recs).encode() if recs else b""
        rows = "".join(
            f'<post id="{i}" md5="{md5}" file_url="http://x/images/1/{i}.png" tags=" a "/>' for i in page
        )
        return f'<posts count="{len(ids)}" offset="{pid * limit}">{rows}</posts>'.encode()


def no_sleep(_s: float) -> None:
    pass


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_pages_switch_to_keyset_before_the_offset_cap(fmt):
    api = FakeApi(range(1, 351), cap=200, fmt=fmt)
    listing = Listing()
    ids = [p.id for p in iter_posts(api, "a", fmt=fmt, offset_cap=200, listing=listing, sleep=no_sleep)]
    assert ids == list(range(350, 0, -1))  # all, once, newest first
    assert api.errors == 0 and listing.keyset_switches >= 1
    assert any("id%3A%3C" in u and "pid=0" in u for u in api.urls)
    assert listing.total == (350 if fmt == "xml" else None)


def test_deep_paging_error_switches_to_keyset():
    api = FakeApi(range(1, 351), cap=200)
    listing = Listing()
    ids = [p.id for p in iter_posts(api, "a", listing=listing, sleep=no_sleep)]  # client cap 200,000
    assert ids == list(range(350, 0, -1))
    assert api.errors == 1 and listing.keyset_switches == 1


def test_error_body_never_loops_forever():
    api = FakeApi(range(1, 10), error_always=True)
    with pytest.raises(ApiError, match="API limited"):
        list(iter_posts(api, "a", error_retries=2, sleep=no_sleep))
    assert len(api.urls) == 3


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_transient_empty_pages_are_retried(fmt):
    api = FakeApi(range(1, 251), fmt=fmt, empty_at={2, 3})  # the 2nd and 3rd answers come back empty
    listing = Listing()
    ids = [p.id for p in iter_posts(api, "a", fmt=fmt, listing=listing, sleep=no_sleep)]
    assert ids == list(range(250, 0, -1)) and listing.empty_retries == 2 and listing.incomplete is None


def test_empty_pages_past_the_retries_end_the_listing_with_a_note():
    api = FakeApi(range(1, 251), empty_at=range(2, 100))
    listing = Listing()
    ids = [p.id for p in iter_posts(api, "a", listing=listing, empty_retries=3, sleep=no_sleep)]
    assert ids == list(range(250, 150, -1)) and len(api.urls) == 5
    assert "100 of 250" in listing.incomplete


def test_limit_and_end_of_listing_cost_no_extra_requests():
    api = FakeApi(range(1, 251))
    assert len(list(iter_posts(api, "a", sleep=no_sleep))) == 250 and len(api.urls) == 3
    api = FakeApi(range(1, 251))
    assert [p.id for p in iter_posts(api, "a", limit=7, sleep=no_sleep)] == list(range(250, 243, -1))
    assert len(api.urls) == 1 and "limit=7" in api.urls[0]
    api = FakeApi([])
    assert (
        list(iter_posts(api, "nothing", sleep=no_sleep)) == [] and len(api.urls) == 1
    )  # count=0: no retries


# --------------------------------------------------------------------------------------------------
# Danbooru: its field names, banned posts, keyset pages


def test_danbooru_posts_json_2023_with_its_own_field_names():
    page = danbooru.parse_posts(fixture("posts_2023.json", "danbooru"))
    assert page.records == 2 and page.count is None and page.last_id == 6148686
    first, second = page.posts
    assert first.id == 6148688 and first.md5 == "dc123eec97d06c3aa9cd53d65a2c7abf"
    assert first.file_url == "https://cdn.donmai.us/original/dc/12/dc123eec97d06c3aa9cd53d65a2c7abf.jpg"
    assert (first.width, first.height) == (1500, 2500) and first.score == 0 and first.extension == "jpg"
    assert first.tags[0] == "3koma" and "english_text" in first.tags and len(first.tags) == 18
    assert first.source == "https://twitter.com/ROBOTEKZ_/status/1616064514683985925"
    # Danbooru's letters are its own: `s` is "sensitive" there, not Gelbooru's "safe"
    assert (first.rating, second.rating) == ("general", "sensitive")


def test_danbooru_banned_posts_without_a_file_are_skipped_and_counted():
    record = json.loads(fixture("posts_2023.json", "danbooru"))[0]
    banned = {
        k: v for k, v in record.items() if k not in ("md5", "file_url", "large_file_url", "preview_file_url")
    }
    banned.update(id=6148600, is_banned=True)
    page = danbooru.parse_posts(json.dumps([record, banned]))
    assert [p.id for p in page.posts] == [6148688] and page.records == 2 and page.skipped == 1
    assert page.last_id == 6148600  # the next page starts below the banned post
    assert danbooru.post_from_record({**record, "file_url": "javascript:alert(1)"}) is None


def test_danbooru_errors_are_json_objects():
    with pytest.raises(ApiError, match="more than 2 tags"):
        danbooru.parse_posts(
            b'{"success": false, "message": "You cannot search for more than 2 tags at a time"}'
        )
    with pytest.raises(ApiError, match="not JSON"):
        danbooru.parse_posts(b"<html>502</html>")
    assert danbooru.parse_posts(b"[]").records == 0


class FakeDanbooru:
    """`posts.json` over the given ids, newest first: `page=N` and `page=b<ID>`, `limit` up to 200."""

    def __init__(self, ids, *, errors=0):
        self.ids = sorted(ids, reverse=True)
        self.urls: list[str] = []
        self.errors = errors

    def __call__(self, url: str) -> bytes:
        from urllib.parse import parse_qs, urlsplit

        self.urls.append(url)
        if self.errors:
            self.errors -= 1
            return b'{"success": false, "message": "Database timed out"}'
        q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        limit, page = min(int(q["limit"]), 200), q["page"]
        if page.startswith("b"):
            ids = [i for i in self.ids if i < int(page[1:])][:limit]
        else:
            ids = self.ids[(int(page) - 1) * limit : int(page) * limit]
        md5 = "0123456789abcdef0123456789abcdef"
        return json.dumps(
            [{"id": i, "md5": md5, "file_url": f"https://cdn.x/{i}.png", "tag_string": "a b"} for i in ids]
        ).encode()


def test_danbooru_pages_by_keyset_up_to_200_a_page():
    site = get_site("danbooru", "http://booru.test/")
    api = FakeDanbooru(range(1, 451))
    listing = Listing()
    assert [p.id for p in site.posts(api, "a", listing=listing, sleep=no_sleep)] == list(range(450, 0, -1))
    assert [u.split("page=")[1] for u in api.urls] == ["1", "b251", "b51"]  # the short third page is the end
    assert all("limit=200" in u and u.startswith("http://booru.test/posts.json?tags=a&") for u in api.urls)
    api = FakeDanbooru(range(1, 451))
    assert len(list(site.posts(api, "a", limit=7, sleep=no_sleep))) == 7 and len(api.urls) == 1
    assert "limit=7" in api.urls[0]
    api = FakeDanbooru(range(1, 451))  # an order: query cannot be walked by id: numbered pages
    assert len(list(site.posts(api, "a order:score", sleep=no_sleep))) == 450
    assert [u.split("page=")[1] for u in api.urls] == ["1", "2", "3"]


def test_danbooru_error_answers_are_retried_then_raised():
    site = get_site("danbooru")
    assert len(list(site.posts(FakeDanbooru(range(1, 11), errors=2), "a", sleep=no_sleep))) == 10
    api = FakeDanbooru(range(1, 11), errors=99)
    with pytest.raises(ApiError, match="Database timed out"):
        list(site.posts(api, "a", sleep=no_sleep))
    assert len(api.urls) == 3  # bounded


def test_sites_are_a_table():
    from crawler.cli import SITES

    assert site_names() == sorted(SITES) == ["danbooru", "gelbooru", "safebooru"]
    assert get_site("safebooru").api_url("a").startswith("https://safebooru.org/index.php?page=dapi")
    assert get_site("gelbooru").api_url("a").startswith("https://gelbooru.com/index.php?page=dapi")
    assert get_site("safebooru", "http://127.0.0.1:8000/").base_url == "http://127.0.0.1:8000"
    assert (
        get_site("danbooru", fmt="xml")
        .api_url("a", 1, 200)
        .startswith("https://danbooru.donmai.us/posts.json")
    )
    with pytest.raises(ValueError, match="unknown site 'e621'"):
        get_site("e621")


# --------------------------------------------------------------------------------------------------
# Folder names


HOSTILE = [
    "../../etc/passwd",
    "..",
    ".",
    "/abs/olute",
    "a/b",
    "c:\\windows\\x",
    "C:",
    "con",
    "NUL.txt",
    "com1",
    "lpt9.png",
    "aux ..",
    '*?<>|"',
    "tag\x00nul",
    "\x01\x1f\x7f",
    "東方 博麗霊夢",
    "émoji 😀 solo",
    ".hidden",
    "trailing.",
    "trailing ",
    " leading",
    "6+girls 1girl",
    "100% ~tilde",
    "a" * 300,
    "東" * 200,
    "bad\udcffbytes",
    "Solo",
    "solo",
    "%41",
    "+",
]


@pytest.mark.parametrize("query", HOSTILE)
def test_folder_names_are_one_safe_component_and_reversible(query, tmp_path):
    name = folder_for_query(query)
    assert 0 < len(name) <= MAX_FOLDER_CHARS
    assert "/" not in name and "\\" not in name and "\x00" not in name and ":" not in name
    assert not name.startswith(".") and not name.endswith((".", " "))
    assert name.isascii() and name.isprintable() and not any(c in name for c in '*?<>|"')
    assert name.split(".")[0].lower() not in {"con", "nul", "aux", "prn", "com1", "lpt9"}
    if "~" in name:  # shortened: the .query file holds the query
        with pytest.raises(ValueError, match="shortened"):
            query_for_folder(name)
    else:
        assert query_for_folder(name) == query
    folder = ensure_query_folder(tmp_path, query)
    assert folder.parent == tmp_path and folder.resolve().parent == tmp_path.resolve()
    assert read_folder_query(folder) == query
    assert (folder / QUERY_FILE).read_bytes() == query.encode("utf-8", "surrogateescape")


def test_folder_names_never_collide():
    rng = random.Random(0)
    alphabet = "ab.+%~/ \\:*AZ_-()東\x00😀"
    queries = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(5000)}
    queries |= set(HOSTILE)
    names = {q: folder_for_query(q) for q in queries}
    assert len(set(names.values())) == len(queries)
    assert len({n.lower() for n in names.values()}) == len(queries)  # also on case-insensitive disks
    for q, n in names.items():
        if "~" not in n:
            assert query_for_folder(n) == q
    long_a, long_b = "x" * 500 + "a", "x" * 500 + "b"
    assert folder_for_query(long_a) != folder_for_query(long_b)
    assert folder_for_query("1girl solo -monochrome") == "1girl+solo+-monochrome"


def test_a_folder_of_another_query_is_refused(tmp_path):
    folder = ensure_query_folder(tmp_path, "solo")
    (folder / QUERY_FILE).write_text("something else")
    with pytest.raises(ValueError, match="another query"):
        ensure_query_folder(tmp_path, "solo")
    with pytest.raises(ValueError):
        folder_for_query("")


def test_place_copy_falls_back_from_hardlink_to_symlink_to_nothing(tmp_path, monkeypatch):
    stored = tmp_path / "first" / "1.png"
    stored.parent.mkdir()
    stored.write_bytes(b"png")
    (tmp_path / "second").mkdir()
    link = tmp_path / "second" / "1.png"
    assert place_copy(stored, link) == "hardlink" and link.stat().st_ino == stored.stat().st_ino
    link.unlink()

    def no_link(*a, **k):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr("os.link", no_link)
    assert place_copy(stored, link) == "symlink"
    assert link.is_symlink() and link.readlink() == Path("../first/1.png") and link.read_bytes() == b"png"
    link.unlink()
    monkeypatch.setattr("os.symlink", no_link)
    assert place_copy(stored, link) == "none" and not link.exists()
    assert sorted(p.name for p in (tmp_path / "second").iterdir()) == []  # no temp file left


# --------------------------------------------------------------------------------------------------
# Rate limit, retries


def test_rate_limiter_is_precise_across_threads():
    limiter = RateLimiter(25.0)
    stamps: list[float] = []
    lock = threading.Lock()

    def worker(n):
        for _ in range(n):
            limiter.acquire()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker, args=(13,)) for _ in range(4)]  # 52 slots, 4 threads
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stamps.sort()
    measured = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert abs(measured - 25.0) / 25.0 < 0.05, measured


def test_rate_limiter_hands_out_evenly_spaced_slots():
    """On a fake clock: slots exactly 1/rate apart whatever the callers do, no burst after a lull."""
    now = [100.0]
    slept: list[float] = []

    def sleep(s):
        slept.append(s)

    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    waits = [limiter.acquire() for _ in range(5)]  # five callers at the same instant
    assert waits == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    now[0] += 10.0  # a long lull: no credit is saved up
    assert limiter.acquire() == 0.0 and limiter.acquire() == pytest.approx(0.25)
    limiter.pause_for(3.0)  # a Retry-After: the next slot is after it, then the spacing resumes
    assert limiter.acquire() == pytest.approx(3.0) and limiter.acquire() == pytest.approx(3.25)


def test_rate_zero_is_unlimited_but_still_honours_pauses():
    limiter = RateLimiter(0)
    t0 = time.monotonic()
    for _ in range(2000):
        limiter.acquire()
    assert time.monotonic() - t0 < 0.5
    limiter.pause_for(0.2)
    t0 = time.monotonic()
    limiter.acquire()
    assert 0.15 < time.monotonic() - t0 < 0.5
    with pytest.raises(ValueError):
        RateLimiter(-1)


def test_retry_after_seconds_and_http_dates():
    now = 1_700_000_000.0
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:40 GMT", now=now) == pytest.approx(20.0)
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now=now) == 0.0  # in the past
    for bad in (None, "", "soon", "-5", "1.5e9x"):
        assert parse_retry_after(bad) is None


def test_backoff_grows_exponentially_with_jitter():
    policy = RetryPolicy(base_s=1.0, max_delay_s=30.0, jitter=0.5)
    rng = random.Random(1)
    for failures, nominal in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)):
        delays = [policy.delay_s(failures, rng) for _ in range(200)]
        assert nominal * 0.5 <= min(delays) and max(delays) <= nominal * 1.5
        assert max(delays) - min(delays) > nominal * 0.5  # jittered, so workers do not retry in step
    assert policy.delay_s(20, rng) <= 30.0


def test_cloudflare_challenge_detection():
    assert is_cloudflare_challenge(403, {"cf-mitigated": "challenge"}, b"")
    assert is_cloudflare_challenge(503, {}, b"<html><title>Just a moment...</title>")
    assert is_cloudflare_challenge(
        403, {"Content-Type": "text/html"}, b"<script>window._cf_chl_opt={}</script>"
    )
    assert not is_cloudflare_challenge(403, {}, b"<html>Forbidden</html>")
    assert not is_cloudflare_challenge(503, {}, b"<html>Service Unavailable</html>")
    assert not is_cloudflare_challenge(200, {}, b"\xff\xd8\xff Just a moment...")


# --------------------------------------------------------------------------------------------------
# Is it an image?


def _image_bytes(fmt: str, size=(12, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 40)).save(buf, fmt)
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (the pixel data is not needed to trip the bomb guard)."""
    data = bytearray(_image_bytes("PNG", (1, 1)))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


@pytest.mark.parametrize("fmt, ext", [("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif"), ("WEBP", "webp")])
def test_real_images_pass(fmt, ext, tmp_path):
    path = tmp_path / "x.part"
    path.write_bytes(_image_bytes(fmt))
    assert check_image(path) == (ext, 12, 8)


@pytest.mark.parametrize(
    "body, message",
    [
        (b"<!DOCTYPE html><html><body>Oops</body></html>", "HTML page"),
        (b"<html><head><title>503</title></head></html>", "HTML page"),
        (b'{"error": "not found"}', "not an image"),
        (b"\xff\xd8\xff\xe0" + b"garbage" * 10, "Pillow cannot read"),
        (b"", "not an image"),
    ],
)
def test_html_and_broken_bodies_are_not_images(body, message, tmp_path):
    path = tmp_path / "x.part"
    path.write_bytes(body)
    with pytest.raises(FetchError, match=message) as err:
        check_image(path)
    assert err.value.retryable


def test_decompression_bombs_are_refused(tmp_path):
    path = tmp_path / "bomb.part"
    path.write_bytes(_png_claiming(10_000, 10_000))  # 1e8 pixels: above Pillow's warning threshold
    with pytest.raises(FetchError, match="decompression bomb") as err:
        check_image(path)
    assert not err.value.retryable
    path.write_bytes(_png_claiming(30_000, 30_000))  # above its error threshold too
    with pytest.raises(FetchError, match="decompression bomb"):
        check_image(path)


def test_post_is_frozen():
    post = Post(1, "0" * 32, ("a",), "general", 1, 1, "http://x/images/1/a.png", "", None)
    with pytest.raises(AttributeError):
        post.id = 2  # type: ignore[misc]


# --------------------------------------------------------------------------------------------------
# Variants of the answers the live services send (beyond the recorded fixtures)


def test_json_tags_are_html_unescaped_like_the_live_json_api_sends_them():
    record = {"id": 5, "hash": "a" * 32, "directory": 1, "image": "x.png",
              "tags": "hand_on_another&#039;s_head :&lt; luck_&amp;_logic 1girl"}  # fmt: skip
    page = parse_json_posts(json.dumps([record]))
    assert page.posts[0].tags == ("hand_on_another's_head", ":<", "luck_&_logic", "1girl")
    # the XML form is decoded by the XML parser already; a second unescape changes nothing
    xml_page = parse_xml_posts(fixture("gelbooru_com_results_2017.xml"))
    assert "luck_&_logic" in xml_page.posts[2].tags


def test_a_byte_order_mark_does_not_break_either_format():
    bom = b"\xef\xbb\xbf"
    assert parse_posts(bom + fixture("safebooru_post_2025.json")).posts[0].id == 6077620
    assert parse_posts(bom + fixture("gelbooru_com_results_2017.xml")).records == 20
    with pytest.raises(ApiError, match="API limited"):
        parse_posts(bom + fixture("safebooru_deep_page_error.xml"))


def test_gelbooru_json_object_form_and_error_objects():
    post = json.loads(fixture("safebooru_post_2025.json"))[0]
    wrapped = {"@attributes": {"limit": 100, "offset": 0, "count": 1}, "post": [post]}
    page = parse_posts(json.dumps(wrapped))
    assert page.count == 1 and [p.id for p in page.posts] == [6077620]
    empty = parse_posts(json.dumps({"@attributes": {"limit": 100, "offset": 0, "count": 0}}))
    assert empty.records == 0 and empty.count == 0
    for body, reason in (
        ({"success": False, "message": "Search is overloaded"}, "overloaded"),
        ({"error": "Missing authentication"}, "Missing authentication"),
        ({}, "expected a list of posts"),
    ):
        with pytest.raises(ApiError, match=reason):
            parse_posts(json.dumps(body))


def test_xml_posts_with_child_elements_like_gelbooru_com_since_2019():
    body = b"""<?xml version="1.0" encoding="UTF-8"?>
<posts limit="1" offset="0" count="246448"><post><id>7956269</id><score>0</score><width>1417</width>
<height>1417</height><md5>803d299be841d0d4da46bda2ffca5343</md5><directory>80/3d</directory>
<image>803d299be841d0d4da46bda2ffca5343.png</image><rating>general</rating>
<source>https://itukai.tumblr.com/post/701782109617094656</source>
<tags> 1boy 1girl :| ankle_socks </tags>
<file_url>https://img3.gelbooru.com/images/80/3d/803d299be841d0d4da46bda2ffca5343.png</file_url></post></posts>"""
    page = parse_xml_posts(body, "https://gelbooru.com")
    (post,) = page.posts
    assert page.count == 246448 and post.id == 7956269 and post.md5 == "803d299be841d0d4da46bda2ffca5343"
    assert post.file_url.endswith("/images/80/3d/803d299be841d0d4da46bda2ffca5343.png")
    assert post.tags == ("1boy", "1girl", ":|", "ankle_socks") and (post.width, post.height) == (1417, 1417)
    no_url = body.replace(b"<file_url>", b"<x>").replace(b"</file_url>", b"</x>")
    assert parse_xml_posts(no_url, "https://gelbooru.com").posts[0].file_url == (
        "https://gelbooru.com/images/80/3d/803d299be841d0d4da46bda2ffca5343.png"
    )


def test_a_stale_count_costs_one_request_not_retries():
    class StaleCount(FakeApi):  # `count` says 300, the listing holds 250
        def __call__(self, url):
            return super().__call__(url).replace(b'count="250"', b'count="300"')

    api = StaleCount(range(1, 251))
    slept: list[float] = []
    listing = Listing()
    ids = [p.id for p in iter_posts(api, "a", listing=listing, sleep=slept.append)]
    assert ids == list(range(250, 0, -1)) and len(api.urls) == 4 and slept == []
    assert listing.empty_retries == 0


def test_a_server_that_pages_by_fewer_than_asked_is_still_listed_to_the_end():
    class SmallPages(FakeApi):  # answers 40 a page whatever `limit` says (pid counts its own pages)
        def __call__(self, url):
            url = url.replace("limit=100", "limit=40")
            return super().__call__(url)

    api = SmallPages(range(1, 101))
    assert [p.id for p in iter_posts(api, "a", sleep=no_sleep)] == list(range(100, 0, -1))


def test_retry_after_in_fractional_seconds():
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("inf") is None and parse_retry_after("nan") is None
