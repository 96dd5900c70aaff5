"""The Gradio app: handlers called directly (fast), and the page driven through Debian's chromium (slow)."""

from __future__ import annotations

import io
import json
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
EXAMPLE = REPO / "examples" / "girl_portrait.png"
CAT = REPO / "examples" / "cat_landscape.png"  # 512x384


def _editor_value(sketch: Image.Image | None, hint_box: tuple[int, int, int, int] | None = None) -> dict:
    """What gr.ImageEditor(type="pil") hands the function: background, layers, composite (RGBA)."""
    if sketch is None:
        return {"background": None, "layers": [], "composite": None}
    bg = sketch.convert("RGBA")
    layer = Image.new("RGBA", bg.size, (0, 0, 0, 0))
    if hint_box is not None:
        ImageDraw.Draw(layer).rectangle(hint_box, fill=(224, 49, 49, 255))
    return {"background": bg, "layers": [layer], "composite": Image.alpha_composite(bg, layer)}


class FakeColorizer:
    """Stands in for colorizer.inference.Colorizer: paints the hints over the sketch, records what it got."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, int], tuple[int, int] | None, int | None]] = []

    def colorize(
        self, sketch: Image.Image, hints: Image.Image | None = None, *, resolution=None
    ) -> Image.Image:
        self.calls.append((sketch.size, hints.size if hints is not None else None, resolution))
        out = sketch.convert("RGBA")
        if hints is not None:
            out = Image.alpha_composite(out, hints.resize(out.size, Image.Resampling.NEAREST))
        return out.convert("RGB")


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


def bad_file(folder: Path, kind: str) -> Path:
    """One of the uploads a user may try: not an image, truncated, enormous, tiny, empty, PostScript, too many bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "html":
        path = folder / "sketch.png"
        path.write_text("<!doctype html><html><body>Sorry, this page moved.</body></html>\n")
    elif kind.startswith("truncated_"):
        ext = kind.split("_")[1]
        buf = io.BytesIO()
        Image.open(CAT).convert("RGB").save(buf, {"png": "PNG", "jpg": "JPEG"}[ext])
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
}


# ------------------------------------------------------------------------------------ handlers, no browser


def test_handlers_without_browser(tmp_path):
    none = app.load_model(None)
    assert not none.loaded
    assert "No model loaded" in none.panel_markdown()
    assert "colorizer train --config configs/cpu-demo.yaml" in none.panel_markdown()

    # Nothing uploaded: the editor's empty value and a plain None both ask for a sketch, even with a model.
    for state in (none, _loaded(FakeColorizer())):
        for empty in (None, _editor_value(None)):
            image, status = app.colorize_request(state, empty, False, 512)
            assert image is None and "Upload a sketch first" in status

    # A sketch but no model: says so and how to get one, no exception.
    value, status, ref = app.upload_request(str(EXAMPLE))
    assert ref is not None and "Loaded `girl_portrait.png` (384x512 px)" in status
    image, status = app.colorize_request(none, value, False, 512, ref)
    assert image is None
    assert "No model loaded" in status
    assert "colorizer train" in status and "colorizer export" in status and "--model" in status


def test_colorize_request_passes_the_full_sketch_resolution_and_hints():
    model = FakeColorizer()
    state = _loaded(model)
    sketch = Image.open(CAT)  # 512x384
    value = _editor_value(sketch, hint_box=(100, 100, 120, 120))

    image, status = app.colorize_request(state, value, False, 256)
    assert model.calls[-1] == ((512, 384), (512, 384), 256)  # full size; inference scales to the resolution
    assert image is not None and image.size == sketch.size
    assert "with your hints" in status and "processed at 256x192" in status
    r, g, _ = image.getpixel((110, 110))
    assert r > 150 and g < 120  # the red hint came through

    image, status = app.colorize_request(state, value, True, 1024)
    assert model.calls[-1] == ((512, 384), None, 1024)  # "no hints" drops them
    assert "without hints" in status

    app.colorize_request(state, _editor_value(sketch), False, 512)  # an empty hint layer counts as no hints
    assert model.calls[-1] == ((512, 384), None, 512)

    for odd, expected in (
        (5000, app.RES_MAX),
        (1, app.RES_MIN),
        (None, app.RES_DEFAULT),
        ("x", app.RES_DEFAULT),
    ):
        app.colorize_request(state, value, False, odd)  # the slider's range, whatever an API caller sends
        assert model.calls[-1][2] == expected


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
    image, status = app.colorize_request(_loaded(model), shown, False, 512, ref)
    assert model.calls[-1] == ((2400, 1000), (2048, 853), 512)
    assert image.size == (2400, 1000)
    assert "`big.png` 2400x1000 px, processed at 512x213" in status

    path.unlink()  # the uploaded file is gone (a cleaned cache): a message, not an exception
    image, status = app.colorize_request(_loaded(model), shown, False, 512, ref)
    assert image is None and "could not be read" in status and "Upload the sketch again" in status


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


def test_real_tiny_model_through_the_handlers(tmp_path):
    state = app.load_model(make_tiny_model(tmp_path / "m"))
    value, _, ref = app.upload_request(str(CAT))
    painted = _editor_value(value["background"], hint_box=(200, 150, 230, 170))
    image, status = app.colorize_request(state, painted, False, 256, ref)
    assert image is not None and image.size == (512, 384), status
    assert "Done in" in status and "with your hints" in status
    plain, _ = app.colorize_request(state, painted, True, 256, ref)
    assert np.abs(np.asarray(image, np.int16) - np.asarray(plain, np.int16)).mean() > 0.5

    image, status = app.colorize_request(state, _editor_value(Image.new("RGB", (4, 4), "white")), False, 256)
    assert image is None and "This sketch cannot be colorized" in status and "at least 8 px" in status


# ------------------------------------------------------------------------------------ through the browser


def _upload(page, path: Path) -> None:
    page.locator("#sketch-file input[type=file]").set_input_files(str(path))


def _paint_stroke(page, tool: str = "Brush") -> None:
    """One horizontal stroke across the middle of the editor with `tool` ("Brush" or "Erase")."""
    page.locator("#editor").get_by_role("button", name=tool, exact=True).click()
    box = page.locator("#editor canvas").first.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + box["width"] * 0.1, y + 5, steps=8)
    page.mouse.up()


@pytest.mark.slow
def test_app_with_missing_model_folder_still_starts():
    with run_app("--model", "/nonexistent") as url:
        config = fetch(url + "config")  # the page's components and their values, as the browser receives them
    assert "Model folder not found" in config
    assert "/nonexistent" in config
    assert "colorizer train --config configs/cpu-demo.yaml" in config
    assert "Traceback" not in config


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
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            open_page(page, url)
            panel = page.locator("#model-status")
            expect(panel).to_contain_text("No model loaded")
            expect(panel.get_by_text("colorizer train --config configs/cpu-demo.yaml")).to_be_visible()
            expect(panel.get_by_text("colorizer export", exact=False)).to_be_visible()

            # Colorize with an empty editor: asks for a sketch.
            page.click("#colorize")
            expect(page.locator("#status")).to_contain_text("Upload a sketch first", timeout=30_000)

            _upload(page, EXAMPLE)
            expect(page.locator("#status")).to_contain_text(
                "Loaded girl_portrait.png (384x512 px)", timeout=30_000
            )
            page.click("#colorize")
            status = page.locator("#status")
            expect(status).to_contain_text("No model loaded", timeout=30_000)
            expect(status).to_contain_text("colorizer train")
            assert_no_gradio_error(page)
            page.screenshot(path=str(artifacts_dir / "app-no-model.png"), full_page=True)
        finally:
            browser.close()


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.filterwarnings("ignore:::gradio.queueing")  # gradio's own pandas deprecations
def test_page_with_a_stand_in_model_passes_sketch_and_hints(artifacts_dir):
    """The whole UI wiring with a fake colorizer: example -> editor, a brush stroke -> hints, result shown."""
    from playwright.sync_api import expect, sync_playwright

    model = FakeColorizer()
    demo = app.build_app(None, model_state=_loaded(model))
    port = free_port()
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        show_error=False,
        ssr_mode=False,
        quiet=True,
        max_file_size=app.MAX_FILE_SIZE,
    )
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1100})
                open_page(page, f"http://127.0.0.1:{port}/")
                expect(page.locator("#model-status")).to_contain_text("Model loaded")

                # Load an example through gr.Examples (the cat is 512x384), then paint one stroke.
                page.locator("img[src*='cat_landscape']").first.click()
                expect(page.locator("#status")).to_contain_text(
                    "Loaded cat_landscape.png (512x384 px)", timeout=30_000
                )
                _paint_stroke(page)

                page.click("#colorize")
                expect(page.locator("#status")).to_contain_text("with your hints", timeout=30_000)
                expect(page.locator("#result img")).to_be_visible()
                assert model.calls == [((512, 384), (512, 384), app.RES_DEFAULT)]

                # The eraser (wider than the brush) over the same stroke removes the hint again.
                _paint_stroke(page, "Erase")
                page.click("#colorize")
                expect(page.locator("#status")).to_contain_text("without hints", timeout=30_000)
                assert model.calls[-1] == ((512, 384), None, app.RES_DEFAULT)

                # Paint again.
                _paint_stroke(page)
                page.click("#colorize")
                expect(page.locator("#status")).to_contain_text("with your hints", timeout=30_000)
                assert model.calls[-1] == ((512, 384), (512, 384), app.RES_DEFAULT)

                # "No hints" drops the painted hints; the resolution control reaches the model.
                page.locator("#no-hints input[type=checkbox]").check()
                number = page.locator("#resolution input[type=number]")
                number.fill("256")
                number.press("Enter")
                page.click("#colorize")
                expect(page.locator("#status")).to_contain_text("without hints", timeout=30_000)
                expect(page.locator("#status")).to_contain_text("processed at 256x192")
                assert model.calls[-1] == ((512, 384), None, 256)
                assert_no_gradio_error(page)
                page.screenshot(path=str(artifacts_dir / "app-stand-in-model.png"), full_page=True)
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

    def colorize(self, sketch, hints=None, *, resolution=None):
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(self.seconds)
            return super().colorize(sketch, hints, resolution=resolution)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:::gradio.queueing")
def test_colorize_requests_queue_one_at_a_time(tmp_path):
    """Several visitors press Colorize at once: all are served, never more than COLORIZE_CONCURRENCY together."""
    from gradio_client import Client, handle_file

    model = SlowColorizer(seconds=0.4)
    demo = app.build_app(None, model_state=_loaded(model))
    assert demo._queue.max_size == app.QUEUE_SIZE
    port = free_port()
    demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, show_error=False, quiet=True
    )
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        sketch = handle_file(str(CAT))
        value = {"background": sketch, "layers": [], "composite": sketch}
        jobs = [client.submit(value, False, 256, api_name="/colorize") for _ in range(4)]
        results = [job.result(timeout=60) for job in jobs]
    finally:
        demo.close()
    assert len(model.calls) == 4
    assert model.most_at_once == app.COLORIZE_CONCURRENCY == 1
    for image_path, status in results:
        assert "Done in" in status, status
        assert Image.open(image_path).size == (512, 384)


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory):
    """app.py in its own process with a tiny exported model made here; yields (url, model folder)."""
    model_dir = make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")
    with run_app("--model", str(model_dir)) as url:
        yield url, model_dir


def _fetch_image(url: str) -> Image.Image:
    with urllib.request.urlopen(url, timeout=30) as r:
        return Image.open(io.BytesIO(r.read())).convert("RGB")


@pytest.mark.slow
@pytest.mark.browser
def test_colorize_with_a_tiny_model_in_the_browser(tiny_app, artifacts_dir):
    """Upload a sketch, paint a stroke, Colorize: the result is an image of the sketch's size, colored."""
    from playwright.sync_api import expect, sync_playwright

    url, _ = tiny_app
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100}, accept_downloads=True)
            open_page(page, url)
            panel = page.locator("#model-status")
            expect(panel).to_contain_text("Model loaded: tiny-test-0")
            expect(panel).to_contain_text("1,234 steps")
            expect(panel).to_contain_text("9,872 images seen")

            _upload(page, CAT)
            expect(page.locator("#status")).to_contain_text(
                "Loaded cat_landscape.png (512x384 px)", timeout=30_000
            )
            _paint_stroke(page)
            page.click("#colorize")
            expect(page.locator("#status")).to_contain_text("Done in", timeout=60_000)
            expect(page.locator("#status")).to_contain_text("with your hints")
            result = page.locator("#result img")
            expect(result).to_be_visible()

            src = result.get_attribute("src")
            assert src, "the result has no image source"
            out = _fetch_image(src if src.startswith("http") else url.rstrip("/") + src)
            sketch = Image.open(CAT).convert("RGB")
            assert out.size == sketch.size == (512, 384)
            diff = np.abs(np.asarray(out, np.int16) - np.asarray(sketch, np.int16))
            assert diff.mean() > 20, "the result looks like the sketch"

            # The download button hands over the same PNG.
            with page.expect_download() as download:
                page.locator("#result").get_by_role("button", name="Download").click()
            saved = download.value.path()
            downloaded = Image.open(saved)
            assert downloaded.format == "PNG" and downloaded.size == (512, 384)
            assert np.array_equal(np.asarray(downloaded.convert("RGB")), np.asarray(out))

            assert_no_gradio_error(page)
            page.screenshot(path=str(artifacts_dir / "app-colorize.png"), full_page=True)
        finally:
            browser.close()


@pytest.mark.slow
@pytest.mark.browser
def test_bad_uploads_in_the_browser_then_a_good_one(tiny_app, tmp_path, artifacts_dir):
    """Each bad file: a readable message in the status line, no error toast; afterwards the app still colorizes."""
    from playwright.sync_api import expect, sync_playwright

    url, _ = tiny_app
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            open_page(page, url)
            status = page.locator("#status")
            for kind in ("html", "truncated_jpg", "huge", "bomb", "tiny", "empty"):
                _upload(page, bad_file(tmp_path, kind))
                expect(status).to_contain_text(EXPECTED[kind], timeout=30_000)
                assert_no_gradio_error(page)
            page.screenshot(path=str(artifacts_dir / "app-bad-upload.png"), full_page=True)

            # More bytes than the upload limit: gradio refuses it in the browser before it is sent (the server
            # never sees it) and says why in a toast; the status line keeps the last message.
            _upload(page, bad_file(tmp_path, "many_bytes"))
            toast = page.locator("[data-testid='toast-body']")
            expect(toast).to_contain_text("exceed the maximum allowed size of 20.0 Mb", timeout=30_000)
            expect(toast).to_contain_text("noise.png")
            expect(page.locator("body")).not_to_contain_text("Traceback")
            toast.get_by_test_id("toast-close").click()
            expect(toast).to_have_count(0)
            expect(status).to_contain_text(EXPECTED["empty"])

            # An animated GIF is accepted: its first frame, with a note.
            _upload(page, animated_gif(tmp_path / "anim.gif"))
            expect(status).to_contain_text("Loaded anim.gif (200x150 px)", timeout=30_000)
            expect(status).to_contain_text("animated (3 frames): the first frame is used")
            page.locator("#editor").get_by_role("button", name="Clear canvas").click()
            expect(status).to_have_text("", timeout=30_000)

            # Colorize with nothing accepted yet: asks for a sketch, does not crash.
            page.click("#colorize")
            expect(status).to_contain_text("Upload a sketch first", timeout=30_000)

            _upload(page, CAT)
            expect(status).to_contain_text("Loaded cat_landscape.png (512x384 px)", timeout=30_000)
            _upload(page, bad_file(tmp_path, "truncated_png"))  # refused, and the cat stays
            expect(status).to_contain_text("is damaged or incomplete", timeout=30_000)
            expect(status).to_contain_text("still holds the previous sketch, cat_landscape.png")
            page.click("#colorize")
            expect(status).to_contain_text("Done in", timeout=60_000)
            expect(status).to_contain_text("without hints")
            expect(page.locator("#result img")).to_be_visible()
            assert_no_gradio_error(page)
        finally:
            browser.close()
