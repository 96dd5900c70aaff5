#!/usr/bin/env python3
"""Real line art with its color twin, for `colorizer evaluate --lineart OUT/black --data OUT/color`.

    npm pack openmoji@17.0.0 && tar xzf openmoji-17.0.0.tgz          # -> package/color/svg, package/black/svg
    python scripts/openmoji_pairs.py package data/openmoji --size 256 --count 300

OpenMoji's designers drew every emoji twice: in color (`color/svg/X.svg`) and as black line art
(`black/svg/X.svg`). Both are rasterized with Debian's `rsvg-convert` (package librsvg2-bin) at the same size on
white. `--count` takes evenly spaced emoji from the sorted list, so the subset is the same everywhere.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def render(svg: Path, png: Path, size: int) -> str | None:
    if png.is_file():
        return None
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(png.name + ".tmp")
    r = subprocess.run(
        ["rsvg-convert", "-w", str(size), "-h", str(size), "-b", "white", "-f", "png", str(svg), "-o", str(tmp)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        return f"{svg}: {r.stderr.strip()[:200]}"
    os.replace(tmp, png)
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "package", type=Path, help="the unpacked openmoji npm package (holds color/svg and black/svg)"
    )
    p.add_argument("out", type=Path)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--count", type=int, default=300, help="how many pairs (0: all)")
    args = p.parse_args(argv)
    if shutil.which("rsvg-convert") is None:
        print("openmoji_pairs: rsvg-convert not found; apt-get install librsvg2-bin", file=sys.stderr)
        return 2
    color, black = args.package / "color" / "svg", args.package / "black" / "svg"
    if not color.is_dir() or not black.is_dir():
        print(f"openmoji_pairs: {args.package} has no color/svg and black/svg", file=sys.stderr)
        return 2
    names = sorted(x.name for x in color.glob("*.svg") if (black / x.name).is_file())
    if args.count and args.count < len(names):
        names = [names[round(i * (len(names) - 1) / (args.count - 1))] for i in range(args.count)]
    jobs = [
        (d / "svg" / n, args.out / d.name / (n[:-4] + ".png"))
        for n in names
        for d in (color.parent, black.parent)
    ]
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        errors = [e for e in pool.map(lambda j: render(j[0], j[1], args.size), jobs) if e]
    for e in errors:
        print(f"skipped {e}", file=sys.stderr)
    print(f"{len(names)} pairs in {args.out}/black and {args.out}/color ({len(errors)} files failed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
