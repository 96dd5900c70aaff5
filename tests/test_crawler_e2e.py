"""Crawler end to end against the local Safebooru (`crawler.local_server`) on 127.0.0.1: complete crawls in
both formats, resume after kill -9, each injected fault, hostile tags, posts shared by queries, the rate
limit as the server measures it, and the command line."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import requests
from PIL import Image

from crawler.archive import Archive
from crawler.cli import main
from crawler.crawl import ARCHIVE_NAME, CrawlOptions, crawl
from crawler.download import RetryPolicy
from crawler.layout import QUERY_FILE, folder_for_query
from crawler.local_server import Catalog, Faults, LocalBooru

ROOT = Path(__file__).resolve().parent.parent
FAST_RETRY = RetryPolicy(attempts=4, base_s=0.01, max_delay_s=0.05)


def make_gallery(folder: Path, tags_by_id: dict[int, list[str]], size=(10, 14)) -> Path:
    """Small random PNGs `<id>.png` with `<id>.json` sidecars carrying their tags."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for post_id, tags in tags_by_id.items():
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{post_id}.png")
        (folder / f"{post_id}.json").write_text(json.dumps({"id": post_id, "tags": tags}))
    return folder


@pytest.fixture
def gallery(tmp_path) -> Path:
    """60 posts: all tagged `all`; even ids `red`, multiples of 3 `round` (so red and round share 10)."""
    tags = {
        i: ["all"] + (["red"] if i % 2 == 0 else []) + (["round"] if i % 3 == 0 else []) for i in range(1, 61)
    }
    return make_gallery(tmp_path / "gallery", tags)


DIALECTS = [("safebooru", "xml"), ("safebooru", "json"), ("danbooru", "json")]
DIALECT_IDS = ["gelbooru-xml", "gelbooru-json", "danbooru"]


def options(url: str, **kw) -> CrawlOptions:
    base = dict(
        base_url=url, rate_per_s=0, workers=4, progress=False, retry=FAST_RETRY, page_retry_delay_s=0.01
    )
    base.update(kw)
    return CrawlOptions(**base)


def check_folder(folder: Path, ids: set[int], catalog: Catalog) -> None:
    """Exactly `ids` as `<id>.png` + `<id>.json`, bytes equal to the served files, nothing half-written."""
    by_id = {p.id: p for p in catalog.posts}
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if n.endswith((".part", ".tmp", ".link-tmp"))], names
    assert {int(n.split(".")[0]) for n in names if n.endswith(".png")} == ids
    assert {int(n.split(".")[0]) for n in names if n.endswith(".json")} == ids
    for post_id in ids:
        side = json.loads((folder / f"{post_id}.json").read_text())
        image = folder / side["file"]
        assert hashlib.md5(image.read_bytes()).hexdigest() == side["md5"] == by_id[post_id].md5
        assert side["id"] == post_id and side["tags"] == list(by_id[post_id].tags)


def file_requests(booru: LocalBooru) -> list:
    return booru.requests("file")


# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("site, fmt", DIALECTS, ids=DIALECT_IDS)
def test_crawl_is_complete_and_a_rerun_fetches_nothing(gallery, tmp_path, site, fmt):
    catalog = Catalog.from_folder(gallery)
    out = tmp_path / "out"
    with LocalBooru(catalog) as booru:
        summary = crawl(["all"], out, options(booru.url, site=site, fmt=fmt, fsync=fmt == "json"))
        assert summary.ok and summary.count("new") == 60 and summary.queries[0].listed == 60
        assert summary.queries[0].total == (60 if fmt == "xml" else None)
        check_folder(out / "all", set(range(1, 61)), catalog)
        assert (out / "all" / QUERY_FILE).read_text() == "all"
        assert len(file_requests(booru)) == 60
        api = booru.requests("api")
        assert all(r.path.startswith("/posts.json?" if site == "danbooru" else "/index.php?") for r in api)
        again = crawl(["all"], out, options(booru.url, site=site, fmt=fmt))
        assert again.ok and again.count("had") == 60 and again.count("new") == 0
        assert len(file_requests(booru)) == 60  # not one more file request
    with Archive(out / ARCHIVE_NAME) as archive:
        assert len(archive.posts("all", "done")) == 60


@pytest.mark.parametrize("site", ["safebooru", "danbooru"])
def test_kill_9_mid_crawl_then_resume(tmp_path, site):
    tags = {i: ["all"] for i in range(1, 121)}
    catalog = Catalog.from_folder(make_gallery(tmp_path / "gallery", tags))
    out = tmp_path / "out"
    with LocalBooru(catalog, Faults(latency_s=0.015)) as booru:
        cmd = [sys.executable, "-m", "crawler", "crawl", "all", "--out", str(out), "--site", site,
               "--base-url", booru.url, "--rate", "0", "--workers", "2", "--no-progress"]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        folder = out / "all"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if folder.is_dir() and len(list(folder.glob("*.png"))) >= 15:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        complete = len(list(folder.glob("*.png")))
        assert 15 <= complete < 120, "the crawl should have been killed in the middle"
        # nothing half-written under a final name: every image is whole, every sidecar parses
        for path in folder.iterdir():
            if path.suffix == ".png":
                assert hashlib.md5(path.read_bytes()).hexdigest() == catalog.by_id[int(path.stem)].md5
            elif path.suffix == ".json":
                assert json.loads(path.read_text())["id"] == int(path.stem)
        time.sleep(0.2)  # answers already in flight to the killed process reach the server's log
        before = len(file_requests(booru))

        summary = crawl(["all"], out, options(booru.url, site=site))
        assert summary.ok, summary.format()
        check_folder(folder, set(range(1, 121)), catalog)
        # every complete file survived and was kept (by the archive or re-hashed): only the rest is fetched
        assert len(file_requests(booru)) - before == 120 - complete
        assert summary.count("new") == 120 - complete and summary.count("had") == complete
    with Archive(out / ARCHIVE_NAME) as archive:
        assert len(archive.posts("all", "done")) == 120
        assert len({s.md5 for s in archive.posts("all")}) == 120


@pytest.mark.parametrize(
    "faults, site, fmt",
    [
        (Faults(errors=5), "safebooru", "xml"),  # a 5xx burst
        (Faults(errors=5), "danbooru", "json"),
        (Faults(truncate=3), "safebooru", "xml"),  # bodies cut short
        (Faults(truncate=3), "danbooru", "json"),
        (Faults(api_errors=2), "safebooru", "json"),  # API pages 503
        (Faults(api_errors=2), "danbooru", "json"),
        (Faults(empty_pages=2), "safebooru", "xml"),  # transient empty pages before the total is reached
        (Faults(empty_pages=2), "safebooru", "json"),
        (Faults(latency_s=0.05), "safebooru", "xml"),  # slow answers
        (Faults(malformed=3), "safebooru", "xml"),  # answers that are not HTTP
        (Faults(malformed=3), "danbooru", "json"),
    ],
    ids=["5xx", "5xx-danbooru", "truncated", "truncated-danbooru", "api-5xx", "api-5xx-danbooru", "empty-xml",
         "empty-json", "slow", "not-http", "not-http-danbooru"],
)  # fmt: skip
def test_injected_faults_are_survived(gallery, tmp_path, faults, site, fmt):
    catalog = Catalog.from_folder(gallery)
    with LocalBooru(catalog, faults) as booru:
        summary = crawl(["red"], tmp_path / "out", options(booru.url, site=site, fmt=fmt))
    assert summary.ok, summary.format()
    check_folder(tmp_path / "out" / "red", set(range(2, 61, 2)), catalog)


@pytest.mark.parametrize("retry_after", ["1", "date"])
def test_429_retry_after_pauses_every_worker(gallery, tmp_path, retry_after):
    catalog = Catalog.from_folder(gallery)
    with LocalBooru(catalog, Faults(throttle=2, retry_after=retry_after)) as booru:
        summary = crawl(["round"], tmp_path / "out", options(booru.url, workers=4))
        log = file_requests(booru)
    assert summary.ok, summary.format()
    check_folder(tmp_path / "out" / "round", set(range(3, 61, 3)), catalog)
    assert len([r for r in log if r.status == 429]) == 2
    last_429 = max(r.t for r in log if r.status == 429)
    # once the 429 is known (requests already in flight aside), nothing is sent until Retry-After is over
    # (an HTTP date has 1 s resolution, so it asks for between 0 and 1 s)
    wait = 0.95 if retry_after == "1" else 0.0
    assert not [r for r in log if last_429 + 0.05 < r.t < last_429 + wait]
    assert max(r.t for r in log) >= last_429 + wait


def test_cloudflare_challenge_stops_the_crawl(gallery, tmp_path, capsys):
    catalog = Catalog.from_folder(gallery)
    with LocalBooru(catalog, Faults(cloudflare_after=6, latency_s=0.01)) as booru:
        code = main(["crawl", "all", "--out", str(tmp_path / "out"), "--base-url", booru.url, "--rate", "0",
                     "--workers", "3", "--no-progress"])  # fmt: skip
        log = booru.requests()
    assert code == 3
    err = capsys.readouterr().err
    assert "Cloudflare" in err and "challenge" in err and "Traceback" not in err
    challenged = [r for r in log if r.status == 403]
    assert 1 <= len(challenged) <= 3  # the workers' requests already in flight, no more (no hammering)
    assert not list((tmp_path / "out" / "all").glob("*.part"))


def test_cloudflare_on_the_first_api_page(gallery, tmp_path):
    catalog = Catalog.from_folder(gallery)
    with LocalBooru(catalog, Faults(cloudflare_after=0)) as booru:
        summary = crawl(["all", "red"], tmp_path / "out", options(booru.url))
        assert len(booru.requests()) == 1
    assert summary.stopped and "Cloudflare" in summary.stopped and len(summary.queries) == 1


def test_md5_mismatch_is_retried_then_recorded_and_never_kept(gallery, tmp_path, capsys):
    catalog = Catalog.from_folder(gallery)
    out = tmp_path / "out"
    with LocalBooru(catalog, Faults(wrong_md5=frozenset({9}))) as booru:
        summary = crawl(["round"], out, options(booru.url))
        tries = [r for r in file_requests(booru) if r.path.endswith(catalog.by_id[9].image)]
        code = main(["crawl", "round", "--out", str(out), "--base-url", booru.url, "--rate", "0",
                     "--retries", "2", "--backoff-s", "0.01", "--no-progress"])  # fmt: skip
    assert len(tries) == FAST_RETRY.attempts
    assert not summary.ok and [(f.post_id, f.kind) for f in summary.failures] == [(9, "md5 mismatch")]
    assert summary.count("new") == 19
    assert not list((out / "round").glob("9.*")) and not list((out / "round").glob("*.part"))
    check_folder(out / "round", set(range(3, 61, 3)) - {9}, catalog)
    with Archive(out / ARCHIVE_NAME) as archive:
        (state,) = archive.posts("round", "failed")
        assert state.post_id == 9 and state.reason.startswith("md5 mismatch") and state.attempts == 2
        assert len(archive.failure_history("round")) == 2  # both runs recorded
    assert code == 1
    text = capsys.readouterr().out
    assert "md5 mismatch (1)" in text and "post 9" in text


def test_html_page_for_an_image_is_rejected(gallery, tmp_path):
    catalog = Catalog.from_folder(gallery)
    with LocalBooru(catalog, Faults(html_image=frozenset({12}))) as booru:
        summary = crawl(["round"], tmp_path / "out", options(booru.url))
    (failure,) = summary.failures
    assert failure.post_id == 12 and "not an image: the body is an HTML page" in failure.reason
    assert not list((tmp_path / "out" / "round").glob("12.*"))


def test_size_cap_aborts_big_files(gallery, tmp_path):
    catalog = Catalog.from_folder(gallery)
    with LocalBooru(catalog) as booru:
        summary = crawl(["round"], tmp_path / "out", options(booru.url, max_bytes=100))
    assert len(summary.failures) == 20 and {f.kind for f in summary.failures} == {"too large"}
    assert all(f.attempts == 1 for f in summary.failures)  # not retried
    assert not [p for p in (tmp_path / "out" / "round").iterdir() if p.suffix in (".png", ".part")]


def test_two_queries_sharing_posts_store_each_file_once(gallery, tmp_path):
    catalog = Catalog.from_folder(gallery)
    out = tmp_path / "out"
    with LocalBooru(catalog) as booru:
        summary = crawl(["red", "round"], out, options(booru.url))
        shared = set(range(6, 61, 6))
        assert summary.ok and summary.count("new") == 30 + 20 - 10 and summary.count("linked") == 10
        fetched = [unquote(r.path) for r in file_requests(booru)]
        assert len(fetched) == len(set(fetched)) == 40  # each file once
        check_folder(out / "red", set(range(2, 61, 2)), catalog)
        check_folder(out / "round", set(range(3, 61, 3)), catalog)
        for post_id in shared:  # the first query's folder holds the file; the second a hard link to it
            first, second = out / "red" / f"{post_id}.png", out / "round" / f"{post_id}.png"
            assert first.stat().st_ino == second.stat().st_ino and not second.is_symlink()
            assert json.loads((out / "round" / f"{post_id}.json").read_text())["query"] == "round"
        again = crawl(["round", "red"], out, options(booru.url))
        assert again.ok and again.count("had") == 50 and len(file_requests(booru)) == 40
    with Archive(out / ARCHIVE_NAME) as archive:
        assert {s.how for s in archive.posts("round") if s.post_id in shared} == {"hardlink"}


def test_without_links_the_sidecar_points_at_the_stored_copy(gallery, tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr("os.link", refuse)
    monkeypatch.setattr("os.symlink", refuse)
    catalog = Catalog.from_folder(gallery)
    out = tmp_path / "out"
    with LocalBooru(catalog) as booru:
        summary = crawl(["red", "round"], out, options(booru.url))
        assert summary.ok and summary.count("linked") == 10
        side = json.loads((out / "round" / "6.json").read_text())
        assert side["file"] == "../red/6.png" and not (out / "round" / "6.png").exists()
        assert hashlib.md5((out / "round" / side["file"]).read_bytes()).hexdigest() == side["md5"]
        again = crawl(["round"], out, options(booru.url))
        assert again.ok and again.count("had") == 20 and len(file_requests(booru)) == 40


def test_hostile_tags_stay_inside_the_output_folder(tmp_path):
    hostile = ["../../escape", "..", "a/b", "c:\\x", "con", "*?|<>", "東方", ".hidden", "x%2f..%2f..%2fy"]
    catalog = Catalog.from_folder(
        make_gallery(tmp_path / "gallery", {i + 1: [t] for i, t in enumerate(hostile)})
    )
    out = tmp_path / "deep" / "out"
    with LocalBooru(catalog) as booru:
        summary = crawl(hostile, out, options(booru.url))
    assert summary.ok and summary.count("new") == len(hostile), summary.format()
    made = {p.resolve() for p in tmp_path.rglob("*")} - {
        p.resolve() for p in (tmp_path / "gallery").rglob("*")
    }
    made -= {(tmp_path / "gallery").resolve(), (tmp_path / "deep").resolve(), out.resolve()}
    assert all(out.resolve() in p.parents for p in made), sorted(map(str, made))
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(folder_for_query(q) for q in hostile)
    for i, query in enumerate(hostile):
        folder = out / folder_for_query(query)
        assert (folder / QUERY_FILE).read_text() == query and (folder / f"{i + 1}.png").is_file()


def test_rate_limit_as_measured_by_the_server(gallery, tmp_path):
    catalog = Catalog.from_folder(gallery)
    with LocalBooru(catalog) as booru:
        summary = crawl(["red"], tmp_path / "out", options(booru.url, rate_per_s=20, workers=4, limit=24))
        stamps = sorted(r.t for r in booru.requests())
    assert summary.ok and len(stamps) == 25  # one API page + 24 files
    measured = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert abs(measured - 20) / 20 < 0.05, measured


def test_non_image_posts_are_skipped_not_failed(gallery, tmp_path):
    (gallery / "500.webm").write_bytes(b"\x1aE\xdf\xa3 not really a video")
    (gallery / "500.json").write_text(json.dumps({"id": 500, "tags": ["red"]}))
    catalog = Catalog.from_folder(gallery)
    with LocalBooru(catalog) as booru:
        summary = crawl(["red"], tmp_path / "out", options(booru.url))
        assert summary.ok and summary.count("skipped") == 1 and summary.count("new") == 30
        assert not [r for r in file_requests(booru) if r.path.endswith(".webm")]


def test_deep_crawl_switches_to_keyset_paging(tmp_path):
    catalog = Catalog.from_folder(
        make_gallery(tmp_path / "gallery", {i: ["all"] for i in range(1, 251)}, (4, 4))
    )
    with LocalBooru(catalog, deep_cap=100) as booru:
        before_cap = crawl(["all"], tmp_path / "a", options(booru.url, offset_cap=100))
        api_a = [unquote(r.path) for r in booru.requests("api")]
        on_error = crawl(["all"], tmp_path / "b", options(booru.url))  # the server's refusal triggers it
    assert before_cap.ok and before_cap.count("new") == 250 and on_error.ok and on_error.count("new") == 250
    assert len(api_a) == 3 and all("pid=0" in p for p in api_a) and "id:<" in api_a[1]  # never past the cap
    check_folder(tmp_path / "b" / "all", set(range(1, 251)), catalog)


# --------------------------------------------------------------------------------------------------
# The local server itself and the command line


def test_local_server_speaks_the_api(gallery):
    catalog = Catalog.from_folder(gallery)
    with LocalBooru(catalog, deep_cap=200) as booru:
        api = f"{booru.url}/index.php?page=dapi&s=post&q=index"
        empty = requests.get(f"{api}&tags=nothing&json=1", timeout=5)
        assert empty.status_code == 200 and empty.content == b""
        xml = requests.get(f"{api}&tags=red+-round&limit=500", timeout=5).text
        assert 'count="20"' in xml and xml.count("<post ") == 20
        page = requests.get(f"{api}&tags=all&limit=1000&json=1", timeout=5).json()
        assert len(page) == 60 and page[0]["id"] == 60  # limit capped at 100, newest first
        one = requests.get(f"{api}&tags=all&limit=1&json=1", timeout=5).text
        assert "\\/" in one  # PHP's escaped slashes, like the live service
        keyset = requests.get(f"{api}&tags=all+id:<10&json=1", timeout=5).json()
        assert [p["id"] for p in keyset] == list(range(9, 0, -1))
        deep = requests.get(f"{api}&tags=all&pid=2&limit=100&json=1", timeout=5)
        assert deep.status_code == 200 and b'success="false"' in deep.content  # XML despite json=1
        image = requests.get(page[0]["file_url"], timeout=5)
        assert (
            hashlib.md5(image.content).hexdigest() == page[0]["hash"]
            and page[0]["image"][:-4] != page[0]["hash"]
        )
        assert requests.get(f"{booru.url}/images/0/nope.png", timeout=5).status_code == 404


def test_serve_local_and_crawl_from_the_command_line(gallery, tmp_path):
    server = subprocess.Popen(
        [sys.executable, "-m", "crawler", "serve-local", str(gallery), "--port", "0", "--faults", "errors=2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = server.stdout.readline()
        url = line.split(" at ")[1].split()[0]
        runs = {
            site: subprocess.run(
                [sys.executable, "-m", "crawler", "crawl", "round", " red  round ", "--out", str(tmp_path / site),
                 "--site", site, "--base-url", url, "--rate", "0", "--backoff-s", "0.01", "--format", "json"],
                cwd=ROOT, capture_output=True, text=True, timeout=60,
            )
            for site in ("safebooru", "danbooru")
        }  # fmt: skip
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
    catalog = Catalog.from_folder(gallery)
    for site, r in runs.items():  # one server, both dialects
        assert r.returncode == 0, r.stderr
        assert "20 new" in r.stdout and "10 linked" in r.stdout and "0 failed" in r.stdout
        assert sorted(p.name for p in (tmp_path / site).iterdir() if p.is_dir()) == ["red+round", "round"]
        check_folder(tmp_path / site / "round", set(range(3, 61, 3)), catalog)


def test_danbooru_banned_posts_are_skipped_the_rest_crawled(gallery, tmp_path):
    for post_id in (4, 8):
        side = gallery / f"{post_id}.json"
        side.write_text(json.dumps({**json.loads(side.read_text()), "banned": True}))
    catalog = Catalog.from_folder(gallery)
    with LocalBooru(catalog) as booru:
        summary = crawl(["red"], tmp_path / "out", options(booru.url, site="danbooru"))
    assert summary.ok and summary.count("new") == 28 and summary.queries[0].listed == 28
    assert "2 records without a file skipped" in summary.format()
    check_folder(tmp_path / "out" / "red", set(range(2, 61, 2)) - {4, 8}, catalog)


def test_local_server_speaks_the_danbooru_api(gallery):
    catalog = Catalog.from_folder(gallery)
    with LocalBooru(catalog) as booru:
        api = f"{booru.url}/posts.json"
        first = requests.get(f"{api}?tags=all&limit=500", timeout=5).json()
        assert len(first) == 60 and first[0]["id"] == 60 and first[0]["md5"] == catalog.by_id[60].md5
        assert first[0]["tag_string"] == " ".join(catalog.by_id[60].tags) and first[0]["rating"] == "g"
        assert [p["id"] for p in requests.get(f"{api}?tags=all&limit=3&page=b10", timeout=5).json()] == [
            9,
            8,
            7,
        ]
        assert [p["id"] for p in requests.get(f"{api}?tags=red&limit=2&page=2", timeout=5).json()] == [56, 54]
        deep = requests.get(f"{api}?tags=all&page=1001", timeout=5)
        assert deep.status_code == 410 and "beyond page 1000" in deep.json()["message"]
        image = requests.get(first[0]["file_url"], timeout=5)
        assert hashlib.md5(image.content).hexdigest() == first[0]["md5"]


def test_a_retry_after_of_hours_stops_the_crawl_with_a_clear_message(gallery, tmp_path, capsys):
    catalog = Catalog.from_folder(gallery)
    with LocalBooru(catalog, Faults(throttle=1, retry_after="86400")) as booru:
        code = main(["crawl", "round", "--out", str(tmp_path / "out"), "--base-url", booru.url, "--rate", "0",
                     "--no-progress"])  # fmt: skip
        # what the 4 workers had in flight (and, on a busy machine, a file or two each that finished meanwhile)
        assert len(booru.requests("file")) <= 8
    assert code == 3
    err = capsys.readouterr().err
    assert "Retry-After 86400 s" in err and "re-run" in err and "Traceback" not in err
    assert not list((tmp_path / "out" / "round").glob("*.part"))


def test_local_server_accepts_doubled_slashes_like_the_real_one(gallery):
    catalog = Catalog.from_folder(gallery)
    with LocalBooru(catalog) as booru:
        xml = requests.get(f"{booru.url}/index.php?page=dapi&s=post&q=index&tags=all&limit=1", timeout=5).text
        url = xml.split('file_url="')[1].split('"')[0]
        assert "//images/" in url and "?" in url  # what the client must clean (gallery-dl does not)
        image = requests.get(url, timeout=5)
        assert image.status_code == 200 and hashlib.md5(image.content).hexdigest() == catalog.posts[0].md5


@pytest.mark.skipif(
    len(getattr(os, "sched_getaffinity", lambda _: ())(0)) < 2, reason="needs Linux and two processors"
)
def test_the_crawl_threads_share_one_processor_and_the_caller_gets_its_own_back(
    gallery, tmp_path, monkeypatch
):
    """Python threads crawl faster on one processor (BENCHMARKS.md); the caller's threads are left as they were."""
    from crawler.crawl import Crawler

    seen: list[set[int]] = []
    real_process = Crawler.process

    def process(self, *args):
        seen.append(os.sched_getaffinity(0))  # the calling thread's: a worker's
        return real_process(self, *args)

    monkeypatch.setattr(Crawler, "process", process)
    before = os.sched_getaffinity(0)
    with LocalBooru(Catalog.from_folder(gallery)) as booru:
        assert crawl(["all"], tmp_path / "a", options(booru.url)).ok
        assert len(seen) == 60 and len({frozenset(s) for s in seen}) == 1 and len(seen[0]) == 1
        assert seen[0] <= before and os.sched_getaffinity(0) == before
        seen.clear()
        assert crawl(["all"], tmp_path / "b", options(booru.url, one_cpu=False)).ok
        assert len(seen) == 60 and all(s == before for s in seen)
        out = tmp_path / "c"
        with crawl_lock_held(out), pytest.raises(RuntimeError, match="another crawl"):
            crawl(["all"], out, options(booru.url))
        assert os.sched_getaffinity(0) == before  # restored when the crawl fails too


@contextlib.contextmanager
def crawl_lock_held(out: Path):
    import fcntl

    from crawler.crawl import LOCK_NAME

    out.mkdir(parents=True)
    with open(out / LOCK_NAME, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield
