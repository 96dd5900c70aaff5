"""A local booru for tests, demos and benchmarks: `crawler serve-local FOLDER --port P [--faults ...]`.

Serves a folder of images through two APIs at once, each as the real sites answer:
- Gelbooru 0.2 (`index.php?page=dapi&s=post&q=index`): JSON and XML, `pid` pages, `limit` up to 100,
  `count`, the deep-paging refusal past an offset cap, an empty body for an empty JSON result;
- Danbooru (`posts.json`): `limit` up to 200, `page=N` (up to 1000) or `page=b<ID>`, its field names,
  banned posts without `file_url`/`md5`, JSON error objects.
Both search tags (`-tag`, `id:<N`, `rating:`); files are under `/images/<dir>/<name>` (named by SHA-1,
like the real site: the name is not the md5). A request in absolute form (a client using this server as
its HTTP proxy) is answered too.

Tags come from a sidecar `<name>.json` (`{"tags": [...] or "a b", "id": 12, "rating": ..., "source": ...,
"banned": true}`) or else from the sub-folder names plus the words of the file name.

Faults are deterministic per server instance (`Faults`, or `--faults` on the command line): latency, 429
with Retry-After, 5xx bursts, truncated bodies, wrong md5s, transient empty pages, a Cloudflare challenge,
an HTML page for an image, redirects, trickled bodies, answers that are not HTTP, and `wire` quirks that
every maintained client reads (100 Continue, a doubled Content-Length, bare-LF lines, ...).

Keep-alive with TCP_NODELAY and every answer in one write: otherwise Nagle's algorithm and delayed ACKs
stall each answer on loopback and any client looks slow.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit
from xml.sax.saxutils import quoteattr

from PIL import Image

SERVED_EXTENSIONS = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "webm": "video/webm",
    "mp4": "video/mp4",
}
DEEP_PAGE_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<response success="false" reason="Search error: API limited due to abuse."/>\n'
)
CLOUDFLARE_PAGE = (
    b'<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>'
    b'<meta http-equiv="refresh" content="390"></head><body><div class="main-wrapper">'
    b"<noscript>Enable JavaScript and cookies to continue</noscript></div>"
    b'<script>(function(){window._cf_chl_opt={cvId: "3",cZone: "safebooru.org",cType: "managed"};'
    b"var a=document.createElement('script');a.src='/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1';"
    b"document.getElementsByTagName('head')[0].appendChild(a);}());</script></body></html>"
)
HTML_ERROR_PAGE = (
    b"<!DOCTYPE html><html><head><title>Service temporarily unavailable</title></head>"
    b"<body><h1>Oops</h1><p>The image server is busy. Please try again later.</p></body></html>"
)


@dataclass(frozen=True)
class CatalogPost:
    id: int
    path: Path
    md5: str
    tags: tuple[str, ...]
    rating: str
    width: int
    height: int
    directory: int
    image: str
    source: str
    score: int | None
    size: int
    banned: bool = False  # Danbooru: listed without its file


@dataclass
class Catalog:
    """The posts a local server offers, newest (highest id) first."""

    posts: list[CatalogPost]
    by_image: dict[str, CatalogPost] = field(init=False)
    by_id: dict[int, CatalogPost] = field(init=False)

    def __post_init__(self) -> None:
        self.posts = sorted(self.posts, key=lambda p: -p.id)
        ids = [p.id for p in self.posts]
        if len(set(ids)) != len(ids):
            raise ValueError("two files claim the same post id")
        self.by_image = {f"{p.directory}/{p.image}": p for p in self.posts}
        self.by_id = {p.id: p for p in self.posts}

    @classmethod
    def from_folder(cls, folder: Path) -> Catalog:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"no such folder: {folder}")
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.is_file()
            and p.suffix[1:].lower() in SERVED_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        entries = []
        used: set[int] = set()
        for path in files:
            meta = {}
            for sidecar in (path.with_suffix(".json"), path.with_name(path.name + ".json")):
                if sidecar.is_file():
                    meta = json.loads(sidecar.read_text(encoding="utf-8"))
                    break
            post_id = meta.get("id")
            if post_id is None and path.stem.isdigit():
                post_id = int(path.stem)
            if post_id is not None:
                used.add(int(post_id))
            entries.append((path, meta, post_id))
        next_id = 1
        posts = []
        for path, meta, post_id in entries:
            if post_id is None:
                while next_id in used:
                    next_id += 1
                post_id = next_id
                used.add(post_id)
            posts.append(_catalog_post(folder, path, meta, int(post_id)))
        return cls(posts)


def _catalog_post(root: Path, path: Path, meta: dict, post_id: int) -> CatalogPost:
    data = path.read_bytes()
    ext = path.suffix[1:].lower()
    tags = meta.get("tags")
    if tags is None:
        words = [] if path.stem.isdigit() else path.stem.replace(",", " ").split()
        tags = [*path.relative_to(root).parent.parts, *words]
    elif isinstance(tags, str):
        tags = tags.split()
    width = height = 0
    if SERVED_EXTENSIONS[ext].startswith("image/"):
        try:
            with Image.open(path) as img:
                width, height = img.size
        except Exception:  # a broken file is served as it is: the client must cope
            pass
    return CatalogPost(
        id=post_id,
        path=path,
        md5=hashlib.md5(data).hexdigest(),
        tags=tuple(str(t).lower() for t in tags),
        rating=str(meta.get("rating", "general")),
        width=width,
        height=height,
        directory=post_id // 1000,
        image=f"{hashlib.sha1(data).hexdigest()}.{ext}",
        source=str(meta.get("source", "")),
        score=meta.get("score"),
        size=len(data),
        banned=bool(meta.get("banned", False)),
    )


@dataclass
class Faults:
    """Deterministic misbehaviour. File-request faults are consumed in order by the server's file
    requests: the first `throttle` answer 429, the next `errors` 5xx, the next `truncate` a cut body."""

    latency_s: float = 0.0  # added to every answer
    throttle: int = 0
    retry_after: str = "1"  # Retry-After of the 429s: seconds, "date" (an HTTP date 1 s ahead), "" none
    errors: int = 0  # 500, 502, 503 in turn
    truncate: int = 0  # half the body (Content-Length says all), then the connection closes
    api_errors: int = 0  # the first N API requests answer 503
    empty_pages: int = 0  # the first N API answers that have posts come back empty instead
    wrong_md5: frozenset[int] = frozenset()  # the API announces another md5 for these posts
    html_image: frozenset[int] = frozenset()  # these posts' files answer 200 with an HTML page
    cloudflare_after: int | None = None  # every request after the first N gets a Cloudflare challenge
    malformed: int = 0  # after the above, N file answers that are not HTTP at all
    redirects: int = 0  # every file request is redirected this many times first
    slow_body_s: float = 0.0  # every file body trickles over this many seconds
    wire: frozenset[str] = frozenset()  # quirks of every answer, any of WIRE_QUIRKS


WIRE_QUIRKS = {
    "continue": "a 100 Continue before each answer",
    "double-length": "Content-Length sent twice, the same value",
    "bare-lf": "status and header lines end in LF, not CRLF",
    "odd-length": "Content-Length in non-ASCII digits, the connection closed after the body",
    "chunked": "chunked bodies, no Content-Length",
    "hang-up": "the connection closed after each answer, without saying so",
    "gzip": "API answers gzip-compressed when the client accepts it",
}


def parse_faults(spec: str) -> Faults:
    """`latency=0.03,throttle=2,retry-after=date,errors=3,truncate=1,api-errors=1,empty-pages=2,
    wrong-md5=5+7,html-image=3,cloudflare-after=10,malformed=2,redirects=2,slow-body=3,
    wire=continue+bare-lf` -> Faults."""
    kw: dict = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        try:
            if key in ("latency", "latency_s"):
                kw["latency_s"] = float(value)
            elif key in (
                "throttle",
                "errors",
                "truncate",
                "api_errors",
                "empty_pages",
                "malformed",
                "redirects",
            ):
                kw[key] = int(value)
            elif key in ("slow_body", "slow_body_s"):
                kw["slow_body_s"] = float(value)
            elif key == "wire":
                quirks = frozenset(v for v in value.split("+") if v)
                if quirks - WIRE_QUIRKS.keys():
                    raise ValueError(
                        f"unknown quirk(s) {sorted(quirks - WIRE_QUIRKS.keys())}; known: {sorted(WIRE_QUIRKS)}"
                    )
                kw[key] = quirks
            elif key == "retry_after":
                kw[key] = value
            elif key in ("wrong_md5", "html_image"):
                kw[key] = frozenset(int(v) for v in value.split("+") if v)
            elif key == "cloudflare_after":
                kw[key] = int(value or 0)
            elif key == "cloudflare":
                kw["cloudflare_after"] = 0
            else:
                raise ValueError(f"unknown fault {key!r}")
        except ValueError as err:
            raise ValueError(f"bad fault {item!r}: {err}") from None
    return Faults(**kw)


@dataclass(frozen=True)
class LoggedRequest:
    t: float  # time.time() when the request arrived
    path: str
    status: int
    kind: str  # api | file | other


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    booru: LocalBooru


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LocalBooru/1.0"
    server: _Server

    disable_nagle_algorithm = True  # TCP_NODELAY

    def setup(self) -> None:
        super().setup()
        self.server.booru._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.booru._track(self.connection, False)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.booru._handle(self)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        pass


class LocalBooru:
    """The server. `with LocalBooru(catalog, faults) as booru: booru.url ...` runs it in a thread."""

    def __init__(
        self,
        catalog: Catalog,
        faults: Faults | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        deep_cap: int = 200_000,
        request_log: Path | None = None,
        tls=None,
    ):
        """`tls`: an `ssl.SSLContext` with the server's certificate loaded: the server speaks HTTPS (tests of the
        crawler's TLS path, with a self-signed certificate the client is told to trust)."""
        self.catalog = catalog
        self.scheme = "https" if tls is not None else "http"
        self.faults = faults or Faults()
        self.deep_cap = deep_cap
        self.log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._file_requests = 0
        self._api_requests = 0
        self._api_nonempty = 0
        self._all_requests = 0
        self._connections: set[socket.socket] = set()
        self._log_file = open(request_log, "a", buffering=1) if request_log else None  # noqa: SIM115
        self._search_cache: dict[tuple, list[CatalogPost]] = {}
        self._httpd = _Server((host, port), _Handler)
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self._httpd.booru = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    def start(self) -> LocalBooru:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="local-booru", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def close(self) -> None:
        if self._thread:
            self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread:
            self._thread.join(timeout=5)
        if self._log_file:
            self._log_file.close()

    def __enter__(self) -> LocalBooru:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def requests(self, kind: str | None = None) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.log if kind is None or r.kind == kind]

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    # answers -----------------------------------------------------------------------------------------

    def _handle(self, h: _Handler) -> None:
        arrived = time.time()
        if self.faults.latency_s:
            time.sleep(self.faults.latency_s)
        path = h.path
        if path.startswith(("http://", "https://")):  # absolute form: a client using this as its proxy
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        # like the real web server, `//images/...` is `/images/...` (the XML answers carry such URLs,
        # and a raw `//x` would read as a host name)
        raw_path, sep, raw_query = path.partition("?")
        parts = urlsplit(re.sub(r"/{2,}", "/", raw_path) + sep + raw_query)
        kind = (
            "api"
            if parts.path in ("/index.php", "/posts.json")
            else "file"
            if parts.path.startswith("/images/")
            else "other"
        )
        with self._lock:
            self._all_requests += 1
            challenged = (
                self.faults.cloudflare_after is not None and self._all_requests > self.faults.cloudflare_after
            )
        if challenged:
            status = self._send(
                h,
                403,
                CLOUDFLARE_PAGE,
                "text/html; charset=UTF-8",
                {"cf-mitigated": "challenge", "Server": "cloudflare"},
            )
        elif parts.path == "/posts.json":
            status = self._danbooru(h, parts.query)
        elif kind == "api":
            status = self._api(h, parts.query)
        elif kind == "file":
            status = self._file(h, parts.path[len("/images/") :], parts.query)
        else:
            status = self._send(h, 404, b"<html><body>404 Not Found</body></html>", "text/html")
        entry = LoggedRequest(arrived, h.path, status, kind)
        with self._lock:
            self.log.append(entry)
            if self._log_file:
                self._log_file.write(f"{arrived:.6f} {status} {kind} {h.path}\n")

    def _send(
        self,
        h: _Handler,
        status: int,
        body: bytes,
        ctype: str,
        headers: dict | None = None,
        cut: bool = False,
    ) -> int:
        reason = {200: "OK", 302: "Found", 403: "Forbidden", 404: "Not Found", 410: "Gone", 422: "Unprocessable Entity",
                  429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
                  503: "Service Unavailable"}.get(status, "Error")  # fmt: skip
        wire = self.faults.wire
        headers = dict(headers or {})
        if "gzip" in wire and ctype.startswith(("text/xml", "application/json")) and body:
            if "gzip" in h.headers.get("Accept-Encoding", ""):
                body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Server: {headers.pop('Server', 'LocalBooru/1.0')}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            f"Content-Type: {ctype}",
        ]
        close = cut or "hang-up" in wire
        if "chunked" in wire and not cut:
            lines.append("Transfer-Encoding: chunked")
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in _pieces(body, 16384)) + b"0\r\n\r\n"
        else:
            length = str(len(body))
            if "odd-length" in wire:  # ARABIC-INDIC digits: only a body read to the close is whole
                length = "".join(chr(0x660 + int(d)) for d in length)
                lines.append("Connection: close")
                close = True
            lines += [f"Content-Length: {length}"] * (2 if "double-length" in wire else 1)
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if cut:
            lines.append("Connection: close")
        eol = "\n" if "bare-lf" in wire else "\r\n"
        head = (eol.join(lines) + eol + eol).encode("utf-8")
        if "continue" in wire:
            head = b"HTTP/1.1 100 Continue\r\n\r\n" + head
        if cut:
            body = body[: len(body) // 2]
        if self.faults.slow_body_s and status == 200 and ctype.startswith("image/"):
            h.wfile.write(head)
            for piece in _pieces(body, max(1, len(body) // 20)):
                time.sleep(self.faults.slow_body_s / 20)
                h.wfile.write(piece)
        else:
            h.wfile.write(head + body)  # one write: with TCP_NODELAY the answer leaves at once
        h.close_connection = close
        return status

    def _api(self, h: _Handler, query: str) -> int:
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        if (params.get("page"), params.get("s"), params.get("q")) != ("dapi", "post", "index"):
            return self._send(h, 404, b"<html><body>404 Not Found</body></html>", "text/html")
        with self._lock:
            self._api_requests += 1
            api_error = self._api_requests <= self.faults.api_errors
        if api_error:
            return self._send(h, 503, b"<html><body>503 Service Unavailable</body></html>", "text/html")
        limit = _to_int(params.get("limit"), 100)
        limit = 100 if limit <= 0 else min(limit, 100)
        pid = max(0, _to_int(params.get("pid"), 0))
        as_json = params.get("json") == "1"
        offset = pid * limit
        if offset >= self.deep_cap:
            return self._send(h, 200, DEEP_PAGE_ERROR, "text/xml; charset=UTF-8")
        matches = self.search(params.get("tags", ""))
        page = matches[offset : offset + limit]
        if page:
            with self._lock:
                self._api_nonempty += 1
                empty = self._api_nonempty <= self.faults.empty_pages
            if empty:
                page = []
        host = h.headers.get("Host")
        base = f"{self.scheme}://{host}" if host else self.url
        if as_json:
            body = self._json(page, base) if page else b""
            return self._send(h, 200, body, "application/json; charset=UTF-8")
        return self._send(h, 200, self._xml(page, base, len(matches), offset), "text/xml; charset=UTF-8")

    def _danbooru(self, h: _Handler, query: str) -> int:
        """`posts.json?tags=...&limit=...&page=N|b<ID>|a<ID>`, as Danbooru answers it."""
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        with self._lock:
            self._api_requests += 1
            api_error = self._api_requests <= self.faults.api_errors
        if api_error:
            return self._send(h, 503, b"<html><body>503 Service Unavailable</body></html>", "text/html")
        limit = min(max(_to_int(params.get("limit"), 20), 1), 200)
        page = params.get("page", "1") or "1"
        tags = params.get("tags", "")
        if page[:1] in ("a", "b") and page[1:].isdigit():
            tags += f" id:{'<' if page[0] == 'b' else '>'}{page[1:]}"
            offset = 0
        elif page.isdigit() and 1 <= int(page) <= 1000:
            offset = (int(page) - 1) * limit
        else:
            error = {"success": False, "error": "PaginationExtension::PaginationError",
                     "message": "You cannot go beyond page 1000. Try narrowing your search terms."}  # fmt: skip
            return self._send(h, 410, json.dumps(error).encode(), "application/json; charset=utf-8")
        matches = self.search(tags)
        if page[:1] == "a":
            matches = matches[::-1]
        posts = matches[offset : offset + limit]
        if posts:
            with self._lock:
                self._api_nonempty += 1
                if self._api_nonempty <= self.faults.empty_pages:
                    posts = []
        host = h.headers.get("Host")
        base = f"{self.scheme}://{host}" if host else self.url
        records = []
        for p in posts:
            record = {
                "id": p.id, "created_at": "2025-09-12T10:31:21.000-04:00", "uploader_id": 1, "score": p.score or 0,
                "source": p.source, "md5": self._announced_md5(p), "rating": (p.rating[:1] or "g"),
                "image_width": p.width, "image_height": p.height, "tag_string": " ".join(p.tags),
                "file_ext": p.image.rsplit(".", 1)[-1], "file_size": p.size, "parent_id": None,
                "has_children": False, "is_deleted": False, "is_banned": p.banned,
                "tag_count": len(p.tags), "tag_string_general": " ".join(p.tags),
                "file_url": f"{base}/images/{p.directory}/{p.image}",
                "large_file_url": f"{base}/images/{p.directory}/{p.image}",
                "preview_file_url": f"{base}/thumbnails/{p.directory}/{p.image}",
            }  # fmt: skip
            if p.banned:  # what a visitor sees of a banned post
                for name in ("md5", "file_url", "large_file_url", "preview_file_url"):
                    del record[name]
            records.append(record)
        return self._send(h, 200, json.dumps(records).encode(), "application/json; charset=utf-8")

    def _announced_md5(self, post: CatalogPost) -> str:
        if post.id in self.faults.wrong_md5:
            return hashlib.md5(b"not the file" + post.md5.encode()).hexdigest()
        return post.md5

    def _json(self, page: list[CatalogPost], base: str) -> bytes:
        records = [
            {
                "preview_url": f"{base}/thumbnails/{p.directory}/thumbnail_{p.image.rsplit('.', 1)[0]}.jpg",
                "sample_url": f"{base}/images/{p.directory}/{p.image}",
                "file_url": f"{base}/images/{p.directory}/{p.image}",
                "directory": p.directory,
                "hash": self._announced_md5(p),
                "width": p.width,
                "height": p.height,
                "id": p.id,
                "image": p.image,
                "change": 1757694622,
                "owner": "local",
                "parent_id": 0,
                "rating": p.rating,
                "sample": False,
                "sample_height": 0,
                "sample_width": 0,
                "score": p.score,
                "tags": " ".join(p.tags),
                "source": p.source,
                "status": "active",
                "has_notes": False,
                "comment_count": 0,
            }
            for p in page
        ]
        return json.dumps(records, ensure_ascii=False).replace("/", "\\/").encode("utf-8")  # PHP escapes '/'

    def _xml(self, page: list[CatalogPost], base: str, count: int, offset: int) -> bytes:
        rows = [f'<?xml version="1.0" encoding="UTF-8"?><posts count="{count}" offset="{offset}">']
        for p in page:
            # the older form: a doubled slash and an ?id suffix the client must clean
            url = f"{base}//images/{p.directory}/{quote(p.image)}?{p.id}"
            attrs = {
                "height": p.height,
                "score": "" if p.score is None else p.score,
                "file_url": url,
                "parent_id": "",
                "sample_url": url,
                "sample_width": p.width,
                "sample_height": p.height,
                "preview_url": f"{base}/thumbnails/{p.directory}/thumbnail_{p.image}",
                "rating": (p.rating[:1] or "s"),
                "tags": f" {' '.join(p.tags)} ",
                "id": p.id,
                "width": p.width,
                "change": 1505921482,
                "md5": self._announced_md5(p),
                "creator_id": 1,
                "has_children": "false",
                "created_at": "Wed Sep 20 10:31:21 -0500 2017",
                "status": "active",
                "source": p.source,
                "has_notes": "false",
                "has_comments": "false",
                "preview_width": 150,
                "preview_height": 150,
            }
            rows.append("<post " + " ".join(f"{k}={quoteattr(str(v))}" for k, v in attrs.items()) + "/>")
        rows.append("</posts>")
        return "\n".join(rows).encode("utf-8")

    def _file(self, h: _Handler, key: str, query: str = "") -> int:
        post = self.catalog.by_image.get(key)
        if post is None:
            return self._send(h, 404, b"<html><body>404 Not Found</body></html>", "text/html")
        if post.id in self.faults.html_image:
            return self._send(h, 200, HTML_ERROR_PAGE, "text/html; charset=UTF-8")
        f = self.faults
        with self._lock:
            n = self._file_requests
            self._file_requests += 1
        if n < f.throttle:
            retry_after = f.retry_after
            if retry_after == "date":
                retry_after = email.utils.formatdate(time.time() + 1, usegmt=True)
            headers = {"Retry-After": retry_after} if retry_after else {}  # "": a 429 that says no more
            return self._send(h, 429, b"<html><body>Too many requests</body></html>", "text/html", headers)
        n -= f.throttle
        if n < f.errors:
            status = (500, 502, 503)[n % 3]
            return self._send(h, status, b"<html><body>server error</body></html>", "text/html")
        n -= f.errors
        hop = _to_int(parse_qs(query).get("hop", [""])[-1], 0)
        if hop < f.redirects:
            location = f"/images/{key}?hop={hop + 1}"
            return self._send(h, 302, b"", "text/html", {"Location": location})
        if f.truncate <= n < f.truncate + f.malformed:
            h.wfile.write(b"HTPT/1.1 2OO Fine\r\nContent-Lenth: many\r\n\r\n")
            h.close_connection = True
            return 0
        data = post.path.read_bytes()
        ctype = SERVED_EXTENSIONS[post.image.rsplit(".", 1)[-1]]
        return self._send(h, 200, data, ctype, cut=n < f.truncate)

    # search ------------------------------------------------------------------------------------------

    def search(self, tags: str) -> list[CatalogPost]:
        """Posts matching a tag query, newest first: all tags, none of the `-tags`, `id:<N`, `id:>N`,
        `id:N`, `rating:x` (also negated)."""
        include, exclude, bounds, ratings, not_ratings = set(), set(), [], set(), set()
        for token in tags.lower().split():
            negated = token.startswith("-") and len(token) > 1
            term = token[1:] if negated else token
            if term.startswith("id:") and term[3:4] in "<>" and term[4:].isdigit():
                bounds.append((term[3], int(term[4:]), negated))
            elif term.startswith("id:") and term[3:].isdigit():
                bounds.append(("=", int(term[3:]), negated))
            elif term.startswith("rating:"):
                (not_ratings if negated else ratings).add(term[7:])
            elif term in ("all", "*") and not negated:
                continue
            else:
                (exclude if negated else include).add(term)
        key = (frozenset(include), frozenset(exclude), frozenset(ratings), frozenset(not_ratings))
        with self._lock:
            base = self._search_cache.get(key)
        if base is None:
            base = [
                p
                for p in self.catalog.posts
                if include.issubset(p.tags)
                and not exclude.intersection(p.tags)
                and (not ratings or _rating_in(p.rating, ratings))
                and not _rating_in(p.rating, not_ratings)
            ]
            with self._lock:
                self._search_cache[key] = base
        for op, n, negated in bounds:
            if op == "<":
                base = [p for p in base if (p.id < n) != negated]
            elif op == ">":
                base = [p for p in base if (p.id > n) != negated]
            else:
                base = [p for p in base if (p.id == n) != negated]
        return base


def _rating_in(rating: str, wanted: set[str]) -> bool:
    r = rating.lower()
    return any(r == w or r[:1] == w[:1] for w in wanted)


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _to_int(value: str | None, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default


def serve(
    folder: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    faults: Faults | None = None,
    deep_cap: int = 200_000,
    request_log: Path | None = None,
    announce=print,
) -> None:
    """Serve `folder` until interrupted (the `crawler serve-local` command)."""
    catalog = Catalog.from_folder(folder)
    booru = LocalBooru(catalog, faults, host=host, port=port, deep_cap=deep_cap, request_log=request_log)
    announce(f"serving {len(catalog.posts)} posts from {folder} at {booru.url} (Ctrl-C stops)", flush=True)
    try:
        booru.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        booru.close()
