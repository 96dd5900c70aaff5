"""Colorize sketches with an exported model: `Colorizer.load(DIR).colorize(sketch, hints=None) -> PIL.Image`.

    from colorizer.inference import Colorizer
    model = Colorizer.load("weights/")                  # or several folders: an ensemble
    out = model.colorize(Image.open("sketch.png"), hints=Image.open("hints.png"))            # flat colors
    layers = model.colorize_layers(sketch, hints, mode="soft")  # .composite, .colors, .lines

What happens to a sketch of any size and mode (RGBA on white, greyscale, palette, 16-bit):
1. It is put on white paper and turned into grey line art; a color image (a finished illustration, not a
   sketch) is first turned into line art with XDoG (`lineart="auto"` detects it; "extract" always does).
2. The network sees it at the scales it was trained at (`model.json`'s `scale`: the longer side of a whole
   drawing in its training crops, and the width of its training lines): scaled to each end of the training
   range of sides (its crops covered 60-100% of a drawing: 128 and 165 px for the demo model), strokes thinned
   to that width, padded with white to a multiple of the network's 2**depth, and mirrored as training mirrored
   it; the colors of these views are averaged (test-time augmentation: a GAN's colors for an area the lines
   say little about are one guess among many, and the mean of several guesses is the better answer).
   `resolution=` sets one side instead (still mirrored); `tta=False` runs one view.
3. Hints, an RGBA layer painted over the sketch (transparent where there is none), become the same
   (hint RGB, mask) representation and softening the model was trained on (`hints_from_strokes`).
4. `mode="flat"` (the default): the line art is cut into closed regions at (up to FLATS_MAX_SIDE px of) the
   sketch's own size and each region gets one color: the user's hint inside it, exactly, else the network's
   color there; the paper stays paper (colorizer.flats). `mode="soft"`: the network's colors themselves,
   scaled back to the sketch's size.
5. The original line art is laid over the colors ("multiply", as a colorist's flat layer sits under the
   ink): the output keeps the input's size and its lines stay as sharp as they were drawn.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from PIL import Image

from colorizer import flats
from colorizer.data import to_rgb_on_white
from colorizer.export import load_generator
from colorizer.hints import hints_from_strokes
from colorizer.lineart import stroke_width_px, to_grey, xdog

MIN_RESOLUTION, MAX_RESOLUTION = 32, 4096
MAX_INPUT_PIXELS = 64_000_000  # 8000 x 8000: more is refused before decoding work starts
FLATS_MAX_SIDE = 1024  # regions are found at most at this size (then scaled up under the full-size lines)
MAX_THINNING_PX = 3  # strokes are thinned by at most this many px a side to reach the trained width
LineartMode = Literal["auto", "as-is", "extract"]
Mode = Literal["flat", "soft"]
MODES: tuple[str, ...] = ("flat", "soft")
DEFAULT_MODE = "flat"


class InputError(ValueError):
    """A sketch or hint layer cannot be used; the message says what is wrong and what to do."""


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_color_image(rgb: np.ndarray, *, threshold: float = 0.08) -> bool:
    """True for a colored illustration, False for line art (grey or nearly so): mean HSV saturation of the
    pixels that are not paper (darker than V=245, or saturated: a bright yellow is color, not paper) above
    `threshold`."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    drawn = (hsv[..., 2] < 245) | (hsv[..., 1] > 40)
    if drawn.mean() < 0.002:
        return False
    return float(hsv[..., 1][drawn].mean()) / 255.0 > threshold


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


@dataclass(frozen=True)
class ModelScale:
    """The scale a model was trained at: `side_px`, the longer side of a whole drawing as its training crops
    showed it, `line_width_px`, the typical width of its training lines at that scale (colorizer.data's
    `training_scale`), and `sides_px`, the ends of the range of sides its crops showed (the views inference
    averages; `(side_px,)` for models that did not record their crops)."""

    side_px: int
    line_width_px: float
    sides_px: tuple[int, ...] = ()

    @classmethod
    def from_info(cls, info: dict, multiple: int) -> ModelScale:
        """From `model.json`; models exported before the scale was recorded get their crop size and 1-px lines
        (XDoG at the literature's sigmas)."""
        scale = info.get("scale") or {}
        side = scale.get("side_px")
        if not side:
            size = (info.get("training") or {}).get("size_hw") or [256, 256]
            side = max(size)
        side = max(multiple, int(round(float(side) / multiple)) * multiple)
        sides: tuple[int, ...] = (side,)
        crop, shares = scale.get("crop_hw"), scale.get("crop_scale")
        if crop and shares and min(shares) > 0:
            sides = tuple(
                sorted({round(max(crop) / math.sqrt(max(shares))), round(max(crop) / math.sqrt(min(shares)))})
            )
        return cls(side_px=side, line_width_px=float(scale.get("line_width_px") or 1.0), sides_px=sides)


@dataclass
class Layers:
    """What `Colorizer.colorize_layers` returns, each at the sketch's own size: `composite` (RGB: colors with the
    lines laid over them), `colors` (RGB: the flat colors, or the network's in soft mode, under no lines),
    `lines` (RGBA: the sketch's lines, black on transparency), the size the network worked at (the largest of
    its views) and how many views were averaged."""

    composite: Image.Image
    colors: Image.Image
    lines: Image.Image
    network_hw: tuple[int, int]
    views: int = 1


def parse_color(value: str | Sequence[float] | None) -> tuple[float, float, float] | None:
    """`"#rrggbb"`, `"rrggbb"` or `(r, g, b)` in 0..255 -> `(r, g, b)` in [0, 1]; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) != 6 or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise InputError(f"a color is written #rrggbb (e.g. #ffe8c8), got {value!r}")
        return tuple(int(text[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
    rgb = tuple(float(v) for v in value)
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise InputError(f"a color is three numbers in 0..255, got {value!r}")
    return tuple(v / 255.0 for v in rgb)  # type: ignore[return-value]


def thin_strokes(lines: np.ndarray, target_width_px: float) -> np.ndarray:
    """Line art `(H, W)` in [0, 1] with its strokes thinned (grey dilation of the paper, 1 px a side per
    step, at most MAX_THINNING_PX steps) toward `target_width_px`. Thinner strokes are left as they are."""
    width = stroke_width_px(lines)
    if width is None:
        return lines
    steps = int(min(MAX_THINNING_PX, max(0, round((width - target_width_px) / 2))))
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(steps):
        lines = cv2.dilate(lines, kernel)
    return lines


class Colorizer:
    """One exported model, or several averaged (an ensemble of checkpoints)."""

    def __init__(
        self, generators: list[torch.nn.Module], infos: list[dict], device: torch.device, *, tta: bool = True
    ):
        if not generators:
            raise ValueError("a Colorizer needs at least one model")
        self.generators = generators
        self.infos = infos
        self.device = device
        self.multiple = max(g.multiple for g in generators)
        self.soften_sigma_px = float(infos[0].get("hints", {}).get("user_soften_sigma_px", 0.75))
        self.scale = ModelScale.from_info(infos[0], self.multiple)
        self.tta = tta  # average views at the training's scale range and mirrored (see the module docstring)

    @classmethod
    def load(
        cls,
        model_dirs: str | os.PathLike | Sequence[str | os.PathLike],
        device: str | None = None,
        *,
        tta: bool = True,
    ) -> Colorizer:
        """Load one exported model folder (or several, for an ensemble); no pickle is ever read. `tta=False`:
        one view of each sketch instead of the average of the training's scales and mirror images."""
        dirs = [model_dirs] if isinstance(model_dirs, str | os.PathLike) else list(model_dirs)
        dev = pick_device(device)
        loaded = [load_generator(Path(d), map_location=dev) for d in dirs]
        return cls([g for g, _ in loaded], [i for _, i in loaded], dev, tta=tta)

    @property
    def info(self) -> dict:
        return self.infos[0]

    @torch.no_grad()
    def colorize_lines(
        self,
        lines: np.ndarray,
        hint_rgb: np.ndarray | None = None,
        hint_mask: np.ndarray | None = None,
        *,
        mirror: bool = False,
    ) -> np.ndarray:
        """The network on prepared inputs: `lines (H, W)` in [0, 1], hints `(H, W, 3)` premultiplied and
        `(H, W)` mask in [0, 1], H and W multiples of `self.multiple` -> colors `(H, W, 3) float32 in [0, 1]`.
        `mirror`: the mean of the input's and its mirror image's colors (one batch of two)."""
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
        x = torch.cat([line_t, hints_t, mask_t], dim=1)  # (1, 5, H, W)
        if mirror:
            x = torch.cat([x, x.flip(-1)])
        x = x.to(self.device)
        out = torch.stack([g(x).float() for g in self.generators]).mean(0)  # (B, 3, H, W) in [-1, 1]
        if mirror:
            out = (out[:1] + out[1:].flip(-1)) * 0.5
        return ((out[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 0.5).cpu().numpy()

    def network_colors(
        self, lines_full: np.ndarray, layer: np.ndarray | None, resolution: int | None = None
    ) -> tuple[np.ndarray, int]:
        """The network's colors `(sh, sw, 3) float32 in [0, 1]` for line art `(H, W)` and a hint layer
        `(H, W, 4) uint8` (or None), and the number of views averaged: at the model's scales (or a longer side
        of `resolution` px), each with its mirror image (unless `tta` is off); `(sh, sw)` is the largest
        view's size."""
        check_resolution(resolution)
        views = [self._view(lines_full, layer, side) for side in self.sides_px(resolution)]
        sh, sw = views[-1].shape[:2]
        colors = np.mean(
            [
                v if v.shape[:2] == (sh, sw) else cv2.resize(v, (sw, sh), interpolation=cv2.INTER_LINEAR)
                for v in views
            ],
            axis=0,
        )
        return colors, len(views) * (2 if self.tta else 1)

    def sides_px(self, resolution: int | None = None) -> tuple[int, ...]:
        """The longer sides the network sees a sketch at: `resolution`, else the model's training scales (the
        middle one alone when `tta` is off)."""
        if resolution:
            return (int(resolution),)
        return self.scale.sides_px if self.tta else (self.scale.side_px,)

    def _view(self, lines_full: np.ndarray, layer: np.ndarray | None, side: int) -> np.ndarray:
        """The network's colors with the sketch's longer side at `side` px (mirrored too when `tta`)."""
        H, W = lines_full.shape
        sh, sw, ph, pw = _processing_size(H, W, side, self.multiple)
        interp = cv2.INTER_AREA if sh < H else cv2.INTER_CUBIC
        lines = np.ones((ph, pw), np.float32)  # white paper around the sketch
        scaled = np.clip(cv2.resize(lines_full, (sw, sh), interpolation=interp), 0, 1)
        lines[:sh, :sw] = thin_strokes(scaled, self.scale.line_width_px)
        hint_rgb = hint_mask = None
        if layer is not None and layer[..., 3].any():
            rgb, mask = hints_from_strokes(layer, size_hw=(sh, sw), soften_sigma_px=self.soften_sigma_px)
            hint_rgb = np.zeros((ph, pw, 3), np.float32)
            hint_mask = np.zeros((ph, pw), np.float32)
            hint_rgb[:sh, :sw], hint_mask[:sh, :sw] = rgb, mask
        return self.colorize_lines(lines, hint_rgb, hint_mask, mirror=self.tta)[:sh, :sw]

    def colorize_layers(
        self,
        sketch: Image.Image | np.ndarray,
        hints: Image.Image | np.ndarray | None = None,
        *,
        mode: Mode = DEFAULT_MODE,
        resolution: int | None = None,
        lineart: LineartMode = "auto",
        background: str | Sequence[float] | None = None,
    ) -> Layers:
        """Color `sketch` -> `Layers` (composite, colors, lines), each of the sketch's own size.

        `hints`: an RGBA image (or `(H, W, 4) uint8`), transparent where there is no hint (other sizes are
        scaled to the sketch's). `mode`: "flat" (one color per region, hints exact) or "soft" (the network's
        colors). `resolution`: the longer side, in px, the network works at (default: the scale it was
        trained at). `lineart`: "auto" turns a color image into line art first, "extract" always does,
        "as-is" never. `background` (flat mode): None keeps the paper white; a color (`"#rrggbb"`) paints
        it; "hints" lets a hint on the paper color the whole paper.
        """
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        paper_takes_hints = background == "hints"
        paper = None if background in (None, "hints", "paper", "white") else parse_color(background)
        lines_full = sketch_to_lines(sketch, lineart)  # (H, W) at the input's size
        H, W = lines_full.shape
        layer = _hint_layer(hints, (H, W))
        colors, views = self.network_colors(lines_full, layer, resolution)  # (sh, sw, 3) in [0, 1]
        network_hw = colors.shape[:2]
        if mode == "soft":
            if network_hw != (H, W):
                up = H > network_hw[0]
                colors = cv2.resize(colors, (W, H), interpolation=cv2.INTER_CUBIC if up else cv2.INTER_AREA)
            colors = np.clip(colors, 0, 1)
        else:
            colors = _flat_colors(lines_full, colors, layer, paper, paper_takes_hints)
        composite = colors * lines_full[..., None]  # multiply: ink stays ink, at full resolution
        ink = np.zeros((H, W, 4), np.uint8)
        ink[..., 3] = ((1.0 - lines_full) * 255 + 0.5).astype(np.uint8)
        return Layers(
            composite=_to_image(composite),
            colors=_to_image(colors),
            lines=Image.fromarray(ink, "RGBA"),
            network_hw=network_hw,
            views=views,
        )

    def colorize(
        self,
        sketch: Image.Image | np.ndarray,
        hints: Image.Image | np.ndarray | None = None,
        *,
        mode: Mode = DEFAULT_MODE,
        resolution: int | None = None,
        lineart: LineartMode = "auto",
        keep_lines: bool = True,
        background: str | Sequence[float] | None = None,
    ) -> Image.Image:
        """Color `sketch`; returns an RGB image of the sketch's own size (see `colorize_layers` for the
        arguments). `keep_lines=False` returns the colors without the lines laid over them."""
        layers = self.colorize_layers(
            sketch, hints, mode=mode, resolution=resolution, lineart=lineart, background=background
        )
        return layers.composite if keep_lines else layers.colors


def _to_image(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def _hint_layer(hints: Image.Image | np.ndarray | None, size_hw: tuple[int, int]) -> np.ndarray | None:
    """The user's hints as `(H, W, 4) uint8` at the sketch's size, or None when nothing is painted."""
    if hints is None:
        return None
    layer = np.asarray(hints.convert("RGBA") if isinstance(hints, Image.Image) else hints)
    if layer.ndim != 3 or layer.shape[2] != 4 or layer.dtype != np.uint8:
        raise InputError(
            f"hints must be an RGBA image (transparent where no hint), got an array of shape {layer.shape}"
        )
    if not layer[..., 3].any():
        return None
    if layer.shape[:2] != size_hw:
        layer = _resize_rgba(layer, size_hw)
    return layer


def _resize_rgba(layer: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize an RGBA layer on premultiplied colors (transparent pixels lend no color to painted ones)."""
    h, w = size_hw
    rgba = layer.astype(np.float32) / 255.0
    premult = rgba[..., :3] * rgba[..., 3:]
    interp = cv2.INTER_AREA if h * w < layer.shape[0] * layer.shape[1] else cv2.INTER_LINEAR
    premult = cv2.resize(premult, (w, h), interpolation=interp)
    alpha = np.clip(cv2.resize(rgba[..., 3], (w, h), interpolation=interp), 0, 1)
    rgb = np.clip(premult / np.maximum(alpha, 1e-6)[..., None], 0, 1)
    return (np.dstack([rgb, alpha]) * 255 + 0.5).astype(np.uint8)


def _flat_colors(
    lines_full: np.ndarray,
    network_rgb: np.ndarray,
    layer: np.ndarray | None,
    paper: tuple[float, float, float] | None,
    paper_takes_hints: bool,
) -> np.ndarray:
    """Flat colors `(H, W, 3)` at the sketch's size: regions found at up to FLATS_MAX_SIDE px, colored
    there, and scaled up by nearest neighbor (region edges lie under the lines)."""
    H, W = lines_full.shape
    s = min(1.0, FLATS_MAX_SIDE / max(H, W))
    h, w = (max(1, round(H * s)), max(1, round(W * s))) if s < 1 else (H, W)
    lines = lines_full if (h, w) == (H, W) else cv2.resize(lines_full, (w, h), interpolation=cv2.INTER_AREA)
    net = cv2.resize(network_rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    hint_rgb = hint_alpha = None
    if layer is not None:
        small = layer if layer.shape[:2] == (h, w) else _resize_rgba(layer, (h, w))
        hint_rgb = small[..., :3].astype(np.float32) / 255.0
        hint_alpha = small[..., 3].astype(np.float32) / 255.0
    regions = flats.segment(lines)
    colors = flats.fill(
        regions, net, hint_rgb, hint_alpha, background=paper, paper_takes_hints=paper_takes_hints
    )
    if (h, w) != (H, W):
        colors = cv2.resize(colors, (W, H), interpolation=cv2.INTER_NEAREST)
    return colors
