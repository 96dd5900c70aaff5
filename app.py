"""Gradio web UI: upload a line-art sketch, optionally paint color hints, colorize it.

    python app.py [--model DIR] [--host H] [--port P]        (or: make app [MODEL=DIR] [PORT=P])

The app is thin: it loads an exported model (`model.safetensors` + `model.json`) through
`colorizer.inference.Colorizer` and calls `colorize(sketch, hints=None)`; nothing else of the model side.
Without a model it still starts and says how to get one.

Model discovery (`find_model`): `--model DIR` if given, else the folder named by the environment variable
COLORIZER_WEIGHTS_DIR, else `weights/` in the repository root -- the last two only when they hold both model files.

The handlers are plain functions (`split_editor`, `colorize_request`, `load_model`) that need neither gradio nor a
browser, so they are tested directly; gradio is imported only by `build_app` and `main`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault(
    "GRADIO_ANALYTICS_ENABLED", "False"
)  # before gradio is imported: keep it off the network

if TYPE_CHECKING:
    import gradio as gr
    from PIL import Image

log = logging.getLogger("app")

REPO = Path(__file__).resolve().parent
EXAMPLES_DIR = REPO / "examples"
WEIGHTS_ENV = "COLORIZER_WEIGHTS_DIR"
MODEL_FILES = ("model.safetensors", "model.json")
MAX_FILE_SIZE = "20mb"
BRUSH_SIZE = 12  # hints are sparse dabs of color; the automatic size covers half a face on a small sketch

# Processing resolution: the sketch's longer side is scaled down to this before it goes to the model.
RES_MIN, RES_MAX, RES_STEP, RES_DEFAULT = 256, 1024, 64, 512

HINT_COLORS = [
    "#e03131",  # red
    "#f08c00",  # orange
    "#fcc419",  # yellow
    "#ffd8b5",  # skin
    "#2f9e44",  # green
    "#1c7ed6",  # blue
    "#7048e8",  # purple
    "#f783ac",  # pink
    "#8d5524",  # brown
    "#212529",  # black
    "#ffffff",  # white
]

EMPTY_EDITOR_MESSAGE = (
    "**Upload a sketch first** (a PNG or JPEG of black lines on white), then press Colorize."
)

HOW_TO_GET_A_MODEL = """\
How to get a model (the folder must hold `model.safetensors` and `model.json`):

1. Training data: a folder of color illustrations (searched recursively), or a `manifest.jsonl`.
2. Train (`data.source=` is that folder or manifest):
   - on a CPU, about an hour: `colorizer train --config configs/cpu-demo.yaml data.source=DIR`
   - on a GPU, overnight: `colorizer train --config configs/default.yaml data.source=DIR`
3. Export the checkpoint: `colorizer export runs/<name>/checkpoints/last.pt --out weights/`
4. Restart the app: `make app` finds `weights/` by itself; any other folder:
   `python app.py --model DIR` (or `make app MODEL=DIR`).
"""


# ---------------------------------------------------------------------------------------------- model loading


def default_weights_dir() -> Path:
    """Where a model is looked for when `--model` is not given: $COLORIZER_WEIGHTS_DIR, else `<repo>/weights`."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else REPO / "weights"


def has_model_files(folder: Path) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in MODEL_FILES)


def find_model(arg: str | None) -> Path | None:
    """The model folder to load, or None when there is none.

    An explicit `--model DIR` is returned as given (even when missing: `load_model` then says what is wrong);
    otherwise the default folder (`default_weights_dir()`) counts only when it holds both model files.
    """
    if arg:
        return Path(arg).expanduser()
    folder = default_weights_dir()
    return folder if has_model_files(folder) else None


@dataclass
class ModelState:
    """What the app knows about its model: the loaded colorizer (or None) and what to tell the user."""

    model: Any | None
    model_dir: Path | None
    title: str
    detail: str = ""

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def panel_markdown(self) -> str:
        """The Markdown panel at the top of the page."""
        if self.loaded:
            return f"### {self.title}\n{self.detail}".strip()
        parts = [f"### {self.title}"]
        if self.detail:
            parts.append(self.detail)
        parts.append(HOW_TO_GET_A_MODEL)
        return "\n\n".join(parts)


def _describe_model(model_dir: Path) -> str:
    """One line from model.json (training step, metrics) when it is readable; never raises."""
    try:
        meta = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(meta, dict):
        return ""
    bits = []
    step = meta.get("step", meta.get("training_step"))
    if isinstance(step, int):
        bits.append(f"trained {step:,} steps")
    metrics = meta.get("metrics")
    if isinstance(metrics, dict):
        bits += [f"{k} {v:.3g}" for k, v in metrics.items() if isinstance(v, int | float)][:4]
    return ", ".join(bits)


def load_model(model_dir: Path | None) -> ModelState:
    """Load the exported model in `model_dir`; any failure becomes a readable message, never an exception."""
    if model_dir is None:
        return ModelState(
            None, None, "No model loaded", "The app is running, but colorizing needs a trained model."
        )
    where = f"`{model_dir}`"
    if not model_dir.exists():
        return ModelState(
            None, model_dir, "No model loaded: model folder not found", f"Model folder not found: {where}."
        )
    if not model_dir.is_dir():
        return ModelState(
            None,
            model_dir,
            "No model loaded: not a folder",
            f"{where} is a file; `--model` takes the exported folder.",
        )
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        return ModelState(
            None,
            model_dir,
            "No model loaded: model files missing",
            f"The folder {where} has no {' or '.join(f'`{m}`' for m in missing)}.",
        )
    try:
        spec = importlib.util.find_spec("colorizer.inference")
    except ImportError:
        spec = None
    if spec is None:
        return ModelState(
            None,
            model_dir,
            "No model loaded: inference code missing",
            f"Found the model in {where}, but this version of the code cannot run models yet "
            "(`colorizer/inference.py` is missing). Update the code and restart the app.",
        )
    try:
        inference = importlib.import_module("colorizer.inference")
        model = inference.Colorizer.load(model_dir)
    except Exception as e:  # a broken or foreign model file must not stop the app
        log.exception("could not load the model from %s", model_dir)
        reason = f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]
        return ModelState(
            None,
            model_dir,
            "No model loaded: the model could not be loaded",
            f"Could not load the model in {where}: {reason}",
        )
    about = _describe_model(model_dir)
    return ModelState(model, model_dir, f"Model loaded from `{model_dir}`", about)


# ---------------------------------------------------------------------------------------------- handlers


def _merge_layers(layers: list[Image.Image], size: tuple[int, int]) -> Image.Image | None:
    """All brush layers composited into one RGBA image (transparent where nothing was painted), or None."""
    from PIL import Image

    merged = None
    for layer in layers:
        if layer is None:
            continue
        layer = layer.convert("RGBA")
        if layer.size != size:
            layer = layer.resize(size, Image.Resampling.NEAREST)
        merged = layer if merged is None else Image.alpha_composite(merged, layer)
    if merged is None or merged.getchannel("A").getbbox() is None:
        return None
    return merged


def split_editor(value: dict | None) -> tuple[Image.Image | None, Image.Image | None]:
    """The ImageEditor's value -> (sketch as RGB on white, hints as RGBA or None when nothing was painted)."""
    from PIL import Image

    if not value or value.get("background") is None:
        return None, None
    background = value["background"].convert("RGBA")
    sketch = Image.alpha_composite(Image.new("RGBA", background.size, "white"), background).convert("RGB")
    hints = _merge_layers(list(value.get("layers") or []), sketch.size)
    return sketch, hints


def _scale_to(img: Image.Image, longest: int, resample: int) -> Image.Image:
    w, h = img.size
    if max(w, h) <= longest:
        return img
    s = longest / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), resample)


def no_model_status(state: ModelState) -> str:
    reason = f" {state.detail}" if state.detail and state.model_dir is not None else ""
    return (
        f"**No model loaded**, so nothing can be colorized yet.{reason} "
        "Train one (`colorizer train --config configs/cpu-demo.yaml`, about an hour on a CPU), export it "
        "(`colorizer export runs/<name>/checkpoints/last.pt --out weights/`) and restart the app, "
        "or start it with `python app.py --model DIR`. The panel at the top has the details."
    )


def colorize_request(
    state: ModelState, value: dict | None, no_hints: bool, resolution: int
) -> tuple[Image.Image | None, str]:
    """The Colorize button: (colored image or None, status Markdown). Never raises."""
    from PIL import Image

    sketch, hints = split_editor(value)
    if sketch is None:
        return None, EMPTY_EDITOR_MESSAGE
    if not state.loaded:
        return None, no_model_status(state)
    if no_hints:
        hints = None
    resolution = int(min(max(resolution or RES_DEFAULT, RES_MIN), RES_MAX))
    small = _scale_to(sketch, resolution, Image.Resampling.LANCZOS)
    if hints is not None:
        hints = hints.resize(small.size, Image.Resampling.NEAREST) if hints.size != small.size else hints
    t0 = time.perf_counter()
    try:
        out = state.model.colorize(small, hints=hints)
    except Exception as e:
        log.exception("colorize failed")
        reason = f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]
        return None, f"**Colorizing failed**: {reason}"
    seconds = time.perf_counter() - t0
    out = out.convert("RGB")
    if out.size != sketch.size:
        out = out.resize(sketch.size, Image.Resampling.LANCZOS)
    hint_note = "with your hints" if hints is not None else "without hints"
    return out, (
        f"Done in {seconds:.1f} s, {hint_note} "
        f"(processed at {small.width}x{small.height}, shown at {sketch.width}x{sketch.height})."
    )


# ---------------------------------------------------------------------------------------------- UI


def example_files() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.png"))


def build_app(model_dir: Path | None, *, model_state: ModelState | None = None) -> gr.Blocks:
    """The whole page; `model_dir` as `find_model` returns it (None: no model).

    `model_state` replaces loading from `model_dir` (tests pass a stand-in colorizer this way).
    """
    import gradio as gr

    state = model_state if model_state is not None else load_model(model_dir)

    def on_colorize(value, no_hints, resolution):
        return colorize_request(state, value, bool(no_hints), int(resolution))

    with gr.Blocks(title="Line-art colorizer") as demo:
        gr.Markdown(
            "# Line-art colorizer\nUpload a sketch, paint a few color hints if you like, press Colorize."
        )
        gr.Markdown(state.panel_markdown(), elem_id="model-status")
        with gr.Row():
            with gr.Column():
                editor = gr.ImageEditor(
                    type="pil",
                    sources=["upload"],
                    brush=gr.Brush(
                        colors=HINT_COLORS,
                        default_color=HINT_COLORS[0],
                        default_size=BRUSH_SIZE,
                        color_mode="defaults",
                    ),
                    eraser=gr.Eraser(),
                    layers=False,
                    label="Sketch and color hints",
                    elem_id="editor",
                    height=560,
                )
                with gr.Row():
                    no_hints = gr.Checkbox(
                        label="No hints (ignore painted colors)", value=False, elem_id="no-hints"
                    )
                    resolution = gr.Slider(
                        RES_MIN,
                        RES_MAX,
                        value=RES_DEFAULT,
                        step=RES_STEP,
                        label="Processing resolution (longer side, px)",
                        elem_id="resolution",
                    )
                button = gr.Button("Colorize", variant="primary", elem_id="colorize")
            with gr.Column():
                result = gr.Image(
                    label="Result", type="pil", format="png", interactive=False, elem_id="result"
                )
                status = gr.Markdown("", elem_id="status")
        examples = example_files()
        if examples:
            gr.Examples(
                examples=[[str(p)] for p in examples],
                inputs=[editor],
                label="Example sketches (click one to load it)",
                examples_per_page=8,
            )
        button.click(
            on_colorize,
            inputs=[editor, no_hints, resolution],
            outputs=[result, status],
            api_name="colorize",
            show_progress="full",
        )
    demo.queue(default_concurrency_limit=1, max_size=16)
    return demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Web UI: colorize line-art sketches with an exported model.")
    parser.add_argument(
        "--model",
        default=None,
        metavar="DIR",
        help=f"exported model folder (model.safetensors + model.json); default: ${WEIGHTS_ENV} or weights/ if present",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own startup probes

    model_dir = find_model(args.model)
    demo = build_app(model_dir)
    log.info("model: %s", model_dir if model_dir is not None else "none (the page says how to get one)")
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        show_error=False,
        max_file_size=MAX_FILE_SIZE,
        ssr_mode=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
