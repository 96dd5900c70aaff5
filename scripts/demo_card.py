#!/usr/bin/env python3
"""Add what a person wants to know to an exported demo model's model.json, and copy the model to weights/.

    python scripts/demo_card.py data/demo [--out weights]

Reads the work folder of scripts/demo_model.sh (filter summary, evaluation reports) and writes into model.json:
`card` (what the app's "About this model" shows: what it was trained on, how long, what it is good and bad at)
and `demo` (the exact commands, the data, the time, the scores), beside what `colorizer export` wrote.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from openclipart_catalog import TRAIN_CATEGORIES, UNSEEN_CATEGORIES  # noqa: E402


def scores(report: Path) -> dict:
    r = json.loads(report.read_text())
    keep = ("psnr", "psnr_median", "delta_e76", "delta_e_hints", "colorfulness_diff")
    return {
        "images": r["images"],
        "mode": r.get("mode"),
        "results": {
            n: {k: round(v, 3) for k, v in res.items() if k in keep} for n, res in r["results"].items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("work", type=Path, help="the work folder of scripts/demo_model.sh")
    p.add_argument("--model", type=Path, default=None, help="exported model (default WORK/models/demo)")
    p.add_argument("--out", type=Path, default=ROOT / "weights")
    p.add_argument(
        "--machine", default="2-core AMD EPYC, nothing else running", help="where and how it trained"
    )
    args = p.parse_args(argv)
    model = args.model or args.work / "models" / "demo"
    info = json.loads((model / "model.json").read_text())
    summary = (args.work / "curated" / "summary.md").read_text()
    kept = re.search(r"-> (\d+) kept \(train (\d+), val (\d+), test (\d+)\)", summary)
    if kept is None:
        print(f"demo_card: no kept/train/val/test counts in {args.work}/curated/summary.md")
        return 2
    total, train, val, test = (int(x) for x in kept.groups())
    t = info["training"]
    base_info = args.work / "models" / "demo-base" / "model.json"  # the first run, if this is a fine-tune
    base = None
    if t["config"]["train"].get("init_from"):
        if not base_info.is_file():
            print(f"demo_card: the model is a fine-tune but {base_info} (its first run) is missing")
            return 2
        base = json.loads(base_info.read_text())["training"]
    minutes = round((t["train_seconds"] + (base["train_seconds"] if base else 0)) / 60)
    steps = t["step"] + (base["step"] if base else 0)
    stages = (
        f"{round(base['train_seconds'] / 60)} minutes from scratch ({base['step']:,} steps), then "
        f"{round(t['train_seconds'] / 60)} minutes of fine-tuning ({t['step']:,} steps)"
        if base
        else f"{minutes} minutes ({steps:,} steps)"
    )
    evals = {
        name: scores(args.work / "eval" / name / "report.json")
        for name in (
            "flat-openmoji",
            "soft-openmoji",
            "flat-test",
            "soft-test",
            "lineart-openmoji",
            "lineart-test",
        )
        if (args.work / "eval" / name / "report.json").is_file()
    }
    info["card"] = {
        "summary": (
            "A small demo model, trained on a 2-core CPU to show the whole product working on real drawings. "
            "It is not an art-quality colorizer: a real one is trained on an anime crawl on a GPU overnight."
        ),
        "trained_on": (
            f"{train:,} public-domain clip-art drawings from openclipart ({len(TRAIN_CATEGORIES)} of its 22 "
            f"categories: animals, people, food, plants, vehicles, signs, icons ...), crawled and curated by this "
            f"project's own crawler. It never saw {', '.join(UNSEEN_CATEGORIES)}, nor any anime art."
        ),
        "good_at": (
            "With Flat colors: filling each closed area of a drawing with one clean color, keeping the paper white "
            "and giving back exactly the colors you dab on; icons, clip art, simple cartoons with closed outlines."
        ),
        "bad_at": (
            "Choosing colors by itself: without hints it picks light, plausible colors that are often not the "
            "artist's (a brown apple, a brown tree), so give it a dab of color where it matters. Outlines left "
            "open (a head drawn with gaps, a body that stops above the frame, sketchy lines) make an area part of "
            "the paper: Flat keeps it white until you dab a color there, then colors what the network agrees on, "
            "closing the opening with a straight line (a dab of white stops a wrong guess). Soft smudges past "
            "the lines."
        ),
        "how": (
            f"Trained on one 2-core CPU: {stages}, batches of 8 crops of 128x128 px; "
            "exported in half precision. The exact commands are in model.json (demo.commands)."
        ),
    }
    info["demo"] = {
        "what": "demo model: the whole product path on real public-domain drawings, on a 2-core CPU",
        "commands": [
            f"bash scripts/demo_model.sh data/demo {round(base['train_seconds'] / 60)} "
            f"{round(t['train_seconds'] / 60)}"
            if base
            else f"bash scripts/demo_model.sh data/demo {minutes} 0",
            "bash scripts/demo_eval.sh data/demo",
            "python scripts/demo_card.py data/demo",
        ],
        "data": {
            "source": "Debian openclipart-png 1:0.18+dfsg-19 (public domain)",
            "categories": list(TRAIN_CATEGORIES),
            "unseen_categories": list(UNSEEN_CATEGORIES),
            "kept": {"total": total, "train": train, "val": val, "test": test},
        },
        "time": {
            "train_minutes": minutes,
            "steps": steps,
            "stages": stages,
            "machine": args.machine,
        },
        "evaluation": evals,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model / "model.safetensors", args.out / "model.safetensors")
    (args.out / "model.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(f"{args.out}/model.safetensors + model.json (card and demo sections added)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
