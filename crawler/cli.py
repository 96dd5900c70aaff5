"""`crawler` command line. The Safebooru crawler (`crawl`) and curation (`filter`) are not built yet.

The console script exists so the package layout is final; until the commands land it says so plainly
instead of pretending to work. No torch import here: the crawler must start fast, without torch.
"""

from __future__ import annotations

import argparse
import sys

PLANNED = {
    "crawl": "download Safebooru posts by tag query into per-tag folders (resumable, rate-limited)",
    "filter": "curate a crawl into manifest.jsonl + rejected.jsonl (tag and pixel rules, duplicates, splits)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crawler",
        description="Build a training set from Safebooru. Not built yet: until then, train on any folder of "
        "color images with `colorizer train --config configs/cpu-demo.yaml data.source=DIR`.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in PLANNED.items():
        p = sub.add_parser(name, help=f"(not built yet) {text}", add_help=True)
        p.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    print(
        f"crawler {args.command}: not built yet. Meanwhile point data.source at a folder of color images "
        "(searched recursively) or at a manifest.jsonl you write yourself (format in README).",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
