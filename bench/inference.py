"""Benchmark: colorization latency on this machine, through `Colorizer.colorize` and through the app.

    .venv/bin/python bench/inference.py                 # demo + default architectures, 512 to 2048 px, app round trip
    .venv/bin/python bench/inference.py --runs 5 --no-app

Models are built with random weights at the shipped configs' architectures and scales (the latency of a
trained model is the same): cpu-demo and default, each run at the scale its config trains at (model.json's
`scale`, as an exported model records it: by default the average of four views, two scales each mirrored),
with one view at 512 px inputs (`--no-tta`), and at 512 px. Each setting: 2 warm-up calls, then `--runs` calls
of the whole `colorize` (line art, scaling, hints, network, flats or not, overlay of the original lines) in
each mode, the modes taking turns; the median of each, and flat's added time as the median of the paired
differences. The app round trip is timed with gradio_client against `python app.py --model DIR` on a free
port (upload, queue, colorize, download).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from colorizer.config import load_config  # noqa: E402
from colorizer.data import training_scale  # noqa: E402
from colorizer.export import save_model  # noqa: E402
from colorizer.inference import Colorizer  # noqa: E402
from colorizer.models.generator import build_generator  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sketch(size_px: int) -> Image.Image:
    """A line drawing `size_px` square: circles and strokes, black on white."""
    import cv2

    rng = np.random.default_rng(size_px)
    img = np.full((size_px, size_px, 3), 255, np.uint8)
    for _ in range(30):
        c = (int(rng.integers(0, size_px)), int(rng.integers(0, size_px)))
        cv2.circle(img, c, int(rng.integers(size_px // 30, size_px // 6)), (0, 0, 0), max(1, size_px // 256))
    return Image.fromarray(img)


def hint_layer(size_px: int) -> Image.Image:
    layer = np.zeros((size_px, size_px, 4), np.uint8)
    s = size_px // 8
    layer[s : 2 * s, s : 2 * s] = (220, 60, 60, 255)
    layer[4 * s : 5 * s, 5 * s : 6 * s] = (60, 90, 220, 255)
    return Image.fromarray(layer, "RGBA")


def make_model(config: str, folder: Path) -> Path:
    cfg = load_config(ROOT / "configs" / f"{config}.yaml")
    torch.manual_seed(0)
    meta = {"scale": training_scale(cfg)}
    return save_model(build_generator(cfg.model.G).state_dict(), cfg.model.G, folder / config, meta=meta)


def time_colorize(model: Colorizer, size_px: int, runs: int, resolution: int | None) -> dict[str, float]:
    """Median seconds of `colorize` in each mode (turns), and flat's added time (median of paired differences)."""
    img, hints = sketch(size_px), hint_layer(size_px)
    for mode in ("soft", "flat"):
        for _ in range(2):
            model.colorize(img, hints, resolution=resolution, mode=mode)
    times: dict[str, list[float]] = {"soft": [], "flat": []}
    for _ in range(runs):
        for mode in ("soft", "flat"):
            t0 = time.perf_counter()
            model.colorize(img, hints, resolution=resolution, mode=mode)
            times[mode].append(time.perf_counter() - t0)
    out = {mode: statistics.median(t) for mode, t in times.items()}
    out["flat_added"] = statistics.median(f - s for f, s in zip(times["flat"], times["soft"], strict=True))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_app(model_dir: Path, size_px: int, runs: int) -> float:
    from gradio_client import Client, handle_file

    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--model", str(model_dir), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 120
        client = None
        while time.time() < deadline:
            try:
                client = Client(url, verbose=False)
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(1)
        if client is None:
            raise RuntimeError("the app did not start within 120 s")
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "sketch.png"
            sketch(size_px).save(p)
            api = "/colorize"  # the Colorize button's endpoint; the live preview runs the same function
            value = {"background": handle_file(str(p)), "layers": [], "composite": handle_file(str(p))}
            times = []
            for i in range(runs + 1):
                t0 = time.perf_counter()
                # editor value, ignore hints, mode, resolution (the model's scale), background, no uploaded file
                client.predict(value, True, "Flat", "auto", "White paper", None, api_name=api)
                if i:
                    times.append(time.perf_counter() - t0)
        return statistics.median(times)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--no-app", action="store_true", help="skip the app round trip")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    header = f"# {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    lines = [
        header,
        "",
        "| model | input | network at | soft | flat | flat's added time |",
        "|---|---|---|---|---|---|",
    ]
    print(header)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in ("cpu-demo", "default"):
            folder = make_model(config, Path(tmp))
            model = Colorizer.load(folder, device="cpu")
            one_view = Colorizer.load(folder, device="cpu", tta=False)
            scales = " and ".join(str(side) for side in model.scale.sides_px)
            for size in (512, 1024, 2048):
                settings = [(model, None, f"{scales}, mirrored: 4 views (its scales, the default)")]
                if size == 512:
                    settings.append((one_view, None, f"{one_view.scale.side_px}, one view (--no-tta)"))
                settings.append((model, 512, "512, mirrored: 2 views"))
                for m, resolution, at in settings:
                    r = time_colorize(m, size, args.runs, resolution)
                    results[(config, size, at)] = r
                    row = (f"| {config} | {size}x{size} | {at} | {r['soft'] * 1000:.0f} ms | {r['flat'] * 1000:.0f} ms "
                           f"| {r['flat_added'] * 1000:.0f} ms |")  # fmt: skip
                    lines.append(row)
                    print(row, flush=True)
        if not args.no_app:
            folder = make_model("cpu-demo", Path(tmp))
            sec = time_app(folder, 512, max(3, args.runs // 2))
            row = f"| cpu-demo via the app (gradio_client round trip) | 512x512 | its scale | | {sec * 1000:.0f} ms | |"
            lines.append(row)
            print(row)
    out = ROOT / "bench" / "results" / "inference.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(
        json.dumps(
            {f"{k[0]}-{k[1]}-{k[2]}": {m: round(v * 1000) for m, v in r.items()} for k, r in results.items()}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
