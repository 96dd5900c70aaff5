"""Command lines as a user runs them: `colorizer inspect`, `train`, `export`, errors; package boundaries."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colorizer.cli import main
from colorizer.config import load_config
from colorizer.inspect_data import inspect_data

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_inspect_grid_shows_what_the_model_receives(drawings_dir, tmp_path):
    cfg = load_config(
        None, [f"data.source={drawings_dir}", "data.height_px=96", "data.width_px=160", "data.workers=0"]
    )
    report = inspect_data(cfg, tmp_path / "grid.png", samples=4, hist_samples=200)
    grid = np.asarray(Image.open(report.grid_path).convert("RGB"))
    # 4 rows of 4 tiles (target | line art | hint map | mask) at the model's size, plus labels and padding
    assert grid.shape[1] == 4 * 160 + 5 * 2 and grid.shape[0] == 14 + 4 * 96 + 5 * 2
    line_tile = grid[16 : 16 + 96, 2 + 160 + 2 : 2 + 2 * 160 + 2]
    assert np.allclose(line_tile[..., 0], line_tile[..., 1])  # line art is grey, shown as it is fed
    assert Image.open(report.hist_path).size[0] > 100
    assert report.samples >= 200
    assert 0.35 < report.no_hint_share < 0.65  # the configured share (0.5), seen in what the model gets
    assert report.stats["line [-1,1]"]["min"] >= -1 and report.stats["line [-1,1]"]["max"] <= 1
    assert report.stats["mask [0,1]"]["min"] == 0


def test_inspect_cli_and_broken_files_are_reported(drawings_dir, tmp_path, capsys):
    (drawings_dir / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "look" / "grid.png"
    code = main(["inspect", f"data.source={drawings_dir}", "data.height_px=64", "data.width_px=96",
                 "data.workers=0", "--out", str(out), "--samples", "3"])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "with no hints" in text and "unreadable files skipped: " in text
    skipped = int(text.split("unreadable files skipped: ")[1].split()[0])
    assert skipped >= 1
    assert out.is_file() and (out.parent / "grid.hist.png").is_file()


def test_config_error_names_the_key_and_exits_2(capsys):
    assert main(["inspect", "data.hieght_px=3"]) == 2
    err = capsys.readouterr().err
    assert "data.hieght_px" in err and "Traceback" not in err


def test_missing_data_is_a_readable_error(tmp_path, capsys):
    assert main(["train", f"data.source={tmp_path / 'nothing'}", f"run_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert "neither a manifest.jsonl nor a folder" in err


@pytest.mark.slow
def test_train_then_export_from_the_command_line(drawings_dir, tmp_path):
    r = run("colorizer", "train", "--config", "configs/cpu-tiny.yaml", f"data.source={drawings_dir}",
            f"run_dir={tmp_path / 'runs'}", "tracking.wandb_mode=disabled", "train.steps=2")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "predicting the mean color" in r.stderr  # the first loss beside the trivial guess
    ckpt = tmp_path / "runs" / "cpu-tiny" / "checkpoints" / "last.pt"
    r = run("colorizer", "export", str(ckpt), "--out", str(tmp_path / "model"))
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "model" / "model.json").read_text())
    assert info["training"]["step"] == 2 and (tmp_path / "model" / "model.safetensors").stat().st_size > 0
    r = run("colorizer", "export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m2"))
    assert r.returncode == 1 and "checkpoint not found" in r.stderr and "Traceback" not in r.stderr


def test_crawler_commands_explain_bad_arguments_without_a_traceback(tmp_path):
    r = run("crawler", "crawl", "1girl")
    assert r.returncode == 2 and "--out" in r.stderr and "Traceback" not in r.stderr
    r = run("crawler", "filter", str(tmp_path / "missing"), "--out", str(tmp_path / "curated"))
    assert r.returncode == 2 and "not a folder" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "module, forbidden",
    [
        ("crawler.cli", ["torch", "colorizer", "gradio"]),
        ("colorizer.train", ["crawler", "gradio"]),
        ("colorizer.data", ["crawler", "gradio"]),
    ],  # fmt: skip
)
def test_package_boundaries(module, forbidden):
    code = f"import sys, {module}; print(sorted(m for m in {forbidden!r} if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", f"{module} imports {r.stdout.strip()}"


@pytest.fixture
def tiny_model(tmp_path):
    import torch

    from colorizer.config import GeneratorConfig
    from colorizer.export import save_model
    from colorizer.models.generator import build_generator

    arch = GeneratorConfig(base_width=8, depth=3, max_width=32)
    torch.manual_seed(0)
    G = build_generator(arch)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # a model whose output depends on its input
    return save_model(G.state_dict(), arch, tmp_path / "model")


def test_colorize_folders_skips_existing_and_reports_bad_files(drawings_dir, tiny_model, tmp_path, capsys):
    (drawings_dir / "a" / "broken.png").write_text("<html>not an image</html>")
    out = tmp_path / "out"
    code = main(
        ["colorize", str(drawings_dir), "--model", str(tiny_model), "--out", str(out), "--resolution", "64"]
    )
    assert code == 1  # one file failed ...
    err = capsys.readouterr()
    assert "broken.png" in err.err and "colored 6" in err.out and "failed 1" in err.out
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert made == ["a/1.png", "a/3.png", "a/5.png", "b/0.png", "b/2.png", "b/4.png"]  # ... the rest went on
    for rel in made:  # same size as the input
        assert Image.open(out / rel).size == Image.open(drawings_dir / rel).size
    stamp = (out / "a/1.png").stat().st_mtime_ns
    (drawings_dir / "a" / "broken.png").unlink()
    assert main(["colorize", str(drawings_dir), "--model", str(tiny_model), "--out", str(out)]) == 0
    assert "skipped 6" in capsys.readouterr().out and (out / "a/1.png").stat().st_mtime_ns == stamp
    assert main(["colorize", str(drawings_dir / "a" / "1.png"), "--model", str(tiny_model), "--out", str(out),
                 "--overwrite"]) == 0  # fmt: skip
    assert (out / "1.png").is_file()


def test_colorize_with_hints_file_changes_the_result(drawings_dir, tiny_model, tmp_path):
    src = drawings_dir / "b" / "0.png"
    w, h = Image.open(src).size
    hints = np.zeros((h, w, 4), np.uint8)
    hints[h // 3 : h // 3 + 20, w // 3 : w // 3 + 30] = (255, 0, 0, 255)
    Image.fromarray(hints, "RGBA").save(tmp_path / "hints.png")
    Image.fromarray(hints[..., :3]).save(tmp_path / "opaque.png")
    assert main(["colorize", str(src), "--model", str(tiny_model), "--out", str(tmp_path / "plain")]) == 0
    assert main(["colorize", str(src), "--model", str(tiny_model), "--out", str(tmp_path / "hinted"),
                 "--hints", str(tmp_path / "hints.png")]) == 0  # fmt: skip
    plain = np.asarray(Image.open(tmp_path / "plain" / "0.png"), np.int16)
    hinted = np.asarray(Image.open(tmp_path / "hinted" / "0.png"), np.int16)
    assert np.abs(plain - hinted).max() > 10
    # hints without transparency cannot say where there is no hint: refused per file, clearly
    assert main(["colorize", str(src), "--model", str(tiny_model), "--out", str(tmp_path / "x"),
                 "--hints", str(tmp_path / "opaque.png")]) == 1  # fmt: skip


def test_colorize_bad_model_and_settings_are_clear_errors(drawings_dir, tmp_path, tiny_model, capsys):
    assert (
        main(["colorize", str(drawings_dir), "--model", str(tmp_path / "none"), "--out", str(tmp_path)]) == 1
    )
    assert "not found" in capsys.readouterr().err
    assert main(["colorize", str(drawings_dir), "--model", str(tiny_model), "--out", str(tmp_path),
                 "--resolution", "5"]) == 1  # fmt: skip
    assert "resolution must be between" in capsys.readouterr().err


def test_colorize_layers_modes_and_a_missing_hint_file(drawings_dir, tiny_model, tmp_path, capsys):
    """--layers writes X.flats.png and X.lines.png at the sketch's size; --mode soft differs from flat;
    a hints folder without a file for one input says so and colors that one without hints."""
    src = drawings_dir / "a"
    hints = tmp_path / "hints"
    hints.mkdir()
    w, h = Image.open(src / "1.png").size
    layer = np.zeros((h, w, 4), np.uint8)
    layer[h // 2 - 3 : h // 2 + 3, w // 2 - 3 : w // 2 + 3] = (47, 158, 68, 255)
    Image.fromarray(layer, "RGBA").save(hints / "1.png")
    out = tmp_path / "flat"
    assert main(["colorize", str(src), "--model", str(tiny_model), "--out", str(out), "--layers",
                 "--hints", str(hints)]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "no hints for 3.png" in err and "no hints for 5.png" in err and "1.png" not in err
    for stem in ("1", "3", "5"):
        size = Image.open(src / f"{stem}.png").size
        composite, colors, lines = (Image.open(out / f"{stem}{s}.png") for s in ("", ".flats", ".lines"))
        assert composite.size == colors.size == lines.size == size
        assert lines.mode == "RGBA" and colors.mode == "RGB"
    assert main(["colorize", str(src), "--model", str(tiny_model), "--out", str(tmp_path / "soft"),
                 "--mode", "soft"]) == 0  # fmt: skip
    assert not (tmp_path / "soft" / "1.flats.png").exists()
    flat = np.asarray(Image.open(out / "3.png"), np.int16)
    soft = np.asarray(Image.open(tmp_path / "soft" / "3.png"), np.int16)
    assert np.abs(flat - soft).mean() > 1
    assert main(["colorize", str(src), "--model", str(tiny_model), "--out", str(tmp_path / "x"),
                 "--background", "bluish"]) == 1  # fmt: skip
    assert "#rrggbb" in capsys.readouterr().err
