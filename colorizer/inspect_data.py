"""`colorizer inspect`: look at the data exactly as the model receives it, before training.

Writes a grid (one row a sample: target | line art | hint map | hint mask), de-normalized from the
tensors the model gets, and a histogram of every input channel's values, and prints the numbers:
ranges, means, the share of samples without hints and the files that could not be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from colorizer.config import Config
from colorizer.data import ColorizationDataset, make_loader

COLUMNS = ("target", "line art", "hint map", "hint mask")
LABEL_PX = 14


@dataclass
class InspectReport:
    grid_path: Path
    hist_path: Path
    samples: int
    no_hint_share: float
    skipped_files: int
    stats: dict[str, dict[str, float]]


def sample_tiles(batch: dict) -> list[list[np.ndarray]]:
    """A batch -> rows of `(H, W, 3) uint8` tiles in COLUMNS order (de-normalized for display)."""
    color = ((batch["color"] + 1) * 127.5).clamp(0, 255)
    line = ((batch["line"] + 1) * 127.5).clamp(0, 255).expand(-1, 3, -1, -1)
    mask = batch["mask"].clamp(0, 1)
    hint_colors = (batch["hints"] + mask) * 0.5  # premultiplied [0, 1]
    # Show hints on white paper: where the mask is 0 the tile is white.
    hint_map = ((hint_colors + (1 - mask)) * 255).clamp(0, 255)
    mask_img = (mask * 255).expand(-1, 3, -1, -1)
    rows = []
    for i in range(color.shape[0]):
        rows.append(
            [t[i].permute(1, 2, 0).round().to(torch.uint8).numpy() for t in (color, line, hint_map, mask_img)]
        )
    return rows


def tile_grid(
    rows: list[list[np.ndarray]], labels: tuple[str, ...] = COLUMNS, pad_px: int = 2
) -> Image.Image:
    """Rows of equal-size tiles -> one labelled PIL image."""
    h, w = rows[0][0].shape[:2]
    n_cols = len(rows[0])
    width = n_cols * w + (n_cols + 1) * pad_px
    height = LABEL_PX + len(rows) * h + (len(rows) + 1) * pad_px
    canvas = Image.new("RGB", (width, height), (128, 128, 128))
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(labels[:n_cols]):
        draw.text((pad_px + c * (w + pad_px), 1), label, fill=(255, 255, 255))
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            canvas.paste(
                Image.fromarray(tile), (pad_px + c * (w + pad_px), LABEL_PX + pad_px + r * (h + pad_px))
            )
    return canvas


def channel_values(batches: list[dict]) -> dict[str, np.ndarray]:
    """Flattened values of every channel the model reads (and the target), in model units."""
    cat = {k: torch.cat([b[k] for b in batches]) for k in ("line", "hints", "mask", "color")}
    hinted = cat["mask"] > 0
    return {
        "line [-1,1]": cat["line"].flatten().numpy(),
        # hint colors only where there is a hint (elsewhere they are 0 by construction)
        "hint R [-1,1]": cat["hints"][:, 0:1][hinted].numpy(),
        "hint G [-1,1]": cat["hints"][:, 1:2][hinted].numpy(),
        "hint B [-1,1]": cat["hints"][:, 2:3][hinted].numpy(),
        "mask [0,1]": cat["mask"].flatten().numpy(),
        "target RGB [-1,1]": cat["color"].flatten().numpy(),
    }


def histogram_image(
    values: dict[str, np.ndarray], bins: int = 64, panel_hw: tuple[int, int] = (90, 256)
) -> Image.Image:
    """Bar histograms (log counts) of each channel, stacked, with min/mean/max in the label."""
    ph, pw = panel_hw
    canvas = Image.new("RGB", (pw + 8, len(values) * (ph + LABEL_PX + 6)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (name, v) in enumerate(values.items()):
        y0 = k * (ph + LABEL_PX + 6)
        lo = -1.0 if "[-1,1]" in name else 0.0
        if v.size == 0:
            draw.text((4, y0), f"{name}: no values", fill=(0, 0, 0))
            continue
        counts, _ = np.histogram(np.clip(v, lo, 1.0), bins=bins, range=(lo, 1.0))
        heights = np.log1p(counts) / max(np.log1p(counts).max(), 1e-9)
        draw.text((4, y0), f"{name}: min {v.min():.2f} mean {v.mean():.2f} max {v.max():.2f}", fill=(0, 0, 0))
        base = y0 + LABEL_PX + ph
        bw = pw / bins
        for b, hgt in enumerate(heights):
            x0 = 4 + b * bw
            draw.rectangle([x0, base - hgt * ph, x0 + bw - 1, base], fill=(60, 90, 160))
        draw.line([4, base, 4 + pw, base], fill=(0, 0, 0))
    return canvas


def summarize(values: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    out = {}
    for name, v in values.items():
        if v.size == 0:
            out[name] = {"count": 0}
            continue
        out[name] = {
            "count": int(v.size),
            "min": float(v.min()),
            "max": float(v.max()),
            "mean": float(v.mean()),
            "std": float(v.std()),
        }
    return out


def inspect_data(
    cfg: Config, out: str | Path, *, samples: int = 8, split: str | None = None, hist_samples: int = 64
) -> InspectReport:
    """Write the grid of `samples` rows to `out` and the histogram next to it (`<stem>.hist.png`).

    Statistics use `max(samples, hist_samples)` samples, from the start of epoch 0 of the
    configured data, augmented exactly as in training.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dataset = ColorizationDataset(cfg, split=split)
    total = max(samples, hist_samples)  # the loader is endless: a small dataset repeats, augmented anew
    loader = make_loader(
        dataset, batch_size=min(16, total), workers=cfg.data.workers, seed=cfg.seed, epochs=None
    )
    batches, seen = [], 0
    for batch in loader:
        batches.append(batch)
        seen += batch["color"].shape[0]
        if seen >= total:
            break
    first = {
        k: torch.cat([b[k] for b in batches])[:samples] if torch.is_tensor(batches[0][k]) else None
        for k in batches[0]
    }
    grid = tile_grid(sample_tiles(first))
    tmp = out.with_name(out.name + ".tmp.png")
    grid.save(tmp)
    tmp.replace(out)

    values = channel_values(batches)
    hist_path = out.with_name(out.stem + ".hist.png")
    tmp = hist_path.with_name(hist_path.name + ".tmp.png")
    histogram_image(values).save(tmp)
    tmp.replace(hist_path)

    masks = torch.cat([b["mask"] for b in batches])
    no_hint = float((masks.flatten(1).amax(1) == 0).float().mean())
    skipped = int(sum(int(b["skipped"].sum()) for b in batches))
    return InspectReport(out, hist_path, int(masks.shape[0]), no_hint, skipped, summarize(values))


def format_report(r: InspectReport) -> str:
    lines = [
        f"grid:      {r.grid_path}  (columns: {' | '.join(COLUMNS)})",
        f"histogram: {r.hist_path}",
        f"samples looked at: {r.samples}; with no hints: {r.no_hint_share:.0%}; reads of unreadable files skipped: {r.skipped_files}",
        "",
        f"{'channel':<20}{'min':>8}{'mean':>8}{'std':>8}{'max':>8}",
    ]
    for name, s in r.stats.items():
        if s["count"] == 0:
            lines.append(f"{name:<20}{'(none)':>8}")
        else:
            lines.append(f"{name:<20}{s['min']:>8.3f}{s['mean']:>8.3f}{s['std']:>8.3f}{s['max']:>8.3f}")
    return "\n".join(lines)
