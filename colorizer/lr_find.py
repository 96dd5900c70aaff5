"""`colorizer lr-find`: a learning-rate range test (Smith 2015; fast.ai's lr_find) for this GAN.

The learning rate of G (and D, keeping the config's lr_D / lr_G ratio) grows exponentially from `min_lr` to
`max_lr` over `steps` real training steps of a fresh model; the generator's reconstruction loss is
smoothed and recorded. The sweep stops early once the smoothed loss exceeds 4x its minimum (diverged).
Suggested lr: a tenth of the lr at the smoothed loss's minimum (the usual rule: well before the valley's
bottom, where the loss still falls steadily). Nothing of the run itself is touched:
the sweep writes `runs/<name>-lr-find/` (lr_find.png, lr_find.json, metrics.jsonl, wandb).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from colorizer.config import Config
from colorizer.tracking import Tracker

log = logging.getLogger(__name__)


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    plot_path: Path
    diverged: bool


def suggest_lr(lrs: list[float], smoothed: list[float]) -> float:
    """A tenth of the lr where the smoothed loss is lowest (fast.ai's rule: well before the valley's bottom,
    where the loss still falls steadily). The steepest-slope rule is not used: on a GAN's noisy loss its
    argmax lands on noise at the start of the sweep."""
    skip = max(1, len(smoothed) // 10)  # the bias-corrected average is still settling at first
    k_min = skip + int(np.argmin(np.asarray(smoothed[skip:]))) if len(smoothed) > skip else 0
    return float(lrs[k_min]) / 10


def plot(
    lrs: list[float], losses: list[float], smoothed: list[float], suggestion: float, size=(640, 400)
) -> Image.Image:
    """Loss (grey) and smoothed loss (blue) against log10(lr), the suggestion as a red line."""
    w, h = size
    pad_l, pad_r, pad_t, pad_b = 60, 20, 30, 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    x = np.log10(lrs)
    finite = [v for v in losses + smoothed if math.isfinite(v)]
    lo, hi = min(finite), max(finite)
    hi = min(hi, lo + 4 * (np.median(finite) - lo) + 1e-9) if len(finite) > 4 else hi
    hi = hi if hi > lo else lo + 1e-6

    def px(xv: float, yv: float) -> tuple[float, float]:
        fx = (xv - x.min()) / max(x.max() - x.min(), 1e-9)
        fy = (min(max(yv, lo), hi) - lo) / (hi - lo)
        return pad_l + fx * (w - pad_l - pad_r), h - pad_b - fy * (h - pad_t - pad_b)

    d.rectangle([pad_l, pad_t, w - pad_r, h - pad_b], outline="black")
    for decade in range(math.floor(x.min()), math.ceil(x.max()) + 1):
        if x.min() <= decade <= x.max():
            X, _ = px(decade, lo)
            d.line([X, h - pad_b, X, h - pad_b + 5], fill="black")
            d.text((X - 14, h - pad_b + 8), f"1e{decade}", fill="black")
    d.text((pad_l, 8), "lr-find: G reconstruction loss vs learning rate (log scale)", fill="black")
    d.text((4, pad_t), f"{hi:.3g}", fill="black")
    d.text((4, h - pad_b - 10), f"{lo:.3g}", fill="black")
    for series, color in ((losses, (180, 180, 180)), (smoothed, (40, 80, 200))):
        pts = [px(a, b) for a, b in zip(x, series, strict=True) if math.isfinite(b)]
        if len(pts) > 1:
            d.line(pts, fill=color, width=2)
    X, _ = px(math.log10(suggestion), lo)
    d.line([X, pad_t, X, h - pad_b], fill=(220, 30, 30), width=2)
    d.text((X + 4, pad_t + 4), f"suggested {suggestion:.1e}", fill=(220, 30, 30))
    return img


def lr_find(
    cfg: Config, *, min_lr: float = 1e-7, max_lr: float = 1.0, steps: int = 200, smoothing: float = 0.9
) -> LRFindResult:
    from colorizer.train import Trainer

    if not 0 < min_lr < max_lr:
        raise ValueError(f"need 0 < min_lr < max_lr, got {min_lr} and {max_lr}")
    if steps < 10:
        raise ValueError(f"steps must be at least 10, got {steps}")
    cfg = replace(cfg, name=f"{cfg.name}-lr-find")
    trainer = Trainer(cfg)
    run_dir = trainer.run_dir
    train_set, _ = trainer._datasets()
    batches = trainer._batches(train_set)
    ratio_D = cfg.optim.lr_D / cfg.optim.lr_G if cfg.optim.lr_G > 0 else 1.0
    tracker = Tracker(
        run_dir,
        mode=cfg.tracking.wandb_mode,
        project=cfg.tracking.project,
        name=cfg.name,
        config={"lr_find": {"min_lr": min_lr, "max_lr": max_lr, "steps": steps}},
        resume_step=0,
    )  # fmt: skip  (resume_step=0: a new sweep replaces an old one's rows)
    lrs, losses, smoothed = [], [], []
    avg, best, diverged = 0.0, math.inf, False
    try:
        for i in range(steps):
            lr = min_lr * (max_lr / min_lr) ** (i / (steps - 1))
            for group in trainer.opt_G.param_groups:
                group["lr"] = lr
            for group in trainer.opt_D.param_groups:
                group["lr"] = lr * ratio_D
            numbers = trainer.train_step(trainer.to_device(next(batches)))
            loss = float(numbers["train/mse"])  # the pixel error, whatever the loss terms (hinge can be < 0)
            lrs.append(lr)
            losses.append(loss)
            if not math.isfinite(loss):
                diverged = True
                break
            avg = smoothing * avg + (1 - smoothing) * loss
            s = avg / (1 - smoothing ** (i + 1))  # bias-corrected
            smoothed.append(s)
            tracker.log({"lr_find/lr": lr, "lr_find/loss": loss, "lr_find/smoothed": s}, step=i + 1)
            best = min(best, s)
            if i > 10 and s > 4 * best:
                diverged = True
                break
        losses = losses[: len(smoothed)]
        lrs = lrs[: len(smoothed)]
        if len(smoothed) < 3:
            raise ValueError("the loss diverged at once: lower --min-lr")
        suggestion = suggest_lr(lrs, smoothed)
        image = plot(lrs, losses, smoothed, suggestion)
        plot_path = run_dir / "lr_find.png"
        image.save(plot_path)
        tracker.log_image("lr_find", image, len(lrs), caption=f"suggested lr {suggestion:.2e}")
        tracker.summary({"lr_find/suggestion": suggestion})
        (run_dir / "lr_find.json").write_text(
            json.dumps(
                {
                    "lrs": lrs,
                    "losses": losses,
                    "smoothed": smoothed,
                    "suggestion": suggestion,
                    "diverged": diverged,
                },
                indent=1,
            )  # fmt: skip
        )
    finally:
        tracker.finish()
    return LRFindResult(lrs, losses, smoothed, suggestion, plot_path, diverged)
