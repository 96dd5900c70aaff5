"""Benchmark: training samples per second through the real data pipeline.

What a training run does for every sample: decode a source image, random resized crop + flip +
rotation, randomized line art (XDoG / dilate-difference), simulated hints, normalization, batching
in a DataLoader with worker processes. Source images are drawings made here (filled shapes with
outlines, like flat-colored line art), saved at 512 px as JPEG (what Safebooru mostly serves) and
as PNG.

    .venv/bin/python bench/data_pipeline.py                    # 256x256 crops, 2 workers, JPEG and PNG
    .venv/bin/python bench/data_pipeline.py --workers 0 --format jpg --samples 400

Prints one line a setting and the median of the repeats; the figures go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from colorizer.config import load_config  # noqa: E402
from colorizer.data import ColorizationDataset, make_loader  # noqa: E402


def make_source_images(folder: Path, count: int, size_px: int, fmt: str) -> None:
    """`count` flat-colored drawings with black outlines, `size_px` on the long side, some non-square."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        h, w = (size_px, size_px) if i % 3 else (size_px, int(size_px * 0.75))
        img = np.full((h, w, 3), 255, np.uint8)
        for _ in range(25):
            color = tuple(int(v) for v in rng.integers(20, 235, 3))
            center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(10, w // 4)), int(rng.integers(10, h // 4)))
            angle = float(rng.uniform(0, 180))
            cv2.ellipse(img, center, axes, angle, 0, 360, color, -1, cv2.LINE_AA)
            cv2.ellipse(img, center, axes, angle, 0, 360, (0, 0, 0), 2, cv2.LINE_AA)
        path = folder / f"{i:04d}.{fmt}"
        if fmt == "jpg":
            Image.fromarray(img).save(path, quality=92)
        else:
            Image.fromarray(img).save(path)


def run_once(source: Path, *, size_px: int, workers: int, batch_size: int, samples: int, seed: int) -> float:
    cfg = load_config(
        ROOT / "configs" / "default.yaml",
        [f"data.source={source}", f"data.height_px={size_px}", f"data.width_px={size_px}", f"seed={seed}"],
    )
    dataset = ColorizationDataset(cfg)
    loader = make_loader(dataset, batch_size=batch_size, workers=workers, seed=seed, epochs=None)
    it = iter(loader)
    next(it)  # workers started and warm: a training run pays this once, not per sample
    seen = 0
    t0 = time.perf_counter()
    while seen < samples:
        seen += next(it)["color"].shape[0]
    elapsed = time.perf_counter() - t0
    del it
    return seen / elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256, help="crop size the model sees (default 256)")
    p.add_argument(
        "--source-size", type=int, default=512, help="long side of the source images (default 512)"
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--samples", type=int, default=1600, help="samples timed per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--images", type=int, default=200, help="distinct source images")
    p.add_argument("--format", choices=["jpg", "png", "both"], default="both")
    args = p.parse_args(argv)

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"OpenCV {cv2.__version__}"
    )
    formats = ["jpg", "png"] if args.format == "both" else [args.format]
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats:
            folder = Path(tmp) / fmt
            make_source_images(folder, args.images, args.source_size, fmt)
            rates = [
                run_once(
                    folder,
                    size_px=args.size,
                    workers=args.workers,
                    batch_size=args.batch_size,
                    samples=args.samples,
                    seed=r,
                )
                for r in range(args.repeats)
            ]
            print(
                f"{fmt:>4} sources {args.source_size}px -> {args.size}x{args.size}, workers={args.workers}, "
                f"batch={args.batch_size}: median {statistics.median(rates):.0f} samples/s "
                f"(runs: {', '.join(f'{r:.0f}' for r in rates)})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
