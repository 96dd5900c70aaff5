"""`colorizer colorize`: many sketches through one (or an ensemble of) exported model(s)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from colorizer.data import IMAGE_EXTENSIONS, ImageLoadError, load_rgb
from colorizer.inference import DEFAULT_MODE, MODES, Colorizer, InputError, check_resolution, parse_color

log = logging.getLogger(__name__)


def collect_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """`(file, path relative to its output folder)` for every image in `inputs` (folders recursively)."""
    found: list[tuple[Path, Path]] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."):
                    found.append((f, f.relative_to(p)))
        else:
            found.append((p, Path(p.name)))
    return found


def _load_hints(hints: str | None, rel: Path) -> Image.Image | None:
    if not hints:
        return None
    h = Path(hints)
    if h.is_dir():
        candidates = [h / rel.with_suffix(".png"), h / rel]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            tqdm.write(
                f"note: no hints for {rel} (looked for {candidates[0]}); colored without hints",
                file=sys.stderr,
            )
            return None
    else:
        path = h
    with Image.open(path) as img:
        if img.mode not in ("RGBA", "LA", "PA") and "transparency" not in img.info:
            raise InputError(f"{path}: hints must have transparency (an RGBA PNG, transparent where no hint)")
        return img.convert("RGBA")


def colorize_paths(
    inputs: list[str],
    *,
    model_dirs: list[str],
    out_dir: str | os.PathLike,
    hints: str | None = None,
    resolution: int | None = None,
    lineart: str = "auto",
    overwrite: bool = False,
    keep_lines: bool = True,
    mode: str = DEFAULT_MODE,
    layers: bool = False,
    background: str | None = None,
    tta: bool = True,
) -> int:
    """Color every input into `out_dir` (as PNG, same relative path). Returns 0, or 1 if any file failed.

    `layers` also writes `X.flats.png` (the colors, no lines) and `X.lines.png` (the lines on transparency)
    beside each `X.png`, at the sketch's size, for an artist to keep working on in layers."""
    if hints and not Path(hints).exists():
        raise FileNotFoundError(f"--hints {hints}: no such file or folder")
    check_resolution(resolution)
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if background not in (None, "hints"):
        parse_color(background)  # a wrong color fails before any work
    items = collect_inputs(inputs)
    if not items:
        raise ValueError("no input images found (looked for " + ", ".join(sorted(IMAGE_EXTENSIONS)) + ")")
    model = Colorizer.load(model_dirs, tta=tta)
    out_root = Path(out_dir)
    failed, skipped, done = [], 0, 0
    for src, rel in tqdm(items, desc="colorize", unit="img", disable=None):
        dst = out_root / rel.with_suffix(".png")
        if dst.exists() and not overwrite:
            skipped += 1
            continue
        try:
            sketch = Image.fromarray(load_rgb(src))
            hint_layer = _load_hints(hints, rel)
            if hint_layer is not None and hint_layer.size != sketch.size:
                hint_layer = hint_layer.resize(sketch.size, Image.Resampling.NEAREST)
            result = model.colorize_layers(
                sketch, hint_layer, mode=mode, resolution=resolution, lineart=lineart, background=background
            )
        except (ImageLoadError, InputError, OSError) as e:
            why = str(e) if str(src) in str(e) else f"{src}: {e}"
            failed.append((src, why))
            tqdm.write(f"failed: {why}", file=sys.stderr)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        outputs = [(dst, result.composite if keep_lines else result.colors)]
        if layers:
            outputs += [
                (dst.with_suffix(".flats.png"), result.colors),
                (dst.with_suffix(".lines.png"), result.lines),
            ]
        for path, image in reversed(outputs):  # the composite last: its presence means the set is complete
            tmp = path.with_name(path.stem + ".tmp.png")
            image.save(tmp)
            os.replace(tmp, path)
        done += 1
    print(f"colored {done}, skipped {skipped} existing (use --overwrite to redo), failed {len(failed)}")
    return 1 if failed else 0
