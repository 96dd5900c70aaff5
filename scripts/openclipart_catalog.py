#!/usr/bin/env python3
"""Turn Debian's openclipart-png into a Safebooru-style catalog that `crawler serve-local` serves.

    apt-get download openclipart-png && dpkg-deb -x openclipart-png_*.deb /tmp/oc
    python scripts/openclipart_catalog.py /tmp/oc/usr/share/openclipart/png data/openclipart-catalog
    crawler serve-local data/openclipart-catalog --port 8000 &
    crawler crawl people animals --base-url http://127.0.0.1:8000 --rate 0 --out data/raw

Each drawing is composited on white (openclipart PNGs are mostly transparent) and written as
`OUT/<category>/<sub>/<name>.png` (at most 2048 px a side) with a sidecar `<name>.json`: a post id, tags from the folder names and
the words of the file name (`people/clothing/hats/red_hat_01.png` -> people, clothing, hats, red, hat),
rating "general" and the source path. Ids follow the sorted paths, so the catalog is the same on every
machine. Unreadable files are skipped and counted; re-running skips drawings already written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

# The demo model's categories: all but five, which it never sees (the README's pictures and the app's examples
# come from those).
UNSEEN_CATEGORIES = ("buildings", "education", "electronics", "office", "tools")
TRAIN_CATEGORIES = (
    "animals", "buttons", "computer", "containers", "decorations", "food", "geography", "logos", "people",
    "plants", "recreation", "science", "shapes", "signs_and_symbols", "special", "transportation", "unsorted",
)  # fmt: skip
MAX_PIXELS = 40_000_000  # larger drawings are skipped (a few flags and signs of 100+ megapixels)
MAX_SIDE_PX = 2048  # larger ones are scaled down, as an image board's full-size files would be


def tags_for(rel: Path) -> list[str]:
    """Tags of a drawing at `rel` (relative to the openclipart root): folders, then file-name words."""
    tags: list[str] = [part.lower() for part in rel.parent.parts]
    for word in re.split(r"[^a-z]+", rel.stem.lower()):
        if len(word) > 1 and word not in tags:
            tags.append(word)
    return tags


def on_white(src: Path) -> Image.Image:
    """The drawing as RGB on a white background, whatever its mode (RGBA, LA, P with transparency, ...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # palette-transparency notices: handled by the RGBA conversion
        with Image.open(src) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ValueError(f"{img.width}x{img.height} is too large")
            img.load()
            rgba = img.convert("RGBA")
    if max(rgba.size) > MAX_SIDE_PX:
        rgba.thumbnail((MAX_SIDE_PX, MAX_SIDE_PX), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def convert(job: tuple[str, str, str, int]) -> str | None:
    """Write one drawing and its sidecar; returns an error message or None."""
    src, out, rel, post_id = job
    dest = Path(out) / rel
    sidecar = dest.with_suffix(".json")
    if dest.is_file() and sidecar.is_file():
        return None
    try:
        image = on_white(Path(src))
    except Exception as e:  # a damaged file in the package must not stop the catalog
        return f"{rel}: {e}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    image.save(tmp, format="PNG")
    meta = {
        "id": post_id,
        "tags": tags_for(Path(rel)),
        "rating": "general",
        "source": f"openclipart-png (Debian, public domain): {rel}",
    }
    sidecar.write_text(json.dumps(meta) + "\n", encoding="utf-8")
    os.replace(tmp, dest)  # the image appears last: a half-done drawing is redone on the next run
    return None


def build_catalog(
    src: Path,
    out: Path,
    *,
    categories: tuple[str, ...] | None = None,
    per_category: int = 0,
    workers: int = 0,
) -> tuple[int, list[str]]:
    """Convert the drawings under `src`; returns (drawings in the catalog, error messages)."""
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: not a folder (the png/ folder of openclipart-png)")
    all_files = sorted(p for p in src.rglob("*.png") if p.is_file())
    if not all_files:
        raise FileNotFoundError(f"{src}: no PNG files under it")
    jobs: list[tuple[str, str, str, int]] = []
    taken: dict[str, int] = {}
    for post_id, path in enumerate(all_files, start=1):  # ids over the whole package: stable subsets
        rel = path.relative_to(src)
        category = rel.parts[0] if len(rel.parts) > 1 else "unsorted"
        if categories and category not in categories:
            continue
        if per_category and taken.get(category, 0) >= per_category:
            continue
        taken[category] = taken.get(category, 0) + 1
        jobs.append((str(path), str(out), str(rel), post_id))
    if not jobs:
        raise ValueError(f"no drawings in the categories {', '.join(categories or ())} under {src}")
    workers = workers or min(8, os.cpu_count() or 1)
    if workers == 1:
        errors = [e for e in map(convert, jobs) if e]
    else:
        with ProcessPoolExecutor(workers) as pool:
            errors = [e for e in pool.map(convert, jobs, chunksize=16) if e]
    return len(jobs) - len(errors), errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="openclipart's png/ folder (category sub-folders)")
    p.add_argument("out", type=Path, help="where the catalog goes")
    p.add_argument("--categories", default="", help="comma-separated top-level folders (default: all); "
                   f"'train' = {','.join(TRAIN_CATEGORIES)}")  # fmt: skip
    p.add_argument("--per-category", type=int, default=0, metavar="N", help="at most N drawings per category")
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per core, at most 8)")
    args = p.parse_args(argv)
    names = [c.strip() for c in args.categories.split(",") if c.strip()]
    if names == ["train"]:
        names = list(TRAIN_CATEGORIES)
    try:
        n, errors = build_catalog(
            args.src, args.out, categories=tuple(names) or None, per_category=args.per_category,
            workers=args.workers,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        print(f"openclipart_catalog: {e}", file=sys.stderr)
        return 2
    for e in errors:
        print(f"skipped {e}", file=sys.stderr)
    print(f"{n} drawings in {args.out} ({len(errors)} skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
