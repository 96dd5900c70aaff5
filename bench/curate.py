"""Benchmark: `crawler filter` throughput, and the near-duplicate index against comparing every pair.

1. Filtering: a crawl of 512-pixel drawings made here (JPEG q92 and PNG, sidecars, a few exact and
   near duplicates) through `crawler.curation.curate`, the whole run (scan, decode, measure, hash,
   rules, dedup, split, hard links, manifest): cold with 1 process and with one per core, and warm
   (every measurement from the cache, what a re-run after a small crawl update costs).
2. Dedup index: 100,000 random 64-bit hashes with 5% planted near copies (0-8 bits flipped);
   `HammingIndex` build + query of every hash (radius 8), and the same with the 8 crop hashes per
   image that `crawler filter` also queries; against the brute force (XOR + popcount of all pairs,
   NumPy), timed on a slice of queries and extrapolated. The index's answer is checked against the
   brute force on that slice.

    .venv/bin/python bench/curate.py                          # 400 images, 100,000 hashes
    .venv/bin/python bench/curate.py --images 100 --hashes 20000 --no-save   # a smoke run
    .venv/bin/python bench/curate.py --src /path/to/pngs --no-save           # the filter on real files

Prints a Markdown table and writes it, with the command and the machine, to bench/results/curate.txt.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crawler.curation import curate, load_curate_config  # noqa: E402
from crawler.curation.measure import IMAGE_EXTENSIONS, analyze_image  # noqa: E402
from crawler.curation.phash import HammingIndex, near_duplicate_pairs, popcount64  # noqa: E402


def drawing(h: int, w: int, rng: np.random.Generator) -> Image.Image:
    """Flat-coloured shapes with dark outlines on tinted paper, plus a little grain (JPEGs look real)."""
    img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(215, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(30):
        x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        x1, y1 = x0 + int(rng.integers(w // 10, w // 2)), y0 + int(rng.integers(h // 10, h // 2))
        fill = tuple(int(v) for v in rng.integers(20, 240, 3))
        draw.ellipse((x0, y0, x1, y1), fill=fill, outline=(20, 20, 20), width=2)
    grain = rng.normal(0, 3, (h, w, 1))
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + grain, 0, 255).astype(np.uint8))


def make_crawl(root: Path, count: int, size_px: int) -> int:
    """`count` posts in 4 tag folders; 5% exact copies in a second folder, 5% re-encoded near copies."""
    rng = np.random.default_rng(0)
    files = 0
    prev = None
    for i in range(count):
        folder = root / f"tag_{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = (size_px, size_px) if i % 3 else (size_px, size_px * 3 // 4)
        img = drawing(h, w, rng)
        if i % 20 == 19 and prev is not None:  # a near copy of the post before: smaller, re-encoded
            img = prev.resize((prev.width * 4 // 5, prev.height * 4 // 5), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        if i % 10 < 7 or i % 20 == 19:
            img.save(buf, "JPEG", quality=92)
            ext = ".jpg"
        else:
            img.save(buf, "PNG")
            ext = ".png"
        prev = img
        data = buf.getvalue()
        path = folder / f"{1000 + i}{ext}"
        path.write_bytes(data)
        md5 = hashlib.md5(data).hexdigest()
        sidecar = {
            "id": 1000 + i,
            "md5": md5,
            "tags": ["1girl", "solo"],
            "rating": "general",
            "query": folder.name,
        }
        path.with_suffix(".json").write_text(json.dumps(sidecar))
        files += 1
        if i % 20 == 7:  # found again by another query: a hard link + sidecar
            other = root / f"tag_{(i + 1) % 4}"
            other.mkdir(parents=True, exist_ok=True)
            os.link(path, other / path.name)
            (other / f"{1000 + i}.json").write_text(json.dumps(sidecar))
            files += 1
    return files


def bench_filter(count: int, size_px: int, cores: int, real_src: Path | None = None) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if real_src is None:
            src = Path(tmp) / "raw"
            files = make_crawl(src, count, size_px)
        else:  # a real folder (a crawl, or e.g. Debian's openclipart PNGs): read, never written
            src = real_src
            files = sum(1 for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        one = sorted(src.glob("tag_0/*.jpg"))[:40] if real_src is None else sorted(src.rglob("*.png"))[:40]
        t = time.perf_counter()
        for p in one:
            analyze_image(p)
        per_image_ms = (time.perf_counter() - t) / len(one) * 1000
        rows.append(
            {
                "what": "analyze_image alone, " + (f"{size_px}px JPEG" if real_src is None else "real PNG"),
                "setting": "1 process",
                "files": len(one),
                "seconds": per_image_ms * len(one) / 1000,
                "rate": 1000 / per_image_ms,
            }
        )
        for workers in sorted({1, cores}):
            cfg = load_curate_config(None, [f"workers={workers}", f"pixels.min_short_side_px={size_px // 2}"])
            dest = Path(tmp) / f"out{workers}"
            t = time.perf_counter()
            result = curate(src, dest, cfg)
            dt = time.perf_counter() - t
            rows.append(
                {
                    "what": "crawler filter, cold cache",
                    "setting": f"{workers} process{'es' if workers > 1 else ''}",
                    "files": files,
                    "seconds": dt,
                    "rate": files / dt,
                    "note": f"{len(result.kept)} kept, {len(result.rejected)} left out",
                }
            )
        t = time.perf_counter()
        result = curate(src, dest, cfg)
        dt = time.perf_counter() - t
        assert result.measured == 0
        rows.append(
            {
                "what": "crawler filter, warm cache (re-run)",
                "setting": f"{cores} processes",
                "files": files,
                "seconds": dt,
                "rate": files / dt,
            }
        )
    return rows


def planted_hashes(n: int, radius: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    n_copies = n // 20
    sources = rng.integers(0, n - n_copies, n_copies)
    for k, s in enumerate(sources):
        v = int(h[s])
        for bit in rng.choice(64, int(rng.integers(0, radius + 1)), replace=False):
            v ^= 1 << int(bit)
        h[n - n_copies + k] = v
    return h


def bench_index(n: int, radius: int, brute_queries: int) -> list[dict]:
    hashes = planted_hashes(n, radius)
    rows = []
    t = time.perf_counter()
    index = HammingIndex(hashes, radius=radius)
    build = time.perf_counter() - t
    t = time.perf_counter()
    q, j, _ = index.search(hashes)
    query = time.perf_counter() - t
    pairs = int(np.sum(q < j))
    rows.append(
        {
            "what": f"HammingIndex, {len(index.chunks)} chunks",
            "setting": f"build, {n:,} hashes",
            "files": n,
            "seconds": build,
            "rate": n / build,
        }
    )
    rows.append(
        {
            "what": f"HammingIndex, {len(index.chunks)} chunks",
            "setting": f"query all, radius {radius}",
            "files": n,
            "seconds": query,
            "rate": n / query,
            "note": f"{pairs:,} pairs found",
        }
    )
    rng = np.random.default_rng(1)
    crops = [tuple(int(x) for x in rng.integers(0, 2**63, 8, dtype=np.uint64)) for _ in range(n)]
    t = time.perf_counter()
    a, _, _ = near_duplicate_pairs(hashes.tolist(), crops, radius)
    with_crops = time.perf_counter() - t
    rows.append(
        {
            "what": "near_duplicate_pairs (as crawler filter)",
            "setting": f"build + {9 * n:,} queries (8 crops each)",
            "files": n,
            "seconds": with_crops,
            "rate": n / with_crops,
            "note": f"{len(a):,} pairs",
        }
    )
    # Brute force on a slice, extrapolated; and the index's answer checked on that slice.
    sl = hashes[:brute_queries]
    t = time.perf_counter()
    found = set()
    for start in range(0, brute_queries, 500):
        d = popcount64(sl[start : start + 500, None] ^ hashes[None, :])
        qi, jj = np.nonzero(d <= radius)
        found.update(zip((qi + start).tolist(), jj.tolist(), strict=True))
    brute = (time.perf_counter() - t) * n / brute_queries
    mine = {(a, b) for a, b in zip(q.tolist(), j.tolist(), strict=True) if a < brute_queries}
    assert mine == found, "the index and the brute force disagree"
    rows.append(
        {
            "what": "brute force (NumPy XOR + popcount)",
            "setting": f"query all, extrapolated from {brute_queries:,}",
            "files": n,
            "seconds": brute,
            "rate": n / brute,
            "note": f"{brute / (build + query):.0f}x the index; answers equal on the slice",
        }
    )
    return rows


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import PIL

    return (
        f"{cpu}, {cores} cores, {platform.system()} {platform.machine()}, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, Pillow {PIL.__version__}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--size", type=int, default=512, help="long side of the drawings, px")
    ap.add_argument("--hashes", type=int, default=100_000)
    ap.add_argument("--radius", type=int, default=8)
    ap.add_argument("--brute-queries", type=int, default=2000)
    ap.add_argument(
        "--src", type=Path, help="time the filter on this folder of images instead of drawings made here"
    )
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    rows = bench_filter(args.images, args.size, cores, args.src) + bench_index(
        args.hashes, args.radius, args.brute_queries
    )
    lines = [
        "| what | setting | items | seconds | items/s | note |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['what']} | {r['setting']} | {r['files']:,} | {r['seconds']:.2f} | {r['rate']:,.0f} | {r.get('note', '')} |"
        )
    table = "\n".join(lines)
    print(table)
    if not args.no_save:
        out = ROOT / "bench" / "results" / "curate.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        command = ".venv/bin/python bench/curate.py " + shlex.join(sys.argv[1:])
        header = [
            f"# {machine()}",
            f"# {datetime.date.today().isoformat()}: {command.strip()}",
            (
                f"# filter on {args.src}; "
                if args.src
                else f"# {args.images} drawings of {args.size} px (70% JPEG q92, 30% PNG) in 4 tag folders; "
            )
            + f"{args.hashes:,} random hashes, 5% planted near copies, radius {args.radius}",
            "",
        ]
        out.write_text("\n".join(header) + table + "\n")
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
