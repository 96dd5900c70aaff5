"""Every setting of `crawler filter` and its default; configs/curate.yaml and `--set KEY=VALUE` override.

Loaded by the typed-config machinery the model side uses too (`typedconfig`): unknown keys and wrong
types are errors that name the key.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from typedconfig import ConfigError, load


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
    # max_outline outlines (crawler.curation.measure.texture_stats); photo_min_texture_share 0 = off.
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


def load_curate_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> CurateConfig:
    """Defaults <- YAML file (overrides only) <- `KEY=VALUE` overrides, type-checked and validated."""
    return validate(load(CurateConfig, path, overrides))
