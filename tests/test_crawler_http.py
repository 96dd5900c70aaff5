"""The crawler's HTTP (`crawler.download`, on urllib3) against the local booru on 127.0.0.1: answers that
every maintained client reads (100 Continue, a doubled Content-Length, bare-LF lines, a Content-Length in
non-ASCII digits, chunked, gzip, connections closed after each answer), answers that are not HTTP,
redirects, a body that never ends, throttling without Retry-After, proxies from the environment."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from crawler.cli import main
from crawler.crawl import crawl
from crawler.download import MAX_REDIRECTS, GaveUp, HttpClient, RateLimiter, RetryPolicy, environ_proxy
from crawler.local_server import WIRE_QUIRKS, Catalog, Faults, LocalBooru, parse_faults
from tests.test_crawler_e2e import FAST_RETRY, check_folder, make_gallery, options


@pytest.fixture
def catalog(tmp_path) -> Catalog:
    """24 posts tagged `all`, a few KB each."""
    return Catalog.from_folder(
        make_gallery(tmp_path / "gallery", {i: ["all"] for i in range(1, 25)}, (40, 30))
    )


def client(**kw) -> HttpClient:
    return HttpClient(RateLimiter(kw.pop("rate", 0)), kw.pop("retry", FAST_RETRY), **kw)


def file_url(booru: LocalBooru, catalog: Catalog, post_id: int) -> tuple[str, str]:
    post = catalog.by_id[post_id]
    return f"{booru.url}/images/{post.directory}/{post.image}", post.md5


@pytest.mark.parametrize("site", ["safebooru", "danbooru"])
@pytest.mark.parametrize("quirk", sorted(WIRE_QUIRKS))
def test_answers_every_maintained_client_reads_are_read(catalog, tmp_path, quirk, site):
    """Each quirk on every answer, API pages and files: the crawl is complete, nothing retried."""
    with LocalBooru(catalog, Faults(wire=frozenset({quirk}))) as booru:
        summary = crawl(["all"], tmp_path / "out", options(booru.url, site=site, timeout_s=(5.0, 5.0)))
        files = booru.requests("file")
    assert summary.ok, summary.format()
    check_folder(tmp_path / "out" / "all", set(range(1, 25)), catalog)
    assert len(files) == 24 and summary.elapsed_s < 5  # no answer waited for a timeout


def test_api_pages_are_asked_for_gzip_and_files_are_not(catalog, tmp_path):
    with LocalBooru(catalog, Faults(wire=frozenset({"gzip"}))) as booru:
        http = client()
        url = f"{booru.url}/index.php?page=dapi&s=post&q=index&tags=all&limit=3"
        encoding, body = http.fetch(
            url, lambda r: (r.headers.get("content-encoding"), r.read()), compressed=True
        )[0]
        assert encoding == "gzip" and body.startswith(b"<?xml") and body.count(b"<post ") == 3
        assert http.get_bytes(url) == body
        file, md5 = file_url(booru, catalog, 1)
        assert http.fetch(file, lambda r: r.headers.get("content-encoding"))[0] is None
        http.close()


def test_an_answer_that_is_not_http_is_retried_then_recorded_never_a_crash(catalog, tmp_path, capsys):
    out = tmp_path / "out"
    with LocalBooru(catalog, Faults(malformed=1000)) as booru:
        code = main(["crawl", "all", "--out", str(out), "--base-url", booru.url, "--rate", "0", "--retries", "2",
                     "--backoff-s", "0.01", "--no-progress"])  # fmt: skip
        assert len(booru.requests("file")) == 48  # every file tried twice
    assert code == 1
    captured = capsys.readouterr()
    assert "24 failed" in captured.out and "connection error (24)" in captured.out
    assert "Traceback" not in captured.out + captured.err
    assert not [p for p in (out / "all").iterdir() if p.suffix in (".png", ".part")]


def test_redirects_are_followed_through_the_rate_limit_and_bounded(catalog, tmp_path):
    with LocalBooru(catalog, Faults(redirects=2)) as booru:
        http = client()
        url, md5 = file_url(booru, catalog, 5)
        result = http.download_file(url, md5, tmp_path / "5.part", 1 << 20)
        assert result.attempts == 1 and hashlib.md5((tmp_path / "5.part").read_bytes()).hexdigest() == md5
        assert http.requests_sent == 3 and len(booru.requests("file")) == 3  # every hop a request
        http.close()
    with LocalBooru(catalog, Faults(redirects=MAX_REDIRECTS + 1)) as booru:
        http = client()
        url, md5 = file_url(booru, catalog, 5)
        with pytest.raises(GaveUp, match="more than 5 redirects") as err:
            http.download_file(url, md5, tmp_path / "5.part", 1 << 20)
        assert err.value.attempts == 1 and len(booru.requests("file")) == MAX_REDIRECTS + 1  # not retried
        assert not (tmp_path / "5.part").exists()
        http.close()


def test_a_body_that_never_ends_times_out_as_a_whole(catalog, tmp_path):
    """Each piece arrives well within the read timeout; the whole answer's deadline still ends it."""
    with LocalBooru(catalog, Faults(slow_body_s=20)) as booru:
        http = client(retry=RetryPolicy(attempts=1), body_timeout_s=0.5)
        url, md5 = file_url(booru, catalog, 1)
        t0 = time.monotonic()
        with pytest.raises(GaveUp, match="timeout: the answer took more than 0.5 s"):
            http.download_file(url, md5, tmp_path / "1.part", 1 << 20)
        assert time.monotonic() - t0 < 3
        assert not (tmp_path / "1.part").exists()
        http.close()


def test_download_threads_wait_for_the_network_in_parallel_and_store_one_at_a_time(catalog, tmp_path):
    """The store gate the crawl's workers share: held for the disk and CPU work of a body already received,
    never during the network wait (else 8 workers on a slow network would download one file at a time)."""
    with LocalBooru(catalog, Faults(slow_body_s=1.0)) as booru:
        http = client()
        gate = threading.Lock()
        url, md5 = file_url(booru, catalog, 1)

        def download(name):
            return threading.Thread(
                target=lambda: http.download_file(url, md5, tmp_path / name, 1 << 20, gate=gate)
            )

        # another thread is storing its file: this one receives its answer, then waits for its turn
        gate.acquire()
        first = download("1.part")
        first.start()
        time.sleep(1.6)  # the whole answer is in
        assert first.is_alive() and not (tmp_path / "1.part").exists()
        gate.release()
        first.join(5)
        assert not first.is_alive() and hashlib.md5((tmp_path / "1.part").read_bytes()).hexdigest() == md5

        # a download waiting for its body does not hold the gate
        second = download("2.part")
        second.start()
        time.sleep(0.3)
        assert gate.acquire(blocking=False)
        gate.release()
        second.join(5)
        assert hashlib.md5((tmp_path / "2.part").read_bytes()).hexdigest() == md5
        http.close()


def test_chunked_bodies_are_capped_as_they_arrive(catalog, tmp_path):
    with LocalBooru(catalog, Faults(wire=frozenset({"chunked"}))) as booru:
        summary = crawl(["all"], tmp_path / "out", options(booru.url, max_bytes=1000))
    assert len(summary.failures) == 24 and {f.kind for f in summary.failures} == {"too large"}
    assert all(f.attempts == 1 for f in summary.failures)


def test_429_without_retry_after_holds_back_every_thread(catalog, tmp_path):
    with LocalBooru(catalog, Faults(throttle=2, retry_after="")) as booru:
        http = client(retry=RetryPolicy(attempts=4, base_s=0.4, max_delay_s=1, jitter=0))
        url, md5 = file_url(booru, catalog, 1)
        other_url, other_md5 = file_url(booru, catalog, 2)
        other = threading.Thread(
            target=lambda: (
                time.sleep(0.1),
                http.download_file(other_url, other_md5, tmp_path / "2.part", 1 << 20),
            )
        )
        other.start()
        http.download_file(url, md5, tmp_path / "1.part", 1 << 20)
        other.join()
        time.sleep(0.2)  # the server logs an answer once it is sent
        log = booru.requests("file")
        http.close()
    (t0, t1), rest = [r.t for r in log if r.status == 429], [r.t for r in log if r.status == 200]
    # after the first 429 nobody sent for the back-off (0.4 s): the other thread, ready at 0.1 s, waited too
    assert len(rest) == 2 and all(t - t0 >= 0.38 for t in [t1, *rest])
    assert max(rest) - t1 >= 0.78  # the second 429 doubled the back-off, whichever thread received it
    assert (tmp_path / "1.part").is_file() and (tmp_path / "2.part").is_file()


def test_http_proxy_from_the_environment(catalog, tmp_path, monkeypatch):
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with LocalBooru(catalog) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        summary = crawl(["all"], tmp_path / "out", options("http://booru.invalid"))
        asked = [r.path for r in proxy.requests()]
    assert summary.ok, summary.format()
    check_folder(tmp_path / "out" / "all", set(range(1, 25)), catalog)
    assert len(asked) == 25 and all(p.startswith("http://booru.invalid/") for p in asked)  # absolute form


@pytest.mark.parametrize("no_proxy", ["127.0.0.0/8", "localhost,127.0.0.1", "*"])
def test_no_proxy_with_names_and_cidr_ranges(catalog, tmp_path, monkeypatch, no_proxy):
    for name in ("all_proxy", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with LocalBooru(catalog) as booru, LocalBooru(catalog) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.setenv("no_proxy", no_proxy)
        summary = crawl(["all"], tmp_path / "out", options(booru.url))
        assert summary.ok and summary.count("new") == 24
        assert proxy.requests() == [] and len(booru.requests()) == 25  # straight to the server
    # outside the range: through the proxy
    assert environ_proxy("http", "10.1.2.3") == (None if no_proxy == "*" else proxy.url)
    monkeypatch.setenv("no_proxy", "10.0.0.0/8")
    assert environ_proxy("http", "10.1.2.3") is None and environ_proxy("http", "11.1.2.3") == proxy.url


def test_fault_spec_errors_are_one_line():
    assert parse_faults("wire=continue+bare-lf,malformed=2,redirects=1,slow-body=0.5") == Faults(
        wire=frozenset({"continue", "bare-lf"}), malformed=2, redirects=1, slow_body_s=0.5
    )
    with pytest.raises(ValueError, match="unknown quirk"):
        parse_faults("wire=teapot")


def test_every_connection_is_opened_by_urllib3(catalog, tmp_path, monkeypatch):
    """No module of crawler/ speaks to sockets itself: every connect of a crawl comes from urllib3."""
    import socket
    import traceback
    from pathlib import Path

    callers = []
    connect = socket.socket.connect

    def spy(self, address):
        frames = [f.filename for f in traceback.extract_stack()[:-1]]
        callers.append(next(f for f in reversed(frames) if not f.endswith("socket.py")))
        return connect(self, address)

    with LocalBooru(catalog) as booru:
        monkeypatch.setattr(socket.socket, "connect", spy)
        summary = crawl(["all"], tmp_path / "out", options(booru.url, site="danbooru"))
        monkeypatch.undo()
    assert summary.ok and callers and all("urllib3" in c for c in callers), callers
    crawler = Path(__file__).resolve().parent.parent / "crawler"
    for source in crawler.rglob("*.py"):
        text = source.read_text()
        assert "create_connection" not in text and "socket.socket(" not in text, source
        assert "import socket" not in text or source.name == "local_server.py", source  # the server accepts


def test_a_refused_search_says_why_in_one_line(catalog, tmp_path, capsys):
    """Danbooru answers a refused search with a status and a JSON message: the message reaches the user."""
    with LocalBooru(catalog) as booru:
        http = client()
        with pytest.raises(GaveUp, match=r"HTTP 410: You cannot go beyond page 1000") as err:
            http.get_bytes(f"{booru.url}/posts.json?tags=all&page=1001")
        assert err.value.attempts == 1  # a 4xx is final
        http.close()
        code = main(["crawl", "all", "--out", str(tmp_path / "out"), "--site", "danbooru", "--base-url",
                     f"{booru.url}/nowhere", "--rate", "0", "--no-progress"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 1 and "listing failed: HTTP 404" in out.out and "Traceback" not in out.out + out.err
