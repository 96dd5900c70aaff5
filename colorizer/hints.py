"""Color hints: simulated from the target for training, or painted by a user in the app.

Both paths produce the same representation:

    hint_rgb: (H, W, 3) float32 in [0, 1], premultiplied by the mask (0 where there is no hint)
    mask:     (H, W)    float32 in [0, 1], how strongly each pixel is hinted

Training hints are deliberately poor ("hint denoising"): a share of samples has none at all, most
candidate hints are dropped, the survivors carry slightly wrong (jittered, noisy, quantized)
colors and are softened by a blur. The generator so learns to treat hints as suggestions and to
spread a color over its region, instead of copying pixels. User hints get the same softening.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from colorizer.config import HintsConfig


def empty_hints(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """No hints: `(H, W, 3)` zeros and an `(H, W)` zero mask."""
    return np.zeros((height, width, 3), np.float32), np.zeros((height, width), np.float32)


def _draw_count(rng: np.random.Generator, cfg: HintsConfig, area_scale: float) -> int:
    lo = max(1, cfg.count_min)
    hi = max(lo, int(round(cfg.count_max * area_scale)))
    if cfg.count_dist == "uniform":
        return int(rng.integers(lo, hi + 1))
    if cfg.count_dist == "geometric":
        mean = (lo + hi) / 4.0
        return int(min(hi, lo - 1 + rng.geometric(1.0 / max(mean, 1.0))))
    # loguniform: as many samples with 2 hints as with 20 or 60, like a user's wide range of effort
    return int(min(hi, math.floor(math.exp(rng.uniform(math.log(lo), math.log(hi + 1))))))


def soften(hint_rgb: np.ndarray, mask: np.ndarray, sigma_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Blur a premultiplied hint map and its mask together (colors do not darken at the edges)."""
    if sigma_px <= 0.05:
        return hint_rgb, mask
    rgb = cv2.GaussianBlur(hint_rgb, (0, 0), sigmaX=sigma_px, borderType=cv2.BORDER_CONSTANT)
    m = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma_px, borderType=cv2.BORDER_CONSTANT)
    # Re-normalize the color where there is any coverage so a hint keeps its color while spreading,
    # then premultiply by the (softer) mask again.
    color = rgb / np.maximum(m, 1e-6)[..., None]
    np.clip(color, 0.0, 1.0, out=color)
    m = np.clip(m, 0.0, 1.0)
    m[m < 1e-3] = 0.0
    return (color * m[..., None]).astype(np.float32), m.astype(np.float32)


def simulate_hints(
    color: np.ndarray, rng: np.random.Generator, cfg: HintsConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Simulated hints for a target `color (H, W, 3) uint8` -> `(hint_rgb, mask)` (see module doc).

    Steps: no hints at all with probability `no_hint_prob`; else draw a candidate count, drop a
    random share `drop_range` of them (at least one survives); each survivor is a dot or a short stroke
    carrying the local color read at a slightly jittered position, plus Gaussian color noise and
    quantization; finally soften map and mask with a random blur.
    """
    h, w = color.shape[:2]
    hint_rgb, mask = empty_hints(h, w)
    if rng.random() < cfg.no_hint_prob:
        return hint_rgb, mask

    n = _draw_count(rng, cfg, area_scale=(h * w) / (256.0 * 256.0))
    drop = float(rng.uniform(*cfg.drop_range))
    keep = rng.random(n) >= drop
    # The hinted branch always keeps at least one hint, so the share of samples with no hints at
    # all is exactly `no_hint_prob` (PaintsTorch's `=+` bug silently lost its no-hint share).
    keep[int(rng.integers(0, n))] = True

    canvas = np.zeros((h, w, 3), np.float32)
    cover = np.zeros((h, w), np.float32)
    j = cfg.position_jitter_px
    r_lo, r_hi = cfg.radius_px
    for i in range(n):
        # Draw every random number even for dropped hints: the stream, and so every later
        # sample decision, does not depend on which hints were dropped.
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        radius = int(rng.integers(r_lo, r_hi + 1))
        is_stroke = rng.random() < cfg.stroke_prob
        dy, dx = (int(v) for v in rng.integers(-j, j + 1, size=2)) if j > 0 else (0, 0)
        noise = rng.normal(0.0, cfg.color_noise_std, size=3) if cfg.color_noise_std > 0 else np.zeros(3)
        n_ctrl = int(rng.integers(2, 4))
        length = float(rng.uniform(*cfg.stroke_len_px))
        angles = rng.uniform(0, 2 * math.pi, size=n_ctrl)
        if not keep[i]:
            continue
        # Local color: mean of a small window around a jittered position.
        cy, cx = min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)
        win = color[max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2].reshape(-1, 3).astype(np.float32)
        c = win.mean(axis=0) + noise
        if cfg.quantize_step > 0:
            c = np.round(c / cfg.quantize_step) * cfg.quantize_step
        c = tuple(float(v) for v in np.clip(c, 0, 255) / 255.0)
        if is_stroke:
            pts = [(x, y)]
            seg = length / (n_ctrl - 1)
            for a in angles[1:]:
                px, py = pts[-1]
                pts.append((int(round(px + seg * math.cos(a))), int(round(py + seg * math.sin(a)))))
            poly = np.array(pts, np.int32).reshape(-1, 1, 2)
            cv2.polylines(canvas, [poly], False, c, thickness=max(1, radius), lineType=cv2.LINE_AA)
            cv2.polylines(cover, [poly], False, 1.0, thickness=max(1, radius), lineType=cv2.LINE_AA)
        else:
            cv2.circle(canvas, (x, y), radius, c, thickness=-1, lineType=cv2.LINE_AA)
            cv2.circle(cover, (x, y), radius, 1.0, thickness=-1, lineType=cv2.LINE_AA)
    # Later hints paint over earlier ones on the canvas; anti-aliased edges left canvas = c * cover.
    mask = np.clip(cover, 0.0, 1.0)
    color_map = canvas / np.maximum(cover, 1e-6)[..., None]
    hint_rgb = np.clip(color_map, 0, 1) * mask[..., None]
    sigma = float(rng.uniform(*cfg.soften_sigma_px))
    return soften(hint_rgb.astype(np.float32), mask.astype(np.float32), sigma)


def hints_from_strokes(
    layer: np.ndarray,
    *,
    size_hw: tuple[int, int] | None = None,
    soften_sigma_px: float | None = None,
    cfg: HintsConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """What a user painted -> `(hint_rgb, mask)`, the representation the model was trained on.

    `layer`: `(H, W, 4) uint8 RGBA`, transparent where nothing was painted (e.g. the brush layer of
    gradio's ImageEditor). `size_hw`: resize to the processing size `(height, width)` first (area
    interpolation on premultiplied colors, so thin strokes keep their color). The same softening
    as in training is applied (`cfg.user_soften_sigma_px` unless `soften_sigma_px` is given).
    """
    layer = np.asarray(layer)
    if layer.ndim != 3 or layer.shape[2] != 4:
        raise ValueError(f"hint layer must be (H, W, 4) RGBA, got shape {layer.shape}")
    rgba = layer.astype(np.float32) * (1.0 / 255.0)
    mask = rgba[..., 3]
    premult = rgba[..., :3] * mask[..., None]
    if size_hw is not None and tuple(size_hw) != mask.shape:
        h, w = size_hw
        shrinking = h * w < mask.size
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        premult = cv2.resize(premult, (w, h), interpolation=interp)
        mask = cv2.resize(mask, (w, h), interpolation=interp)
    cfg = cfg or HintsConfig()
    sigma = cfg.user_soften_sigma_px if soften_sigma_px is None else soften_sigma_px
    return soften(np.ascontiguousarray(premult, np.float32), np.ascontiguousarray(mask, np.float32), sigma)


def point_hints(
    color: np.ndarray,
    count: int,
    rng: np.random.Generator,
    *,
    radius_px: int = 2,
    soften_sigma_px: float = 0.75,
) -> tuple[np.ndarray, np.ndarray]:
    """Exactly `count` dots of the target's true local color (3x3 mean) at random positions, softened as
    a user's hints are: the fixed, repeatable hints of `colorizer evaluate`. `(H, W, 3) uint8` in,
    `(hint_rgb, mask)` out (the module's representation)."""
    h, w = color.shape[:2]
    hint_rgb, mask = empty_hints(h, w)
    for _ in range(count):
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        win = color[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].reshape(-1, 3).astype(np.float32)
        c = tuple(float(v) for v in win.mean(axis=0) / 255.0)
        cv2.circle(hint_rgb, (x, y), radius_px, c, thickness=-1)
        cv2.circle(mask, (x, y), radius_px, 1.0, thickness=-1)
    return soften(hint_rgb, mask, soften_sigma_px)
