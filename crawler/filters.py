"""Rules that decide which crawled files may become training images: tags, pixels, duplicates.

Everything here is a pure function of a file or of small records, so `crawler.curate` can run it in
worker processes and cache what it measured. No torch and no OpenCV: Pillow and NumPy only, so the
crawler starts fast on a machine without the model side installed.

Three kinds of checks:

- tags (`TagRules`): from the sidecar (or estimated by `crawler.tagger`), e.g. require `solo`,
  reject `multiple_girls`, `comic`, `monochrome`;
- pixels (`analyze_image` measures once, `check_pixels` decides): size, aspect ratio, near-blank,
  greyscale / low saturation (catches the monochrome page nobody tagged), photographs (fine
  texture nearly everywhere, almost nothing flat or smoothly shaded: `texture_stats`), unreadable
  or truncated files, decompression bombs;
- duplicates: exact by md5, near by a 64-bit pHash (the same bits as `imagehash.phash`) compared
  under Hamming distance through a multi-index hash (`HammingIndex`), so 100,000 images take
  seconds, not the 5e9 comparisons of every pair. Each image is also hashed after cropping 5% off
  each edge and corner, which is what lets a slightly cropped re-upload match its original.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

# Measurements are taken on a copy whose long side is at most this many pixels: plenty for colour
# statistics and for a 32x32 pHash, and it keeps a 4,000-pixel upload from costing 60x a 512 one.
ANALYSIS_PX = 256

# Bumped whenever what `analyze_image` measures changes, so cached measurements are recomputed.
ANALYSIS_VERSION = 3  # 3: texture / flat / outline shares (the photo rule)


@dataclass(frozen=True)
class Rejection:
    """Why a file is left out: a stable `reason` code (see `REASONS`) and a sentence for people."""

    reason: str
    detail: str
    extra: dict = field(default_factory=dict)


# The reason codes that can appear in rejected.jsonl, in the order the checks run.
REASONS = {
    "unreadable": "not an image Pillow can decode, truncated, or a broken link",
    "too_many_pixels": "refused by Pillow's decompression-bomb guard (the trainer would refuse it too)",
    "missing_image": "a sidecar whose image is nowhere in the crawl",
    "duplicate_md5": "the same bytes are kept elsewhere",
    "too_small": "short side below pixels.min_short_side_px",
    "aspect": "width / height outside pixels.aspect_range",
    "tag_rejected": "has a tag listed in tags.reject",
    "tag_required": "has none of tags.require_any",
    "untagged": "no tags, tags.when_missing is 'reject' and no tagger was given",
    "near_blank": "almost every pixel has the background colour",
    "greyscale": "no colour at all (a monochrome page)",
    "low_saturation": "too few coloured pixels",
    "tinted_monochrome": "every coloured pixel has nearly the same hue (sepia, blue-tone pages)",
    "photo": "a photograph: fine texture nearly everywhere, little flat or smooth shading, few outlines",
    "i2v_rejected": "Illustration2Vec gives a tag in tagger.reject_above a high probability",
    "near_duplicate": "a near-identical copy is kept (the largest; lossless at equal size)",
    "folder_cap": "over the folder's cap (balance.*)",
}


# --------------------------------------------------------------------------------------------------
# Tags


def normalize_tag(tag: str) -> str:
    """Safebooru spelling: lower case, words joined by `_` (Illustration2Vec writes "multiple girls")."""
    return "_".join(str(tag).strip().lower().split())


def normalize_tags(tags: Iterable[str] | str | None) -> list[str]:
    """A sidecar's tags (a list, or one space-separated string) -> sorted unique normalized tags."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = tags.split()
    elif not isinstance(tags, list | tuple | set | frozenset):
        return []
    return sorted({normalize_tag(t) for t in tags if isinstance(t, str) and t.strip()})


@dataclass(frozen=True)
class TagRules:
    """Keep an image only if it has one of `require_any` (when given) and none of `reject`."""

    require_any: tuple[str, ...] = ()
    reject: tuple[str, ...] = ()

    def check(self, tags: Iterable[str], *, source: str = "sidecar") -> Rejection | None:
        present = set(normalize_tags(tags))
        bad = sorted(present & {normalize_tag(t) for t in self.reject})
        if bad:
            return Rejection("tag_rejected", f"{source} tags include {', '.join(bad)}", {"tags": bad})
        required = [normalize_tag(t) for t in self.require_any]
        if required and not present & set(required):
            return Rejection(
                "tag_required", f"{source} tags have none of {', '.join(required)}", {"tags": required}
            )
        return None


# --------------------------------------------------------------------------------------------------
# Pixels


@dataclass(frozen=True)
class PixelRules:
    """Thresholds on what `analyze_image` measured. Chroma is max(R, G, B) - min(R, G, B), 0..255."""

    min_short_side_px: int = 512
    aspect_range: tuple[float, float] = (0.5, 2.0)  # width / height
    grey_chroma_max: float = 12.0  # 99th-percentile chroma at or below this: greyscale (JPEG noise ~5)
    # share of the drawn pixels (unlike the background, or coloured) with chroma >= color_chroma_min;
    # below: low saturation. Of the drawn pixels, not of the canvas: a small coloured drawing on a
    # big white page is coloured (near_blank judges the page).
    min_color_share: float = 0.02
    min_hue_spread_deg: float = 0.0  # > 0: circular std of hue below this is a tinted monochrome page
    min_content_share: float = 0.01  # share of pixels unlike the background colour; below: near blank
    # photo: texture_share >= photo_min_texture_share and flat_share <= photo_max_flat_share and
    # outline_share <= photo_max_outline_share (see `texture_stats`); photo_min_texture_share 0 = off.
    photo_min_texture_share: float = 0.4
    photo_max_flat_share: float = 0.4
    photo_max_outline_share: float = 0.1


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


def check_pixels(stats: ImageStats, rules: PixelRules, *, which: str = "all") -> Rejection | None:
    """The first pixel rule `stats` breaks, or None. `which`: "geometry", "content" or "all"."""
    if which in ("geometry", "all"):
        w, h = stats.width, stats.height
        if min(w, h) < rules.min_short_side_px:
            return Rejection(
                "too_small", f"{w}x{h} px, short side below {rules.min_short_side_px} px", {"size": [w, h]}
            )
        aspect = w / h
        lo, hi = rules.aspect_range
        if not lo <= aspect <= hi:
            return Rejection(
                "aspect", f"{w}x{h} px, width/height {aspect:.2f} outside [{lo:g}, {hi:g}]", {"size": [w, h]}
            )
    if which in ("content", "all"):
        if stats.content_share < rules.min_content_share:
            return Rejection(
                "near_blank",
                f"only {stats.content_share:.2%} of pixels differ from the background "
                f"(minimum {rules.min_content_share:.2%})",
            )
        if stats.chroma_p99 <= rules.grey_chroma_max:
            return Rejection(
                "greyscale",
                f"99th-percentile chroma {stats.chroma_p99:.1f} <= {rules.grey_chroma_max:g}: no colour",
            )
        if stats.color_share < rules.min_color_share:
            return Rejection(
                "low_saturation",
                f"{stats.color_share:.2%} coloured pixels (minimum {rules.min_color_share:.2%})",
            )
        if (
            rules.min_hue_spread_deg > 0
            and stats.hue_spread_deg is not None
            and stats.hue_spread_deg < rules.min_hue_spread_deg
        ):
            return Rejection(
                "tinted_monochrome",
                f"hue spread {stats.hue_spread_deg:.1f} deg < {rules.min_hue_spread_deg:g} deg: one tint",
            )
        if (
            rules.photo_min_texture_share > 0
            and stats.texture_share >= rules.photo_min_texture_share
            and stats.flat_share <= rules.photo_max_flat_share
            and stats.outline_share <= rules.photo_max_outline_share
        ):
            return Rejection(
                "photo",
                f"{stats.texture_share:.0%} of pixels textured (>= {rules.photo_min_texture_share:.0%}), "
                f"{stats.flat_share:.0%} flat or smooth (<= {rules.photo_max_flat_share:.0%}), "
                f"{stats.outline_share:.0%} outlines (<= {rules.photo_max_outline_share:.0%}): a photograph",
            )
    return None


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
    skin, fabric. A drawing is flat fills and smooth gradients bounded by lines. Measured on real
    data (see configs/curate.yaml): openclipart drawings have texture_share below 0.4 or
    flat_share above 0.4, except a wood-grain texture; anime-style JPEGs (q75-92, painted
    backgrounds) stay below 0.32 texture; colour-noise photos with a natural 1/f spectrum reach 0.9+.
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


# --------------------------------------------------------------------------------------------------
# Perceptual hash


def _dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    # Unnormalized DCT-II rows (scipy.fftpack.dct's default); a positive scale per row does not move
    # a coefficient across the median, so the bits equal imagehash's.
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * n_in))


_DCT_8x32 = _dct_matrix(8, 32)


def phash(img: Image.Image) -> int:
    """64-bit perceptual hash, bit for bit `int(str(imagehash.phash(img)), 16)`.

    Grey, LANCZOS to 32x32, 2-D DCT-II, the 8x8 lowest frequencies compared with their median;
    the first coefficient is the most significant bit.
    """
    pixels = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT_8x32 @ pixels @ _DCT_8x32.T).ravel()  # the 8x8 lowest frequencies
    middle = np.sort(low)[31:33].mean()  # the median of 64 values (np.median is 15x slower here)
    return int.from_bytes(np.packbits(low > middle).tobytes(), "big")


def crop_boxes(width: int, height: int, fraction: float) -> list[tuple[int, int, int, int]]:
    """The 8 boxes that cut `fraction` of the width and/or height at one edge or one corner."""
    dx, dy = round(width * fraction), round(height * fraction)
    w, h = width, height
    return [
        (dx, 0, w, h),
        (0, 0, w - dx, h),
        (0, dy, w, h),
        (0, 0, w, h - dy),
        (dx, dy, w, h),
        (0, 0, w - dx, h - dy),
        (dx, 0, w, h - dy),
        (0, dy, w - dx, h),
    ]


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


def crop_hashes(img: Image.Image, fractions: Sequence[float]) -> tuple[int, ...]:
    """pHashes of `img` cropped at each edge and corner by each fraction (8 per fraction)."""
    grey_img = img.convert("L")  # once, not per crop
    return tuple(
        phash(grey_img.crop(box)) for f in fractions for box in crop_boxes(grey_img.width, grey_img.height, f)
    )


# --------------------------------------------------------------------------------------------------
# One file


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
# Hamming-distance search over 64-bit hashes


def popcount64(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (NumPy >= 2 has it built in; a byte table otherwise)."""
    x = np.asarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    table = np.array([bin(i).count("1") for i in range(256)], np.int64)
    return table[x.reshape(-1, 1).view(np.uint8)].sum(1).reshape(x.shape)


def to_uint64(values: Iterable[int]) -> np.ndarray:
    return np.fromiter((int(v) & 0xFFFFFFFFFFFFFFFF for v in values), dtype=np.uint64)


_TABLE_MAX_BITS = 22  # chunks this narrow get a start table (4M entries, 16 MB at most)


def _split_bits(n_chunks: int, n_bits: int = 64) -> list[tuple[int, int]]:
    """`n_chunks` (shift, width) pieces of a word, widths as equal as possible."""
    base, extra = divmod(n_bits, n_chunks)
    out, shift = [], 0
    for i in range(n_chunks):
        width = base + (1 if i < extra else 0)
        out.append((shift, width))
        shift += width
    return out


def _masks_within(width: int, radius: int) -> np.ndarray:
    """All `width`-bit words with at most `radius` bits set (the probes around a chunk)."""
    masks = [0]
    for r in range(1, radius + 1):
        masks.extend(sum(1 << b for b in bits) for bits in combinations(range(width), r))
    return np.array(masks, dtype=np.uint64)


def choose_chunks(n: int, radius: int) -> int:
    """The number of chunks with the least expected work per query, for well-spread hashes.

    Work = probes (table lookups, measured here at about 2.2 candidate checks each; binary searches
    for chunks too wide for a table, about 10) + candidates (stored hashes sharing a probed chunk).
    """
    best, best_cost = 1, math.inf
    for m in range(1, min(radius + 1, 16) + 1):
        widths = [w for _, w in _split_bits(m)]
        if max(widths) > 32:
            continue
        sub = radius // m
        cost = 0.0
        for w in widths:
            probes = sum(math.comb(w, i) for i in range(sub + 1))
            cost += probes * (2.2 if w <= _TABLE_MAX_BITS else 10.0) + probes * n / 2.0**w
        if cost < best_cost:
            best, best_cost = m, cost
    return best


class HammingIndex:
    """Every stored 64-bit hash within `radius` bits of a query, without comparing against all.

    Multi-index hashing (Norouzi, Punjani & Fleet, CVPR 2012): the 64 bits are cut into m chunks;
    two hashes within r bits differ in at most floor(r / m) bits on at least one chunk
    (pigeonhole), so the candidates are the stored hashes whose chunk equals one of the query's
    chunk with up to floor(r / m) bits flipped, found by binary search in a sorted copy of each
    chunk. Candidates are then checked on all 64 bits, so the answer is exact: the same pairs as
    comparing everything, at a cost that grows with n log n for well-spread hashes.
    """

    def __init__(self, hashes: np.ndarray | Sequence[int], *, radius: int, chunks: int | None = None):
        if not 0 <= radius < 64:
            raise ValueError(f"radius must be in [0, 63] bits, got {radius}")
        self.hashes = np.ascontiguousarray(
            hashes if isinstance(hashes, np.ndarray) else to_uint64(hashes), dtype=np.uint64
        )
        self.radius = radius
        self.chunks = _split_bits(chunks or choose_chunks(len(self.hashes), radius))
        self.sub_radius = radius // len(self.chunks)
        self._sorted: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        self._probes: list[np.ndarray] = []
        for shift, width in self.chunks:
            values = (self.hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
            order = np.argsort(values, kind="stable")
            starts = None
            if width <= _TABLE_MAX_BITS:
                # A table of where each chunk value starts: a probe is two gathers, not a binary search.
                counts = np.bincount(values.astype(np.int64), minlength=1 << width)
                starts = np.zeros((1 << width) + 1, np.int64 if len(values) >= 2**31 else np.int32)
                np.cumsum(counts, out=starts[1:])
            self._sorted.append((values[order], order, starts))
            self._probes.append(_masks_within(width, self.sub_radius))

    def __len__(self) -> int:
        return len(self.hashes)

    def search(
        self, queries: np.ndarray | Sequence[int], *, block: int = 2048, budget: int = 1 << 22
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (query index, stored index, distance) with distance <= radius, sorted, no repeats.

        Memory stays bounded: queries go `block` at a time, and candidates are expanded at most
        `budget` at a time even when many stored hashes share a chunk (pictures alike in layout).
        """
        queries = np.ascontiguousarray(
            queries if isinstance(queries, np.ndarray) else to_uint64(queries), dtype=np.uint64
        )
        found_q, found_j = [], []
        for start in range(0, len(queries), block):
            q_block = queries[start : start + block]
            for (shift, width), (values, order, starts), probes in zip(
                self.chunks, self._sorted, self._probes, strict=True
            ):
                chunk = (q_block >> np.uint64(shift)) & np.uint64((1 << width) - 1)
                wanted = (chunk[:, None] ^ probes[None, :]).ravel()  # (B * P,)
                if starts is not None:
                    wanted = wanted.astype(np.int64)
                    lo = starts[wanted].astype(np.int64)
                    counts = starts[wanted + 1] - lo
                else:
                    lo = np.searchsorted(values, wanted, side="left")
                    counts = np.searchsorted(values, wanted, side="right") - lo
                hit = np.flatnonzero(counts)
                if len(hit) == 0:
                    continue
                lo, counts = lo[hit], counts[hit]
                owner = hit // len(probes)  # query (within the block) of each probe
                ends = np.cumsum(counts)
                cuts = np.searchsorted(ends, np.arange(budget, ends[-1], budget), side="left")
                for a, b in zip(np.r_[0, cuts + 1], np.r_[cuts + 1, len(hit)], strict=True):
                    if a >= b:
                        continue
                    c = counts[a:b]
                    first = np.repeat(lo[a:b] - (np.cumsum(c) - c), c) + np.arange(c.sum())
                    j = order[first]
                    q = np.repeat(owner[a:b], c)
                    near = popcount64(q_block[q] ^ self.hashes[j]) <= self.radius
                    found_q.append(q[near] + start)
                    found_j.append(j[near])
        if not found_q:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        q = np.concatenate(found_q).astype(np.int64)
        j = np.concatenate(found_j).astype(np.int64)
        key = np.unique(q * max(len(self.hashes), 1) + j)
        q, j = np.divmod(key, max(len(self.hashes), 1))
        return q, j, popcount64(queries[q] ^ self.hashes[j])

    def query(self, h: int) -> list[tuple[int, int]]:
        """(stored index, distance) of every stored hash within `radius` of `h`, nearest first."""
        _, j, d = self.search(to_uint64([h]))
        return sorted(zip(j.tolist(), d.tolist(), strict=True), key=lambda t: (t[1], t[0]))


def brute_force_pairs(hashes: np.ndarray, radius: int, *, block: int = 1024) -> set[tuple[int, int]]:
    """All (i, j), i < j, within `radius`, by comparing every pair: the reference for tests/benchmarks."""
    out: set[tuple[int, int]] = set()
    for start in range(0, len(hashes), block):
        d = popcount64(hashes[start : start + block, None] ^ hashes[None, :])
        qi, j = np.nonzero(d <= radius)
        out.update((int(a + start), int(b)) for a, b in zip(qi, j, strict=True) if a + start < b)
    return out


def near_duplicate_pairs(
    hashes: Sequence[int], crops: Sequence[Sequence[int]], radius: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j, distance), i < j, whose pHashes are within `radius`, also via crop hashes.

    Image i's crop hashes are matched against every image's full hash: a copy of i cropped 5% at a
    corner hashes like i's own 5%-corner crop. Distance is the smallest found for the pair.
    """
    n = len(hashes)
    full = to_uint64(hashes)
    index = HammingIndex(full, radius=radius)
    owners = [np.arange(n)]
    queries = [full]
    width = max((len(c) for c in crops), default=0)
    if width:
        flat = [(i, h) for i, cs in enumerate(crops) for h in cs]
        owners.append(np.fromiter((i for i, _ in flat), np.int64, len(flat)))
        queries.append(to_uint64(h for _, h in flat))
    owner = np.concatenate(owners)
    q, j, d = index.search(np.concatenate(queries))
    i = owner[q]
    keep = i != j
    a, b, d = np.minimum(i, j)[keep], np.maximum(i, j)[keep], d[keep]
    if len(a) == 0:
        return a, b, d
    order = np.lexsort((d, b, a))
    a, b, d = a[order], b[order], d[order]
    first = np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])]
    return a[first], b[first], d[first]


def group_labels(n: int, pairs_a: Iterable[int], pairs_b: Iterable[int]) -> list[int]:
    """Connected components of the pair graph (union-find): a label per item, the smallest member."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(pairs_a, pairs_b, strict=True):
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]
