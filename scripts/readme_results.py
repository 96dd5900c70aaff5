#!/usr/bin/env python3
"""The README's results figure: sketch | hints | output with hints | output without hints, one row a sketch.

    python scripts/readme_results.py weights/ docs/results.png LINE.png:COLOR.png ... [--dots 12]

Each item is real line art and its color twin (`LINE:COLOR`), or a color drawing alone (its line art is
extracted, as the app does). The hints are what a user paints: a few round dots (radius 4 px) of the color
twin's color at drawn (non-white) places chosen with a fixed seed, on a transparent layer; they go through
`Colorizer.colorize`, the same path as the app and `colorizer colorize`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from colorizer.data import load_rgb  # noqa: E402
from colorizer.inference import Colorizer, sketch_to_lines  # noqa: E402


def paint_dots(color: np.ndarray, count: int, rng: np.random.Generator, radius: int = 4) -> np.ndarray:
    """An RGBA hint layer: `count` dots of `color`'s local color on its drawn (not white, not black) pixels."""
    h, w = color.shape[:2]
    chroma = color.max(axis=2).astype(int) - color.min(axis=2).astype(int)
    ys, xs = np.nonzero((color.min(axis=2) < 235) & ((chroma > 30) | (color.max(axis=2) > 60)))
    layer = np.zeros((h, w, 4), np.uint8)
    if len(ys) == 0:
        return layer
    for k in rng.choice(len(ys), size=min(count, len(ys)), replace=False):
        y, x = int(ys[k]), int(xs[k])
        c = color[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].reshape(-1, 3).mean(0)
        cv2.circle(layer, (x, y), radius, (*[int(v) for v in c], 255), thickness=-1)
    return layer


def tile(img: np.ndarray, px: int) -> Image.Image:
    im = Image.fromarray(img)
    im.thumbnail((px, px), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (px, px), (255, 255, 255))
    canvas.paste(im.convert("RGB"), ((px - im.width) // 2, (px - im.height) // 2))
    return canvas


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs=1)
    p.add_argument("out", type=Path)
    p.add_argument("items", nargs="+", help="LINE:COLOR pairs or single color drawings")
    p.add_argument("--dots", type=int, default=12)
    p.add_argument("--tile", type=int, default=160)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model = Colorizer.load(args.model)
    rows = []
    for k, item in enumerate(args.items):
        line_path, _, color_path = item.partition(":")
        color = load_rgb(color_path or line_path, max_side_px=1024)
        if color_path:
            sketch = load_rgb(line_path, max_side_px=1024)
            sketch = cv2.resize(sketch, (color.shape[1], color.shape[0]), interpolation=cv2.INTER_AREA)
        else:
            sketch = (sketch_to_lines(color, "extract") * 255).astype(np.uint8)
            sketch = np.repeat(sketch[..., None], 3, axis=2)
        layer = paint_dots(color, args.dots, np.random.default_rng([args.seed, k]))
        with_hints = model.colorize(Image.fromarray(sketch), Image.fromarray(layer, "RGBA"),
                                    resolution=args.resolution, lineart="as-is")  # fmt: skip
        without = model.colorize(Image.fromarray(sketch), resolution=args.resolution, lineart="as-is")
        shown = sketch.copy()
        alpha = layer[..., 3:4].astype(np.float32) / 255
        shown = (shown * (1 - alpha) + layer[..., :3] * alpha).astype(np.uint8)
        rows.append([tile(sketch, args.tile), tile(shown, args.tile), tile(np.asarray(with_hints), args.tile),
                     tile(np.asarray(without), args.tile)])  # fmt: skip
    labels = ["sketch", "hints", "output", "output, no hints"]
    pad, head = 4, 18
    fig = Image.new(
        "RGB", (4 * args.tile + 5 * pad, head + len(rows) * (args.tile + pad) + pad), (255, 255, 255)
    )
    draw = ImageDraw.Draw(fig)
    for j, label in enumerate(labels):
        draw.text((pad + j * (args.tile + pad) + 4, 3), label, fill=(0, 0, 0))
    for i, row in enumerate(rows):
        for j, t in enumerate(row):
            fig.paste(t, (pad + j * (args.tile + pad), head + i * (args.tile + pad)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.save(args.out, optimize=True)
    print(f"wrote {args.out} ({fig.width}x{fig.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
