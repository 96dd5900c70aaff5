"""Which crawled files may become training images: one function per kind of rule, and the reason codes.

A rule reads what was measured of a file (`measure.ImageStats`) or its tags, with its thresholds from
`config` (configs/curate.yaml), and returns a `Rejection` or None. Another rule: a check here, its
reason code in `REASONS`, its settings in `config.py`, and a call in `stages.rules`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .config import PixelsConfig, TagsConfig
from .measure import ImageStats


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


def check_tags(tags: Iterable[str], rules: TagsConfig, *, source: str = "sidecar") -> Rejection | None:
    """Keep an image only if it has one of `rules.require_any` (when given) and none of `rules.reject`."""
    present = set(normalize_tags(tags))
    bad = sorted(present & {normalize_tag(t) for t in rules.reject})
    if bad:
        return Rejection("tag_rejected", f"{source} tags include {', '.join(bad)}", {"tags": bad})
    required = [normalize_tag(t) for t in rules.require_any]
    if required and not present & set(required):
        return Rejection(
            "tag_required", f"{source} tags have none of {', '.join(required)}", {"tags": required}
        )
    return None


def check_pixels(stats: ImageStats, rules: PixelsConfig, *, which: str = "all") -> Rejection | None:
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
