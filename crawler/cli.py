"""`crawler` command line: `crawl` (a booru by tag query), `serve-local` (a local booru for tests and demos,
speaking both the Gelbooru 0.2 and the Danbooru API), `filter` (curation into manifest.jsonl + rejected.jsonl).

No torch import here (nor anywhere in `crawler/`): the crawler must start fast, on a machine without torch.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
SITES = ("safebooru", "gelbooru", "danbooru")  # crawler.sites; listed here so that --help imports nothing


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 requests/s (0 = unlimited), got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def build_parser(with_filter: bool = True) -> argparse.ArgumentParser:
    """The whole command line. `with_filter=False` leaves `filter`'s options out (its module pulls in NumPy
    and the image code: a fifth of a second that `crawler crawl` need not pay)."""
    parser = argparse.ArgumentParser(
        prog="crawler",
        description="Build a training set from a booru: crawl tag queries into per-query folders.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser(
        "crawl",
        help="download posts by tag query into per-query folders (resumable, rate-limited)",
        description="Download each QUERY's posts into DIR/<folder>/<id>.<ext> with an <id>.json sidecar. "
        "Re-running resumes; a file already stored (same md5) is never fetched again, also for another query. "
        "Exit status: 0 all done, 1 some posts or listings failed, 3 stopped by a Cloudflare challenge.",
    )
    c.add_argument("queries", nargs="+", metavar="QUERY", help='a tag query, e.g. "1girl solo -monochrome"')
    c.add_argument("--out", required=True, type=Path, metavar="DIR", help="where the per-query folders go")
    c.add_argument("--limit", type=_count, default=None, metavar="N", help="at most N posts per query")
    c.add_argument(
        "--site",
        choices=SITES,
        default="safebooru",
        help="which API: safebooru and gelbooru speak Gelbooru 0.2, danbooru its own (default: %(default)s)",
    )
    c.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help="another instance of the site's software, e.g. a local server (default: the site itself)",
    )
    c.add_argument("--rate", type=_rate, default=2.0, metavar="R",
                   help="requests per second, API pages and files together, all workers (default: %(default)s; "
                   "0 = unlimited: only for your own server)")  # fmt: skip
    c.add_argument(
        "--workers", type=_count, default=4, metavar="W", help="parallel downloads (default: %(default)s)"
    )
    c.add_argument("--format", choices=("xml", "json"), default="xml",
                   help="Gelbooru 0.2 answer format (default: %(default)s, which carries the total count)")  # fmt: skip
    c.add_argument("--max-mb", type=_positive_float, default=50.0, metavar="MB",
                   help="refuse files larger than this (default: %(default)s)")  # fmt: skip
    c.add_argument(
        "--retries", type=_count, default=5, metavar="N", help="attempts per request (default: %(default)s)"
    )
    c.add_argument("--backoff-s", type=float, default=1.0, help=argparse.SUPPRESS)
    c.add_argument("--fsync", action="store_true",
                   help="fsync every file before its rename: also safe against a power cut, slower on slow "
                   "disks (without it a kill is safe, and a file a power cut empties is fetched again)")  # fmt: skip
    c.add_argument("--all-cpus", action="store_true",
                   help="let the crawl's threads run on every processor (default on Linux: one, which is "
                        "faster for Python threads; the rate limit decides the speed on a real site)")  # fmt: skip
    c.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser(
        "serve-local",
        help="serve a folder of images through Safebooru- and Danbooru-compatible APIs (tests, demos, benchmarks)",
        description="Tags come from <name>.json sidecars or from sub-folder names and file-name words.",
    )
    s.add_argument("folder", type=Path, metavar="FOLDER")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000, help="(default: %(default)s; 0 picks a free one)")
    s.add_argument("--faults", default="", metavar="SPEC",
                   help="e.g. latency=0.03,throttle=2,retry-after=date,errors=3,truncate=1,api-errors=1,"
                   "empty-pages=2,wrong-md5=5+7,html-image=3,cloudflare-after=10")  # fmt: skip
    s.add_argument("--deep-cap", type=_count, default=200_000, metavar="N",
                   help="refuse pages past this offset, like safebooru.org (default: %(default)s)")  # fmt: skip
    s.add_argument("--request-log", type=Path, default=None, metavar="FILE",
                   help="append '<unix time> <status> <kind> <path>' per request")  # fmt: skip

    if with_filter:
        from .curation.cli import add_filter_parser

        add_filter_parser(sub)
    else:
        sub.add_parser("filter", help="curate a crawl into manifest.jsonl + rejected.jsonl")
    return parser


def _crawl(args: argparse.Namespace) -> int:
    from .crawl import CrawlOptions, crawl
    from .download import RetryPolicy
    from .layout import normalize_query

    queries: list[str] = []
    for raw in args.queries:
        query = normalize_query(raw)
        if not query:
            print("crawler crawl: an empty query; give at least one tag", file=sys.stderr)
            return EXIT_USAGE
        if query not in queries:
            queries.append(query)
    if args.base_url is not None and not args.base_url.startswith(("http://", "https://")):
        print(
            f"crawler crawl: --base-url must start with http:// or https://, got {args.base_url}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    options = CrawlOptions(
        site=args.site,
        base_url=args.base_url,
        rate_per_s=args.rate,
        workers=args.workers,
        limit=args.limit,
        fmt=args.format,
        max_bytes=int(args.max_mb * 1024 * 1024),
        retry=RetryPolicy(attempts=args.retries, base_s=args.backoff_s),
        page_retry_delay_s=min(0.5, args.backoff_s),
        progress=not args.no_progress,
        fsync=args.fsync,
        one_cpu=not args.all_cpus,
    )

    def stop_on_sigterm(signum, frame):  # `kill` and service managers stop the crawl like Ctrl-C does
        raise KeyboardInterrupt

    previous = None
    with contextlib.suppress(ValueError):  # not the main thread (an embedding program)
        previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        summary = crawl(queries, args.out, options)
    except KeyboardInterrupt:
        print("\ninterrupted: re-run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (RuntimeError, ValueError, OSError) as err:
        print(f"crawler crawl: {err}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(summary.format())
    if summary.stopped:
        print(summary.stopped, file=sys.stderr)
        return EXIT_STOPPED
    return EXIT_OK if summary.ok else EXIT_FAILED


def _serve(args: argparse.Namespace) -> int:
    from .local_server import parse_faults, serve

    try:
        faults = parse_faults(args.faults)
        serve(args.folder, host=args.host, port=args.port, faults=faults, deep_cap=args.deep_cap,
              request_log=args.request_log)  # fmt: skip
    except (ValueError, OSError) as err:
        print(f"crawler serve-local: {err}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(with_filter=not argv or argv[0] not in ("crawl", "serve-local"))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    if args.command == "crawl":
        return _crawl(args)
    if args.command == "serve-local":
        return _serve(args)
    from .curation.cli import run_filter

    return run_filter(args)


if __name__ == "__main__":
    sys.exit(main())
