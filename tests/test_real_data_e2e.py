"""The whole product on real drawings at toy scale, through the command lines a user runs:
openclipart -> catalog -> local Safebooru -> crawler crawl -> crawler filter -> colorizer train -> export ->
colorizer colorize. A break anywhere in the chain fails here.

The drawings in tests/data/openclipart are 45 public-domain files from Debian's openclipart-png, kept at their
package paths: colour clip art from the seven training categories, pure line art, tiny files, and one drawing
from a category the demo model never trains on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DRAWINGS = ROOT / "tests" / "data" / "openclipart"
QUERIES = ["people", "animals", "food", "plants", "transportation", "recreation", "signs_and_symbols"]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )


@pytest.mark.slow
def test_from_real_drawings_to_a_colored_png_through_the_command_lines(tmp_path):
    catalog = tmp_path / "catalog"
    r = run(
        "scripts/openclipart_catalog.py",
        str(DRAWINGS),
        str(catalog),
        "--categories",
        "train",
        "--workers",
        "1",
    )
    assert r.returncode == 0, r.stderr
    assert "44 drawings" in r.stdout  # the office drawing is left out: an unseen category
    assert not (catalog / "office").exists()
    sidecar = json.loads((catalog / "people" / "smilies" / "smiley106.json").read_text())
    assert sidecar["tags"][:3] == ["people", "smilies", "smiley"]
    with Image.open(catalog / "people" / "smilies" / "smiley106.png") as img:
        assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 255, 255)  # transparency -> white

    server = subprocess.Popen(
        [sys.executable, "-m", "crawler", "serve-local", str(catalog), "--port", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = server.stdout.readline().split(" at ")[1].split()[0]
        raw = tmp_path / "raw"
        r = run("-m", "crawler", "crawl", *QUERIES, "--base-url", url, "--rate", "0", "--out", str(raw),
                "--no-progress")  # fmt: skip
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
    assert r.returncode == 0, r.stderr
    assert "0 failed" in r.stdout
    assert sorted(p.name for p in raw.iterdir() if p.is_dir()) == sorted(QUERIES)

    curated = tmp_path / "curated"
    r = run("-m", "crawler", "filter", str(raw), "--out", str(curated), "--config",
            "configs/curate-openclipart.yaml", "--set", "split.shares={train: 0.6, val: 0.2, test: 0.2}",
            "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    kept = [json.loads(line) for line in (curated / "manifest.jsonl").read_text().splitlines()]
    rejected = [json.loads(line) for line in (curated / "rejected.jsonl").read_text().splitlines()]
    reasons = [x["reason"] for x in rejected]
    assert len(kept) >= 25, reasons
    assert reasons.count("greyscale") >= 5 and reasons.count("too_small") >= 2  # line art and tiny files out
    assert {x["split"] for x in kept} == {"train", "val", "test"}
    assert "greyscale" in r.stdout  # the counts per reason are reported

    runs = tmp_path / "runs"
    r = run("-m", "colorizer", "train", "--config", "configs/cpu-tiny.yaml",
            f"data.source={curated / 'manifest.jsonl'}", f"run_dir={runs}", "train.steps=4", "train.val_every=4",
            "tracking.wandb_mode=disabled")  # fmt: skip
    assert r.returncode == 0, r.stderr
    model = tmp_path / "model"
    r = run("-m", "colorizer", "export", str(runs / "cpu-tiny" / "checkpoints" / "last.pt"), "--out", str(model),
            "--half")  # fmt: skip
    assert r.returncode == 0, r.stderr
    info = json.loads((model / "model.json").read_text())
    assert info["training"]["step"] == 4 and info["weights_dtype"] == "float16"

    # a real pure line-art drawing the filter rejected: what an artist would upload
    line_art = next(raw / x["src_path"] for x in rejected if x["reason"] == "greyscale")
    r = run("-m", "colorizer", "colorize", str(line_art), "--model", str(model), "--out", str(tmp_path / "colored"),
            "--resolution", "64")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = tmp_path / "colored" / (line_art.stem + ".png")
    with Image.open(line_art) as src, Image.open(out) as result:
        assert result.size == src.size
        a = np.asarray(result.convert("RGB"), dtype=np.int16)
        b = np.asarray(src.convert("RGB"), dtype=np.int16)
    assert np.abs(a - b).mean() > 1  # the model painted something


def test_the_shipped_demo_model_is_what_make_app_loads_and_it_colors(monkeypatch):
    """`make app` / `python app.py` without --model load weights/: a small, safe, traceable model that colors."""
    import app
    from colorizer.export import load_generator
    from colorizer.inference import Colorizer

    monkeypatch.delenv(app.WEIGHTS_ENV, raising=False)
    weights = ROOT / "weights"
    assert app.find_models(None) == [weights]
    assert (weights / "model.safetensors").stat().st_size <= 20 * 1024 * 1024
    _, info = load_generator(weights)
    assert info["demo"]["commands"][0].startswith("bash scripts/demo_model.sh")
    # at least 2 CPU hours, a fine-tune's first run included (the card sums the stages), from known code
    assert info["demo"]["time"]["train_minutes"] >= 119 and info["code"]["commit"] != "unknown"
    assert info["training"]["train_seconds"] <= info["demo"]["time"]["train_minutes"] * 60 + 60
    assert len(info["demo"]["data"]["unseen_categories"]) >= 5  # named, for the README's pictures
    state = app.load_model(app.find_models(None))
    assert state.loaded and "demo model" in state.panel_markdown()

    sketch = Image.open(ROOT / "examples" / "anime_girl_sylvie.png")
    out = Colorizer.load(weights).colorize(sketch)  # the defaults: flat colors at the model's own scale
    assert out.size == sketch.size
    rgb = np.asarray(out.convert("RGB"), dtype=np.int16)
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    assert (chroma > 20).mean() > 0.05  # color, not just the grey sketch back
