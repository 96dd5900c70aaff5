"""The crawler over HTTPS, as against the live sites: TLS with SNI and certificate checks (urllib3), against the
local booru serving HTTPS with a self-signed certificate trusted through REQUESTS_CA_BUNDLE or SSL_CERT_FILE."""

from __future__ import annotations

import hashlib
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from crawler.crawl import CrawlOptions, crawl
from crawler.download import RetryPolicy
from crawler.local_server import Catalog, LocalBooru
from tests.test_crawler_e2e import make_gallery

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def options(url: str, fmt: str = "xml") -> CrawlOptions:
    return CrawlOptions(base_url=url, rate_per_s=0, workers=3, progress=False, fmt=fmt,
                        retry=RetryPolicy(attempts=2, base_s=0.01), page_retry_delay_s=0.01)  # fmt: skip


@pytest.mark.parametrize(
    "fmt, variable", [("xml", "REQUESTS_CA_BUNDLE"), ("json", "REQUESTS_CA_BUNDLE"), ("xml", "SSL_CERT_FILE")]
)
def test_crawl_over_https_with_a_trusted_certificate(tmp_path, certificate, monkeypatch, fmt, variable):
    gallery = make_gallery(tmp_path / "gallery", {i: ["all"] for i in range(1, 13)})
    catalog = Catalog.from_folder(gallery)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    # what a user behind a TLS-inspecting proxy sets: requests' variable, or OpenSSL's for the system store
    monkeypatch.setenv(variable, str(certificate[0]))
    with LocalBooru(catalog, tls=server_context(*certificate), host="127.0.0.1") as booru:
        url = booru.url.replace("127.0.0.1", "localhost")  # the name the certificate carries (SNI + check)
        assert url.startswith("https://")
        summary = crawl(["all"], tmp_path / "out", options(url, fmt))
    assert summary.count("new") == 12 and not summary.failures, summary.format()
    stored = {
        p.stem: hashlib.md5(p.read_bytes()).hexdigest() for p in (tmp_path / "out" / "all").glob("*.png")
    }
    assert stored == {str(p.id): p.md5 for p in catalog.posts}


def test_an_untrusted_certificate_is_refused_not_ignored(tmp_path, certificate, monkeypatch):
    gallery = make_gallery(tmp_path / "gallery", {i: ["all"] for i in range(1, 4)})
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    with LocalBooru(Catalog.from_folder(gallery), tls=server_context(*certificate)) as booru:
        url = booru.url.replace("127.0.0.1", "localhost")
        summary = crawl(["all"], tmp_path / "out", options(url))
    text = summary.format()
    assert "listing failed" in text and "CERTIFICATE_VERIFY_FAILED" in text.upper().replace(" ", "_"), text
    assert summary.count("new") == 0 and not list((tmp_path / "out").rglob("*.png"))
