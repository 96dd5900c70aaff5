"""`colorizer evaluate`: measured, repeatable scores of one model (or an ensemble) on held-out images.

    colorizer evaluate --model weights/ --data data/curated/manifest.jsonl --split test --out eval/
    colorizer evaluate --model a/ --model b/ --data DIR_OF_COLOR_IMAGES --out eval/      # an ensemble
    colorizer evaluate --model weights/ --lineart DIR_OF_REAL_LINE_ART --out eval/      # grid only
    colorizer evaluate --model weights/ --lineart black/ --data color/ --out eval/      # real pairs, scored
    colorizer evaluate --baseline mean-color --data data/curated/manifest.jsonl --out eval/mean   # baselines

With `--lineart` and `--data` together the line art is the artists' own (paired with its color target by
file name: `black/x.png` <-> `color/x.png`) instead of XDoG. Baselines go through the same code: `lineart`
(the line art itself as the output) and `mean-color` (the mean color of the training images everywhere, the
line art multiplied over it; taken from the manifest's train split, or from `--mean-from`).

For each target image (its longer side scaled to `--size`): line art by XDoG (sigma 0.5, the literature's
setting), then the model with 0, 4, 16 and 64 hints of the target's true color at random points (a fixed
seed: two runs, or two models, see the same hints), scored against the target:

- PSNR (dB) and SSIM (on luma), higher is better;
- Delta E 2000 at the hint points (does the model keep the color it was given? lower is better);
- colorfulness difference |C(output) - C(target)| (Hasler & Suesstrunk; a washed-out model scores high);
- FID between outputs (0 hints) and targets, only with Inception-v3 weights the user gives (`--fid-weights`,
  a torchvision state dict; nothing is downloaded).

Writes `report.json` and `grid.png` (line | output at each hint count | target) to `--out`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from colorizer import metrics as M
from colorizer.data import ImageLoadError, load_rgb, resolve_items
from colorizer.hints import point_hints
from colorizer.inference import Colorizer, sketch_to_lines
from colorizer.lineart import xdog

log = logging.getLogger(__name__)

HINT_COUNTS = (0, 4, 16, 64)
BASELINES = ("lineart", "mean-color")


class Baseline:
    """A stand-in for a model that ignores hints: the yardsticks a trained model must beat."""

    multiple = 1
    device = torch.device("cpu")

    def __init__(self, kind: str, mean_rgb: np.ndarray | None = None, soften_sigma_px: float = 0.75):
        if kind not in BASELINES:
            raise ValueError(f"unknown baseline {kind!r}; choose from {', '.join(BASELINES)}")
        if kind == "mean-color" and mean_rgb is None:
            raise ValueError("the mean-color baseline needs the training images' mean color")
        self.kind, self.mean_rgb, self.soften_sigma_px = kind, mean_rgb, soften_sigma_px
        described = (
            f"mean color {np.round(mean_rgb * 255).astype(int).tolist()}" if kind == "mean-color" else ""
        )
        self.infos = [{"training": {"name": f"baseline: {kind}", "step": None}, "baseline": described}]

    def colorize_lines(self, lines: np.ndarray, hint_rgb=None, hint_mask=None) -> np.ndarray:
        rgb = np.repeat(lines[..., None], 3, axis=2).astype(np.float32)
        return rgb if self.kind == "lineart" else rgb * self.mean_rgb[None, None].astype(np.float32)


def mean_color(
    source: str, *, split: str | None = "train", limit: int = 500, side_px: int = 64
) -> np.ndarray:
    """Mean RGB in [0, 1] of (at most `limit`) images of a manifest split or a folder."""
    items = resolve_items(source, split if str(source).endswith(".jsonl") else None)
    step = max(1, len(items) // limit)
    sums, n = np.zeros(3), 0
    for item in items[::step][:limit]:
        try:
            rgb = load_rgb(item.path, max_side_px=4 * side_px)
        except ImageLoadError:
            continue
        small = cv2.resize(rgb, (side_px, side_px), interpolation=cv2.INTER_AREA).reshape(-1, 3) / 255.0
        sums += small.mean(0)
        n += 1
    if n == 0:
        raise ValueError(f"no readable images in {source} to take the mean color from")
    return sums / n


def _pairs(lineart_dir: str, color_dir: str) -> list[tuple[Path, Path]]:
    """Line art and its color twin, matched by path relative to each folder, without the extension."""
    lines = {
        Path(i.path).relative_to(lineart_dir).with_suffix(""): Path(i.path)
        for i in resolve_items(lineart_dir, None)
    }
    colors = {
        Path(i.path).relative_to(color_dir).with_suffix(""): Path(i.path)
        for i in resolve_items(color_dir, None)
    }
    common = sorted(set(lines) & set(colors))
    if not common:
        raise ValueError(
            f"no file in {lineart_dir} has a color twin of the same name in {color_dir} "
            "(pairs are matched by relative path without the extension)"
        )
    return [(lines[k], colors[k]) for k in common]


def _fit(rgb: np.ndarray, size_px: int, multiple: int) -> np.ndarray:
    """Scale so the longer side is `size_px`, then crop to multiples of the network's 2**depth."""
    h, w = rgb.shape[:2]
    s = size_px / max(h, w)
    nh, nw = max(multiple, round(h * s)), max(multiple, round(w * s))
    rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    ch, cw = nh // multiple * multiple, nw // multiple * multiple
    top, left = (nh - ch) // 2, (nw - cw) // 2
    return np.ascontiguousarray(rgb[top : top + ch, left : left + cw])


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    """`(H, W, 3)` float in [0, 1] or uint8 -> `(1, 3, H, W)` float in [0, 1]."""
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    return torch.from_numpy(x).permute(2, 0, 1)[None]


def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8) if x.dtype != np.uint8 else x


def _grid(rows: list[list[np.ndarray]], labels: list[str], tile_px: int = 160) -> Image.Image:
    from colorizer.inspect_data import tile_grid

    def tile(x: np.ndarray) -> np.ndarray:
        x = _u8(x)
        if x.ndim == 2:
            x = np.repeat(x[..., None], 3, axis=2)
        h, w = x.shape[:2]
        s = tile_px / max(h, w)
        x = cv2.resize(x, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        canvas = np.full((tile_px, tile_px, 3), 255, np.uint8)
        canvas[: x.shape[0], : x.shape[1]] = x
        return canvas

    return tile_grid([[tile(t) for t in row] for row in rows], labels=tuple(labels))


def evaluate(
    model_dirs: list[str | os.PathLike],
    *,
    data: str | None = None,
    split: str | None = "test",
    lineart_dir: str | None = None,
    out_dir: str | os.PathLike = "eval",
    size_px: int = 256,
    hint_counts: tuple[int, ...] = HINT_COUNTS,
    seed: int = 0,
    limit: int | None = None,
    fid_weights: str | None = None,
    grid_rows: int = 8,
    device: str | None = None,
    baseline: str | None = None,
    mean_from: str | None = None,
) -> dict:
    """Score the model(s) (or a `baseline`) on `data` (a manifest split or a folder; with `lineart_dir`, the
    color twins of real line art) and write report.json + grid.png."""
    if data is None and lineart_dir is None:
        raise ValueError("give --data (color targets to score against) and/or --lineart (real line art)")
    if bool(model_dirs) == bool(baseline):
        raise ValueError("give either --model (repeatable) or --baseline")
    if baseline and data is None:
        raise ValueError("a baseline is scored against color targets: give --data")
    if baseline:
        mean = None
        if baseline == "mean-color":
            source = mean_from or (data if str(data).endswith(".jsonl") else None)
            if source is None:
                raise ValueError(
                    "--baseline mean-color needs --mean-from (the training images) unless --data is a manifest"
                )
            mean = mean_color(source, split="train")
        model = Baseline(baseline, mean)
    else:
        model = Colorizer.load(model_dirs, device=device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if data is None:
        return _lineart_grid(model, lineart_dir, out, size_px=size_px, limit=limit, grid_rows=grid_rows)

    if lineart_dir is not None:
        pairs: list[tuple[Path | None, Path]] = list(_pairs(lineart_dir, data))
    else:
        items = resolve_items(data, split if str(data).endswith(".jsonl") else None)
        pairs = [(None, Path(i.path)) for i in items]
    if limit:
        pairs = pairs[:limit]
    per_count: dict[int, dict[str, list[float]]] = {n: {"psnr": [], "ssim": [], "delta_e_hints": [],
                                                        "colorfulness_diff": []} for n in hint_counts}  # fmt: skip
    fid_out, fid_target, rows, skipped = [], [], [], []
    inception = M.load_inception(fid_weights, model.device) if fid_weights else None
    multiple = max(model.multiple, 1)
    for k, (line_path, target_path) in enumerate(pairs):
        try:
            target = _fit(load_rgb(target_path, max_side_px=4 * size_px), size_px, multiple)
            if line_path is None:
                lines = xdog(target, sigma=0.5)
            else:
                real = _fit(load_rgb(line_path, max_side_px=4 * size_px), size_px, multiple)
                if real.shape != target.shape:
                    raise ImageLoadError(f"{line_path}: {real.shape[1]}x{real.shape[0]} after scaling, its "
                                         f"color twin {target.shape[1]}x{target.shape[0]}: not a pair")  # fmt: skip
                lines = sketch_to_lines(real, "as-is")
        except ImageLoadError as e:
            skipped.append(str(e))
            continue
        row = [lines]
        target_t = _to_tensor(target)
        for n in hint_counts:
            # the same points for every model and run: a generator seeded by (seed, image index, count)
            rng = np.random.default_rng([seed, k, n])
            hint_rgb, mask = point_hints(target, n, rng, soften_sigma_px=model.soften_sigma_px)
            colors = model.colorize_lines(lines, hint_rgb if n else None, mask if n else None)
            out_t = _to_tensor(colors)
            scores = per_count[n]
            scores["psnr"].append(float(M.psnr(out_t, target_t)[0]))
            scores["ssim"].append(float(M.ssim(out_t, target_t)[0]))
            if n:
                # Delta E where the user put a color: the center of each dot (mask > 0.5 after softening)
                de = M.delta_e_at_hints(out_t, target_t, torch.from_numpy(mask)[None, None])
                scores["delta_e_hints"].append(float(de[0]))
            scores["colorfulness_diff"].append(
                float((M.colorfulness(out_t) - M.colorfulness(target_t)).abs()[0])
            )
            if n == 0 and inception is not None:
                fid_out.append(M.inception_features(inception, out_t.to(model.device)))
                fid_target.append(M.inception_features(inception, target_t.to(model.device)))
            row.append(colors)
        row.append(target)
        if len(rows) < grid_rows:
            rows.append(row)
    if not rows:
        raise ValueError(f"none of the {len(pairs)} images could be read (first error: {skipped[:1]})")

    results = {
        str(n): {name: M.summarize(vals) for name, vals in scores.items() if vals}
        for n, scores in per_count.items()
    }
    report = {
        "models": [str(d) for d in model_dirs] if not baseline else [],
        "baseline": baseline and {"kind": baseline, "detail": model.infos[0]["baseline"]},
        "model_steps": [i.get("training", {}).get("step") for i in model.infos],
        "data": str(data),
        "split": split if str(data).endswith(".jsonl") else None,
        "images": len(pairs) - len(skipped),
        "skipped": skipped,
        "size_px": size_px,
        "seed": seed,
        "hint_counts": list(hint_counts),
        "lineart": f"real line art from {lineart_dir}" if lineart_dir else "XDoG sigma 0.5 of the target",
        "results": results,
        "fid": None,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if inception is not None:
        if len(fid_out) < 2:
            raise ValueError("FID needs at least 2 images")
        report["fid"] = M.frechet_distance(np.concatenate(fid_out), np.concatenate(fid_target))
    labels = ["line"] + [f"{n} hints" for n in hint_counts] + ["target"]
    _grid(rows, labels).save(out / "grid.png")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _lineart_grid(
    model: Colorizer | Baseline, folder: str, out: Path, *, size_px: int, limit: int | None, grid_rows: int
) -> dict:
    items = resolve_items(folder, None)[: limit or grid_rows]
    rows, skipped = [], []
    for item in items:
        try:
            sketch = load_rgb(item.path)
        except ImageLoadError as e:
            skipped.append(str(e))
            continue
        colored = model.colorize(Image.fromarray(sketch), resolution=size_px, lineart="as-is")
        rows.append([sketch_to_lines(sketch, "as-is"), np.asarray(colored)])
    if not rows:
        raise ValueError(f"no readable line art in {folder}")
    _grid(rows[:grid_rows], ["real line art", "output (no hints)"]).save(out / "grid.png")
    report = {"models": [str(i.get("training", {}).get("name")) for i in model.infos], "lineart": str(folder),
              "images": len(rows), "skipped": skipped, "grid": str(out / "grid.png")}  # fmt: skip
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def format_report(report: dict) -> str:
    if "results" not in report:
        return f"grid of {report['images']} real line-art images: {report.get('grid')}"
    lines = [f"{report['images']} images at {report['size_px']} px, seed {report['seed']}", "",
             f"{'hints':>6} {'PSNR dB':>8} {'SSIM':>6} {'dE00@hints':>11} {'|dColorful|':>12}"]  # fmt: skip
    for n, r in report["results"].items():
        de = r.get("delta_e_hints", float("nan"))
        lines.append(
            f"{n:>6} {r['psnr']:>8.2f} {r['ssim']:>6.3f} {de:>11.2f} {r['colorfulness_diff']:>12.2f}"
        )
    if report.get("fid") is not None:
        lines.append(f"FID (0 hints): {report['fid']:.2f}")
    return "\n".join(lines)
