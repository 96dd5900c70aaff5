"""Line art from a color image: XDoG, dilate-difference, and a randomized mix of both.

Every function takes a color image `(H, W, 3) uint8 RGB` (or a grey `(H, W)` uint8/float in [0, 1])
and returns line art `(H, W) float32 in [0, 1]`: 1 is white paper, 0 is black ink. Any H x W.

The mix (`random_lineart`) varies the extractor, its parameters, ink darkness, noise and
binarization per sample, so the generator does not learn the fingerprints of one extractor and
still colors real, hand-drawn line art.
"""

from __future__ import annotations

import cv2
import numpy as np

from colorizer.config import LineartConfig


def to_grey(image: np.ndarray) -> np.ndarray:
    """`(H, W, 3) uint8` or `(H, W)` uint8/float -> `(H, W) float32 in [0, 1]` (ITU-R 601 luma)."""
    if image.ndim == 3:
        if image.shape[2] != 3:
            raise ValueError(f"expected (H, W, 3) RGB, got shape {image.shape}")
        grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    else:
        grey = image
    if grey.dtype == np.uint8:
        return grey.astype(np.float32) * (1.0 / 255.0)
    return np.clip(grey.astype(np.float32), 0.0, 1.0)


def otsu_threshold(lines: np.ndarray) -> float:
    """Otsu's threshold of a `(H, W)` float image in [0, 1], in the same units."""
    u8 = np.clip(lines * 255.0 + 0.5, 0, 255).astype(np.uint8)
    t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(t) / 255.0


def binarize(lines: np.ndarray) -> np.ndarray:
    """Otsu binarization: `(H, W) float32 [0, 1]` -> values in {0, 1}.

    A blank page (a single grey level) stays white rather than flipping to solid ink.
    """
    if float(lines.max() - lines.min()) < 1e-3:
        return np.ones_like(lines, dtype=np.float32)
    u8 = np.clip(lines * 255.0 + 0.5, 0, 255).astype(np.uint8)
    _, out = cv2.threshold(u8, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return out.astype(np.float32)


def xdog(
    image: np.ndarray,
    *,
    sigma: float = 0.5,
    k: float = 4.5,
    gamma: float = 0.95,
    phi: float = 1e9,
    eps: float = -0.1,
    binarize_otsu: bool = False,
) -> np.ndarray:
    """eXtended Difference of Gaussians (Winnemoeller et al. 2012) on luma in [0, 1].

    D = G_sigma - gamma * G_{k sigma};  T = 1 where D >= eps, else 1 + tanh(phi (D - eps)).
    Defaults are the literature's (AlacGAN, PaintsTorch): k=4.5, gamma=0.95, phi=1e9, eps=-0.1,
    sigma in {0.3, 0.4, 0.5}. With phi=1e9 the result is already nearly binary; a small phi gives
    soft, pencil-like lines, and `binarize_otsu` then thresholds them.
    """
    grey = to_grey(image)
    # ksize (0, 0): OpenCV derives the kernel size from sigma (about 6 sigma + 1).
    g1 = cv2.GaussianBlur(grey, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE)
    g2 = cv2.GaussianBlur(grey, (0, 0), sigmaX=sigma * k, borderType=cv2.BORDER_REPLICATE)
    d = g1 - gamma * g2
    # phi * (d - eps) overflows nothing: tanh saturates; keep float32 for speed.
    out = np.where(d >= eps, 1.0, 1.0 + np.tanh(np.float32(phi) * (d - eps))).astype(np.float32)
    out = np.clip(out, 0.0, 1.0)
    if binarize_otsu:
        out = binarize(out)
    return out


def dilate_difference(image: np.ndarray, *, kernel_px: int = 3) -> np.ndarray:
    """Grey, dilate, absolute difference with the grey, invert: edges become dark lines.

    The classic "sketch from color" trick (e.g. sketchKeras' preprocessing). Output contrast is
    stretched so the strongest edge is full black, whatever the image's own contrast.
    """
    grey = to_grey(image)
    kernel = np.ones((kernel_px, kernel_px), np.uint8)
    dilated = cv2.dilate(grey, kernel)
    diff = np.abs(dilated - grey)
    peak = float(diff.max())
    if peak > 1e-6:
        # Stretch to the 99.5th percentile so one bright speck does not wash out every line.
        hi = max(float(np.percentile(diff, 99.5)), peak * 0.25, 1e-6)
        diff = np.clip(diff / hi, 0.0, 1.0)
    return (1.0 - diff).astype(np.float32)


def dark_fills(image: np.ndarray, *, below: float = 0.2) -> np.ndarray:
    """Solid ink where the image is dark: `(H, W) float32`, 0 where the (slightly smoothed) luma is under
    `below`, 1 elsewhere. Thin dark strokes are left to the line extractors; areas keep their shape."""
    grey = cv2.GaussianBlur(to_grey(image), (0, 0), sigmaX=1.0)
    return (grey >= below).astype(np.float32)


def random_lineart(image: np.ndarray, rng: np.random.Generator, cfg: LineartConfig) -> np.ndarray:
    """A randomized extractor per sample: `(H, W, 3) uint8` -> `(H, W) float32 in [0, 1]`.

    Picks XDoG or dilate-difference by weight, fills dark areas with ink (`dark_fill_prob`), then jitters
    ink darkness, adds noise, blur and Otsu binarization with the configured probabilities. Deterministic for a given `rng` state.
    """
    total = cfg.xdog_weight + cfg.dilate_weight
    if total <= 0:
        raise ValueError("lineart.xdog_weight + lineart.dilate_weight must be > 0")
    if rng.random() < cfg.xdog_weight / total:
        sigma = float(rng.choice(cfg.xdog_sigmas))
        lines = xdog(
            image, sigma=sigma, k=cfg.xdog_k, gamma=cfg.xdog_gamma, phi=cfg.xdog_phi, eps=cfg.xdog_eps
        )
    else:
        kernel = int(rng.choice(cfg.dilate_kernels))
        lines = dilate_difference(image, kernel_px=kernel)
    if cfg.dark_fill_prob > 0 and rng.random() < cfg.dark_fill_prob:
        lines = np.minimum(lines, dark_fills(image, below=cfg.dark_fill_below))

    if rng.random() < cfg.blur_prob:
        lines = cv2.GaussianBlur(lines, (0, 0), sigmaX=float(rng.uniform(0.4, 0.8)))
    if rng.random() < cfg.binarize_prob:
        lines = binarize(lines)
    lo, hi = cfg.intensity_range
    darkness = float(rng.uniform(lo, hi))  # 1.0: full black ink; 0.6: grey pencil
    lines = 1.0 - darkness * (1.0 - lines)
    if rng.random() < cfg.noise_prob and cfg.noise_std_max > 0:
        std = float(rng.uniform(0.0, cfg.noise_std_max))
        lines = lines + rng.standard_normal(lines.shape, dtype=np.float32) * np.float32(std)
    return np.clip(lines, 0.0, 1.0).astype(np.float32, copy=False)


def stroke_width_px(lines: np.ndarray, *, ink_threshold: float = 0.5) -> float | None:
    """Typical width in px of the strokes of line art `(H, W) float32 in [0, 1]` (1 = paper): the median of
    twice the ink's distance to the paper along the strokes' center lines, minus one (a 1-px line is 1, a
    7-px line 7). None when there is too little ink to tell."""
    ink = (lines < ink_threshold).astype(np.uint8)
    if int(ink.sum()) < 16:
        return None
    d = cv2.distanceTransform(np.pad(ink, 1), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    ridge = (ink > 0) & (d >= cv2.dilate(d, np.ones((3, 3), np.uint8)))
    return float(2.0 * np.median(d[ridge]) - 1.0)
