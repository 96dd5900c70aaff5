#!/usr/bin/env python3
"""The README's results figure, one row a drawing: sketch | hints | flat | soft | flat without hints | the artist's.

    python scripts/readme_results.py weights/ docs/results.png LINE.png:COLOR.png ... [--dots 12]

Each item is real line art and its color twin (`LINE:COLOR`), or a color drawing alone (its line art is
extracted, as the app does). The hints are what a user paints: a few round dots of the artist's colors on
colored pixels off the lines (`colorizer evaluate`'s placement), fixed seed, on a transparent layer; everything
goes through `Colorizer.colorize` at its default settings, the same path as the app and `colorizer colorize`.
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
from colorizer.evaluate import hint_dots  # noqa: E402
from colorizer.inference import Colorizer, sketch_to_lines  # noqa: E402


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
    p.add_argument("--size", type=int, default=384, help="longer side the drawings are brought to first (px)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model = Colorizer.load(args.model)
    rows = []
    for k, item in enumerate(args.items):
        line_path, _, color_path = item.partition(":")
        color = load_rgb(color_path or line_path, max_side_px=args.size)
        if color_path:
            sketch = load_rgb(line_path, max_side_px=args.size)
            sketch = cv2.resize(sketch, (color.shape[1], color.shape[0]), interpolation=cv2.INTER_AREA)
        else:
            sketch = (sketch_to_lines(color, "extract") * 255).astype(np.uint8)
            sketch = np.repeat(sketch[..., None], 3, axis=2)
        lines = sketch_to_lines(sketch, "as-is")
        radius = max(2, round(3 * max(color.shape[:2]) / 384))
        layer = hint_dots(color, lines, args.dots, np.random.default_rng([args.seed, k]), radius_px=radius)
        hints = Image.fromarray(layer, "RGBA")
        image = Image.fromarray(sketch)
        flat = model.colorize(image, hints, mode="flat", lineart="as-is")
        soft = model.colorize(image, hints, mode="soft", lineart="as-is")
        plain = model.colorize(image, mode="flat", lineart="as-is")
        alpha = layer[..., 3:4].astype(np.float32) / 255
        shown = (sketch * (1 - alpha) + layer[..., :3] * alpha).astype(np.uint8)
        rows.append([tile(x, args.tile) for x in (sketch, shown, np.asarray(flat), np.asarray(soft),
                                                   np.asarray(plain), color)])  # fmt: skip
    labels = ["sketch", "hint dots", "flat (default)", "soft", "flat, no hints", "the artist's colors"]
    pad, head = 4, 18
    cols = len(labels)
    fig = Image.new(
        "RGB",
        (cols * args.tile + (cols + 1) * pad, head + len(rows) * (args.tile + pad) + pad),
        (255, 255, 255),
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
