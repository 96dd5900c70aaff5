#!/usr/bin/env python3
"""Paired comparison of the default views against fixed resolutions, drawing by drawing (BENCHMARKS "Color modes
and scale"): the same drawings and hint dots as `colorizer evaluate`, flat mode; mean difference +- its standard
error, so a gap between two rows can be told from the noise of 200 drawings.

    python scripts/scale_paired.py weights/ data/demo/openmoji/black data/demo/openmoji/color [--res 256 512]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import colorizer.metrics as M  # noqa: E402
from colorizer.data import load_rgb  # noqa: E402
from colorizer.evaluate import _fit, _pairs, _to_tensor, delta_e76, hint_dots  # noqa: E402
from colorizer.inference import Colorizer, sketch_to_lines  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("lineart", help="folder of real line art")
    p.add_argument("color", help="folder of their color twins")
    p.add_argument("--res", type=int, nargs="+", default=[256, 512], help="fixed resolutions to compare")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--hints", type=int, nargs="+", default=[0, 16])
    args = p.parse_args(argv)
    model = Colorizer.load(args.model)
    settings = [None, *args.res]
    scores = {(s, n, k): [] for s in settings for n in args.hints for k in ("psnr", "delta_e76")}
    radius = max(2, round(2 * args.size / 256))  # as colorizer evaluate
    for i, (line_path, color_path) in enumerate(_pairs(args.lineart, args.color)):
        target = _fit(load_rgb(color_path, max_side_px=4 * args.size), args.size)
        lines = sketch_to_lines(_fit(load_rgb(line_path, max_side_px=4 * args.size), args.size), "as-is")
        sketch = Image.fromarray((lines * 255 + 0.5).astype(np.uint8), "L")
        for n in args.hints:
            layer = hint_dots(
                target, lines, n, np.random.default_rng([0, i, n]), placement="colored", radius_px=radius
            )
            hints = Image.fromarray(layer, "RGBA") if n else None
            for s in settings:
                out = np.asarray(model.colorize(sketch, hints, mode="flat", resolution=s, lineart="as-is"))
                scores[(s, n, "psnr")].append(float(M.psnr(_to_tensor(out), _to_tensor(target))[0]))
                scores[(s, n, "delta_e76")].append(delta_e76(out, target))
    for n in args.hints:
        for s in args.res:
            for k in ("psnr", "delta_e76"):
                d = np.array(scores[(None, n, k)]) - np.array(scores[(s, n, k)])
                se = d.std(ddof=1) / np.sqrt(len(d))
                print(
                    f"{n:2d} hints, {k:9s}: default - {s} px = {d.mean():+.2f} +- {se:.2f} (standard error)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
