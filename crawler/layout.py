"""Where a crawl's files go: folder names from queries, sidecars, and placing a file stored elsewhere.

Folder names (`folder_for_query` / `query_for_folder`) are a reversible, file-system-safe encoding of
the query. Every character outside a small safe set is percent-encoded as UTF-8 bytes:

- kept as is: lowercase ASCII letters, digits and `_ - . ( ) ! , ' @`; a space (the tag separator)
  becomes `+`, so a literal `+` is `%2B`;
- everything else is encoded: `/`, `\\`, `:`, `*`, `?`, `"`, `<`, `>`, `|`, `%`, `~`, NUL and other
  control characters, non-ASCII (as UTF-8; undecodable command-line bytes survive through
  surrogateescape) and uppercase letters (so two names never differ only by case, which would collide
  on macOS and Windows);
- a leading or trailing `.` is encoded (no hidden folders, never `.` or `..`, nothing Windows trims),
  and so is the first letter of a Windows device name (`con`, `nul`, `com1`, ...);
- a name longer than 120 characters is cut (never inside an escape) and ends in `~` + 16 hex digits of
  the query's SHA-256; `~` appears in no other name. Such a name is recovered from the `.query` file
  that every folder holds (the exact query, UTF-8).

The result is a single path component of ASCII characters: no query can name a path outside DIR.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from pathlib import Path

from .sites import Post

MAX_FOLDER_CHARS = 120
QUERY_FILE = ".query"
_SAFE = frozenset(string.ascii_lowercase + string.digits + "_-.()!,'@")
_HEX = frozenset("0123456789ABCDEF")
_WINDOWS_DEVICES = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$"]
    + [f"com{i}" for i in range(10)]
    + [f"lpt{i}" for i in range(10)]
)


def normalize_query(query: str) -> str:
    """Whitespace collapsed: "1girl  solo " and "1girl solo" are the same search on Safebooru."""
    return " ".join(query.split())


def _escape(data: bytes) -> str:
    return "".join(f"%{b:02X}" for b in data)


def folder_for_query(query: str) -> str:
    """The folder name for `query` (see the module docstring); exact inverse: `query_for_folder`."""
    if query == "":
        raise ValueError("an empty query has no folder: give at least one tag")
    out = []
    for ch in query:
        if ch in _SAFE:
            out.append(ch)
        elif ch == " ":
            out.append("+")
        else:
            out.append(_escape(ch.encode("utf-8", "surrogateescape")))
    if out[0] == ".":
        out[0] = "%2E"
    if out[-1] == ".":
        out[-1] = "%2E"
    name = "".join(out)
    if name.split(".")[0].lower() in _WINDOWS_DEVICES:
        name = _escape(name[0].encode()) + name[1:]
    if len(name) > MAX_FOLDER_CHARS:
        digest = hashlib.sha256(query.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        keep = MAX_FOLDER_CHARS - 17
        cut = name[:keep]
        tail = cut[-2:]
        if "%" in tail:  # never end inside an escape
            cut = cut[: keep - 2 + tail.index("%")]
        name = f"{cut}~{digest}"
    return name


def query_for_folder(name: str) -> str:
    """The query a folder name was made from. Raises ValueError for a shortened name (read its
    `.query` file: `read_folder_query`) or a name this module never makes."""
    if "~" in name:
        raise ValueError(f"{name!r} was shortened: the exact query is in its {QUERY_FILE} file")
    data = bytearray()
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "%":
            pair = name[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise ValueError(f"{name!r} is not a folder name made by folder_for_query")
            data.append(int(pair, 16))
            i += 3
            continue
        if ch == "+":
            data.append(0x20)
        elif ch in _SAFE:
            data.append(ord(ch))
        else:
            raise ValueError(f"{name!r} is not a folder name made by folder_for_query")
        i += 1
    return data.decode("utf-8", "surrogateescape")


def read_folder_query(folder: Path) -> str:
    """The exact query of a crawl folder: its `.query` file, else decoded from its name."""
    marker = folder / QUERY_FILE
    if marker.is_file():
        return marker.read_bytes().decode("utf-8", "surrogateescape")
    return query_for_folder(folder.name)


def ensure_query_folder(out_dir: Path, query: str) -> Path:
    """Create `out_dir/<folder>` with its `.query` file; refuse if the folder belongs to another query."""
    folder = out_dir / folder_for_query(query)
    if folder.resolve().parent != out_dir.resolve():  # belt and braces: the name is one component
        raise ValueError(f"folder for {query!r} would leave {out_dir}")
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / QUERY_FILE
    encoded = query.encode("utf-8", "surrogateescape")
    if marker.exists():
        if marker.read_bytes() != encoded:
            raise ValueError(f"{folder} already holds another query: {marker.read_bytes()!r}")
    else:
        _atomic_write(marker, encoded)
    return folder


# --------------------------------------------------------------------------------------------------
# Sidecars and shared files


def sidecar_dict(post: Post, query: str, file: str) -> dict:
    """The `<id>.json` sidecar: DESIGN.md's fields plus `file`, the image's path relative to the
    sidecar's folder (`123.jpg`, or `../other-query/123.jpg` when only the other copy exists)."""
    return {
        "id": post.id,
        "md5": post.md5,
        "tags": list(post.tags),
        "rating": post.rating,
        "width": post.width,
        "height": post.height,
        "file_url": post.file_url,
        "source": post.source,
        "score": post.score,
        "query": query,
        "file": file,
    }


def write_sidecar(folder: Path, post: Post, query: str, file: str) -> Path:
    """Write `<id>.json` atomically (a temporary file, then a rename): a kill leaves the old sidecar or
    the new one, never a half-written one under the final name."""
    path = folder / f"{post.id}.json"
    data = json.dumps(sidecar_dict(post, query, file), ensure_ascii=False)  # no indent: C encoder
    _atomic_write(path, data.encode("utf-8", "surrogateescape"))
    return path


def place_copy(stored: Path, link: Path) -> str:
    """Make `link` show the already stored file `stored` without a second copy.

    A hard link when the file system allows it, else a relative symlink, else nothing. Returns
    "hardlink", "symlink" or "none" (then only the sidecar's `file` field points at `stored`)."""
    tmp = link.with_name(link.name + ".link-tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(stored, tmp)
        os.replace(tmp, link)
        return "hardlink"
    except OSError:
        tmp.unlink(missing_ok=True)
    try:
        os.symlink(os.path.relpath(stored, link.parent), tmp)
        os.replace(tmp, link)
        return "symlink"
    except (OSError, NotImplementedError):
        tmp.unlink(missing_ok=True)
    return "none"


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def relative_file(target: Path, folder: Path) -> str:
    """`target` relative to `folder`, with forward slashes (what the sidecar's `file` holds)."""
    return Path(os.path.relpath(target, folder)).as_posix()


def _atomic_write(path: Path, data: bytes) -> None:
    # no fsync: a killed process loses nothing written to the page cache, and sidecars are rewritten
    # from the archive on the next run if a power cut takes one
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(tmp, path)
