"""Benchmark: `crawler crawl` against the local Safebooru, beside gallery-dl, as issue 5 asks.

A gallery of POSTS random-noise PNGs of about KB kilobytes each (incompressible, so every byte travels)
is served by `crawler serve-local` in its own process, with 0 ms and with 30 ms of latency added to every
answer (a real network). For each latency:

- `crawler crawl all --rate 0 --workers W` for W in 1 and 8: files/s over the whole command (start-up,
  listing, downloads, md5 checks, archive, sidecars), into a fresh folder; every file is then checked
  against the served bytes (md5) outside the timing; at the first latency also with `--all-cpus` and the
  most workers (the crawler keeps its threads on one processor unless told; Linux only);
- gallery-dl (its `gelbooru_v02` category with a custom instance whose `root` is the local server, set in
  its config; one file at a time, which is all it does), into a fresh folder: as it runs by default (no
  archive: the setting of the issue's reference figures, and the one the targets are measured against),
  and with `--download-archive` (an SQLite commit per file), the closer match to what `crawler` keeps;
- the same two commands again on their finished folders (nothing to download): the resume cost, and
  the API pages/s as the server measured them (its request log);
- `crawler crawl --rate R --workers 8` on the first RATE_POSTS posts: the request rate the server measured
  (first to last request), which must be within 5% of R.

Each measurement is taken `--repeat` times (default 3), the tools taking turns, and the median is
reported with the range: single runs on a shared 2-core machine vary by 20% and more. Before each
timed run the previous one's writes are flushed (`sync`), and no output is deleted until a latency's
runs are all done (deleting 100 MB of files charges the file system's clean-up to the next run).
The report names the file system the files were written to (`--work` chooses the folder).

    .venv/bin/python bench/crawl.py                      # the full run: 2,000 posts, ~50 KB, 0 and 30 ms
    .venv/bin/python bench/crawl.py --smoke              # a quick check that everything runs (200 posts)
    .venv/bin/python bench/crawl.py --no-gallery-dl      # without the comparison
    .venv/bin/python bench/crawl.py --work /dev/shm/bc   # files written to memory, not to the disk

gallery-dl is in the `bench` extra (`pip install -e ".[bench]"`). Prints a Markdown table and writes it,
with the command and the machine, to bench/results/crawl.txt; the figures go into BENCHMARKS.md.
Targets (issue 5): >= 1.5x gallery-dl's files/s at 0 ms, >= 7x at 30 ms, measured rate within 5%.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {0.0: 1.5, 0.03: 7.0}  # crawler (8 workers) / gallery-dl, files/s, per added latency


def make_gallery(folder: Path, posts: int, kb: float) -> None:
    """`folder/all/<id>.png`: random noise (PNG cannot compress it), about `kb` KB each, tag `all`."""
    side = max(8, int(round((kb * 1024 / 3) ** 0.5)))
    rng = np.random.default_rng(0)
    (folder / "all").mkdir(parents=True, exist_ok=True)
    for post_id in range(1, posts + 1):
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "all" / f"{post_id}.png", compress_level=1)


class Server:
    """`crawler serve-local` in its own process (its own GIL), with a request log."""

    def __init__(self, gallery: Path, latency_s: float, log: Path):
        self.log = log
        log.unlink(missing_ok=True)
        faults = f"latency={latency_s}" if latency_s else ""
        cmd = [sys.executable, "-m", "crawler", "serve-local", str(gallery), "--port", "0",
               "--request-log", str(log), "--faults", faults]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if " at " not in line:
            self.proc.kill()
            raise RuntimeError(f"serve-local did not start: {line!r}")
        self.url = line.split(" at ")[1].split()[0]

    def requests_between(self, t0: float, t1: float, kind: str | None = None) -> list[float]:
        stamps = []
        for row in self.log.read_text().splitlines():
            t, status, k, _path = row.split(" ", 3)
            if t0 <= float(t) <= t1 and (kind is None or k == kind) and status == "200":
                stamps.append(float(t))
        return sorted(stamps)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@dataclass
class Run:
    tool: str
    latency_s: float
    workers: int
    files: int
    wall_s: float
    rerun_s: float = float("nan")
    rerun_api_pages_per_s: float = float("nan")

    @property
    def files_per_s(self) -> float:
        return self.files / self.wall_s


@dataclass
class Result:
    """The repeated runs of one setting: medians, and the range of files/s."""

    runs: list[Run]

    @property
    def first(self) -> Run:
        return self.runs[0]

    @property
    def files_per_s(self) -> float:
        return statistics.median(r.files_per_s for r in self.runs)

    @property
    def files_per_s_range(self) -> tuple[float, float]:
        rates = [r.files_per_s for r in self.runs]
        return min(rates), max(rates)

    @property
    def wall_s(self) -> float:
        return statistics.median(r.wall_s for r in self.runs)

    @property
    def rerun_s(self) -> float:
        return statistics.median(r.rerun_s for r in self.runs)

    @property
    def rerun_api_pages_per_s(self) -> float:
        return statistics.median(r.rerun_api_pages_per_s for r in self.runs)


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """Run `cmd`; (wall seconds, unix start, unix end). Fails loudly on a non-zero exit. The writes of
    whatever ran before are flushed first, so that no run pays for another's."""
    if hasattr(os, "sync"):
        os.sync()
    t0, c0 = time.time(), time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - c0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return wall, t0, time.time()


def pages_per_s(stamps: list[float]) -> float:
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        return float("nan")
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def served_md5s(gallery: Path) -> dict[int, str]:
    return {int(p.stem): hashlib.md5(p.read_bytes()).hexdigest() for p in (gallery / "all").glob("*.png")}


def verify(files: list[Path], expected: dict[int, str], id_of) -> None:
    got = {id_of(p): hashlib.md5(p.read_bytes()).hexdigest() for p in files}
    if got != expected:
        missing = sorted(set(expected) - set(got))[:5]
        wrong = sorted(i for i in got if expected.get(i) != got[i])[:5]
        raise RuntimeError(f"{len(got)} files of {len(expected)}; missing {missing}, wrong {wrong}")


def run_crawler(
    server: Server, out: Path, latency: float, workers: int, posts: int, expected, all_cpus: bool = False
) -> Run:
    cmd = [sys.executable, "-m", "crawler", "crawl", "all", "--out", str(out), "--base-url", server.url,
           "--rate", "0", "--workers", str(workers), "--limit", str(posts), "--no-progress"]  # fmt: skip
    if all_cpus:
        cmd.append("--all-cpus")
    wall, _, _ = timed(cmd)
    files = [p for p in (out / "all").iterdir() if p.suffix == ".png"]
    verify(files, expected, lambda p: int(p.stem))
    if (out / "archive.sqlite").stat().st_size == 0:
        raise RuntimeError("crawler kept no archive")
    run = Run("crawler crawl --all-cpus" if all_cpus else "crawler crawl", latency, workers, len(files), wall)
    run.rerun_s, t0, t1 = timed(cmd)  # resume: everything is had, only the listing is fetched
    if server.requests_between(t0, t1, "file"):
        raise RuntimeError("the re-run fetched files again")
    run.rerun_api_pages_per_s = pages_per_s(server.requests_between(t0, t1, "api"))
    return run


def run_gallery_dl(server: Server, out: Path, latency: float, expected, archive: bool) -> Run:
    out.mkdir(parents=True)
    host = server.url.split("://", 1)[1]
    config = {
        "extractor": {
            "base-directory": str(out),
            "sleep-request": 0,
            "sleep": 0,
            "gelbooru_v02": {"localbooru": {"root": server.url, "pattern": host.replace(".", r"\.")}},
        },
        "downloader": {"rate": None},
    }
    (out / "config.json").write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "gallery_dl", "--config-ignore", "-c", str(out / "config.json"), "-q",
           f"{server.url}/index.php?page=post&s=list&tags=all"]  # fmt: skip
    if archive:  # an SQLite commit per file; without it a re-run skips by file name
        cmd[-1:-1] = ["--download-archive", str(out / "archive.sqlite3")]
    env = {**os.environ, "HOME": str(out)}  # no user configuration or cache
    wall, _, _ = timed(cmd, env)
    files = [p for p in out.rglob("*.png")]
    verify(files, expected, lambda p: int(p.stem.split("_")[1]))  # localbooru_<id>_<md5>.png
    run = Run("gallery-dl --download-archive" if archive else "gallery-dl", latency, 1, len(files), wall)
    run.rerun_s, t0, t1 = timed(cmd, env)
    run.rerun_api_pages_per_s = pages_per_s(server.requests_between(t0, t1, "api"))
    return run


def measure_rate(server: Server, work: Path, rate: float, posts: int) -> tuple[float, int]:
    out = work / "crawler-rate"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "crawler", "crawl", "all", "--out", str(out), "--base-url", server.url,
           "--rate", str(rate), "--workers", "8", "--limit", str(posts), "--no-progress"]  # fmt: skip
    _, t0, t1 = timed(cmd)
    stamps = server.requests_between(t0, t1)
    return pages_per_s(stamps), len(stamps)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--posts", type=int, default=2000)
    p.add_argument("--kb", type=float, default=50.0, help="size of each image (default: %(default)s)")
    p.add_argument("--latencies-ms", default="0,30", help="added per request (default: %(default)s)")
    p.add_argument(
        "--workers", default="1,4,8", help="crawler workers to try (default: %(default)s; 4 is the crawler's)"
    )
    p.add_argument(
        "--repeat", type=int, default=None, help="runs of each setting, medians (default: 3; 1 with --smoke)"
    )
    p.add_argument("--rate", type=float, default=5.0, help="the --rate whose precision is measured")
    p.add_argument(
        "--rate-posts", type=int, default=100, help="posts for the rate run (default: %(default)s)"
    )
    p.add_argument("--no-gallery-dl", action="store_true")
    p.add_argument("--smoke", action="store_true", help="200 posts, rate run on 20: checks that it all runs")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "crawl.txt")
    args = p.parse_args()
    if args.smoke:
        args.posts, args.rate_posts = min(args.posts, 200), min(args.rate_posts, 20)
    if args.repeat is None:
        args.repeat = 1 if args.smoke else 3
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    latencies = [float(v) / 1000 for v in args.latencies_ms.split(",")]
    worker_counts = [int(v) for v in args.workers.split(",")]
    if not args.no_gallery_dl:
        try:
            import gallery_dl  # noqa: F401
        except ImportError:
            sys.exit('gallery-dl is not installed: pip install -e ".[bench]" (or pass --no-gallery-dl)')

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-crawl-"))
    gallery = work / "gallery"
    t = time.perf_counter()
    if not (gallery / "all").is_dir() or len(list((gallery / "all").glob("*.png"))) != args.posts:
        shutil.rmtree(gallery, ignore_errors=True)
        make_gallery(gallery, args.posts, args.kb)
    expected = served_md5s(gallery)
    size_kb = sum(p.stat().st_size for p in (gallery / "all").glob("*.png")) / len(expected) / 1024
    print(f"gallery: {len(expected)} PNGs of {size_kb:.1f} KB ({time.perf_counter() - t:.1f} s)", flush=True)

    settings: list[tuple[str, int]] = [("crawler", w) for w in worker_counts]
    if not args.no_gallery_dl:
        settings += [("gallery-dl", 0), ("gallery-dl-archive", 0)]
    # the crawler's threads keep to one processor; once, at the first latency, let them spread (Linux)
    spread = []
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) > 1:
        spread = [("crawler-all-cpus", max(worker_counts))]
    results: list[Result] = []
    rate_result = None
    runs_dir = work / "runs"
    try:
        for latency in latencies:
            server = Server(gallery, latency, work / f"requests-{latency}.log")
            by_setting: dict[tuple[str, int], list[Run]] = {k: [] for k in settings + spread}
            shutil.rmtree(runs_dir, ignore_errors=True)  # what a killed run of the benchmark left
            try:
                for rep in range(args.repeat):  # the tools take turns: a slow minute hits them all
                    for tool, workers in settings + (spread if latency == latencies[0] else []):
                        out = runs_dir / f"{tool}-{latency}-{workers}-{rep}"
                        if tool.startswith("crawler"):
                            run = run_crawler(
                                server, out, latency, workers, args.posts, expected, tool.endswith("all-cpus")
                            )
                        else:
                            run = run_gallery_dl(server, out, latency, expected, tool.endswith("archive"))
                        by_setting[(tool, workers)].append(run)
                        print(f"run {rep + 1}/{args.repeat}: " + _row(Result([run])), flush=True)
                if latency == latencies[0] and args.rate > 0:
                    rate_result = measure_rate(server, runs_dir, args.rate, args.rate_posts)
            finally:
                server.close()
                shutil.rmtree(runs_dir, ignore_errors=True)  # after the timed runs, never between them
            results += [Result(runs) for runs in by_setting.values() if runs]
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    text = _report(results, rate_result, args, size_kb, latencies, _file_system(work))
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(f"written to {args.out}")
    return 0


def _file_system(path: Path) -> str:
    """`ext4 (/dev/vda on /)`: the mount that holds `path`, from /proc/mounts (Linux); "" elsewhere."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return ""
    path = path.resolve()
    best = max(
        (m for m in mounts if len(m) > 2 and (path == Path(m[1]) or Path(m[1]) in path.parents)),
        key=lambda m: len(m[1]),
        default=None,
    )
    return f"{best[2]} ({best[0]} on {best[1]})" if best else ""


def _workers(n: int) -> str:
    return "1 worker" if n == 1 else f"{n} workers"


def _row(r: Result) -> str:
    rate = f"{r.files_per_s:.0f}"
    if len(r.runs) > 1:
        low, high = r.files_per_s_range
        rate += f" ({low:.0f}-{high:.0f})"
    return (
        f"| {r.first.tool} | {r.first.latency_s * 1000:.0f} ms | {r.first.workers} | {r.first.files} | "
        f"{r.wall_s:.2f} s | {rate} | {r.rerun_s:.2f} s | {r.rerun_api_pages_per_s:.0f} |"
    )


def _report(results: list[Result], rate_result, args, size_kb: float, latencies: list[float], fs: str) -> str:
    runs = "1 run" if args.repeat == 1 else f"median of {args.repeat} runs (range)"
    lines = [
        f"command: {' '.join([Path(sys.executable).name, *sys.argv])}",
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        f"gallery: {args.posts} posts, PNG ~{size_kb:.1f} KB each; server `crawler serve-local` in its own process",
        f"files written to: {fs or 'the --work folder'}; each figure: {runs}, the tools taking turns",
        "",
        "| tool | added latency | workers | files | wall | files/s | re-run (resume) | re-run API pages/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(_row(r) for r in results),
        "",
    ]
    for latency in latencies:
        ours = [r for r in results if r.first.tool == "crawler crawl" and r.first.latency_s == latency]
        theirs = [r for r in results if r.first.tool == "gallery-dl" and r.first.latency_s == latency]
        if not (ours and theirs):
            continue
        base = theirs[0].files_per_s
        target = TARGETS.get(latency)
        parts = ", ".join(
            f"{_workers(r.first.workers)} {r.files_per_s:.0f} ({r.files_per_s / base:.2f}x)" for r in ours
        )
        line = f"at {latency * 1000:.0f} ms: gallery-dl {base:.0f} files/s; crawler {parts}"
        if target is not None:
            if args.posts < 2000:  # start-up (~0.2 s) weighs on a short run: not the setting
                line += f" (target >= {target}x is judged at 2,000 posts)"
            else:
                met = [r.first.workers for r in ours if r.files_per_s / base >= target]
                line += f"; target >= {target}x: " + (
                    f"met with {', '.join(map(str, met))} workers" if met else "MISSED"
                )
        lines.append(line)
    if rate_result is not None:
        measured, n = rate_result
        err = abs(measured - args.rate) / args.rate
        lines.append(
            f"--rate {args.rate:g} --workers 8: {measured:.3f} requests/s measured by the server over {n} requests "
            f"({err * 100:.1f}% off; target within 5%: {'met' if err <= 0.05 else 'MISSED'})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
