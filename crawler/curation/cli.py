"""`crawler filter SRC --out DEST [--config YAML] [--set KEY=VALUE] [--tagger i2v ...]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import ConfigError, load_curate_config
from .stages import LINK_MODES, MANIFEST_NAME, curate, format_summary


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "src", metavar="SRC", help="a crawl (DIR/<tag-folder>/<id>.<ext> + sidecars) or a folder of images"
    )
    p.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="DEST",
        help="where manifest.jsonl, rejected.jsonl and images/ go",
    )
    p.add_argument(
        "--config", metavar="YAML", help="settings to override (e.g. configs/curate.yaml); defaults otherwise"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set pixels.min_short_side_px=256 (repeatable)",
    )
    p.add_argument(
        "--tagger", choices=("none", "i2v"), default="none", help="estimate tags for files without any"
    )
    p.add_argument("--i2v-weights", metavar="PATH", help="illust2vec_tag_ver200.caffemodel (see README)")
    p.add_argument("--i2v-tags", metavar="PATH", help="tag_list.json (default: beside the weights)")
    p.add_argument("--i2v-recheck", action="store_true", help="also run Illustration2Vec on tagged files")
    p.add_argument("--device", help="for Illustration2Vec: auto (default), cpu, cuda")
    p.add_argument("--workers", type=int, help="processes measuring images (default: one per core)")
    p.add_argument("--link", choices=LINK_MODES, help="how kept images get into DEST (default hardlink)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the summary")


def add_filter_parser(subparsers) -> argparse.ArgumentParser:
    """Register `filter` on a `crawler` command line (`parser.add_subparsers()`); runs `run_filter`."""
    p = subparsers.add_parser(
        "filter",
        help="curate a crawl into manifest.jsonl + rejected.jsonl (tags, pixels, duplicates, splits)",
        description="Curate a crawl into DEST/manifest.jsonl (train/val/test) and DEST/rejected.jsonl.",
    )
    _add_arguments(p)
    p.set_defaults(func=run_filter)
    return p


def run_filter(args: argparse.Namespace) -> int:
    """Run `crawler filter` from parsed arguments; prints the summary; 0 ok, 2 bad input."""
    overrides = list(args.set)
    if args.i2v_recheck:
        overrides.append("tagger.recheck_tagged=true")
    if args.device:
        overrides.append(f"tagger.device={args.device}")
    if args.workers is not None:
        overrides.append(f"workers={args.workers}")
    if args.link:
        overrides.append(f"output.link={args.link}")
    try:
        cfg = load_curate_config(args.config, overrides)
    except ConfigError as e:
        print(f"crawler filter: {e}", file=sys.stderr)
        return 2
    if not Path(args.src).is_dir():
        print(
            f"crawler filter: {args.src}: not a folder (expected the output of `crawler crawl`)",
            file=sys.stderr,
        )
        return 2
    tagger = None
    if args.tagger == "i2v":
        from .tagger import I2V_RELEASES_URL, CaffeModelError, Illustration2Vec

        if not args.i2v_weights:
            print(
                "crawler filter: --tagger i2v needs --i2v-weights PATH to illust2vec_tag_ver200.caffemodel "
                f"(and tag_list.json beside it or --i2v-tags), from {I2V_RELEASES_URL}",
                file=sys.stderr,
            )
            return 2
        try:
            tagger = Illustration2Vec.load(args.i2v_weights, args.i2v_tags, device=cfg.tagger.device)
        except CaffeModelError as e:
            print(f"crawler filter: {e}", file=sys.stderr)
            return 2
    elif args.i2v_weights or args.i2v_recheck:
        print("crawler filter: --i2v-* options need --tagger i2v", file=sys.stderr)
        return 2
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    try:
        result = curate(args.src, args.out, cfg, tagger=tagger, quiet=args.quiet, log=log)
    except (FileNotFoundError, ValueError) as e:
        print(f"crawler filter: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ncrawler filter: interrupted; {Path(args.out) / MANIFEST_NAME} is as it was (written only "
            "at the end), and what was measured is cached: re-run the same command to go on",
            file=sys.stderr,
        )
        return 130
    print(format_summary(result))
    if not result.kept:
        print("crawler filter: warning: no image was kept; see rejected.jsonl for why", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="crawler filter",
        description="Curate a crawl into DEST/manifest.jsonl (train/val/test) and DEST/rejected.jsonl.",
    )
    _add_arguments(parser)
    return run_filter(parser.parse_args(argv))
