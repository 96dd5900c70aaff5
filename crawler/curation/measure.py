"""What is measured of each file, once: md5, size, colour and texture statistics, pHashes, colour thumbnails.

`analyze_image` is a pure function of a file (run in worker processes); `MeasureCache` keeps its results
in DEST/cache.sqlite keyed by path, size, mtime and the measuring parameters, so a re-run reads only
new or changed files. Pillow and NumPy only: no torch, no OpenCV.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import sqlite3
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .phash import crop_boxes, crop_hashes, phash

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

# Measurements are taken on a copy whose long side is at most this many pixels: plenty for colour
# statistics and for a 32x32 pHash, and it keeps a 4,000-pixel upload from costing 60x a 512 one.
ANALYSIS_PX = 256

# Bumped whenever what `analyze_image` measures changes, so cached measurements are recomputed.
ANALYSIS_VERSION = 3  # 3: texture / flat / outline shares (the photo rule)


@dataclass(frozen=True)
class AnalysisParams:
    """What `analyze_image` measures with; part of the cache key (changing one re-measures)."""

    color_chroma_min: int = 24  # a pixel counts as coloured from this chroma up
    content_delta: int = 24  # a pixel is content when a channel differs this much from the background
    crop_fractions: tuple[float, ...] = (0.05,)  # extra pHashes of the image cropped by these shares

    def key(self) -> str:
        crops = ",".join(f"{f:g}" for f in self.crop_fractions)
        return f"v{ANALYSIS_VERSION};chroma>={self.color_chroma_min};delta>{self.content_delta};crops={crops}"


@dataclass
class ImageStats:
    """What one file looks like. `error` set means unreadable (and the rest is mostly empty).

    width/height are the full-resolution size after EXIF rotation (what the trainer will see).
    """

    md5: str = ""
    size_bytes: int = 0
    width: int = 0
    height: int = 0
    chroma_p99: float = 0.0
    color_share: float = 0.0
    hue_spread_deg: float | None = None  # None when too few coloured pixels to tell
    content_share: float = 0.0
    texture_share: float = 0.0  # see `texture_stats`
    flat_share: float = 1.0
    outline_share: float = 0.0
    phash: int = 0  # 64-bit pHash of the whole image
    crop_hashes: tuple[int, ...] = ()  # pHashes of the image cropped at each edge and corner
    # 4x4 RGB thumbnails (hex, 48 bytes each) of the whole image, then of the same crops as
    # crop_hashes: a pHash match is only a duplicate when the colours agree too (`color_distance`).
    thumbs: tuple[str, ...] = ()
    error: str | None = None
    error_reason: str | None = None  # "unreadable" or "too_many_pixels"

    def to_json(self) -> dict:
        return {
            "chroma_p99": self.chroma_p99,
            "color_share": self.color_share,
            "hue_spread_deg": self.hue_spread_deg,
            "content_share": self.content_share,
            "texture_share": self.texture_share,
            "flat_share": self.flat_share,
            "outline_share": self.outline_share,
        }


_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that undoes it (the same table as PIL.ImageOps.exif_transpose).
_UNDO_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def to_rgb_on_white(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB, transparency composited on white (as `colorizer.data` does for training)."""
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 255.0)
        return Image.fromarray(np.clip(arr / hi * 255 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def open_image(data: bytes, *, max_side_px: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Decode `data` -> (RGB image on white, EXIF-rotated, reduced to `max_side_px`; full (w, h)).

    JPEGs are decoded at a reduced DCT scale when that still covers `max_side_px` (much faster).
    Raises what Pillow raises; the decompression-bomb warning is raised as an error.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data))
        full_w, full_h = img.size
        orientation = 1
        try:
            orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1))
        except Exception:  # a broken EXIF block is no reason to drop the picture
            orientation = 1
        if max_side_px and img.format == "JPEG":
            img.draft("RGB", (max_side_px, max_side_px))
        img.seek(0)
        img.load()  # decodes everything: a truncated file fails here
    img = to_rgb_on_white(img)
    if max_side_px and max(img.size) > max_side_px:
        img.thumbnail((max_side_px, max_side_px), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if orientation in _UNDO_ORIENTATION:
        img = img.transpose(_UNDO_ORIENTATION[orientation])
        if orientation >= 5:
            full_w, full_h = full_h, full_w
    return img, (full_w, full_h)


def _percentile_u8(values: np.ndarray, q: float) -> float:
    """The q-th percentile (lower) of uint8 values, from a 256-bin histogram (much faster than sorting)."""
    cum = np.cumsum(np.bincount(values.ravel(), minlength=256))
    return float(np.searchsorted(cum, q / 100.0 * (cum[-1] - 1), side="right"))


def color_stats(rgb: np.ndarray, params: AnalysisParams) -> dict:
    """Colour measurements of an `(H, W, 3) uint8` image (see `ImageStats`).

    hue spread: the circular standard deviation of hue over coloured pixels, each weighted by its
    chroma, from the hue plane's vector (2R - G - B, sqrt(3) (G - B)) (no trigonometry needed).
    """
    r, g, b = (np.ascontiguousarray(rgb[..., i]).ravel() for i in range(3))
    n_pixels = max(r.size, 1)
    hi = np.maximum(np.maximum(r, g), b)
    lo = np.minimum(np.minimum(r, g), b)
    chroma = hi - lo  # uint8, no overflow since hi >= lo
    colored = chroma >= params.color_chroma_min
    n_colored = int(np.count_nonzero(colored))
    hue_spread = None
    if n_colored >= max(16, 0.002 * chroma.size):
        rc, gc, bc = (c[colored].astype(np.float32) for c in (r, g, b))
        x = 2.0 * rc - gc - bc
        y = np.float32(np.sqrt(3.0)) * (gc - bc)
        resultant = math.hypot(float(x.sum()), float(y.sum())) / max(float(np.hypot(x, y).sum()), 1e-6)
        hue_spread = math.degrees(math.sqrt(-2.0 * math.log(min(max(resultant, 1e-12), 1.0))))
    delta = np.zeros(chroma.shape, np.int16)
    for c in (r, g, b):
        background = int(_percentile_u8(c, 50))
        np.maximum(delta, np.abs(c.astype(np.int16) - background), out=delta)
    content = delta > params.content_delta
    drawn = int(np.count_nonzero(content | colored))  # what is drawn: unlike the background, or coloured
    return {
        "chroma_p99": _percentile_u8(chroma, 99),
        "color_share": n_colored / max(drawn, 1),
        "hue_spread_deg": hue_spread,
        "content_share": float(np.count_nonzero(content) / n_pixels),
    }


# A pixel's residual: the largest over R, G, B of |pixel - mean of its 3x3 neighbourhood|, on the
# analysis copy. Flat fills and linear gradients (cel shading, airbrushed skies) give 0; JPEG noise
# at quality 75+ stays about 2 or less there; outlines and colour boundaries give more than 24.
FLAT_RESIDUAL_MAX = 2.0  # a pixel is flat or smooth when no residual in its 3x3 neighbourhood exceeds this
TEXTURE_RESIDUAL = (3.0, 24.0)  # textured: residual in (3, 24] (fine detail, not an outline)


def _neighbours(a: np.ndarray) -> list[np.ndarray]:
    """The 9 shifted copies of `a` that make up each pixel's 3x3 neighbourhood (edges repeated)."""
    h, w = a.shape[:2]
    p = np.pad(a, ((1, 1), (1, 1)) + ((0, 0),) * (a.ndim - 2), mode="edge")
    return [p[i : i + h, j : j + w] for i in range(3) for j in range(3)]


def texture_stats(rgb: np.ndarray) -> dict:
    """Shares of an `(H, W, 3) uint8` image's pixels that are textured, flat or smooth, and outline.

    A photograph (or a photo-realistic render) has fine texture nearly everywhere: grain, foliage,
    skin, fabric. A drawing is flat fills and smooth gradients bounded by lines (the thresholds and
    what they were checked on: configs/curate.yaml).
    """
    a = rgb.astype(np.float32)
    residual = np.abs(a - sum(_neighbours(a)) / 9.0).max(axis=2)
    local_max = np.max(np.stack(_neighbours(residual)), axis=0)
    lo, hi = TEXTURE_RESIDUAL
    return {
        "texture_share": float(np.count_nonzero((residual > lo) & (residual <= hi)) / max(residual.size, 1)),
        "flat_share": float(np.count_nonzero(local_max <= FLAT_RESIDUAL_MAX) / max(residual.size, 1)),
        "outline_share": float(np.count_nonzero(residual > hi) / max(residual.size, 1)),
    }


THUMB_PX = 4


def thumbnails(img: Image.Image, fractions: Sequence[float]) -> tuple[str, ...]:
    """4x4 RGB area averages (hex) of `img`, then of its crops at each edge and corner (as `crop_hashes`)."""
    boxes = [(0, 0, img.width, img.height)]
    boxes += [box for f in fractions for box in crop_boxes(img.width, img.height, f)]
    return tuple(
        img.resize((THUMB_PX, THUMB_PX), Image.Resampling.BOX, box=box).tobytes().hex() for box in boxes
    )


def color_distance(a: ImageStats, b: ImageStats) -> float:
    """How far apart the colours of two pHash-near images are: 0..255, the largest difference of one
    cell of their 4x4 colour thumbnails (mean over R, G, B).

    The smallest over a's whole image against b's whole image and crops, and the other way round,
    so a copy cropped at a corner compares with the same region of the original. The largest cell,
    not the mean: two small drawings on big white pages agree on the page and differ in one cell.
    JPEG re-encodes, resizes and 5% crops measure 2 or less; different pictures with similar
    outlines (two discs, the same drawing recoloured, two small drawings on white) about 18 and more.
    inf when a thumbnail is missing.
    """
    if not a.thumbs or not b.thumbs:
        return math.inf

    def cells(h: str) -> np.ndarray:
        return np.frombuffer(bytes.fromhex(h), np.uint8).astype(np.int16).reshape(-1, 3)

    ta, tb = [cells(h) for h in a.thumbs], [cells(h) for h in b.thumbs]
    pairs = [(ta[0], t) for t in tb] + [(tb[0], t) for t in ta[1:]]
    return min(
        (float(np.abs(x - y).mean(axis=1).max()) for x, y in pairs if x.shape == y.shape), default=math.inf
    )


def file_md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def analyze_image(path: str | Path, params: AnalysisParams = AnalysisParams()) -> ImageStats:
    """Read one file once: md5, full size, colour statistics and perceptual hashes.

    Never raises for a bad image: the problem goes into `error` / `error_reason`.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return ImageStats(error=f"cannot read the file ({e.strerror or e})", error_reason="unreadable")
    stats = ImageStats(md5=file_md5(data), size_bytes=len(data))
    try:
        img, (stats.width, stats.height) = open_image(data, max_side_px=ANALYSIS_PX)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        stats.error, stats.error_reason = f"too many pixels ({e})", "too_many_pixels"
        return stats
    except UnidentifiedImageError:
        stats.error, stats.error_reason = "not an image Pillow can read", "unreadable"
        return stats
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as e:
        stats.error, stats.error_reason = f"unreadable or truncated ({e})", "unreadable"
        return stats
    measured = color_stats(np.asarray(img), params)
    stats.chroma_p99 = measured["chroma_p99"]
    stats.color_share = measured["color_share"]
    stats.hue_spread_deg = measured["hue_spread_deg"]
    stats.content_share = measured["content_share"]
    rgb = np.asarray(img)
    if rgb.size:
        texture = texture_stats(rgb)
        stats.texture_share = texture["texture_share"]
        stats.flat_share = texture["flat_share"]
        stats.outline_share = texture["outline_share"]
    stats.phash = phash(img)
    stats.crop_hashes = crop_hashes(img, params.crop_fractions)
    stats.thumbs = thumbnails(img, params.crop_fractions)
    return stats


# --------------------------------------------------------------------------------------------------
# The cache and the measuring processes


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
