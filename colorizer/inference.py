"""Colorize sketches with an exported model: `Colorizer.load(DIR).colorize(sketch, hints=None) -> PIL.Image`.

    from colorizer.inference import Colorizer
    model = Colorizer.load("weights/")                  # or several folders: an ensemble
    out = model.colorize(Image.open("sketch.png"), hints=Image.open("hints.png"), resolution=512)

What happens to a sketch of any size and mode (RGBA on white, greyscale, palette, 16-bit):
1. It is put on white paper and turned into grey line art; a color image (a finished illustration, not a
   sketch) is first turned into line art with XDoG (`lineart="auto"` detects it; "extract" always does).
2. It is scaled so its longer side is `resolution` px (the network sees what it was trained at; very large
   inputs would otherwise cost minutes), and padded with white to a multiple of the network's 2**depth.
3. Hints, an RGBA layer painted over the sketch (transparent where there is none), become the same
   (hint RGB, mask) representation and softening the model was trained on (`hints_from_strokes`).
4. The network's colors are cropped, scaled back to the sketch's own size, and the original line art is
   laid over them ("multiply", as a colorist's flat layer sits under the ink): the output keeps the
   input's size and its lines stay as sharp as they were drawn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from PIL import Image

from colorizer.data import to_rgb_on_white
from colorizer.export import load_generator
from colorizer.hints import hints_from_strokes
from colorizer.lineart import to_grey, xdog

DEFAULT_RESOLUTION = 512
MIN_RESOLUTION, MAX_RESOLUTION = 32, 4096
MAX_INPUT_PIXELS = 64_000_000  # 8000 x 8000: more is refused before decoding work starts
LineartMode = Literal["auto", "as-is", "extract"]


class InputError(ValueError):
    """A sketch or hint layer cannot be used; the message says what is wrong and what to do."""


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_color_image(rgb: np.ndarray, *, threshold: float = 0.08) -> bool:
    """True for a colored illustration, False for line art (grey or nearly so): mean HSV saturation of
    the non-white pixels above `threshold`."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    inked = hsv[..., 2] < 245
    if inked.mean() < 0.002:
        return False
    return float(hsv[..., 1][inked].mean()) / 255.0 > threshold


def sketch_to_lines(sketch: Image.Image | np.ndarray, lineart: LineartMode = "auto") -> np.ndarray:
    """Any image -> line art `(H, W) float32 in [0, 1]` at the image's own size (1 = paper)."""
    if isinstance(sketch, Image.Image):
        if sketch.width * sketch.height > MAX_INPUT_PIXELS:
            raise InputError(
                f"the sketch is {sketch.width}x{sketch.height} px; the limit is {MAX_INPUT_PIXELS // 1_000_000} "
                "megapixels: scale it down first"
            )
        rgb = np.asarray(to_rgb_on_white(sketch))
    else:
        rgb = np.asarray(sketch)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        if rgb.dtype != np.uint8:
            raise InputError(f"an array sketch must be uint8 (H, W[, 3]), got {rgb.dtype}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"expected an RGB or grey image, got an array of shape {rgb.shape}")
    if min(rgb.shape[:2]) < 8:
        raise InputError(
            f"the sketch is only {rgb.shape[1]}x{rgb.shape[0]} px; use one at least 8 px on each side"
        )
    if lineart == "extract" or (lineart == "auto" and is_color_image(rgb)):
        return xdog(rgb, sigma=0.5)
    return to_grey(rgb)


def check_resolution(resolution: int | None) -> None:
    if resolution is not None and not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise InputError(
            f"resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION} px, got {resolution}"
        )


def _processing_size(h: int, w: int, resolution: int, multiple: int) -> tuple[int, int, int, int]:
    """`(scaled_h, scaled_w, padded_h, padded_w)` for a longer side of `resolution` px."""
    scale = resolution / max(h, w)
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    ph, pw = -(-sh // multiple) * multiple, -(-sw // multiple) * multiple
    return sh, sw, ph, pw


class Colorizer:
    """One exported model, or several averaged (an ensemble of checkpoints)."""

    def __init__(self, generators: list[torch.nn.Module], infos: list[dict], device: torch.device):
        if not generators:
            raise ValueError("a Colorizer needs at least one model")
        self.generators = generators
        self.infos = infos
        self.device = device
        self.multiple = max(g.multiple for g in generators)
        self.soften_sigma_px = float(infos[0].get("hints", {}).get("user_soften_sigma_px", 0.75))

    @classmethod
    def load(
        cls, model_dirs: str | os.PathLike | Sequence[str | os.PathLike], device: str | None = None
    ) -> Colorizer:
        """Load one exported model folder (or several, for an ensemble); no pickle is ever read."""
        dirs = [model_dirs] if isinstance(model_dirs, str | os.PathLike) else list(model_dirs)
        dev = pick_device(device)
        loaded = [load_generator(Path(d), map_location=dev) for d in dirs]
        return cls([g for g, _ in loaded], [i for _, i in loaded], dev)

    @property
    def info(self) -> dict:
        return self.infos[0]

    @torch.no_grad()
    def colorize_lines(
        self, lines: np.ndarray, hint_rgb: np.ndarray | None = None, hint_mask: np.ndarray | None = None
    ) -> np.ndarray:
        """The network on prepared inputs: `lines (H, W)` in [0, 1], hints `(H, W, 3)` premultiplied and
        `(H, W)` mask in [0, 1], H and W multiples of `self.multiple` -> colors `(H, W, 3) float32 in [0, 1]`."""
        h, w = lines.shape
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"H and W must be multiples of {self.multiple}, got {h}x{w}")
        line_t = torch.from_numpy(np.ascontiguousarray(lines, np.float32))[None, None] * 2 - 1
        if hint_rgb is None:
            hints_t, mask_t = torch.zeros(1, 3, h, w), torch.zeros(1, 1, h, w)
        else:
            mask_t = torch.from_numpy(np.ascontiguousarray(hint_mask, np.float32))[None, None]
            hints_t = (
                torch.from_numpy(np.ascontiguousarray(hint_rgb, np.float32)).permute(2, 0, 1)[None] * 2
                - mask_t
            )
        x = torch.cat([line_t, hints_t, mask_t], dim=1).to(self.device)  # (1, 5, H, W)
        out = torch.stack([g(x).float() for g in self.generators]).mean(0)  # (1, 3, H, W) in [-1, 1]
        return ((out[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 0.5).cpu().numpy()

    def colorize(
        self,
        sketch: Image.Image | np.ndarray,
        hints: Image.Image | np.ndarray | None = None,
        *,
        resolution: int | None = None,
        lineart: LineartMode = "auto",
        keep_lines: bool = True,
    ) -> Image.Image:
        """Color `sketch`; returns an RGB image of the sketch's own size.

        `hints`: an RGBA image (or `(H, W, 4) uint8`) the size of the sketch (other sizes are scaled to
        it), transparent where there is no hint. `resolution`: the longer side, in px, the network works
        at (default 512). `lineart`: "auto" turns a color image into line
        art first, "extract" always does, "as-is" never. `keep_lines`: lay the original lines over the colors.
        """
        lines_full = sketch_to_lines(sketch, lineart)  # (H, W) at the input's size
        H, W = lines_full.shape
        check_resolution(resolution)
        res = int(resolution or DEFAULT_RESOLUTION)
        sh, sw, ph, pw = _processing_size(H, W, res, self.multiple)
        interp = cv2.INTER_AREA if sh < H else cv2.INTER_CUBIC
        lines = np.ones((ph, pw), np.float32)  # white paper around the sketch
        lines[:sh, :sw] = np.clip(cv2.resize(lines_full, (sw, sh), interpolation=interp), 0, 1)

        hint_rgb = hint_mask = None
        if hints is not None:
            layer = np.asarray(hints.convert("RGBA") if isinstance(hints, Image.Image) else hints)
            if layer.ndim != 3 or layer.shape[2] != 4:
                raise InputError(
                    f"hints must be an RGBA image (transparent where no hint), got shape {layer.shape}"
                )
            if layer[..., 3].any():
                rgb, mask = hints_from_strokes(layer, size_hw=(sh, sw), soften_sigma_px=self.soften_sigma_px)
                hint_rgb = np.zeros((ph, pw, 3), np.float32)
                hint_mask = np.zeros((ph, pw), np.float32)
                hint_rgb[:sh, :sw], hint_mask[:sh, :sw] = rgb, mask

        colors = self.colorize_lines(lines, hint_rgb, hint_mask)[:sh, :sw]  # (sh, sw, 3) in [0, 1]
        if (sh, sw) != (H, W):
            colors = cv2.resize(colors, (W, H), interpolation=cv2.INTER_CUBIC if H > sh else cv2.INTER_AREA)
        colors = np.clip(colors, 0, 1)
        if keep_lines:
            colors = colors * lines_full[..., None]  # multiply: ink stays ink, at full resolution
        return Image.fromarray((colors * 255 + 0.5).astype(np.uint8), "RGB")
