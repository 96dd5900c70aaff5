"""The Gradio app: handlers called directly (fast), and the page driven through Debian's chromium (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import app
from tests.browser import fetch, free_port, launch_chromium, run_app

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "girl_portrait.png"


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
        self.calls: list[tuple[tuple[int, int], bool]] = []

    def colorize(self, sketch: Image.Image, hints: Image.Image | None = None) -> Image.Image:
        self.calls.append((sketch.size, hints is not None))
        out = sketch.convert("RGBA")
        if hints is not None:
            out = Image.alpha_composite(out, hints)
        return out.convert("RGB")


def _loaded(model) -> app.ModelState:
    return app.ModelState(model, Path("fake-model"), "Model loaded from `fake-model`")


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
    sketch = Image.open(EXAMPLE)
    image, status = app.colorize_request(none, _editor_value(sketch), False, 512)
    assert image is None
    assert "No model loaded" in status
    assert "colorizer train" in status and "colorizer export" in status and "--model" in status


def test_colorize_request_with_a_model_scales_and_honours_no_hints():
    model = FakeColorizer()
    state = _loaded(model)
    sketch = Image.open(REPO / "examples" / "cat_landscape.png")  # 512x384
    value = _editor_value(sketch, hint_box=(100, 100, 120, 120))

    image, status = app.colorize_request(state, value, False, 256)
    assert model.calls[-1] == ((256, 192), True)  # processed at the slider's resolution, with hints
    assert image is not None and image.size == sketch.size  # shown at the uploaded size
    assert "with your hints" in status
    assert (
        image.getpixel((110, 110))[0] > 150 and image.getpixel((110, 110))[1] < 120
    )  # the red hint came through

    image, status = app.colorize_request(state, value, True, 1024)
    assert model.calls[-1] == ((512, 384), False)  # "no hints" drops them; never upscaled beyond the upload
    assert "without hints" in status

    # An empty hint layer counts as no hints.
    app.colorize_request(state, _editor_value(sketch), False, 512)
    assert model.calls[-1] == ((512, 384), False)


def test_colorize_request_reports_model_errors():
    class Broken:
        def colorize(self, sketch, hints=None):
            raise RuntimeError("CUDA out of memory\nlong details")

    image, status = app.colorize_request(_loaded(Broken()), _editor_value(Image.open(EXAMPLE)), False, 512)
    assert image is None
    assert "Colorizing failed" in status and "CUDA out of memory" in status and "long details" not in status


def test_find_model_and_load_model_messages(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(app.WEIGHTS_ENV, str(empty))
    assert app.find_model(None) is None
    assert app.find_model("") is None
    assert app.find_model(str(tmp_path / "x")) == tmp_path / "x"  # explicit: returned even when missing

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.json").write_text(json.dumps({"step": 1}))
    monkeypatch.setenv(app.WEIGHTS_ENV, str(weights))
    assert app.find_model(None) is None  # model.safetensors missing
    (weights / "model.safetensors").write_bytes(b"not a safetensors file")
    assert app.find_model(None) == weights

    missing = app.load_model(tmp_path / "nonexistent")
    assert not missing.loaded and "Model folder not found" in missing.panel_markdown()
    no_files = app.load_model(empty)
    assert not no_files.loaded and "model.safetensors" in no_files.detail

    # Junk model files: whether or not colorizer/inference.py exists yet, a readable message and no exception.
    junk = app.load_model(weights)
    assert not junk.loaded
    assert junk.title.startswith("No model loaded")
    assert "Traceback" not in junk.panel_markdown()


# ------------------------------------------------------------------------------------ through the browser


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
            page.goto(url, wait_until="networkidle")
            panel = page.locator("#model-status")
            expect(panel).to_contain_text("No model loaded")
            expect(panel.get_by_text("colorizer train --config configs/cpu-demo.yaml")).to_be_visible()
            expect(panel.get_by_text("colorizer export", exact=False)).to_be_visible()

            # Colorize with an empty editor: asks for a sketch.
            page.click("#colorize")
            expect(page.locator("#status")).to_contain_text("Upload a sketch first", timeout=30_000)

            page.locator("#editor input[type=file]").set_input_files(str(EXAMPLE))
            expect(page.locator("#editor").get_by_text("Upload an image")).to_be_hidden(timeout=30_000)
            page.click("#colorize")
            status = page.locator("#status")
            expect(status).to_contain_text("No model loaded", timeout=30_000)
            expect(status).to_contain_text("colorizer train")
            expect(page.locator("body")).not_to_contain_text("Traceback")
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
                page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
                expect(page.locator("#model-status")).to_contain_text("Model loaded")

                # Load an example through gr.Examples (the cat is 512x384), then paint one stroke.
                page.locator("img[src*='cat_landscape']").first.click()
                expect(page.locator("#editor").get_by_text("Upload an image")).to_be_hidden(timeout=30_000)
                page.get_by_role("button", name="Brush", exact=True).click()
                box = page.locator("#editor canvas").first.bounding_box()
                assert box is not None
                x, y = box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5
                page.mouse.move(x, y)
                page.mouse.down()
                page.mouse.move(x + box["width"] * 0.1, y + 5, steps=8)
                page.mouse.up()

                page.click("#colorize")
                expect(page.locator("#status")).to_contain_text("with your hints", timeout=30_000)
                expect(page.locator("#result img")).to_be_visible()
                assert model.calls == [((512, 384), True)]

                page.locator("#no-hints input[type=checkbox]").check()
                page.click("#colorize")
                expect(page.locator("#status")).to_contain_text("without hints", timeout=30_000)
                assert model.calls[-1] == ((512, 384), False)
                page.screenshot(path=str(artifacts_dir / "app-stand-in-model.png"), full_page=True)
            finally:
                browser.close()
    finally:
        demo.close()
