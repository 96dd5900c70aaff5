"""Helpers for app and browser tests: start `app.py` on a free port, launch Debian's chromium through Playwright,
make a tiny exported model.

with run_app("--model", str(tmp), env={...}) as url, sync_playwright() as p:
    browser = launch_chromium(p)
    page = browser.new_page()
    open_page(page, url)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT_S = 90.0  # importing gradio alone takes about 6 s on a 2-core machine
STOP_GRACE_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, limit: int = 6000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-limit:]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)  # gradio shuts down cleanly on Ctrl-C
    try:
        proc.wait(timeout=STOP_GRACE_S)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_GRACE_S)


@contextlib.contextmanager
def run_app(*args: str, env: dict[str, str] | None = None, timeout: float = START_TIMEOUT_S) -> Iterator[str]:
    """Start `python app.py --port <free port> *args` from the repo root; yield its base URL; stop it afterwards.

    `env` is added to (not a replacement for) the current environment. When the app exits early or does not answer
    within `timeout` seconds, the test fails with the tail of the app's output.
    """
    port = free_port()
    full_env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **(env or {})}
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory(prefix="app-log-") as tmp:
        log_path = Path(tmp) / "app.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), *args],
                cwd=REPO,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    pytest.fail(
                        f"app.py exited with code {proc.returncode} before serving:\n{_tail(log_path)}"
                    )
                try:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"app.py did not answer on {url} within {timeout:.0f} s:\n{_tail(log_path)}")
                time.sleep(0.3)
            try:
                yield url
            except BaseException:
                # Surface what the app printed: the browser-side failure is often explained there.
                print(f"--- app.py output ---\n{_tail(log_path)}", file=sys.stderr)
                raise
        finally:
            _stop(proc)


def fetch(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode("utf-8", errors="replace")


def open_page(page, url: str, ready: str = "#colorize", timeout_ms: float = 60_000) -> None:
    """Load the app and wait until its components are mounted (`ready` visible).

    Not `wait_until="networkidle"`: a page with session state (gr.State) keeps a heartbeat request open, so the
    network is never idle. Uploading before the components are mounted is silently ignored.
    """
    page.goto(url, wait_until="load", timeout=timeout_ms)
    page.locator(ready).wait_for(state="visible", timeout=timeout_ms)


def assert_no_gradio_error(page) -> None:
    """No error toast, no "Error" badge on an output (what gradio 6 shows when a handler raises), no traceback."""
    from playwright.sync_api import expect

    expect(page.locator("[data-testid='toast-body']")).to_have_count(0)
    expect(page.locator("[data-testid='status-tracker'] .error")).to_have_count(0)
    expect(page.locator("body")).not_to_contain_text("Traceback")


def launch_chromium(playwright, **kwargs):
    """Debian's chromium (never Playwright's own download). Fails, not skips, when it is missing: CI installs it."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"{CHROMIUM} not found: run `make chromium` (or `make test`, which installs it) first")
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, **kwargs
    )


# ---------------------------------------------------------------------------------------------- a tiny model

TINY_ARCH = {"base_width": 8, "depth": 3, "max_width": 32}


def make_tiny_model(out_dir: Path, *, seed: int = 0, noise: float = 0.3, meta: dict | None = None) -> Path:
    """Export a tiny, randomly perturbed generator to `out_dir` (model.safetensors + model.json); returns it.

    Fresh pix2pix init gives an almost constant grey; the perturbation makes the colors vary with the input.
    `colorizer.export.git_info` is replaced for the call: no git subprocess, a fixed "commit".
    """
    from unittest import mock

    import torch

    from colorizer import export
    from colorizer.config import GeneratorConfig
    from colorizer.models.generator import build_generator

    arch = GeneratorConfig(**TINY_ARCH)
    torch.manual_seed(seed)
    G = build_generator(arch)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * noise)
    info = {
        "training": {
            "name": f"tiny-test-{seed}",
            "step": 1234,
            "epoch": 2,
            "images_seen": 9872,
            "data": "tests/synthetic-drawings",
            "size_hw": [64, 96],
            "weights": "EMA generator",
        },
        "metrics": {"val/l1": 0.123456, "val/fid": 98.7},
        **(meta or {}),
    }
    commit = {"commit": "0123456789abcdef" * 2 + "01234567", "dirty": True}
    with mock.patch.object(export, "git_info", lambda *a, **k: commit):
        return export.save_model(G.state_dict(), arch, out_dir, meta=info)
