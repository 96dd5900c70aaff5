#!/usr/bin/env python3
"""Two `colorizer evaluate` reports on the same data, compared drawing by drawing: the mean difference of each
score and its standard error, so a gap between two rows can be told from the noise of the drawings
(BENCHMARKS "Color modes and scale": the default views against fixed resolutions).

    python scripts/scale_paired.py data/demo/eval/flat-openmoji/report.json data/demo/eval/res512-flat-openmoji/report.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path, help="report.json of the first setting")
    p.add_argument("b", type=Path, help="report.json of the second, on the same data, hints and seed")
    args = p.parse_args(argv)
    try:
        a, b = (json.loads(path.read_text()) for path in (args.a, args.b))
    except (OSError, ValueError) as e:
        print(f"scale_paired: cannot read a report ({e}); give two report.json files of colorizer evaluate")
        return 2
    same = ("data", "split", "lineart", "images", "size_px", "seed", "hint_placement")
    if any(a.get(k) != b.get(k) for k in same) or a["results"].keys() != b["results"].keys():
        print(f"scale_paired: the reports differ in data, hints or seed ({', '.join(same)}): nothing to pair")
        return 2
    for n in a["results"]:
        pa, pb = a["results"][n].get("per_image"), b["results"][n].get("per_image")
        if not pa or not pb:
            print(
                "scale_paired: a report without per_image scores (made before colorizer evaluate wrote them)"
            )
            return 2
        for k in ("psnr", "delta_e76"):
            d = np.asarray(pa[k]) - np.asarray(pb[k])
            se = d.std(ddof=1) / np.sqrt(len(d))
            print(
                f"{n:>2} hints, {k:9s}: a - b = {d.mean():+.2f} +- {se:.2f} (standard error, {len(d)} images)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
