"""`crawler filter SRC --out DEST`: a crawl -> DEST/manifest.jsonl + DEST/rejected.jsonl.

SRC is what `crawler crawl` writes (DIR/<tag-folder>/<id>.<ext> + <id>.json sidecars, a `.query`
file per folder, an archive.sqlite that is ignored) or any folder of plain images. A post found by
two queries is one file: the second folder holds its sidecar and a hard link, a symlink, or nothing.

What happens, in order (every file left out gets one line in rejected.jsonl with a reason code,
see `crawler.filters.REASONS`):

1. measure each distinct file once (md5, size, colour and texture statistics, pHashes; cached in
   DEST/cache.sqlite keyed by path + size + mtime, so a re-run only reads new or changed files);
2. unreadable / truncated files and decompression bombs out; exact duplicates (same md5: links,
   copies, sidecar-only entries) folded into one record that remembers every folder;
3. size and aspect rules, sidecar tag rules, then pixel rules (near-blank, greyscale, low saturation, photo);
4. Illustration2Vec (optional, `--tagger i2v`): tags for files without any, and a veto on tags such
   as monochrome or multiple girls (for tagged files too with `--i2v-recheck`);
5. near duplicates (re-encoded, resized, slightly cropped copies): one pHash group keeps its largest image;
6. per-folder caps for class balance; then a deterministic train/val/test split by a hash of each
   kept md5, so a group of near duplicates sits in one split and adding images never reshuffles.

Kept images are hard-linked into DEST/images/<folder>/<file> (copied across file systems), so DEST
is self-contained: it can be moved, archived or mounted into a container, SRC can be cleaned up or
re-crawled, and the manifest's relative paths keep working. A hard link costs no space.
`--link none` writes paths that point back into SRC instead (relative to DEST).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import hashlib
import json
import math
import os
import shutil
import sqlite3
import sys
import types
import typing
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crawler.filters import (
    IMAGE_EXTENSIONS,
    REASONS,
    AnalysisParams,
    ImageStats,
    PixelRules,
    Rejection,
    TagRules,
    analyze_image,
    check_pixels,
    color_distance,
    group_labels,
    near_duplicate_pairs,
    normalize_tags,
)

LINK_MODES = ("hardlink", "copy", "symlink", "none")
MANIFEST_NAME = "manifest.jsonl"
REJECTED_NAME = "rejected.jsonl"
SUMMARY_NAME = "summary.md"
CACHE_NAME = "cache.sqlite"
IMAGES_DIR = "images"
ROOT_FOLDER = "."


# --------------------------------------------------------------------------------------------------
# Configuration: every default lives here; configs/curate.yaml and --set KEY=VALUE override.


class ConfigError(ValueError):
    """A curate config or override is wrong; the message names the key."""


@dataclass(frozen=True)
class TagsConfig:
    # Keep only posts with at least one of these (empty: no requirement).
    require_any: tuple[str, ...] = ("solo",)
    # Drop posts with any of these: several characters, pages, no colour, line art, text.
    reject: tuple[str, ...] = (
        "multiple_girls",
        "multiple_boys",
        "2girls",
        "3girls",
        "4girls",
        "5girls",
        "6+girls",
        "2boys",
        "3boys",
        "comic",
        "4koma",
        "manga",
        "multiple_views",
        "monochrome",
        "greyscale",
        "sketch",
        "lineart",
        "text_focus",
        "speech_bubble",
        "english_text",
        "translated",
        "photo_(medium)",
    )
    # Files with no tags and no tagger: "keep" (pixel rules only) or "reject".
    when_missing: Literal["keep", "reject"] = "keep"


@dataclass(frozen=True)
class PixelsConfig:
    min_short_side_px: int = 512
    aspect_range: tuple[float, float] = (0.5, 2.0)  # width / height
    # Chroma = max(R, G, B) - min(R, G, B) in 0..255.
    grey_chroma_max: float = 12.0  # 99th-percentile chroma at or below: greyscale
    color_chroma_min: int = 24  # a pixel counts as coloured from here
    min_color_share: float = 0.02  # fewer coloured pixels: low saturation
    min_hue_spread_deg: float = 0.0  # > 0 rejects single-tint pages (sepia); off: untested on real art
    content_delta: int = 24  # differs this much from the background colour: content
    min_content_share: float = 0.01  # less content: near blank
    # photo: this share of pixels or more textured, at most max_flat flat or smooth, at most
    # max_outline outlines (crawler.filters.texture_stats); photo_min_texture_share 0 = off.
    photo_min_texture_share: float = 0.4
    photo_max_flat_share: float = 0.4
    photo_max_outline_share: float = 0.1


@dataclass(frozen=True)
class DedupConfig:
    near: bool = True
    max_distance: int = 8  # pHash Hamming distance (of 64 bits), as hydrus
    crop_fractions: tuple[float, ...] = (0.05,)  # also match copies cropped this much at an edge/corner
    # A pHash match is a copy only when its 4x4 colour thumbnails differ by at most this in any cell
    # (0..255; copies measure 2 or less, recolours and look-alikes 18+). Matches that differ more are
    # kept, in one split. null: the pHash alone decides.
    max_color_diff: float | None = 10.0
    # Look-alikes (pHash-near, colours differ) share a split up to this pHash distance. Not the full
    # max_distance: at 8 bits, small drawings on white pages and flags chain into large groups.
    lookalike_distance: int = 6


@dataclass(frozen=True)
class BalanceConfig:
    max_per_folder: int | None = None
    max_ratio_to_smallest: float | None = None  # cap every folder at this multiple of the smallest


@dataclass(frozen=True)
class SplitConfig:
    shares: dict[str, float] = field(default_factory=lambda: {"train": 0.7, "val": 0.2, "test": 0.1})
    salt: str = ""  # change to draw a different (still deterministic) split


@dataclass(frozen=True)
class TaggerConfig:
    threshold: float = 0.5  # P at or above which an estimated tag counts (files without tags)
    recheck_tagged: bool = False  # also run Illustration2Vec on files that have tags
    # Reject any file Illustration2Vec saw when one of these tags reaches its probability.
    reject_above: dict[str, float] = field(
        default_factory=lambda: {
            "monochrome": 0.5,
            "greyscale": 0.5,
            "comic": 0.5,
            "multiple_girls": 0.5,
            "sketch": 0.5,
            "lineart": 0.5,
        }
    )
    batch_size: int = 16
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass(frozen=True)
class OutputConfig:
    link: Literal["hardlink", "copy", "symlink", "none"] = "hardlink"


@dataclass(frozen=True)
class CurateConfig:
    tags: TagsConfig = TagsConfig()
    pixels: PixelsConfig = PixelsConfig()
    dedup: DedupConfig = DedupConfig()
    balance: BalanceConfig = BalanceConfig()
    split: SplitConfig = SplitConfig()
    tagger: TaggerConfig = TaggerConfig()
    output: OutputConfig = OutputConfig()
    workers: int = 0  # processes measuring images; 0 = one per CPU core

    def tag_rules(self) -> TagRules:
        return TagRules(require_any=self.tags.require_any, reject=self.tags.reject)

    def pixel_rules(self) -> PixelRules:
        p = self.pixels
        return PixelRules(
            min_short_side_px=p.min_short_side_px,
            aspect_range=p.aspect_range,
            grey_chroma_max=p.grey_chroma_max,
            min_color_share=p.min_color_share,
            min_hue_spread_deg=p.min_hue_spread_deg,
            min_content_share=p.min_content_share,
            photo_min_texture_share=p.photo_min_texture_share,
            photo_max_flat_share=p.photo_max_flat_share,
            photo_max_outline_share=p.photo_max_outline_share,
        )

    def analysis(self) -> AnalysisParams:
        return AnalysisParams(
            color_chroma_min=self.pixels.color_chroma_min,
            content_delta=self.pixels.content_delta,
            crop_fractions=self.dedup.crop_fractions if self.dedup.near else (),
        )


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return _coerce(key, value, options[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
        return _build(tp, value, key + ".")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {
            _coerce(f"{key} key", k, args[0]): _coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()
        }
    raise ConfigError(f"{key}: unsupported setting type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown setting {prefix}{unknown[0]} (known under {prefix or 'the top level'}: "
            f"{', '.join(sorted(names))})"
        )
    kwargs = {k: _coerce(prefix + k, v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _to_dict(cfg: Any) -> Any:
    if dataclasses.is_dataclass(cfg):
        return {f.name: _to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, tuple):
        return [_to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: _to_dict(v) for k, v in cfg.items()}
    return cfg


def validate(cfg: CurateConfig) -> CurateConfig:
    lo, hi = cfg.pixels.aspect_range
    if not 0 < lo <= hi:
        raise ConfigError(f"pixels.aspect_range: need 0 < min <= max, got {list(cfg.pixels.aspect_range)}")
    if cfg.dedup.max_color_diff is not None and cfg.dedup.max_color_diff < 0:
        raise ConfigError("dedup.max_color_diff: at least 0, or null to trust the pHash alone")
    if not 0 <= cfg.dedup.lookalike_distance < 64:
        raise ConfigError(f"dedup.lookalike_distance: 0..63 bits, got {cfg.dedup.lookalike_distance}")
    if not 0 <= cfg.dedup.max_distance < 64:
        raise ConfigError(f"dedup.max_distance: bits of a 64-bit hash, 0..63, got {cfg.dedup.max_distance}")
    if any(not 0 < f < 0.5 for f in cfg.dedup.crop_fractions):
        raise ConfigError(f"dedup.crop_fractions: shares in (0, 0.5), got {list(cfg.dedup.crop_fractions)}")
    shares = cfg.split.shares
    if not shares or any(v < 0 for v in shares.values()) or sum(shares.values()) <= 0:
        raise ConfigError(f"split.shares: non-negative shares with a positive sum, got {shares}")
    if cfg.balance.max_per_folder is not None and cfg.balance.max_per_folder < 1:
        raise ConfigError("balance.max_per_folder: at least 1, or null for no cap")
    if cfg.balance.max_ratio_to_smallest is not None and cfg.balance.max_ratio_to_smallest < 1:
        raise ConfigError("balance.max_ratio_to_smallest: at least 1.0, or null for no cap")
    if cfg.tagger.batch_size < 1:
        raise ConfigError("tagger.batch_size: at least 1")
    return cfg


def parse_override(text: str) -> dict:
    """`a.b=value` (value read as YAML) -> {"a": {"b": value}}."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. pixels.min_short_side_px=256")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_curate_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> CurateConfig:
    """Defaults <- YAML file (overrides only; unknown keys are errors) <- `KEY=VALUE` overrides."""
    import yaml

    values: dict = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        values = loaded
    for text in overrides:
        values = _merge(values, parse_override(text))
    return validate(_build(CurateConfig, _merge(_to_dict(CurateConfig()), values)))


# --------------------------------------------------------------------------------------------------
# Finding files


@dataclass
class Found:
    """One entry of the crawl: an image file, or a sidecar whose image is not beside it."""

    rel: str  # relative to SRC, '/'-separated
    path: Path  # absolute (links not resolved)
    folder: str  # parent folder relative to SRC ("." for SRC itself)
    sidecar: dict | None = None
    sidecar_problem: str | None = None
    is_image: bool = True

    @property
    def tags(self) -> list[str]:
        return normalize_tags((self.sidecar or {}).get("tags"))

    @property
    def post_id(self) -> Any:
        if self.sidecar and isinstance(self.sidecar.get("id"), int | str):
            return self.sidecar["id"]
        return self.rel  # a plain image: its path (unique, unlike the name without its extension)


def _read_sidecar(path: Path) -> tuple[dict | None, str | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"unreadable sidecar {path.name} ({e})"
    if not isinstance(data, dict):
        return None, f"sidecar {path.name} is not a JSON object"
    return data, None


def scan_source(src: Path, *, skip: Path | None = None) -> tuple[list[Found], dict[str, str]]:
    """Image files and sidecars under `src`, in sorted order, and each folder's `.query` text."""
    src = src.resolve()
    found: list[Found] = []
    queries: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (skip is None or (here / d).resolve() != skip)
        )
        folder = here.relative_to(src).as_posix() if here != src else ROOT_FOLDER
        names = sorted(filenames)
        images = [n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS and not n.startswith(".")]
        stems = {Path(n).stem for n in images}
        if ".query" in names:
            try:
                queries[folder] = (here / ".query").read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                pass
        sidecars: dict[str, tuple[dict | None, str | None]] = {}
        for n in names:
            if n.endswith(".json") and not n.startswith("."):
                sidecars[n[: -len(".json")]] = _read_sidecar(here / n)
        for n in images:
            rel = (here / n).relative_to(src).as_posix()
            sidecar, problem = sidecars.get(Path(n).stem, (None, None))
            found.append(Found(rel, here / n, folder, sidecar, problem))
        for stem, (sidecar, problem) in sidecars.items():
            if stem not in stems:
                rel = (here / f"{stem}.json").relative_to(src).as_posix()
                found.append(Found(rel, here / f"{stem}.json", folder, sidecar, problem, is_image=False))
    found.sort(key=lambda f: f.rel)
    return found, queries


# --------------------------------------------------------------------------------------------------
# Cache of measurements: DEST/cache.sqlite, keyed by path + size + mtime (+ what was measured)


def _stats_to_json(s: ImageStats) -> str:
    d = dataclasses.asdict(s)
    d["phash"] = f"{s.phash:016x}"
    d["crop_hashes"] = [f"{h:016x}" for h in s.crop_hashes]
    return json.dumps(d, separators=(",", ":"))


def _stats_from_json(text: str) -> ImageStats:
    d = json.loads(text)
    d["phash"] = int(d["phash"], 16)
    d["crop_hashes"] = tuple(int(h, 16) for h in d["crop_hashes"])
    d["thumbs"] = tuple(d.get("thumbs", ()))
    return ImageStats(**d)


class MeasureCache:
    """SQLite beside the manifest: image measurements and Illustration2Vec scores from earlier runs."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER,"
            " params TEXT, stats TEXT)"
        )
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS i2v (md5 TEXT, model TEXT, probs TEXT, PRIMARY KEY (md5, model))"
        )
        self.db.commit()

    def get(self, path: str, size: int, mtime_ns: int, params: str) -> ImageStats | None:
        row = self.db.execute(
            "SELECT stats FROM files WHERE path = ? AND size = ? AND mtime_ns = ? AND params = ?",
            (path, size, mtime_ns, params),
        ).fetchone()
        return _stats_from_json(row[0]) if row else None

    def put_many(self, rows: Iterable[tuple[str, int, int, str, ImageStats]]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
            [(p, size, mtime, params, _stats_to_json(s)) for p, size, mtime, params, s in rows],
        )
        self.db.commit()

    def get_i2v(self, md5: str, model: str) -> dict[str, float] | None:
        row = self.db.execute("SELECT probs FROM i2v WHERE md5 = ? AND model = ?", (md5, model)).fetchone()
        return json.loads(row[0]) if row else None

    def put_i2v(self, rows: Iterable[tuple[str, str, dict[str, float]]]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO i2v VALUES (?, ?, ?)",
            [(md5, model, json.dumps(p, separators=(",", ":"))) for md5, model, p in rows],
        )
        self.db.commit()

    def close(self) -> None:
        self.db.close()


def _progress(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=quiet or not sys.stderr.isatty(), leave=False)


def measure_files(
    paths: Sequence[str], params: AnalysisParams, *, workers: int, quiet: bool = True
) -> Iterable[tuple[int, ImageStats]]:
    """(index, stats) for each path, in a pool of `workers` processes when it pays."""
    if workers <= 1 or len(paths) < 16:
        with _progress(len(paths), "measuring", quiet) as bar:
            for i, p in enumerate(paths):
                yield i, analyze_image(p, params)
                bar.update()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent may hold torch / OpenMP threads, which do not survive fork().
    ctx = multiprocessing.get_context("spawn")
    chunk = max(1, min(64, len(paths) // (workers * 8)))
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_ignore_sigint)
    try:
        with _progress(len(paths), "measuring", quiet) as bar:
            for i, stats in enumerate(pool.map(analyze_image, paths, [params] * len(paths), chunksize=chunk)):
                yield i, stats
                bar.update()
    except BaseException:
        # Ctrl-C or an error: drop the queued work instead of waiting for all of it.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _ignore_sigint() -> None:
    """In measuring workers: Ctrl-C is the parent's to handle (one message, not one traceback a worker)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


# --------------------------------------------------------------------------------------------------
# Tag estimation hook (crawler.tagger.Illustration2Vec fits it)


class Tagger(typing.Protocol):
    tags: list[str]
    fingerprint: str

    def predict_files(self, paths: Sequence[str], *, batch_size: int = 16) -> Any: ...


I2V_CACHE_FLOOR = 0.01  # scores below this are not cached (and count as 0)


# --------------------------------------------------------------------------------------------------
# Splits and caps


def unit_hash(*parts: str) -> float:
    """A stable number in [0, 1) from strings (SHA-1): the same input draws the same value everywhere."""
    digest = hashlib.sha1("\x1f".join(parts).encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(md5: str, shares: dict[str, float], salt: str = "") -> str:
    """The split of an image (by its md5): shares are normalized; the order of `shares` is the order
    of the intervals, so the same md5 always lands in the same split for the same shares."""
    u = unit_hash("split", salt, md5)
    total = sum(shares.values())
    acc = 0.0
    names = list(shares)
    for name in names:
        acc += shares[name] / total
        if u < acc:
            return name
    return names[-1]


# --------------------------------------------------------------------------------------------------
# The run


@dataclass
class Candidate:
    """An image still in the running, with everything decided about it so far."""

    entry: Found
    stats: ImageStats
    tags: list[str]
    tag_source: str  # "sidecar", "i2v" or "none"
    folders: set[str]
    rating: str | None = None
    i2v: dict[str, float] | None = None
    near_duplicates: int = 0  # copies of this image left out
    similar: int = 0  # other kept images pHash-near to this one (colours differ)
    split_key: str = ""  # what the split is drawn from: its md5, or its similarity group's smallest md5


@dataclass
class CurateResult:
    kept: list[dict]
    rejected: list[dict]
    queries: dict[str, str]
    split_names: list[str]
    measured: int  # files read and measured in this run
    from_cache: int  # files whose measurements came from the cache
    dest: Path
    notes: list[str] = field(default_factory=list)

    @property
    def manifest_path(self) -> Path:
        return self.dest / MANIFEST_NAME

    @property
    def rejected_path(self) -> Path:
        return self.dest / REJECTED_NAME

    def folder_table(self) -> list[dict]:
        """Per folder: files, kept, kept per split, rejected (so imbalance is visible)."""
        rows: dict[str, dict] = defaultdict(
            lambda: {"files": 0, "kept": 0, "rejected": 0, **{s: 0 for s in self.split_names}}
        )
        for r in self.kept:
            row = rows[r["folder"]]
            row["files"] += 1
            row["kept"] += 1
            row[r["split"]] += 1
        for r in self.rejected:
            row = rows[r["folder"]]
            row["files"] += 1
            row["rejected"] += 1
        return [{"folder": f, "query": self.queries.get(f, ""), **rows[f]} for f in sorted(rows)]

    def reason_counts(self) -> Counter:
        return Counter(r["reason"] for r in self.rejected)


def _reject(entry: Found, dest: Path, rejection: Rejection, **extra: Any) -> dict:
    rec = {
        "path": Path(os.path.relpath(entry.path, dest)).as_posix(),
        "src_path": entry.rel,
        "folder": entry.folder,
        "reason": rejection.reason,
        "detail": rejection.detail,
    }
    rec.update(rejection.extra)
    rec.update({k: v for k, v in extra.items() if v is not None})
    return rec


def curate(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    cfg: CurateConfig = CurateConfig(),
    *,
    tagger: Tagger | None = None,
    quiet: bool = True,
    log: Callable[[str], None] | None = None,
) -> CurateResult:
    """Filter the crawl at `src` into `dest` (manifest.jsonl, rejected.jsonl, images/, cache.sqlite)."""
    src, dest = Path(src).resolve(), Path(dest).resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: not a folder (expected the output of `crawler crawl`)")
    if dest == src or src.is_relative_to(dest):
        raise ValueError(f"--out {dest} must not be SRC or contain it; pick a new folder, e.g. data/curated")
    say = log or (lambda msg: None)
    dest.mkdir(parents=True, exist_ok=True)
    entries, queries = scan_source(src, skip=dest)
    rejected: list[dict] = []
    notes: list[str] = []

    # 1. Measure each distinct file once (hard links and symlinks to one file share an inode).
    params = cfg.analysis()
    params_key = params.key()
    cache = MeasureCache(dest / CACHE_NAME)
    try:
        file_of: dict[str, tuple[int, int]] = {}
        real_of: dict[tuple[int, int], tuple[str, int, int]] = {}
        for e in entries:
            if not e.is_image:
                continue
            try:
                st = e.path.stat()
            except OSError as err:
                rejected.append(
                    _reject(
                        e,
                        dest,
                        Rejection("unreadable", f"cannot open ({err.strerror or err}); a broken link?"),
                    )
                )
                continue
            key = (st.st_dev, st.st_ino)
            file_of[e.rel] = key
            real_of.setdefault(key, (os.path.realpath(e.path), st.st_size, st.st_mtime_ns))
        stats_of: dict[tuple[int, int], ImageStats] = {}
        todo: list[tuple[int, int]] = []
        for key, (real, size, mtime) in real_of.items():
            hit = cache.get(real, size, mtime, params_key)
            if hit is not None:
                stats_of[key] = hit
            else:
                todo.append(key)
        workers = cfg.workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
        say(f"{len(entries)} entries, {len(real_of)} distinct files, {len(todo)} to measure")
        pending: list[tuple[str, int, int, str, ImageStats]] = []
        try:
            for i, stats in measure_files(
                [real_of[k][0] for k in todo], params, workers=workers, quiet=quiet
            ):
                stats_of[todo[i]] = stats
                pending.append((*real_of[todo[i]], params_key, stats))
                if len(pending) >= 500:
                    cache.put_many(pending)
                    pending.clear()
        finally:  # interrupted too: what was measured is kept for the next run
            cache.put_many(pending)

        # 2. Unreadable out; exact duplicates (same md5) folded into the first entry of each md5.
        by_md5: dict[str, Candidate] = {}
        for e in entries:
            if not e.is_image or e.rel not in file_of:
                continue
            stats = stats_of[file_of[e.rel]]
            if stats.error:
                rejected.append(_reject(e, dest, Rejection(stats.error_reason or "unreadable", stats.error)))
                continue
            if e.sidecar_problem:
                notes.append(f"{e.rel}: {e.sidecar_problem}; treated as untagged")
            keeper = by_md5.get(stats.md5)
            if keeper is None:
                by_md5[stats.md5] = Candidate(
                    entry=e,
                    stats=stats,
                    tags=e.tags,
                    tag_source="sidecar" if e.tags else "none",
                    folders={e.folder},
                    rating=(e.sidecar or {}).get("rating"),
                )
                continue
            _fold_into(keeper, e)
            rejected.append(
                _reject(
                    e,
                    dest,
                    Rejection("duplicate_md5", f"same bytes as {keeper.entry.rel}"),
                    md5=stats.md5,
                    duplicate_of=keeper.entry.rel,
                )
            )
        for e in entries:
            if e.is_image:
                continue
            md5 = str((e.sidecar or {}).get("md5") or "").lower()
            keeper = by_md5.get(md5)
            if keeper is not None:
                _fold_into(keeper, e)
                rejected.append(
                    _reject(
                        e,
                        dest,
                        Rejection("duplicate_md5", f"sidecar of a post stored as {keeper.entry.rel}"),
                        md5=md5,
                        duplicate_of=keeper.entry.rel,
                    )
                )
            else:
                why = e.sidecar_problem or "no image beside this sidecar and none with its md5 in the crawl"
                rejected.append(_reject(e, dest, Rejection("missing_image", why), md5=md5 or None))

        # 3. Size and aspect, sidecar tags, colour.
        tag_rules, pixel_rules = cfg.tag_rules(), cfg.pixel_rules()
        alive: list[Candidate] = []
        needs_i2v: list[Candidate] = []
        for c in by_md5.values():
            verdict = check_pixels(c.stats, pixel_rules, which="geometry")
            if verdict is None and c.tags:
                verdict = tag_rules.check(c.tags)
            if verdict is None:
                verdict = check_pixels(c.stats, pixel_rules, which="content")
            if verdict is None and not c.tags and tagger is None and cfg.tags.when_missing == "reject":
                verdict = Rejection("untagged", "no tags in a sidecar and no tagger (--tagger i2v)")
            if verdict is not None:
                rejected.append(_reject(c.entry, dest, verdict, md5=c.stats.md5))
                continue
            alive.append(c)
            if tagger is not None and (not c.tags or cfg.tagger.recheck_tagged):
                needs_i2v.append(c)

        # 4. Illustration2Vec: tags for the untagged, a veto for everything it saw.
        if needs_i2v:
            assert tagger is not None
            _run_tagger(tagger, needs_i2v, cache, cfg, say)
            vetoed = set()
            known = set(tagger.tags)
            # safe / questionable / explicit say nothing about what is drawn: never estimated tags
            rating = set(getattr(tagger, "rating_tags", ()))
            for tag in sorted(set(cfg.tagger.reject_above) - known):
                notes.append(f"tagger.reject_above: {tag!r} is not one of the tagger's tags; ignored")
            for c in needs_i2v:
                probs = c.i2v or {}
                verdict = None
                if not c.tags:
                    c.tags = sorted(
                        t
                        for t, p in probs.items()
                        if p >= cfg.tagger.threshold and t in known and t not in rating
                    )
                    c.tag_source = "i2v"
                    verdict = tag_rules.check(c.tags, source="i2v")
                if verdict is None:
                    for tag, limit in sorted(cfg.tagger.reject_above.items()):
                        p = probs.get(tag, 0.0)
                        if tag in known and p >= limit:
                            verdict = Rejection(
                                "i2v_rejected",
                                f"Illustration2Vec P({tag}) = {p:.2f} >= {limit:g}",
                                {"tags": [tag], "probability": round(p, 4)},
                            )
                            break
                if verdict is not None:
                    rejected.append(_reject(c.entry, dest, verdict, md5=c.stats.md5))
                    vetoed.add(id(c))
            alive = [c for c in alive if id(c) not in vetoed]
    finally:
        cache.close()

    # 5. Near duplicates: pHash-near pairs whose colours agree are copies (one per group is kept, the
    # largest); pHash-near pairs whose colours differ (a recolour, two discs) are both kept, in one split.
    if cfg.dedup.near and len(alive) > 1:
        alive = _near_duplicates(alive, cfg, dest, rejected, notes)

    # 6. Folder caps, then the split.
    alive = _apply_caps(alive, cfg, dest, rejected)
    split_names = list(cfg.split.shares)
    kept = [_manifest_record(c, src, dest, cfg) for c in alive]
    for c, rec in zip(alive, kept, strict=True):
        rec["split"] = assign_split(c.split_key or rec["md5"], cfg.split.shares, cfg.split.salt)

    # 7. Files first, then the manifest that points at them, then old files nobody points at.
    _materialize(alive, kept, dest, cfg.output.link, notes)
    rejected.sort(key=lambda r: r["src_path"])
    result = CurateResult(
        kept=kept,
        rejected=rejected,
        queries=queries,
        split_names=split_names,
        measured=len(todo),
        from_cache=len(real_of) - len(todo),
        dest=dest,
        notes=notes,
    )
    write_jsonl(dest / MANIFEST_NAME, kept)
    write_jsonl(dest / REJECTED_NAME, rejected)
    write_text(dest / SUMMARY_NAME, format_summary(result) + "\n")
    _prune_images(dest, {rec["path"] for rec in kept})
    return result


def _near_duplicates(
    alive: list[Candidate], cfg: CurateConfig, dest: Path, rejected: list[dict], notes: list[str]
) -> list[Candidate]:
    a, b, d = near_duplicate_pairs(
        [c.stats.phash for c in alive], [c.stats.crop_hashes for c in alive], cfg.dedup.max_distance
    )
    limit = cfg.dedup.max_color_diff
    pairs = list(zip(a.tolist(), b.tolist(), d.tolist(), strict=True))
    copies = [
        (i, j, dist)
        for i, j, dist in pairs
        if limit is None or color_distance(alive[i].stats, alive[j].stats) <= limit
    ]
    closest: dict[int, int] = {}
    for i, j, dist in copies:
        closest[i] = min(closest.get(i, 64), dist)
        closest[j] = min(closest.get(j, 64), dist)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(group_labels(len(alive), [p[0] for p in copies], [p[1] for p in copies])):
        groups[label].append(i)
    survivor_of: dict[int, int] = {}
    for members in groups.values():
        best = min(members, key=lambda i: _keep_order(alive[i]))
        alive[best].near_duplicates = len(members) - 1
        for i in members:
            survivor_of[i] = best
            if i == best:
                continue
            c = alive[i]
            rejected.append(
                _reject(
                    c.entry,
                    dest,
                    Rejection(
                        "near_duplicate",
                        f"near-identical to {alive[best].entry.rel} "
                        f"({alive[best].stats.width}x{alive[best].stats.height} px; this one "
                        f"{c.stats.width}x{c.stats.height}): the largest copy is kept",
                    ),
                    md5=c.stats.md5,
                    duplicate_of=alive[best].entry.rel,
                    distance=closest.get(i),
                )
            )
    # Look-alikes link their survivors: one group, one split.
    survivors = sorted(set(survivor_of.values()))
    index_of = {s: k for k, s in enumerate(survivors)}
    link_a, link_b = [], []
    for i, j, dist in pairs:
        si, sj = survivor_of[i], survivor_of[j]
        if si != sj and dist <= cfg.dedup.lookalike_distance:
            link_a.append(index_of[si])
            link_b.append(index_of[sj])
    linked: dict[int, list[Candidate]] = defaultdict(list)
    for k, label in enumerate(group_labels(len(survivors), link_a, link_b)):
        linked[label].append(alive[survivors[k]])
    n_similar, largest = 0, 0
    for members in linked.values():
        if len(members) > 1:
            key = min(c.stats.md5 for c in members)
            for c in members:
                c.split_key, c.similar = key, len(members) - 1
            n_similar += len(members)
            largest = max(largest, len(members))
    if n_similar:
        notes.append(
            f"{n_similar} kept images look alike in outline but not in colour (recolours, variants, "
            f"or pictures of the same shape; largest group {largest}): each group shares one split "
            f"('similar' in the manifest; dedup.max_color_diff and dedup.lookalike_distance decide)"
        )
    return sorted((alive[s] for s in survivors), key=lambda c: c.entry.rel)


def _fold_into(keeper: Candidate, e: Found) -> None:
    """Another entry of the same post: remember its folder and any tags it adds."""
    keeper.folders.add(e.folder)
    if e.tags:
        merged = sorted(set(keeper.tags) | set(e.tags))
        if keeper.tag_source == "none":
            keeper.tag_source = "sidecar"
        keeper.tags = merged
    if keeper.rating is None and e.sidecar:
        keeper.rating = e.sidecar.get("rating")


LOSSLESS_EXTENSIONS = frozenset({".png", ".bmp", ".tif", ".tiff"})


def _keep_order(c: Candidate) -> tuple:
    # The most pixels first; at equal size a lossless file (a JPEG re-encode of a PNG is the copy),
    # then the larger file (less compressed), then the first path.
    lossless = Path(c.entry.rel).suffix.lower() in LOSSLESS_EXTENSIONS
    return (-(c.stats.width * c.stats.height), not lossless, -c.stats.size_bytes, c.entry.rel)


def _run_tagger(tagger: Tagger, items: list[Candidate], cache: MeasureCache, cfg: CurateConfig, say) -> None:
    missing = []
    for c in items:
        hit = cache.get_i2v(c.stats.md5, tagger.fingerprint)
        if hit is None:
            missing.append(c)
        else:
            c.i2v = hit
    say(f"Illustration2Vec: {len(items)} files, {len(missing)} to run")
    step = max(cfg.tagger.batch_size * 8, 64)
    for start in range(0, len(missing), step):
        batch = missing[start : start + step]
        probs = tagger.predict_files(
            [os.path.realpath(c.entry.path) for c in batch], batch_size=cfg.tagger.batch_size
        )
        rows = []
        for c, p in zip(batch, probs, strict=True):
            c.i2v = {tagger.tags[k]: round(float(p[k]), 4) for k in range(len(p)) if p[k] >= I2V_CACHE_FLOOR}
            rows.append((c.stats.md5, tagger.fingerprint, c.i2v))
        cache.put_i2v(rows)


def _apply_caps(
    alive: list[Candidate], cfg: CurateConfig, dest: Path, rejected: list[dict]
) -> list[Candidate]:
    by_folder: dict[str, list[Candidate]] = defaultdict(list)
    for c in alive:
        by_folder[c.entry.folder].append(c)
    caps = []
    if cfg.balance.max_per_folder is not None:
        caps.append(cfg.balance.max_per_folder)
    if cfg.balance.max_ratio_to_smallest is not None and by_folder:
        smallest = min(len(v) for v in by_folder.values())
        caps.append(math.ceil(smallest * cfg.balance.max_ratio_to_smallest))
    if not caps:
        return alive
    cap = min(caps)
    out = []
    for folder, members in by_folder.items():
        # A stable pseudo-random order: the same images stay in when more are added later.
        members = sorted(members, key=lambda c: unit_hash("cap", cfg.split.salt, c.stats.md5))
        out.extend(members[:cap])
        for c in members[cap:]:
            rejected.append(
                _reject(
                    c.entry,
                    dest,
                    Rejection("folder_cap", f"folder {folder} is capped at {cap} images"),
                    md5=c.stats.md5,
                )
            )
    return sorted(out, key=lambda c: c.entry.rel)


def _dest_rel(c: Candidate, dest: Path, link: str) -> str:
    if link == "none":
        return Path(os.path.relpath(c.entry.path, dest)).as_posix()
    return f"{IMAGES_DIR}/{c.entry.rel}"


def _manifest_record(c: Candidate, src: Path, dest: Path, cfg: CurateConfig) -> dict:
    rec: dict[str, Any] = {
        "path": _dest_rel(c, dest, cfg.output.link),
        "id": c.entry.post_id,
        "md5": c.stats.md5,
        "tags": c.tags,
        "width": c.stats.width,
        "height": c.stats.height,
        "split": "",
        "folder": c.entry.folder,
        "tag_source": c.tag_source,
        "src_path": c.entry.rel,
    }
    if c.rating:
        rec["rating"] = c.rating
    if len(c.folders) > 1:
        rec["folders"] = sorted(c.folders)
    if c.near_duplicates:
        rec["near_duplicates"] = c.near_duplicates
    if c.similar:
        rec["similar"] = c.similar
    return rec


def _materialize(alive: list[Candidate], kept: list[dict], dest: Path, link: str, notes: list[str]) -> None:
    """Put each kept image at DEST/<record path> (hard link, copy or symlink), atomically."""
    if link == "none":
        return
    fell_back = False
    for c, rec in zip(alive, kept, strict=True):
        source = Path(os.path.realpath(c.entry.path))
        target = dest / rec["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            if link == "symlink" and target.is_symlink() and os.readlink(target) == str(source):
                continue
            if link == "hardlink" and not target.is_symlink() and os.path.samefile(source, target):
                continue
            if link == "copy" and not target.is_symlink():
                ts, ss = target.stat(), source.stat()
                if ts.st_size == ss.st_size and ts.st_mtime_ns == ss.st_mtime_ns:
                    continue
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
        mode = link
        if mode == "hardlink":
            try:
                os.link(source, tmp)
            except OSError as err:
                if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                    raise
                mode = "copy"
                if not fell_back:
                    fell_back = True
                    notes.append(f"hard links not possible into {dest} ({err.strerror}); copied instead")
        if mode == "copy":
            shutil.copy2(source, tmp)
        elif mode == "symlink":
            os.symlink(source, tmp)
        os.replace(tmp, target)


def _prune_images(dest: Path, keep: set[str]) -> None:
    """Remove files under DEST/images that the new manifest does not list (only there, never SRC)."""
    root = dest / IMAGES_DIR
    if not root.is_dir():
        return
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        here = Path(dirpath)
        for n in filenames:
            p = here / n
            if p.relative_to(dest).as_posix() not in keep:
                p.unlink()
        if here != root and not any(here.iterdir()):
            here.rmdir()


# --------------------------------------------------------------------------------------------------
# Output


def write_text(path: Path, text: str) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def format_summary(result: CurateResult) -> str:
    """Markdown: the headline, kept per folder per split, and the reasons files were left out."""
    rows = result.folder_table()
    splits = result.split_names
    n_kept, n_rej = len(result.kept), len(result.rejected)
    per_split = Counter(r["split"] for r in result.kept)
    split_text = ", ".join(f"{s} {per_split.get(s, 0)}" for s in splits)
    lines = [
        f"crawler filter: {n_kept + n_rej} files in {len(rows)} folders -> {n_kept} kept ({split_text}), "
        f"{n_rej} left out; {result.measured} files measured, {result.from_cache} from cache",
        "",
        "| folder | query | files | kept | " + " | ".join(splits) + " | left out |",
        "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in splits) + " | ---: |",
    ]
    total = Counter()
    for row in rows:
        cells = [row["folder"], row["query"].replace("|", "\\|"), row["files"], row["kept"]]
        cells += [row[s] for s in splits] + [row["rejected"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        for k in ("files", "kept", "rejected", *splits):
            total[k] += row[k]
    lines.append(
        "| **total** |  | " + " | ".join(str(total[k]) for k in ("files", "kept", *splits, "rejected")) + " |"
    )
    kept_per_folder = [row["kept"] for row in rows if row["kept"]]
    if len(kept_per_folder) > 1:
        ratio = max(kept_per_folder) / min(kept_per_folder)
        lines.append("")
        lines.append(
            f"Largest folder keeps {ratio:.1f}x the images of the smallest"
            + (" (see balance.* in configs/curate.yaml)." if ratio >= 2 else ".")
        )
    reasons = result.reason_counts()
    if reasons:
        lines += ["", "| reason | files | meaning |", "| --- | ---: | --- |"]
        order = list(REASONS)
        for reason in sorted(reasons, key=lambda r: order.index(r) if r in order else len(order)):
            lines.append(f"| {reason} | {reasons[reason]} | {REASONS.get(reason, '')} |")
    if result.notes:
        lines += ["", f"Notes ({len(result.notes)}):"]
        lines += [f"- {n}" for n in result.notes[:20]]
        if len(result.notes) > 20:
            lines.append(f"- ... and {len(result.notes) - 20} more")
    lines += [
        "",
        f"Wrote {result.manifest_path} and {result.rejected_path} (every file left out, with its reason).",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Command line


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "src", metavar="SRC", help="a crawl (DIR/<tag-folder>/<id>.<ext> + sidecars) or a folder of images"
    )
    p.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="DEST",
        help="where manifest.jsonl, rejected.jsonl and images/ go",
    )
    p.add_argument(
        "--config", metavar="YAML", help="settings to override (e.g. configs/curate.yaml); defaults otherwise"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set pixels.min_short_side_px=256 (repeatable)",
    )
    p.add_argument(
        "--tagger", choices=("none", "i2v"), default="none", help="estimate tags for files without any"
    )
    p.add_argument("--i2v-weights", metavar="PATH", help="illust2vec_tag_ver200.caffemodel (see README)")
    p.add_argument("--i2v-tags", metavar="PATH", help="tag_list.json (default: beside the weights)")
    p.add_argument("--i2v-recheck", action="store_true", help="also run Illustration2Vec on tagged files")
    p.add_argument("--device", help="for Illustration2Vec: auto (default), cpu, cuda")
    p.add_argument("--workers", type=int, help="processes measuring images (default: one per core)")
    p.add_argument("--link", choices=LINK_MODES, help="how kept images get into DEST (default hardlink)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the summary")


def add_filter_parser(subparsers) -> argparse.ArgumentParser:
    """Register `filter` on a `crawler` command line (`parser.add_subparsers()`); runs `run_filter`."""
    p = subparsers.add_parser(
        "filter",
        help="curate a crawl into manifest.jsonl + rejected.jsonl (tags, pixels, duplicates, splits)",
        description="Curate a crawl into DEST/manifest.jsonl (train/val/test) and DEST/rejected.jsonl.",
    )
    _add_arguments(p)
    p.set_defaults(func=run_filter)
    return p


def run_filter(args: argparse.Namespace) -> int:
    """Run `crawler filter` from parsed arguments; prints the summary; 0 ok, 2 bad input."""
    overrides = list(args.set)
    if args.i2v_recheck:
        overrides.append("tagger.recheck_tagged=true")
    if args.device:
        overrides.append(f"tagger.device={args.device}")
    if args.workers is not None:
        overrides.append(f"workers={args.workers}")
    if args.link:
        overrides.append(f"output.link={args.link}")
    try:
        cfg = load_curate_config(args.config, overrides)
    except ConfigError as e:
        print(f"crawler filter: {e}", file=sys.stderr)
        return 2
    if not Path(args.src).is_dir():
        print(
            f"crawler filter: {args.src}: not a folder (expected the output of `crawler crawl`)",
            file=sys.stderr,
        )
        return 2
    tagger = None
    if args.tagger == "i2v":
        from crawler.tagger import I2V_RELEASES_URL, CaffeModelError, Illustration2Vec

        if not args.i2v_weights:
            print(
                "crawler filter: --tagger i2v needs --i2v-weights PATH to illust2vec_tag_ver200.caffemodel "
                f"(and tag_list.json beside it or --i2v-tags), from {I2V_RELEASES_URL}",
                file=sys.stderr,
            )
            return 2
        try:
            tagger = Illustration2Vec.load(args.i2v_weights, args.i2v_tags, device=cfg.tagger.device)
        except CaffeModelError as e:
            print(f"crawler filter: {e}", file=sys.stderr)
            return 2
    elif args.i2v_weights or args.i2v_recheck:
        print("crawler filter: --i2v-* options need --tagger i2v", file=sys.stderr)
        return 2
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    try:
        result = curate(args.src, args.out, cfg, tagger=tagger, quiet=args.quiet, log=log)
    except (FileNotFoundError, ValueError) as e:
        print(f"crawler filter: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ncrawler filter: interrupted; {Path(args.out) / MANIFEST_NAME} is as it was (written only "
            "at the end), and what was measured is cached: re-run the same command to go on",
            file=sys.stderr,
        )
        return 130
    print(format_summary(result))
    if not result.kept:
        print("crawler filter: warning: no image was kept; see rejected.jsonl for why", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="crawler filter",
        description="Curate a crawl into DEST/manifest.jsonl (train/val/test) and DEST/rejected.jsonl.",
    )
    _add_arguments(parser)
    return run_filter(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
