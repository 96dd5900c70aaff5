"""The Gradio app: handlers called directly (fast), and the page driven through Debian's chromium (slow)."""

from __future__ import annotations

import io
import json
import re
import struct
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import app
from tests.browser import (
    assert_no_gradio_error,
    fetch,
    free_port,
    launch_chromium,
    make_tiny_model,
    open_page,
    run_app,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "anime_girl_sylvie.png"  # 456x700, a real drawing's line art


@pytest.fixture(scope="module")
def cat(tmp_path_factory) -> Path:
    """A 512x384 sketch: closed shapes, black on white."""
    path = tmp_path_factory.mktemp("sketches") / "cat_landscape.png"
    img = Image.new("L", (512, 384), 255)
    d = ImageDraw.Draw(img)
    d.ellipse((140, 90, 380, 330), outline=0, width=4)
    d.polygon([(160, 130), (180, 40), (240, 100)], outline=0, width=4)
    d.polygon([(280, 100), (340, 40), (360, 130)], outline=0, width=4)
    d.rectangle((20, 300, 492, 370), outline=0, width=3)
    img.save(path)
    return path


def _editor_value(sketch: Image.Image | None, hint_box: tuple[int, int, int, int] | None = None) -> dict:
    """What gr.ImageEditor(type="pil") hands the function: background, layers, composite (RGBA)."""
    if sketch is None:
        return {"background": None, "layers": [], "composite": None}
    bg = sketch.convert("RGBA")
    layer = Image.new("RGBA", bg.size, (0, 0, 0, 0))
    if hint_box is not None:
        ImageDraw.Draw(layer).rectangle(hint_box, fill=(224, 49, 49, 255))
    return {"background": bg, "layers": [layer], "composite": Image.alpha_composite(bg, layer)}


class FakeLayers:
    def __init__(self, composite: Image.Image, network_hw: tuple[int, int]):
        self.composite = composite
        self.colors = composite
        lines = np.zeros((composite.height, composite.width, 4), np.uint8)
        lines[..., 3] = 255 - np.asarray(composite.convert("L"))
        self.lines = Image.fromarray(lines, "RGBA")
        self.network_hw = network_hw


class FakeColorizer:
    """Stands in for colorizer.inference.Colorizer: paints the hints over the sketch, records what it got."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.last_hints = None

    def colorize_layers(
        self, sketch, hints=None, *, mode="flat", resolution=None, background=None
    ) -> FakeLayers:
        self.calls.append(
            (sketch.size, hints.size if hints is not None else None, resolution, mode, background)
        )
        self.last_hints = hints
        out = sketch.convert("RGBA")
        if hints is not None:
            out = Image.alpha_composite(out, hints.resize(out.size, Image.Resampling.NEAREST))
        side = resolution or 128
        s = side / max(sketch.size)
        return FakeLayers(out.convert("RGB"), (round(sketch.height * s), round(sketch.width * s)))


def _loaded(model) -> app.ModelState:
    return app.ModelState(model, [Path("fake-model")], "Model loaded from `fake-model`")


# ------------------------------------------------------------------------------------ files, good and bad


def bilevel_png(path: Path, width: int, height: int) -> Path:
    """A valid all-white 1-bit PNG of any size, written without holding the pixels (a few KB on disk)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    comp = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    idat = b"".join(comp.compress(row * 500) for _ in range(height // 500))
    idat += comp.compress(row * (height % 500)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def bad_file(folder: Path, kind: str, cat: Path | None = None) -> Path:
    """One of the uploads a user may try: not an image, truncated, enormous, tiny, empty, PostScript, too many bytes,
    a strip."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "html":
        path = folder / "sketch.png"
        path.write_text("<!doctype html><html><body>Sorry, this page moved.</body></html>\n")
    elif kind.startswith("truncated_"):
        ext = kind.split("_")[1]
        buf = io.BytesIO()
        Image.open(EXAMPLE).convert("RGB").save(buf, {"png": "PNG", "jpg": "JPEG"}[ext])
        path = folder / f"truncated.{ext}"
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif kind == "huge":
        path = bilevel_png(folder / "huge.png", 12000, 12000)  # 144 Mpx: Pillow only warns; our limit is 64
    elif kind == "bomb":
        path = bilevel_png(folder / "bomb.png", 14000, 14000)  # 196 Mpx: Pillow itself refuses to open it
    elif kind == "tiny":
        path = folder / "tiny.png"
        Image.new("RGB", (1, 1), "white").save(path)
    elif kind == "empty":
        path = folder / "empty.png"
        path.write_bytes(b"")
    elif kind == "eps":  # Pillow would hand it to Ghostscript; the app never does
        path = folder / "drawing.eps"
        path.write_text(
            "%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nnewpath 0 0 moveto 100 100 lineto stroke\n"
        )
    elif kind == "many_bytes":
        path = folder / "noise.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(app.MAX_FILE_BYTES))
    elif kind == "strip":
        path = folder / "strip.png"
        Image.new("L", (10000, 100), 255).save(path)
    else:
        raise ValueError(kind)
    return path


def animated_gif(path: Path) -> Path:
    frames = []
    for color in ("white", "red", "blue"):
        f = Image.new("RGB", (200, 150), color)
        ImageDraw.Draw(f).ellipse((20, 20, 180, 130), outline="black", width=3)
        frames.append(f)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=200, loop=0)
    return path


EXPECTED = {  # what the status line says about each bad file
    "html": "is not an image this app can read",
    "truncated_png": "is damaged or incomplete",
    "truncated_jpg": "is damaged or incomplete",
    "huge": "12000x12000 px (144 megapixels); the limit is 64 megapixels",
    "bomb": "is too large",
    "tiny": "1x1 px; a sketch needs at least 8 px",
    "empty": "is empty",
    "eps": "is not an image this app can read",
    "many_bytes": "the limit is 20 MB",
    "strip": "is a strip**, 10000x100 px",
}


# ------------------------------------------------------------------------------------ handlers, no browser


def test_handlers_without_browser(tmp_path):
    none = app.load_model(None)
    assert not none.loaded
    assert "No model loaded" in none.panel_markdown()
    assert "colorizer train --config configs/cpu-demo.yaml" in none.panel_markdown()

    # Nothing opened: the editor's empty value and a plain None both ask for a sketch, even with a model.
    for state in (none, _loaded(FakeColorizer())):
        for empty in (None, _editor_value(None)):
            image, status, files = app.colorize_request(state, empty, False)
            assert image is None and files == [] and "Open a sketch first" in status

    # A sketch but no model: says so and how to get one, no exception.
    value, status, ref = app.upload_request(str(EXAMPLE))
    assert ref is not None and "Loaded `anime_girl_sylvie.png` (456x700 px)" in status
    image, status, _ = app.colorize_request(none, value, False, app.RES_AUTO, ref)
    assert image is None
    assert "No model loaded" in status
    assert "colorizer train" in status and "colorizer export" in status and "--model" in status


def test_colorize_request_passes_sketch_hints_mode_and_settings(cat, tmp_path):
    model = FakeColorizer()
    state = _loaded(model)
    sketch = Image.open(cat)  # 512x384
    value = _editor_value(sketch, hint_box=(100, 100, 120, 120))

    image, status, files = app.colorize_request(state, value, False, out_dir=tmp_path / "a")
    assert model.calls[-1] == ((512, 384), (512, 384), None, "flat", None)  # full size, the model's own scale
    assert image is not None and image.size == sketch.size
    assert status.startswith("Colored in ") and "with your hints (flat colors)" in status
    assert "the network at 128x96" in status
    r, g, _ = image.getpixel((110, 110))
    assert r > 150 and g < 120  # the red hint came through
    # three downloads: the result, its colors, its lines on transparency; PNGs of the sketch's size
    assert [Path(f).name for f in files] == ["sketch.colored.png", "sketch.flats.png", "sketch.lines.png"]
    for f in files:
        assert Image.open(f).format == "PNG" and Image.open(f).size == (512, 384)
    assert Image.open(files[2]).mode == "RGBA"

    image, status, _ = app.colorize_request(state, value, True, "512", mode="Soft", background="hints")
    assert model.calls[-1] == ((512, 384), None, 512, "soft", "hints")  # "ignore my hints" drops them
    assert "without hints (soft colors)" in status

    app.colorize_request(state, _editor_value(sketch), False)  # an empty hint layer counts as no hints
    assert model.calls[-1][1] is None
    for odd, expected in ((5000, 1024), (1, 128), (None, None), ("x", None), ("auto", None), (256.0, 256)):
        app.colorize_request(state, value, False, odd)  # whatever an API caller sends
        assert model.calls[-1][2] == expected
    assert app.background_choice(app.BACKGROUNDS[1]) == "hints" and app.background_choice("x") is None


def test_result_folders_older_than_an_hour_are_removed(tmp_path):
    import os

    old = app.fresh_result_dir(tmp_path)
    (old / "x.colored.png").write_bytes(b"png")
    hour_ago = time.time() - 3700
    os.utime(old, (hour_ago, hour_ago))
    recent = app.fresh_result_dir(tmp_path)
    newest = app.fresh_result_dir(tmp_path)
    assert not old.exists() and recent.is_dir() and newest.is_dir() and recent != newest


def test_a_full_line_gets_a_sentence_not_a_wait():
    """The gate lets one colorization run and a few wait; one more is told the app is busy."""
    gate = app.Gate(running=1, waiting=1)
    inside, release = threading.Event(), threading.Event()

    def hold():
        with gate.enter():
            inside.set()
            release.wait(10)

    first = threading.Thread(target=hold)
    first.start()
    assert inside.wait(10)
    second = threading.Thread(target=lambda: gate.enter().__enter__())  # waits for the slot
    second.start()
    deadline = time.time() + 10
    while gate.waiting < 1 and time.time() < deadline:
        time.sleep(0.01)
    state = _loaded(FakeColorizer())
    image, status, files = app.colorize_request(
        state, _editor_value(Image.new("L", (64, 64), 255)), False, gate=gate
    )
    assert image is None and files == [] and "The app is busy" in status and "Try again" in status
    release.set()
    first.join(10)
    second.join(10)


def test_large_sketch_is_shown_small_and_colorized_at_full_size(tmp_path):
    big = Image.new("L", (2400, 1000), 255)
    ImageDraw.Draw(big).ellipse((400, 200, 2000, 800), outline=0, width=4)
    path = tmp_path / "big.png"
    big.save(path)
    value, status, ref = app.upload_request(str(path))
    assert ref == app.SketchRef(str(path), "big.png", (2400, 1000))
    assert value["background"].size == (2048, 853)  # the editor's copy
    assert "2400x1000 px" in status and "Shown at 2048x853" in status

    # The editor hands back hints at its own size; the model gets the full-size sketch and those hints.
    model = FakeColorizer()
    shown = _editor_value(value["background"], hint_box=(1000, 400, 1040, 440))
    image, status, _ = app.colorize_request(_loaded(model), shown, False, "512", ref)
    assert model.calls[-1][:3] == ((2400, 1000), (2048, 853), 512)
    assert image.size == (2400, 1000)
    assert "`big.png`, 2400x1000 px, the network at 512x213" in status

    path.unlink()  # the uploaded file is gone (a cleaned cache): a message, not an exception
    image, status, _ = app.colorize_request(_loaded(model), shown, False, "512", ref)
    assert image is None and "could not be read" in status and "Open the sketch again" in status


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_bad_uploads_get_a_readable_message(tmp_path, kind):
    path = bad_file(tmp_path, kind)
    value, status, ref = app.upload_request(str(path))
    assert value is None and ref is None
    assert EXPECTED[kind] in status, status
    assert f"`{path.name}`" in status
    assert "Traceback" not in status and "Error:" not in status.split("(")[0]


def test_odd_but_good_uploads_are_accepted(tmp_path):
    gif = animated_gif(tmp_path / "anim.gif")
    value, status, ref = app.upload_request(str(gif))
    assert ref is not None and ref.size == (200, 150)
    assert "animated (3 frames): the first frame is used" in status
    assert value["background"].getpixel((100, 10)) == (255, 255, 255)  # frame 0 is white, not red or blue

    # Transparent paper (stored as transparent black) comes out white; 16-bit grey and CMYK JPEG are fine.
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[10:12, :, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "transparent.png")
    sketch, note = app.read_sketch(tmp_path / "transparent.png")
    assert (
        sketch.mode == "RGB"
        and sketch.getpixel((5, 5)) == (255, 255, 255)
        and sketch.getpixel((5, 10)) == (0, 0, 0)
    )
    Image.fromarray(np.full((30, 20), 40000, np.uint16)).save(tmp_path / "deep.png")
    assert app.read_sketch(tmp_path / "deep.png")[0].size == (20, 30)
    Image.new("CMYK", (32, 24), (0, 0, 0, 0)).save(tmp_path / "print.jpg")
    assert app.read_sketch(tmp_path / "print.jpg")[0].getpixel((3, 3))[0] > 240
    assert app.upload_request(None)[2] is None


def test_find_models_and_the_command_line(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(app.WEIGHTS_ENV, str(empty))
    assert app.find_models(None) == []
    assert app.find_models([]) == [] and app.find_models([""]) == []
    assert app.find_models([str(tmp_path / "x")]) == [tmp_path / "x"]  # explicit: returned even when missing
    a, b = tmp_path / "a", tmp_path / "b"
    assert app.find_models([f"{a},{b}"]) == [a, b]
    assert app.find_models([str(a), str(b), str(a)]) == [a, b]
    comma = tmp_path / "v1,final"
    comma.mkdir()
    assert app.find_models([str(comma)]) == [comma]  # an existing folder is taken whole

    assert app.parse_args([]).model is None
    assert app.parse_args(["--model", "a", "--model", "b,c"]).model == ["a", "b,c"]

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.json").write_text(json.dumps({"step": 1}))
    monkeypatch.setenv(app.WEIGHTS_ENV, str(weights))
    assert app.find_models(None) == []  # model.safetensors missing
    (weights / "model.safetensors").write_bytes(b"not a safetensors file")
    assert app.find_models(None) == [weights]


def test_load_model_messages(tmp_path):
    missing = app.load_model(tmp_path / "nonexistent")
    assert not missing.loaded and "Model folder not found" in missing.panel_markdown()
    empty = tmp_path / "empty"
    empty.mkdir()
    no_files = app.load_model(empty)
    assert not no_files.loaded and "model.safetensors" in no_files.detail

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "model.json").write_text(json.dumps({"step": 1}))
    (junk / "model.safetensors").write_bytes(b"not a safetensors file")
    state = app.load_model(junk)
    assert not state.loaded
    assert state.title.startswith("No model loaded")
    assert "ModelLoadError" in state.detail and "not a lineart-colorizer model" in state.detail
    assert "Traceback" not in state.panel_markdown()


def test_model_panel_says_how_the_model_was_trained(tmp_path):
    a = make_tiny_model(tmp_path / "a", seed=0)
    one = app.load_model(a)
    assert one.loaded, one.detail
    panel = one.panel_markdown()
    for text in (
        "Model loaded: `tiny-test-0` on cpu",
        str(a),
        "1,234 steps (2 epochs)",
        "9,872 images seen",
        "trained at 96x64 px",
        "`tests/synthetic-drawings`",
        "val/l1 0.1235",
        "val/fid 98.7",
        "commit `0123456789ab` (with uncommitted changes)",
        "Exported:",
        "base_width 8, depth 3, max_width 32",
        " parameters",
    ):
        assert text in panel, (text, panel)

    b = make_tiny_model(tmp_path / "b", seed=1)
    both = app.load_model([a, b])
    assert both.loaded and len(both.model.generators) == 2
    panel = both.panel_markdown()
    assert "Ensemble of 2 models" in panel and "tiny-test-0" in panel and "tiny-test-1" in panel

    # Odd or missing fields never break the panel.
    assert app.describe_model(None).startswith("- (")
    assert app.describe_model({"training": "x", "metrics": [1], "code": "y"}).startswith("- (")
    assert "5 steps" in app.describe_model({"step": 5})


def test_about_this_model_is_written_for_a_person(tmp_path):
    card = {"summary": "A small demo model.", "trained_on": "6,000 public-domain drawings", "good_at": "flat icons",
            "bad_at": "anime faces", "how": "120 CPU minutes"}  # fmt: skip
    state = app.load_model(make_tiny_model(tmp_path / "m", meta={"card": card}))
    text = app.model_card(state)
    for part in ("A small demo model.", "**Trained on:** 6,000", "**Good at:** flat icons", "**Not good at:** anime",
                 "**How it was made:** 120 CPU minutes"):  # fmt: skip
        assert part in text, text
    assert "discriminator" not in text and "loss" not in text  # internals stay in model.json
    plain = app.model_card(app.load_model(make_tiny_model(tmp_path / "n")))  # no card: what training recorded
    assert "1,234 steps" in plain
    assert "How to get a model" in app.model_card(app.load_model(None))


def test_real_tiny_model_through_the_handlers(cat, tmp_path):
    state = app.load_model(make_tiny_model(tmp_path / "m"))
    value, _, ref = app.upload_request(str(cat))
    painted = _editor_value(value["background"], hint_box=(200, 150, 230, 170))
    image, status, files = app.colorize_request(state, painted, False, "256", ref, out_dir=tmp_path / "out")
    assert image is not None and image.size == (512, 384), status
    assert status.startswith("Colored in") and "with your hints" in status
    assert len(files) == 3 and all(Image.open(f).size == (512, 384) for f in files)
    plain, _, _ = app.colorize_request(state, painted, True, "256", ref)
    assert np.abs(np.asarray(image, np.int16) - np.asarray(plain, np.int16)).mean() > 0.5

    image, status, _ = app.colorize_request(state, _editor_value(Image.new("RGB", (4, 4), "white")), False)
    assert image is None and "This sketch cannot be colorized" in status and "at least 8 px" in status


# ------------------------------------------------------------------------------------ through the browser

VIEWPORT = {"width": 1366, "height": 768}  # a laptop: everything needed must fit without scrolling


def _open_file(page, path: Path) -> None:
    """Open a sketch: the drop zone while the sketch area is empty, else "Open another sketch"."""
    drop = page.locator("#sketch-drop input[type=file]")
    if page.locator("#sketch-drop").is_visible() and drop.count():
        drop.set_input_files(str(path))
    else:  # (the drop zone, shown again after Clear, can take a moment to offer its file input)
        page.locator("input[data-testid='Open another sketch-upload-button']").set_input_files(str(path))


def _image_box(page, image_size: tuple[int, int]) -> dict:
    """Where the sketch lies on the editor's canvas: centered, at the zoom the editor shows (e.g. "104%")."""
    import re

    canvas = page.locator("#editor canvas").first.bounding_box()
    assert canvas is not None
    zoom_text = page.locator("#editor").get_by_role("button", name=re.compile(r"^\d+%$")).inner_text()
    zoom = int(zoom_text.strip().rstrip("%")) / 100
    w, h = image_size[0] * zoom, image_size[1] * zoom
    return {
        "x": canvas["x"] + (canvas["width"] - w) / 2, "y": canvas["y"] + (canvas["height"] - h) / 2,
        "width": w, "height": h,
    }  # fmt: skip


def _paint_stroke(
    page,
    tool: str = "Brush",
    at: tuple[float, float] = (0.45, 0.5),
    length: float = 0.08,
    image_size: tuple[int, int] | None = None,
) -> None:
    """One short stroke in the editor with `tool` ("Brush" or "Erase"), `length` of the width long, at a share of
    the sketch (`image_size` given) or of the canvas. The pointer comes in over the canvas first, as a hand does."""
    page.locator("#editor").get_by_role("button", name=tool, exact=True).click()
    time.sleep(1)  # the tool opens (a person is never faster than this)
    box = _image_box(page, image_size) if image_size else page.locator("#editor canvas").first.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] * at[0], box["y"] + box["height"] * at[1]
    page.mouse.move(x - 30, y - 30)
    page.mouse.move(x, y, steps=6)
    time.sleep(0.3)
    page.mouse.down()
    page.mouse.move(x + box["width"] * length, y + 4, steps=8)
    page.mouse.up()


def _expect_brush(page, color: str) -> None:
    """The color picker (a button painted in the brush color; its dialog opens on click) shows `color`."""
    from playwright.sync_api import expect

    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    expect(page.locator("#picker button.dialog-button")).to_have_css(
        "background-color", f"rgb({r}, {g}, {b})", timeout=10_000
    )


def _expect_color_in_result(page, rgb: tuple[int, int, int], timeout_s: float = 20.0) -> None:
    """The result image shows `rgb` somewhere (the image arrives a moment after the status line)."""
    deadline = time.monotonic() + timeout_s
    while True:
        shot = np.asarray(Image.open(io.BytesIO(page.locator("#result img").screenshot())).convert("RGB"))
        if (np.abs(shot.astype(int) - rgb).max(axis=2) < 40).any():
            return
        assert time.monotonic() < deadline, f"no {rgb} in the result within {timeout_s:.0f} s"
        time.sleep(0.5)


def _in_view(page, selector: str) -> None:
    """The element is entirely inside the 1366x768 viewport, without scrolling."""
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not shown"
    assert box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"], (selector, box)
    assert box["x"] >= 0 and box["x"] + box["width"] <= VIEWPORT["width"], (selector, box)


def _launch(demo) -> int:
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, show_error=False,
                ssr_mode=False, quiet=True, max_file_size=app.GRADIO_MAX_FILE_SIZE, css=app.CSS)  # fmt: skip
    return port


@pytest.mark.slow
def test_app_with_missing_model_folder_still_starts():
    with run_app("--model", "/nonexistent") as url:
        config = fetch(url + "config")  # the page's components and their values, as the browser receives them
    assert "Model folder not found" in config
    assert "/nonexistent" in config
    assert "colorizer train --config configs/cpu-demo.yaml" in config
    assert "Traceback" not in config


@pytest.mark.slow
def test_the_console_says_where_to_open_the_app_and_nothing_about_sharing(tmp_path):
    import subprocess
    import sys

    port = free_port()
    env = {**__import__("os").environ, "GRADIO_ANALYTICS_ENABLED": "False", app.WEIGHTS_ENV: str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        lines = []
        deadline = time.time() + 90
        while time.time() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "open http" in line:
                break
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    text = "".join(lines) + out
    assert f"open http://127.0.0.1:{port}/ in your browser" in text, text
    assert "share=True" not in text and "public link" not in text


@pytest.mark.slow
@pytest.mark.browser
def test_page_without_model_says_how_to_get_one(tmp_path, artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    empty = tmp_path / "no-weights"
    empty.mkdir()
    with (
        run_app(env={app.WEIGHTS_ENV: str(empty)}) as url,
        sync_playwright() as p,
    ):
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            open_page(page, url)
            status = page.locator("#status")
            expect(status).to_contain_text("No model loaded")
            page.locator("#about").get_by_role("button").first.click()
            panel = page.locator("#model-status")
            expect(panel.get_by_text("colorizer train --config configs/cpu-demo.yaml")).to_be_visible()
            expect(panel.get_by_text("colorizer export", exact=False)).to_be_visible()

            _open_file(page, EXAMPLE)
            expect(status).to_contain_text("Loaded anime_girl_sylvie.png (456x700 px)", timeout=30_000)
            page.click("#colorize")
            expect(status).to_contain_text("No model loaded", timeout=30_000)
            expect(status).to_contain_text("colorizer train")
            assert_no_gradio_error(page)
            page.screenshot(path=str(artifacts_dir / "app-no-model.png"))
        finally:
            browser.close()


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.filterwarnings("ignore:::gradio.queueing")  # gradio's own pandas deprecations
def test_stand_in_model_gets_the_sketch_hints_and_settings(artifacts_dir):
    """The whole UI wiring with a fake colorizer: an example opens in the editor, a swatch sets the brush, a stroke
    recolors by itself (Live), the mode, the hints switch and the resolution reach the model."""
    from playwright.sync_api import expect, sync_playwright

    model = FakeColorizer()
    demo = app.build_app(None, model_state=_loaded(model), live=True)
    port = _launch(demo)
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                open_page(page, f"http://127.0.0.1:{port}/")
                status = page.locator("#status")
                expect(
                    page.locator("#sketch-drop")
                ).to_be_visible()  # one sketch area: the drop zone, for now
                expect(page.locator("#editor")).to_be_hidden()

                # An example (the teacher, 340x261) opens in the editor, which takes the drop zone's place;
                # Live colors it at once.
                page.locator("#examples img[src*='teacher']").first.click()
                expect(status).to_contain_text("without hints", timeout=30_000)
                expect(page.locator("#editor")).to_be_visible()
                expect(page.locator("#sketch-drop")).to_be_hidden()
                assert model.calls[-1] == ((340, 261), None, None, "flat", None)
                time.sleep(2)
                # colored once (the editor's input event as the sketch lands adds nothing)
                assert len(model.calls) == 1

                # The green swatch, then one stroke: a new result with no click.
                page.locator("#swatch-4").click()
                _expect_brush(page, "#2f9e44")
                n = len(model.calls)
                _paint_stroke(page)
                expect(status).to_contain_text("with your hints", timeout=60_000)
                assert len(model.calls) > n and model.calls[-1][1] == (340, 261)
                hints = np.asarray(model.last_hints.convert("RGBA")).astype(int)
                painted = hints[..., 3] > 200
                green = np.abs(hints[painted][:, :3] - (47, 158, 68)).max(axis=1) < 40
                assert painted.any() and green.any()
                _expect_color_in_result(page, (47, 158, 68))

                # Soft mode, hints ignored, another resolution: each reaches the model.
                page.locator("#mode").get_by_text("Soft", exact=True).click()
                expect(status).to_contain_text("(soft colors)", timeout=30_000)
                page.locator("#no-hints input[type=checkbox]").check()
                expect(status).to_contain_text("without hints (soft colors)", timeout=30_000)
                assert model.calls[-1][1:4] == (None, None, "soft")
                page.locator("#settings").get_by_role("button").first.click()
                page.locator("#resolution input").click()
                page.get_by_role("option", name="256 px").click()
                expect(status).to_contain_text("the network at 256x197", timeout=30_000)
                assert model.calls[-1][2] == 256

                # Live off: a stroke does nothing until Colorize is pressed.
                page.locator("#live input[type=checkbox]").uncheck()
                page.locator("#no-hints input[type=checkbox]").uncheck()
                time.sleep(1.5)
                n = len(model.calls)
                _paint_stroke(page, at=(0.3, 0.3))
                time.sleep(3)
                assert len(model.calls) == n
                page.click("#colorize")
                expect(status).to_contain_text("with your hints (soft colors)", timeout=30_000)
                assert len(model.calls) == n + 1
                assert_no_gradio_error(page)
            finally:
                browser.close()
    finally:
        demo.close()


class SlowColorizer(FakeColorizer):
    """A stand-in that takes a while and counts how many calls run at the same time."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def colorize_layers(self, sketch, hints=None, **kwargs):
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(self.seconds)
            return super().colorize_layers(sketch, hints, **kwargs)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:::gradio.queueing")
def test_colorize_requests_run_one_at_a_time_and_a_full_line_is_told(cat, monkeypatch):
    """Visitors press Colorize at once: one runs at a time, QUEUE_SIZE wait and are served, the rest read that
    the app is busy (a sentence in the status line, not gradio's error badge)."""
    from gradio_client import Client, handle_file

    monkeypatch.setattr(app, "QUEUE_SIZE", 2)
    model = SlowColorizer(seconds=1.0)
    demo = app.build_app(None, model_state=_loaded(model), live=False)
    port = _launch(demo)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        sketch = handle_file(str(cat))
        value = {"background": sketch, "layers": [], "composite": sketch}
        jobs = [client.submit(value, False, "Flat", "auto", "White paper", None, api_name="/colorize")
                for _ in range(5)]  # fmt: skip
        results = [job.result(timeout=60) for job in jobs]
    finally:
        demo.close()
    statuses = [r[1] for r in results]
    done = [s for s in statuses if s.startswith("Colored in")]
    busy = [s for s in statuses if "The app is busy" in s]
    assert len(done) == 3 and len(busy) == 2, statuses  # 1 running + 2 waiting; 2 told
    assert model.most_at_once == app.COLORIZE_CONCURRENCY == 1 and len(model.calls) == 3
    for image_path, status, *_ in results:
        if status.startswith("Colored in"):
            assert Image.open(image_path).size == (512, 384)


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory):
    """app.py in its own process with a tiny exported model made here; yields (url, model folder)."""
    model_dir = make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")
    with run_app("--model", str(model_dir), "--live", "on") as url:
        yield url, model_dir


@pytest.mark.slow
@pytest.mark.browser
def test_everything_needed_fits_a_laptop_screen_and_layers_download(tiny_app, cat, artifacts_dir):
    """At 1366x768: the sketch, the palette, Colorize and the result without scrolling; the three downloads are
    PNGs of the sketch's size (colors, lines on transparency, the composite)."""
    from playwright.sync_api import expect, sync_playwright

    url, _ = tiny_app
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
            open_page(page, url)
            _open_file(page, cat)
            status = page.locator("#status")
            expect(status).to_contain_text(
                "Colored in", timeout=60_000
            )  # Live: colored as soon as it is open
            for selector in ("#editor canvas", "#picker", "#swatch-0", "#swatch-10", "#colorize", "#result img",
                             "#status", "#mode", "#live"):  # fmt: skip
                _in_view(page, selector)
            white = page.locator("#swatch-10").evaluate("e => getComputedStyle(e).borderColor")
            assert white not in ("rgb(255, 255, 255)", "rgba(0, 0, 0, 0)"), (
                white
            )  # the white swatch is visible
            expect(page.locator("#about")).to_be_visible()
            assert page.locator("#model-status").is_hidden()  # the model card waits in a closed accordion

            sizes = {}
            for button, kind in (("#dl-colored", "colored"), ("#dl-flats", "flats"), ("#dl-lines", "lines")):
                with page.expect_download() as download:
                    page.locator(button).click()
                img = Image.open(download.value.path())
                assert img.format == "PNG", kind
                sizes[kind] = (img.size, img.mode)
            assert sizes == {"colored": ((512, 384), "RGB"), "flats": ((512, 384), "RGB"),
                             "lines": ((512, 384), "RGBA")}  # fmt: skip
            assert_no_gradio_error(page)
            page.screenshot(path=str(artifacts_dir / "app-tiny-model.png"))
        finally:
            browser.close()


@pytest.mark.slow
@pytest.mark.browser
def test_every_refusal_is_a_sentence_in_the_status_line(tiny_app, tmp_path, cat, artifacts_dir):
    """Each bad file (too large in bytes or pixels, a strip, not an image, damaged, tiny, empty): a readable
    sentence in the status line, no error badge or toast; afterwards the app still colorizes."""
    from playwright.sync_api import expect, sync_playwright

    url, _ = tiny_app
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            open_page(page, url)
            status = page.locator("#status")
            for kind in ("html", "truncated_jpg", "huge", "bomb", "tiny", "empty", "strip", "many_bytes"):
                _open_file(page, bad_file(tmp_path, kind))
                expect(status).to_contain_text(EXPECTED[kind].replace("**", ""), timeout=30_000)
                assert_no_gradio_error(page)
            page.screenshot(path=str(artifacts_dir / "app-bad-upload.png"))

            # An animated GIF is accepted: its first frame, with a note.
            _open_file(page, animated_gif(tmp_path / "anim.gif"))
            expect(status).to_contain_text("Loaded anim.gif (200x150 px)", timeout=30_000)
            expect(status).to_contain_text("animated (3 frames): the first frame is used")
            page.locator("#editor").get_by_role("button", name="Clear canvas").click()
            expect(status).to_contain_text("Open a sketch first", timeout=30_000)
            expect(page.locator("#sketch-drop")).to_be_visible()

            # Colorize with nothing open: asks for a sketch, does not crash.
            page.click("#colorize")
            expect(status).to_contain_text("Open a sketch first", timeout=30_000)

            _open_file(page, cat)
            # the cat's own result (Live), before the next file: a refusal is not to be overwritten by it
            expect(status).to_contain_text(re.compile(r"Colored in .*cat_landscape\.png"), timeout=60_000)
            _open_file(page, bad_file(tmp_path, "truncated_png"))  # refused, and the cat stays
            expect(status).to_contain_text("is damaged or incomplete", timeout=30_000)
            expect(status).to_contain_text("still holds the previous sketch, cat_landscape.png")
            page.click("#colorize")
            expect(status).to_contain_text("Colored in", timeout=60_000)
            expect(status).to_contain_text("without hints")
            expect(page.locator("#result img")).to_be_visible()
            assert_no_gradio_error(page)
        finally:
            browser.close()


@pytest.mark.slow
@pytest.mark.browser
def test_the_shipped_model_in_the_browser_obeys_painted_hints(artifacts_dir):
    """`make app` as a new user meets it (the model in weights/, an example, a few dabs from the swatches): each
    dabbed area comes out in its dab's color, the paper stays white. The README's screenshot comes from here."""
    from playwright.sync_api import expect, sync_playwright

    # star, wall, door, window: closed outlines (the roof's outline is open to the paper in this drawing, so a dab
    # there leaves it white in flat mode: the paper is kept unless the hinted part is cut off by a short gap)
    dabs = [(0, (0.185, 0.60)), (2, (0.20, 0.72)), (8, (0.43, 0.78)), (5, (0.765, 0.55))]
    # Live on whatever this machine's speed (auto turns it off where 512 px takes over a second)
    with run_app("--live", "on", env={app.WEIGHTS_ENV: str(REPO / "weights")}) as url, sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            open_page(page, url)
            page.locator("#examples img[src*='house']").first.click()
            status = page.locator("#status")
            expect(status).to_contain_text("Colored in", timeout=60_000)
            for swatch, at in dabs:
                page.locator(f"#swatch-{swatch}").click()
                _expect_brush(page, app.HINT_COLORS[swatch])
                _paint_stroke(page, at=at, length=0.03 if swatch in (0, 5) else 0.08, image_size=(438, 438))
            expect(status).to_contain_text("with your hints", timeout=60_000)

            def shown() -> tuple[np.ndarray, list]:
                src = page.locator("#result img").get_attribute("src")
                with urllib.request.urlopen(
                    src if src.startswith("http") else url.rstrip("/") + src, timeout=30
                ) as r:
                    result = np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB")).astype(int)
                h, w = result.shape[:2]
                wrong = []
                for swatch, (x, y) in dabs:
                    want = np.array([int(app.HINT_COLORS[swatch][i : i + 2], 16) for i in (1, 3, 5)])
                    got = result[int(y * h), int(x * w) + 10]  # beside the dab, inside its area
                    if np.abs(got - want).max() > 8:
                        wrong.append((swatch, got, want))
                return result, wrong

            # the last stroke's request wins, whenever it lands (a slow machine may still show an earlier one)
            deadline = time.monotonic() + 30
            result, wrong = shown()
            while wrong and time.monotonic() < deadline:
                time.sleep(1)
                result, wrong = shown()
            page.screenshot(path=str(artifacts_dir / "app-readme.png"))
            assert not wrong, wrong
            assert (result[3, 3] == 255).all() and (result[-3, -3] == 255).all()  # the paper
            assert_no_gradio_error(page)
        finally:
            browser.close()
