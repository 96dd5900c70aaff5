#!/usr/bin/env python3
"""The app's example sketches (examples/*.png): line art extracted from real drawings under open licences.

    apt-get download openclipart-png renpy-thequestion renpy-demo
    for f in *.deb; do dpkg-deb -x $f debs; done
    python scripts/make_examples.py debs examples/

Each drawing is put on white, scaled to at most 768 px a side and turned into line art with XDoG (sigma 0.7:
the outlines the artist drew, without the fills), as `colorize --lineart extract` would. The sources and their
licences are listed in examples/README.md; none of them is in the demo model's training categories.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from colorizer.data import load_rgb  # noqa: E402
from colorizer.lineart import xdog  # noqa: E402

RENPY = "usr/share/games/renpy"
OPENCLIPART = "usr/share/openclipart/png"
EXAMPLES = {  # output name -> path inside the unpacked Debian packages
    "anime_girl_sylvie": f"{RENPY}/the_question/game/images/sylvie green smile.png",
    "anime_girl_lucy": f"{RENPY}/demo/game/images/lucy mad.png",
    "house": f"{OPENCLIPART}/buildings/homes/pinkhome.png",
    "light_bulb": f"{OPENCLIPART}/electronics/bulb/lightbulb_jon_phillips_04.png",
    "school_in_autumn": f"{OPENCLIPART}/education/school_in_fall_abiclipar_01.png",
    "teacher": f"{OPENCLIPART}/office/inservice_presentation_01.png",
}
MAX_SIDE_PX = 768


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("debs", type=Path, help="folder the Debian packages were unpacked into (dpkg-deb -x)")
    p.add_argument("out", type=Path)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rel in EXAMPLES.items():
        src = args.debs / rel
        if not src.is_file():
            print(f"make_examples: {src} not found (unpack openclipart-png, renpy-thequestion, renpy-demo)")
            return 2
        lines = xdog(load_rgb(src, max_side_px=MAX_SIDE_PX), sigma=0.7)
        Image.fromarray((lines * 255 + 0.5).astype(np.uint8), "L").save(
            args.out / f"{name}.png", optimize=True
        )
        print(f"{args.out / name}.png <- {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
