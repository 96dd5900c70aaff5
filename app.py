"""Gradio web UI: upload a line-art sketch, optionally paint color hints, colorize it.

    python app.py [--model DIR] [--host H] [--port P]        (or: make app [MODEL=DIR] [PORT=P])

`--model` may be given several times, or as a comma-separated list: the models are averaged (an ensemble).

The app is thin: it loads exported models (`model.safetensors` + `model.json`) through
`colorizer.inference.Colorizer` and calls `colorize(sketch, hints=..., resolution=...)` on the full-size
sketch (inference scales to the processing resolution and back, and keeps the lines sharp).
Without a model it still starts and says how to get one.

Model discovery (`find_models`): `--model DIR` if given, else the folder named by the environment variable
COLORIZER_WEIGHTS_DIR, else `weights/` in the repository root -- the last two only when they hold both model files.

Uploads. The sketch comes in through a plain file drop zone (`gr.File`), not through the image editor's own
upload: the editor decodes a file in the browser, and a file it cannot decode (not an image, truncated, a
12000x12000 px "decompression bomb" beyond WebGL's texture limit) fails silently there -- the server never sees
it and the user gets no message. Here the server reads the file itself (`read_sketch`: header first, pixel
limit before decoding, first frame of an animation, at least 8 px a side) and either puts a display copy into
the editor (the brush paints hints over it) or writes what is wrong into the status line. The full-size file
stays on the server; Colorize reads it again, so a large sketch is colored at its own resolution.

The handlers are plain functions (`read_sketch`, `upload_request`, `split_editor`, `colorize_request`,
`load_model`) that need neither gradio nor a browser, so they are tested directly; gradio is imported only by
`build_app` and `main`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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
MAX_FILE_BYTES = 20 * 1024 * 1024  # sketches larger than this are refused by `read_sketch`, with a sentence
# gradio itself refuses uploads beyond this (HTTP 413, before any of our code runs): far above our own limit, so
# an oversized sketch reaches `read_sketch` and gets a readable refusal in the status line.
GRADIO_MAX_FILE_SIZE = "200mb"
BRUSH_SIZE = 12  # hints are sparse dabs of color; the automatic size covers half a face on a small sketch
ERASER_SIZE = 24  # wider than the brush: one pass over a hint removes it

# Processing resolution: "auto" is the scale the model was trained at (model.json); the others force a longer side.
RES_AUTO = "auto"
RES_CHOICES = (RES_AUTO, 128, 192, 256, 384, 512, 768, 1024)
MODES = {"Flat": "flat", "Soft": "soft"}  # label in the page -> colorizer mode
MAX_ASPECT = 8.0  # a sketch longer than 8 times its width (or the reverse) is refused: a strip, not a drawing
LIVE_MAX_SECONDS = (
    1.0  # "Live" starts on when the model colors a 512 px sketch faster than this (measured at start)
)
LIVE_DELAY_MS = 250  # live preview waits this long after the last stroke (newer strokes replace the request)

# Uploads: what `read_sketch` accepts. The pixel limit is inference's (MAX_INPUT_PIXELS) when it can be imported.
MIN_SIDE = 8
FALLBACK_MAX_PIXELS = 64_000_000
# Pillow tries only these: never EPS & co. (handed to Ghostscript) or any other plugin it would guess.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
EDITOR_MAX_SIDE = 2048  # the editor (WebGL) shows a copy at most this large; colorizing uses the full size
EDITOR_HEIGHT = 560  # px: sketch and result side by side, everything needed above the fold at 1366x768
BACKGROUNDS = ["White paper", "Hints color it"]
# gradio's file cache: results and uploads older than an hour are deleted, checked every hour (gradio's delete_cache).
CACHE_DIR = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")
CACHE_SWEEP_S, CACHE_MAX_AGE_S = 3600, 3600
# Requests: at most this many colorizations run at once (one model, shared by all visitors; a second would only
# split the same CPU/GPU), and at most QUEUE_SIZE wait; more are told in the status line that the app is busy.
COLORIZE_CONCURRENCY = 1
QUEUE_SIZE = 16

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

EMPTY_EDITOR_MESSAGE = "**Open a sketch first** (a PNG or JPEG of black lines on white, or pick an example below), then press Colorize."

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


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return (text.splitlines() or [type(e).__name__])[0][:limit]


# ---------------------------------------------------------------------------------------------- model loading


def default_weights_dir() -> Path:
    """Where a model is looked for when `--model` is not given: $COLORIZER_WEIGHTS_DIR, else `<repo>/weights`."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else REPO / "weights"


def has_model_files(folder: Path) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in MODEL_FILES)


def find_models(args: str | Sequence[str] | None) -> list[Path]:
    """The model folders to load (several: an ensemble), or [] when there is none.

    `args`: the `--model` values; each may be a comma-separated list (a folder whose own name holds a comma is
    taken whole). Explicit folders are returned as given, even when missing (`load_model` then says what is
    wrong); without any, the default folder (`default_weights_dir()`) counts only when it holds both model files.
    """
    if isinstance(args, str):
        args = [args]
    dirs: list[Path] = []
    for arg in args or []:
        arg = arg.strip()
        if not arg:
            continue
        parts = [arg] if Path(arg).expanduser().exists() else [p.strip() for p in arg.split(",")]
        dirs += [Path(p).expanduser() for p in parts if p]
    if dirs:
        return list(dict.fromkeys(dirs))  # the same folder twice is one model, not a heavier vote
    folder = default_weights_dir()
    return [folder] if has_model_files(folder) else []


@dataclass
class ModelState:
    """What the app knows about its model: the loaded colorizer (or None) and what to tell the user."""

    model: Any | None
    model_dirs: list[Path] = field(default_factory=list)
    title: str = "No model loaded"
    detail: str = ""

    @property
    def loaded(self) -> bool:
        return self.model is not None

    @property
    def model_dir(self) -> Path | None:
        return self.model_dirs[0] if self.model_dirs else None

    def panel_markdown(self) -> str:
        """The Markdown panel at the top of the page."""
        if self.loaded:
            return f"### {self.title}\n\n{self.detail}".strip()
        parts = [f"### {self.title}"]
        if self.detail:
            parts.append(self.detail)
        parts.append(HOW_TO_GET_A_MODEL)
        return "\n\n".join(parts)


def _num(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    return f"{v:,}" if isinstance(v, int) else f"{v:.4g}"


def describe_model(info: Any, n_params: int | None = None) -> str:
    """Markdown bullets from a `model.json` dict: how the model was trained and where it came from.

    Tolerates missing or odd fields (older exports, hand-written files); never raises.
    """
    if not isinstance(info, dict):
        return "- (no readable `model.json`)"
    training = info.get("training") if isinstance(info.get("training"), dict) else {}
    lines = []
    demo = info.get("demo") if isinstance(info.get("demo"), dict) else {}
    if isinstance(demo.get("what"), str):
        lines.append(f"- **About:** {demo['what']}")
    run = []
    if training.get("name"):
        run.append(f"run `{training['name']}`")
    step = training.get("step", info.get("step"))
    if isinstance(step, int):
        epoch = training.get("epoch")
        run.append(f"{step:,} steps" + (f" ({epoch} epochs)" if isinstance(epoch, int) and epoch else ""))
    seen = training.get("images_seen")
    if isinstance(seen, int) and seen:
        run.append(f"{seen:,} images seen")
    seconds = training.get("train_seconds")
    if isinstance(seconds, int | float) and seconds > 0:
        run.append(
            f"{seconds / 3600:.1f} h of training"
            if seconds >= 5400
            else f"{seconds / 60:.0f} min of training"
        )
    size = training.get("size_hw")
    if isinstance(size, list | tuple) and len(size) == 2:
        run.append(f"trained at {size[1]}x{size[0]} px")
    if training.get("weights"):
        run.append(f"{training['weights']} weights")
    if run:
        lines.append("- **Training:** " + ", ".join(run))
    if training.get("data"):
        lines.append(f"- **Data:** `{training['data']}`")
    metrics = info.get("metrics")
    if isinstance(metrics, dict) and metrics:
        ordered = sorted(metrics.items(), key=lambda kv: not str(kv[0]).startswith("val/"))  # scores first
        shown = [f"{k} {_num(v)}" for k, v in ordered if isinstance(v, int | float)][:8]
        if shown:
            lines.append("- **Metrics:** " + ", ".join(shown))
    code = info.get("code")
    if isinstance(code, dict) and code.get("commit"):
        commit = str(code["commit"])
        short = commit[:12] if len(commit) == 40 else commit
        lines.append(
            f"- **Code:** commit `{short}`" + (" (with uncommitted changes)" if code.get("dirty") else "")
        )
    if info.get("exported_at"):
        lines.append(f"- **Exported:** {info['exported_at']}")
    arch = (
        info.get("architecture", {}).get("generator") if isinstance(info.get("architecture"), dict) else None
    )
    if isinstance(arch, dict):
        net = [
            f"{k} {arch[k]}" for k in ("base_width", "depth", "max_width", "norm", "upsample") if k in arch
        ]
        if n_params:
            net.append(
                f"{n_params / 1e6:.1f} M parameters" if n_params >= 100_000 else f"{n_params:,} parameters"
            )
        lines.append("- **Network:** U-Net generator, " + ", ".join(net))
    return "\n".join(lines) if lines else "- (`model.json` says nothing about how the model was trained)"


def _model_panel(model: Any, dirs: list[Path]) -> tuple[str, str]:
    """(title, detail) of the model panel for a loaded colorizer."""
    infos = list(getattr(model, "infos", None) or [])
    gens = list(getattr(model, "generators", None) or [])
    infos += [None] * (len(dirs) - len(infos))

    def params(i: int) -> int | None:
        try:
            return sum(p.numel() for p in gens[i].parameters())
        except Exception:
            return None

    device = getattr(model, "device", None)
    on = f" on {device}" if device is not None else ""
    if len(dirs) == 1:
        name = (infos[0] or {}).get("training", {}).get("name") if isinstance(infos[0], dict) else None
        title = f"Model loaded: `{name}`{on}" if name else f"Model loaded{on}"
        return title, f"From `{dirs[0]}`\n\n{describe_model(infos[0], params(0))}"
    parts = []
    for i, d in enumerate(dirs):
        parts.append(f"**{i + 1}. `{d}`**\n\n{describe_model(infos[i], params(i))}")
    return f"Ensemble of {len(dirs)} models loaded{on} (their colors are averaged)", "\n\n".join(parts)


def load_model(model_dirs: Path | Sequence[Path] | None) -> ModelState:
    """Load the exported model(s) in `model_dirs`; any failure becomes a readable message, never an exception."""
    if model_dirs is None:
        dirs: list[Path] = []
    elif isinstance(model_dirs, str | os.PathLike):
        dirs = [Path(model_dirs)]
    else:
        dirs = [Path(d) for d in model_dirs]
    if not dirs:
        return ModelState(
            None, [], "No model loaded", "The app is running, but colorizing needs a trained model."
        )
    for d in dirs:
        where = f"`{d}`"
        if not d.exists():
            return ModelState(
                None, dirs, "No model loaded: model folder not found", f"Model folder not found: {where}."
            )
        if not d.is_dir():
            return ModelState(
                None,
                dirs,
                "No model loaded: not a folder",
                f"{where} is a file; `--model` takes the exported folder.",
            )
        missing = [name for name in MODEL_FILES if not (d / name).is_file()]
        if missing:
            return ModelState(
                None,
                dirs,
                "No model loaded: model files missing",
                f"The folder {where} has no {' or '.join(f'`{m}`' for m in missing)}.",
            )
    where = ", ".join(f"`{d}`" for d in dirs)
    try:
        inference = importlib.import_module("colorizer.inference")
    except ImportError as e:
        log.exception("cannot import colorizer.inference")
        return ModelState(
            None,
            dirs,
            "No model loaded: inference code missing",
            f"Found the model in {where}, but this version of the code cannot run models ({_first_line(e)}). "
            "Update the code and restart the app.",
        )
    try:
        model = inference.Colorizer.load(dirs if len(dirs) > 1 else dirs[0])
    except Exception as e:  # a broken or foreign model file must not stop the app
        log.exception("could not load the model from %s", where)
        return ModelState(
            None,
            dirs,
            "No model loaded: the model could not be loaded",
            f"Could not load the model in {where}: {_first_line(e)}",
        )
    title, detail = _model_panel(model, dirs)
    return ModelState(model, dirs, title, detail)


# ---------------------------------------------------------------------------------------------- uploads


class SketchError(ValueError):
    """An uploaded file cannot be used as a sketch; the message (Markdown) says what is wrong and what to do."""


@dataclass(frozen=True)
class SketchRef:
    """A sketch accepted by `read_sketch`, as the session remembers it: the file stays on the server."""

    path: str
    name: str
    size: tuple[int, int]  # (width, height) of the full-size sketch


def max_input_pixels() -> int:
    try:
        return int(importlib.import_module("colorizer.inference").MAX_INPUT_PIXELS)
    except Exception:
        return FALLBACK_MAX_PIXELS


def read_sketch(path: str | os.PathLike, name: str | None = None) -> tuple[Image.Image, str]:
    """An uploaded file -> (the sketch as RGB on white at its full size, a note for the user or "").

    Raises SketchError, with a readable Markdown message, for anything that is not a usable image: not an
    image at all, a damaged or truncated file, too many bytes or pixels (checked from the header, before any
    decoding), fewer than MIN_SIDE px a side. Animated images give their first frame.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    from colorizer.data import to_rgb_on_white

    p = Path(path)
    label = f"`{name or p.name}`"
    try:
        n_bytes = p.stat().st_size
    except OSError:
        raise SketchError(
            f"**{label} could not be read** (it is gone from the server): upload it again."
        ) from None
    if n_bytes == 0:
        raise SketchError(f"**{label} is empty** (0 bytes): upload the image file itself.")
    if n_bytes > MAX_FILE_BYTES:
        raise SketchError(
            f"**{label} is too large**: {n_bytes / 2**20:.1f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB. "
            "Save it as PNG or JPEG at a smaller size."
        )
    limit = max_input_pixels()
    not_an_image = (
        f"**{label} is not an image this app can read.** Upload a PNG, JPEG, WebP, GIF, BMP or TIFF file "
        "(for example, export the sketch from your drawing program as PNG)."
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is lower
            im = Image.open(p, formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        raise SketchError(
            f"**{label} is too large**: more than {limit / 1e6:.0f} megapixels. Scale it down first."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise SketchError(not_an_image) from None
    with im:
        w, h = im.size
        if w * h > limit:
            raise SketchError(
                f"**{label} is too large**: {w}x{h} px ({w * h / 1e6:.0f} megapixels); the limit is "
                f"{limit / 1e6:.0f} megapixels (for example {int(limit**0.5)}x{int(limit**0.5)}). Scale it down first."
            )
        if min(w, h) < MIN_SIDE:
            raise SketchError(
                f"**{label} is too small**: {w}x{h} px; a sketch needs at least {MIN_SIDE} px on each side."
            )
        if max(w, h) > MAX_ASPECT * min(w, h):
            raise SketchError(
                f"**{label} is a strip**, {w}x{h} px: a sketch may be at most {MAX_ASPECT:.0f} times longer than "
                "it is wide. Crop it to the drawing and upload it again."
            )
        notes = []
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            notes.append(f"it is animated ({frames} frames): the first frame is used")
        try:
            im.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                im.load()
                oriented = ImageOps.exif_transpose(im) or im
                rgb = to_rgb_on_white(oriented)
                rgb.load()
        except MemoryError:
            raise SketchError(
                f"**{label} is too large** to decode on this server. Scale it down first."
            ) from None
        except Exception as e:
            log.info("refused upload %s: %s", p, _first_line(e))
            raise SketchError(
                f"**{label} is damaged or incomplete** ({_first_line(e, 120)}): was the download or the "
                "export cut off? Save it again and upload the new file."
            ) from None
    return rgb, "; ".join(notes)


def display_copy(sketch: Image.Image) -> Image.Image:
    """What the editor shows: the sketch, scaled down to EDITOR_MAX_SIDE when larger (browsers' WebGL canvases
    refuse very large textures; hints painted on the copy are scaled to the full size by inference)."""
    from PIL import Image

    w, h = sketch.size
    if max(w, h) <= EDITOR_MAX_SIDE:
        return sketch
    s = EDITOR_MAX_SIDE / max(w, h)
    return sketch.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)


def upload_request(path: str | None, name: str | None = None) -> tuple[dict | None, str, SketchRef | None]:
    """A file dropped on the upload zone -> (editor value or None, status Markdown, SketchRef or None).

    None for the editor value means "refused": the caller leaves the editor (and any earlier sketch) as it was.
    Never raises.
    """
    if not path:
        return None, EMPTY_EDITOR_MESSAGE, None
    name = name or Path(path).name
    try:
        sketch, note = read_sketch(path, name)
    except SketchError as e:
        return None, str(e), None
    except Exception as e:  # read_sketch maps the expected failures; anything else must not escape either
        log.exception("reading the upload %s failed", path)
        return None, f"**`{name}` could not be read**: {_first_line(e)}", None
    shown = display_copy(sketch)
    w, h = sketch.size
    status = f"Loaded `{name}` ({w}x{h} px)."
    if note:
        status += f" Note: {note}."
    if shown.size != sketch.size:
        status += f" Shown at {shown.width}x{shown.height} for painting; colorized at full size."
    status += " Paint color hints with the brush if you like, then press **Colorize**."
    return {"background": shown, "layers": [], "composite": shown}, status, SketchRef(str(path), name, (w, h))


# ---------------------------------------------------------------------------------------------- colorizing


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
    """The ImageEditor's value -> (its background as RGB on white, hints as RGBA or None when nothing was painted).

    Both at the editor's size (for a large sketch, the display copy's size).
    """
    from PIL import Image

    if not value or value.get("background") is None:
        return None, None
    background = value["background"].convert("RGBA")
    sketch = Image.alpha_composite(Image.new("RGBA", background.size, "white"), background).convert("RGB")
    hints = _merge_layers(list(value.get("layers") or []), sketch.size)
    return sketch, hints


def _live_key(value: dict, *settings: Any) -> tuple:
    """What a live result depends on: the sketch (the opened file when there is one, which is what is colored;
    else the editor's background), the painted layers, and the settings. The editor's background can lag behind
    a newly opened file: keyed by it, one opening would be colored twice, the second after whatever came next."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    ref = settings[-1]
    shown = [value.get("background")] if getattr(ref, "path", None) is None else []
    painted = [im for im in value.get("layers") or [] if im is not None and not _blank_layer(im)]
    for im in [*shown, *painted]:
        if im is not None:  # the background of an API caller's value may be missing
            digest.update(f"{im.mode} {im.size}".encode())
            digest.update(im.tobytes())
    return (digest.hexdigest(), *settings[:-1], getattr(ref, "path", None))


def _blank_layer(im: Image.Image) -> bool:
    """A layer with nothing painted on it (the editor adds one as a sketch lands in it)."""
    return im.mode in ("RGBA", "LA") and im.getchannel("A").getbbox() is None


def no_model_status(state: ModelState) -> str:
    reason = f" {state.detail}" if state.detail and state.model_dirs else ""
    return (
        f"**No model loaded**, so nothing can be colorized yet.{reason} "
        "Train one (`colorizer train --config configs/cpu-demo.yaml`, about two hours on a CPU), export it "
        "(`colorizer export runs/<name>/checkpoints/last.pt --out weights/`) and restart the app, "
        "or start it with `python app.py --model DIR`. *About this model* below has the details."
    )


def background_choice(value: Any) -> str | None:
    """The settings' background -> colorize's `background`: None (white paper) or "hints"."""
    return "hints" if value == BACKGROUNDS[1] else None


def parse_resolution(value: Any) -> int | None:
    """The settings' resolution -> a longer side in px, or None for the model's own scale ("auto", or anything
    unreadable). Numbers are kept within the offered range."""
    if value is None or str(value).strip().lower().startswith(RES_AUTO):
        return None
    try:
        res = int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None
    numbers = [r for r in RES_CHOICES if isinstance(r, int)]
    return min(max(res, numbers[0]), numbers[-1])


class Busy(Exception):
    """More colorizations are waiting than the app lets wait."""


class Gate:
    """At most `running` colorizations at once and `waiting` more in line; beyond that, `Busy` at once (a sentence
    in the status line, where gradio's own full queue only shows an error badge)."""

    def __init__(self, running: int | None = None, waiting: int | None = None):
        self._slots = threading.BoundedSemaphore(COLORIZE_CONCURRENCY if running is None else running)
        self._lock = threading.Lock()
        self.waiting = 0
        self.max_waiting = QUEUE_SIZE if waiting is None else waiting

    @contextlib.contextmanager
    def enter(self) -> Iterator[None]:
        with self._lock:
            if self.waiting >= self.max_waiting:
                raise Busy
            self.waiting += 1
        try:
            self._slots.acquire()
        finally:
            with self._lock:
                self.waiting -= 1
        try:
            yield
        finally:
            self._slots.release()


def fresh_result_dir(root: Path | None = None, max_age_s: float | None = None) -> Path:
    """A new folder for one result's downloads in gradio's cache folder; folders of earlier results older than
    CACHE_MAX_AGE_S are removed on the way (gradio cleans its own copies; these are ours)."""
    import shutil

    root = Path(root or CACHE_DIR)
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - (CACHE_MAX_AGE_S if max_age_s is None else max_age_s)
    for old in root.glob("colorized-*"):
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix="colorized-", dir=root))


def _save_layers(layers: Any, name: str | None, out_dir: Path) -> list[str]:
    """The result's three PNGs (composite, flat colors, lines on transparency) in `out_dir`; their paths."""
    stem = Path(name or "sketch").stem or "sketch"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, image in (("colored", layers.composite), ("flats", layers.colors), ("lines", layers.lines)):
        path = out_dir / f"{stem}.{suffix}.png"
        image.save(path, compress_level=1)  # fast: live preview writes them after every stroke
        paths.append(str(path))
    return paths


def colorize_request(
    state: ModelState,
    value: dict | None,
    no_hints: bool,
    resolution: Any = RES_AUTO,
    sketch_ref: SketchRef | None = None,
    *,
    mode: str = "Flat",
    background: str | None = None,
    out_dir: Path | None = None,
    gate: Gate | None = None,
) -> tuple[Image.Image | None, str, list[str]]:
    """Colorize (the button and the live preview): (colored image or None, status Markdown, download paths:
    composite, flat colors, lines; [] when nothing was made). Never raises.

    The sketch is the uploaded file (`sketch_ref`, read again at its full size) when there is one, else the
    editor's background (API callers who send the editor value directly); hints come from the editor's layers.
    The status's "Colored in X s" is the server's time; the page replaces it with the time from the click.
    """
    shown, hints = split_editor(value)
    if shown is None:
        return None, EMPTY_EDITOR_MESSAGE, []
    if not state.loaded:
        return None, no_model_status(state), []
    sketch, name = shown, None
    if sketch_ref is not None:
        try:
            sketch, _ = read_sketch(sketch_ref.path, sketch_ref.name)
            name = sketch_ref.name
        except SketchError as e:
            return None, f"{e} (Open the sketch again.)", []
    if no_hints:
        hints = None
    res = parse_resolution(resolution)
    color_mode = MODES.get(str(mode).strip().capitalize(), "flat")
    t0 = time.perf_counter()
    try:
        with (gate or Gate(1, 1)).enter():
            layers = state.model.colorize_layers(
                sketch, hints=hints, mode=color_mode, resolution=res, background=background or None
            )
    except Busy:
        return (
            None,
            (
                f"**The app is busy**: {QUEUE_SIZE} requests are already waiting for the colorizer. "
                "Try again in a minute."
            ),
            [],
        )
    except Exception as e:
        log.exception("colorize failed")
        kind = "This sketch cannot be colorized" if type(e).__name__ == "InputError" else "Colorizing failed"
        text = str(e).strip().splitlines()[0][:300] if kind.startswith("This") else _first_line(e)
        return None, f"**{kind}**: {text}", []
    seconds = time.perf_counter() - t0
    out = layers.composite.convert("RGB")
    if out.size != sketch.size:  # inference keeps the size; a stand-in model might not
        from PIL import Image

        out = out.resize(sketch.size, Image.Resampling.LANCZOS)
    files = []
    if out_dir is not None:
        try:
            files = _save_layers(layers, name, out_dir)
        except OSError as e:
            log.warning("could not write the downloads: %s", e)
    w, h = sketch.size
    nh, nw = getattr(layers, "network_hw", (h, w))
    views = getattr(layers, "views", 1)
    averaged = f" ({views} views averaged)" if views > 1 else ""
    hint_note = "with your hints" if hints is not None else "without hints"
    what = f"`{name}`, " if name else ""
    look = "flat colors" if color_mode == "flat" else "soft colors"
    return (
        out,
        f"Colored in {seconds:.1f} s, {hint_note} ({look}): {what}{w}x{h} px, "
        f"the network at {nw}x{nh}{averaged}.",
        files,
    )


def model_card(state: ModelState) -> str:
    """The "About this model" text: written for a person, from model.json's `card` (or what training recorded)."""
    if not state.loaded:
        return state.panel_markdown()
    info = getattr(state.model, "info", None) or {}
    card = info.get("card") if isinstance(info.get("card"), dict) else {}
    parts = []
    for key, title in (("summary", None), ("trained_on", "Trained on"), ("good_at", "Good at"),
                       ("bad_at", "Not good at"), ("how", "How it was made")):  # fmt: skip
        text = card.get(key)
        if isinstance(text, str) and text.strip():
            parts.append(f"**{title}:** {text.strip()}" if title else text.strip())
    if not parts:
        parts.append(describe_model(info))
    parts.append(f"*Files: `{state.model_dir}` (model.json holds the training details).*")
    return "\n\n".join(parts)


def live_default(state: ModelState) -> bool:
    """Live preview on by default when the model colors a 512 px sketch within LIVE_MAX_SECONDS here."""
    if not state.loaded:
        return False
    from PIL import Image, ImageDraw

    img = Image.new("L", (512, 512), 255)
    ImageDraw.Draw(img).ellipse((64, 64, 448, 448), outline=0, width=3)
    try:
        state.model.colorize_layers(img)  # warm-up: the first call pays for allocations
        t0 = time.perf_counter()
        state.model.colorize_layers(img)
        return time.perf_counter() - t0 < LIVE_MAX_SECONDS
    except Exception:
        log.exception("timing the model failed")
        return False


# ---------------------------------------------------------------------------------------------- UI


def example_files() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.png"))


SWATCH_CSS = "\n".join(
    f"#swatch-{i} {{background: {c} !important; border: 1px solid #8a8a8a !important;}}"
    for i, c in enumerate(HINT_COLORS)
)
CSS = (
    """
.gradio-container {padding-top: 4px !important; padding-bottom: 4px !important}
#intro p {margin: 0 0 2px 0}
#tools {gap: 8px}
#tools .swatches {display: flex; flex-wrap: wrap; gap: 6px; justify-content: center}
#tools .swatch {min-width: 26px !important; max-width: 26px; height: 26px; padding: 0 !important;
                border-radius: 50% !important; flex: 0 0 26px !important}
#status p {margin: 4px 0}
"""
    + SWATCH_CSS
)
# The click (or the last stroke) starts a clock in the page; when the result is in, the status line's server time
# is replaced by the time the person actually waited.
START_CLOCK_JS = "(...args) => { window.__colorizeT0 = performance.now(); return args; }"
LIVE_START_JS = (
    "async (...args) => { window.__colorizeT0 = performance.now(); "
    f"await new Promise((r) => setTimeout(r, {LIVE_DELAY_MS})); return args; }}"
)
SHOW_WAIT_JS = """(status) => {
  const t0 = window.__colorizeT0;
  if (t0 === undefined || typeof status !== "string") return status;
  const s = ((performance.now() - t0) / 1000).toFixed(1);
  return status.replace(/^Colored in [0-9.]+ s/, "Colored in " + s + " s");
}"""


def build_app(
    model_dirs: Path | Sequence[Path] | None,
    *,
    model_state: ModelState | None = None,
    live: bool | None = None,
) -> gr.Blocks:
    """The whole page; `model_dirs` as `find_models` returns them ([] or None: no model).

    `model_state` replaces loading from `model_dirs` (tests pass a stand-in colorizer this way); `live` sets the
    live preview's default (None: on when the model is fast enough here).
    """
    import gradio as gr

    state = model_state if model_state is not None else load_model(model_dirs)
    live_on = live_default(state) if live is None else live
    gate = Gate()
    live_tokens: dict[str, int] = {}
    live_done: dict[str, tuple] = {}  # per session: what the newest live request colored
    tokens_lock = threading.Lock()

    def downloads(files: list[str]) -> list:
        return [gr.update(value=f, interactive=True) for f in files] if files else [gr.skip()] * 3

    def out_dir() -> Path:
        return fresh_result_dir()

    def on_open(path, current, name=None):
        editor_value, status, ref = upload_request(path, name)
        if ref is None:  # refused: keep whatever the sketch area holds
            if current is not None:
                status += f"\n\nThe sketch area still holds the previous sketch, `{current.name}`."
            return gr.skip(), gr.update(value=None), status, gr.skip()
        # the sketch goes into the editor, which takes the drop zone's place
        return gr.update(value=editor_value, visible=True), gr.update(value=None, visible=False), status, ref

    def on_example(evt: gr.SelectData):
        examples = example_files()
        index = evt.index if isinstance(evt.index, int) else (evt.index or [0])[0]
        if not 0 <= index < len(examples):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return on_open(str(examples[index]), None, examples[index].name)

    def on_clear():
        return (
            gr.update(value=None, visible=False),
            gr.update(value=None, visible=True),
            None,
            EMPTY_EDITOR_MESSAGE,
        )

    def on_colorize(value, no_hints, mode, resolution, background, ref):
        image, status, files = colorize_request(
            state, value, bool(no_hints), resolution, ref, mode=mode, background=background_choice(background),
            out_dir=out_dir(), gate=gate,
        )  # fmt: skip
        return image if image is not None else gr.skip(), status, *downloads(files)

    def on_live(value, no_hints, mode, resolution, background, ref, live_now, request: gr.Request):
        # No sketch open (`ref` is None until one is opened, and again once the canvas is cleared): the editor's
        # input event that clearing fires can still carry the cleared sketch, whose colors must not come back.
        if not live_now or ref is None or value is None or value.get("background") is None:
            return gr.skip(), gr.skip(), *([gr.skip()] * 3)
        session = getattr(request, "session_hash", None) or "?"
        key = _live_key(value, no_hints, mode, resolution, background, ref)
        with tokens_lock:
            # The same sketch, hints and settings as the last live result: nothing to do (opening a sketch reaches
            # here twice: after the upload, and on the editor's input event as the sketch lands in it; a refused
            # file reaches it with the previous sketch, whose result and the refusal's sentence stay).
            if live_done.get(session) == key:
                return gr.skip(), gr.skip(), *([gr.skip()] * 3)
            live_done[session] = key
            token = live_tokens[session] = live_tokens.get(session, 0) + 1  # the newest request wins
        image, status, files = colorize_request(
            state, value, bool(no_hints), resolution, ref, mode=mode, background=background_choice(background),
            out_dir=out_dir(), gate=gate,
        )  # fmt: skip
        if live_tokens.get(session) != token:
            return gr.skip(), gr.skip(), *([gr.skip()] * 3)
        return image if image is not None else gr.skip(), status, *downloads(files)

    # gradio injects SelectData and Request by the parameters' types; with postponed annotations (and gradio
    # imported here, not at module level) it would see only strings, so the types are given as objects
    on_example.__annotations__["evt"] = gr.SelectData
    on_live.__annotations__["request"] = gr.Request

    def set_brush(color):
        return gr.update(
            brush=gr.Brush(
                colors=HINT_COLORS, default_color=color, default_size=BRUSH_SIZE, color_mode="defaults"
            )
        )

    with gr.Blocks(title="Line-art colorizer", delete_cache=(CACHE_SWEEP_S, CACHE_MAX_AGE_S)) as demo:
        gr.Markdown(
            "**Line-art colorizer**: open a sketch, dab a few colors where you want them, and the result appears "
            "on the right (press **Colorize** when *Live* is off).",
            elem_id="intro",
        )
        sketch_ref = gr.State(None)
        with gr.Row(equal_height=False):
            with gr.Column(scale=6, min_width=360):
                # One sketch area: a drop zone until a sketch is open, then the editor in its place.
                drop = gr.File(
                    label="Sketch: drop an image here, or click to choose one (PNG, JPEG, WebP, GIF, BMP, TIFF)",
                    file_count="single", type="filepath", height=EDITOR_HEIGHT, elem_id="sketch-drop",
                )  # fmt: skip
                editor = gr.ImageEditor(
                    type="pil",
                    format="png",  # lossless: line art must not come back with webp's ringing
                    sources=[],  # sketches come through "Open a sketch", which the server checks
                    transforms=[],  # no crop/resize: the editor's picture must stay the uploaded sketch
                    brush=gr.Brush(
                        colors=HINT_COLORS,
                        default_color=HINT_COLORS[0],
                        default_size=BRUSH_SIZE,
                        color_mode="defaults",
                    ),  # fmt: skip
                    eraser=gr.Eraser(default_size=ERASER_SIZE),
                    layers=False,
                    label="Sketch and your color hints",
                    placeholder="Open a sketch or pick an example further down",
                    buttons=["fullscreen"],
                    elem_id="editor",
                    height=EDITOR_HEIGHT,
                    visible=False,
                )
                with gr.Row():
                    opener = gr.UploadButton(
                        "Open another sketch", file_types=["image"], file_count="single", type="filepath",
                        size="sm", variant="secondary", elem_id="open-sketch",
                    )  # fmt: skip
                    no_hints = gr.Checkbox(label="Ignore my hints", value=False, elem_id="no-hints")
            with gr.Column(scale=1, min_width=150, elem_id="tools"):
                button = gr.Button("Colorize", variant="primary", elem_id="colorize", size="lg")
                live = gr.Checkbox(label="Live", value=live_on, elem_id="live",
                                   info="recolor after each stroke")  # fmt: skip
                mode = gr.Radio(
                    list(MODES), value="Flat", label="Colors", elem_id="mode",
                    info="Flat: one color per area. Soft: shaded, blended.",
                )  # fmt: skip
                picker = gr.ColorPicker(value=HINT_COLORS[0], label="Brush color", elem_id="picker")
                with gr.Row(elem_classes=["swatches"]):
                    swatches = [
                        gr.Button("", elem_id=f"swatch-{i}", elem_classes=["swatch"], size="sm", min_width=26)
                        for i in range(len(HINT_COLORS))
                    ]
            with gr.Column(scale=6, min_width=360):
                result = gr.Image(
                    label="Result", type="pil", format="png", interactive=False, buttons=["fullscreen"],
                    elem_id="result", height=EDITOR_HEIGHT,
                )  # fmt: skip
                status = gr.Markdown(EMPTY_EDITOR_MESSAGE if state.loaded else no_model_status(state),
                                     elem_id="status")  # fmt: skip
                with gr.Row():
                    dl_colored = gr.DownloadButton(
                        "Colored PNG", size="sm", interactive=False, elem_id="dl-colored"
                    )
                    dl_flats = gr.DownloadButton(
                        "Colors only", size="sm", interactive=False, elem_id="dl-flats"
                    )
                    dl_lines = gr.DownloadButton(
                        "Lines only", size="sm", interactive=False, elem_id="dl-lines"
                    )
        examples = example_files()
        gallery = gr.Gallery(
            value=[(str(p), p.stem.replace("_", " ")) for p in examples], label="Examples: real line drawings "
            "(click one to open it)", columns=8, height=170, allow_preview=False, object_fit="contain",
            elem_id="examples", visible=bool(examples), interactive=False,
        )  # fmt: skip
        with gr.Accordion("Settings", open=False, elem_id="settings"):
            with gr.Row():
                resolution = gr.Dropdown(
                    choices=[("auto: the scale the model was trained at", RES_AUTO)]
                    + [(f"{r} px", str(r)) for r in RES_CHOICES if r != RES_AUTO],
                    value=RES_AUTO, label="Network resolution (longer side)", elem_id="resolution",
                )  # fmt: skip
                background = gr.Radio(
                    BACKGROUNDS, value=BACKGROUNDS[0], label="Background (flat colors)", elem_id="background",
                    info="white paper, or let a hint painted on the paper color it",
                )  # fmt: skip
        with gr.Accordion("About this model", open=False, elem_id="about"):
            gr.Markdown(model_card(state), elem_id="model-status")

        outputs = [result, status, dl_colored, dl_flats, dl_lines]
        settings = [editor, no_hints, mode, resolution, background, sketch_ref]
        opened = [editor, drop, status, sketch_ref]
        live_args = dict(
            inputs=[*settings, live], outputs=outputs, show_progress="hidden", concurrency_limit=None
        )
        # A new sketch (dropped, opened or an example): shown in the editor, then colored at once when Live is on.
        new_sketch = [
            drop.upload(on_open, inputs=[drop, sketch_ref], outputs=opened, show_progress="minimal",
                        api_name="upload_sketch"),
            opener.upload(on_open, inputs=[opener, sketch_ref], outputs=opened, show_progress="minimal",
                          api_name=False),
            gallery.select(on_example, inputs=None, outputs=opened, show_progress="minimal", api_name=False),
        ]  # fmt: skip
        coloring = []  # every event that colors: clearing the canvas cancels those still under way
        coloring += [
            event.then(on_live, **live_args, js=START_CLOCK_JS, api_name=False) for event in new_sketch
        ]
        coloring.append(button.click(
            on_colorize, inputs=settings, outputs=outputs, api_name="colorize", show_progress="full",
            js=START_CLOCK_JS, concurrency_limit=None,
        ))  # fmt: skip
        # Live preview: each stroke (the editor's input event) and each change of a setting recolors; the page
        # waits LIVE_DELAY_MS for more strokes and keeps only the newest request (always_last).
        coloring.append(gr.on(
            [editor.input, mode.change, no_hints.change, background.change, resolution.change, live.change],
            on_live, **live_args, api_name=False, trigger_mode="always_last", js=LIVE_START_JS,
        ))  # fmt: skip
        for event in coloring:  # the status shows the wait as the page measured it
            event.then(None, inputs=[status], outputs=[status], js=SHOW_WAIT_JS)
        # clearing empties the editor's value too: a Colorize click right after must not send the cleared sketch,
        # and a coloring of the cleared sketch still under way must not land after the clear
        editor.clear(on_clear, outputs=[editor, drop, sketch_ref, status], api_name=False, cancels=coloring)
        # The brush color must change at once, even while a colorization holds the queue: the swatch sets the picker
        # in the page, and the brush update skips the queue (it only sends the editor its new brush).
        picker.change(
            set_brush, inputs=[picker], outputs=[editor], api_name=False, show_progress="hidden", queue=False
        )
        for color, swatch in zip(HINT_COLORS, swatches, strict=True):
            swatch.click(
                None, outputs=[picker], js=f"() => '{color}'", api_name=False, show_progress="hidden"
            )
    demo.queue(default_concurrency_limit=1)  # uploads and examples: one at a time each; colorize: see Gate
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Web UI: colorize line-art sketches with an exported model.")
    parser.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="DIR",
        help="exported model folder (model.safetensors + model.json); repeat it or separate folders with commas "
        f"for an ensemble (outputs averaged); default: ${WEIGHTS_ENV} or weights/ if present",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--live",
        choices=("auto", "on", "off"),
        default="auto",
        help="the Live checkbox's default: auto (on when the model colors 512 px within "
        f"{LIVE_MAX_SECONDS:g} s here), on or off",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own startup probes

    model_dirs = find_models(args.model)
    demo = build_app(model_dirs, live={"auto": None, "on": True, "off": False}[args.live])
    log.info(
        "model: %s",
        ", ".join(map(str, model_dirs)) if model_dirs else "none (the page says how to get one)",
    )
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        show_error=False,
        max_file_size=GRADIO_MAX_FILE_SIZE,
        ssr_mode=False,
        quiet=True,  # no "set share=True" advice: one line below says what to open
        prevent_thread_lock=True,
        css=CSS,
    )
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(
        f"Line-art colorizer: open http://{host}:{args.port}/ in your browser (Ctrl-C stops it)", flush=True
    )
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
