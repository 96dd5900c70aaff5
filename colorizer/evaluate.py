"""`colorizer evaluate`: measured, repeatable scores of one model (or an ensemble) on held-out images.

    colorizer evaluate --model weights/ --data data/curated/manifest.jsonl --split test --out eval/
    colorizer evaluate --model a/ --model b/ --data DIR_OF_COLOR_IMAGES --out eval/      # an ensemble
    colorizer evaluate --model weights/ --lineart DIR_OF_REAL_LINE_ART --out eval/      # grid only
    colorizer evaluate --model weights/ --lineart black/ --data color/ --out eval/      # real pairs, scored
    colorizer evaluate --baseline mean-color --data data/curated/manifest.jsonl --out eval/mean   # baselines

What is scored is what a user gets: each sketch goes through `Colorizer.colorize` at the default settings
(mode, the model's own scale, the lines laid over the colors), unless `--mode` or `--resolution` ask
otherwise. With `--lineart` and `--data` together the line art is the artists' own (paired with its color
target by file name: `black/x.png` <-> `color/x.png`) instead of XDoG. Baselines go through the same scoring:
`lineart` (the line art itself as the output) and `mean-color` (the mean color of the training images
everywhere, the line art multiplied over it; taken from the manifest's train split, or from `--mean-from`).

For each target image (its longer side scaled to `--size`): line art by XDoG (sigma 0.5, the literature's
setting) unless real line art is given, then the model with 0, 4, 16 and 64 hint dots of the target's true
color. `--hint-placement colored` (the default) puts them where a person would: on colored pixels (not the
white paper) off the lines, the color read at the dot's center; `uniform` anywhere. The positions come from
a fixed seed: two runs, or two models, see the same hints. Scores against the target:

- PSNR (dB): mean and median over the images; SSIM (on luma); higher is better;
- Delta E 76 over the whole image (mean CIE Lab distance per image, then mean and median), lower is better;
- Delta E 2000 at the hint dots (does the model keep the color it was given?), lower is better;
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
from colorizer.inference import DEFAULT_MODE, MODES, Colorizer, check_resolution, sketch_to_lines
from colorizer.lineart import xdog

log = logging.getLogger(__name__)

HINT_COUNTS = (0, 4, 16, 64)
BASELINES = ("lineart", "mean-color")
PLACEMENTS = ("colored", "uniform")
PAPER_DELTA = 24  # a target pixel is paper when no channel is further than this from white


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

    def colorize(self, sketch: Image.Image, hints=None, **_: object) -> Image.Image:
        colors = self.colorize_lines(sketch_to_lines(sketch, "as-is"))
        return Image.fromarray(_u8(colors), "RGB")


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


def _fit(rgb: np.ndarray, size_px: int) -> np.ndarray:
    """Scale so the longer side is `size_px`."""
    h, w = rgb.shape[:2]
    s = size_px / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) == (h, w):
        return rgb
    return cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)


def hint_dots(
    target: np.ndarray,
    lines: np.ndarray,
    count: int,
    rng: np.random.Generator,
    *,
    placement: str = "colored",
    radius_px: int = 2,
) -> np.ndarray:
    """`count` dots of the target's true color as a user's hint layer `(H, W, 4) uint8` (transparent
    elsewhere). "colored": at random pixels that are neither paper nor within `radius_px + 2` px of a line,
    the color read at the dot's center (as a person picks a color and dabs it inside a region); "uniform":
    anywhere, the 3x3 mean color. Fewer dots when there is no room for more."""
    h, w = target.shape[:2]
    layer = np.zeros((h, w, 4), np.uint8)
    if count <= 0:
        return layer
    if placement == "colored":
        room = cv2.distanceTransform((lines >= 0.7).astype(np.uint8), cv2.DIST_L2, 3) >= radius_px + 2
        colored = np.abs(target.astype(np.int16) - 255).max(axis=2) > PAPER_DELTA
        ys, xs = np.nonzero(room & colored)
        if len(ys) == 0:
            return layer
        picks = rng.choice(len(ys), size=min(count, len(ys)), replace=False)
        points = [(int(ys[k]), int(xs[k])) for k in picks]
        colors = [target[y, x].tolist() for y, x in points]
    elif placement == "uniform":
        points = [(int(rng.integers(0, h)), int(rng.integers(0, w))) for _ in range(count)]
        colors = [
            target[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].reshape(-1, 3).mean(0).round().tolist()
            for y, x in points
        ]
    else:
        raise ValueError(f"hint placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    for (y, x), c in zip(points, colors, strict=True):
        cv2.circle(layer, (x, y), radius_px, (*[int(v) for v in c], 255), thickness=-1)
    return layer


def delta_e76(a: np.ndarray, b: np.ndarray) -> float:
    """Mean CIE Delta E 76 (Lab distance) between two `(H, W, 3)` images in [0, 1] or uint8."""
    lab = [M.rgb_to_lab(_to_tensor(x)[0]) for x in (a, b)]
    return float(((lab[0] - lab[1]) ** 2).sum(0).sqrt().mean())


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
    mode: str = DEFAULT_MODE,
    resolution: int | None = None,
    placement: str = "colored",
    tta: bool = True,
) -> dict:
    """Score the model(s) (or a `baseline`) on `data` (a manifest split or a folder; with `lineart_dir`, the
    color twins of real line art) and write report.json + grid.png."""
    if data is None and lineart_dir is None:
        raise ValueError("give --data (color targets to score against) and/or --lineart (real line art)")
    if bool(model_dirs) == bool(baseline):
        raise ValueError("give either --model (repeatable) or --baseline")
    if baseline and data is None:
        raise ValueError("a baseline is scored against color targets: give --data")
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if placement not in PLACEMENTS:
        raise ValueError(f"--hint-placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    check_resolution(resolution)
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
        model = Colorizer.load(model_dirs, device=device, tta=tta)
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
    names = ("psnr", "ssim", "delta_e76", "delta_e_hints", "colorfulness_diff")
    per_count: dict[int, dict[str, list[float]]] = {n: {k: [] for k in names} for n in hint_counts}
    fid_out, fid_target, rows, skipped = [], [], [], []
    inception = M.load_inception(fid_weights, model.device) if fid_weights else None
    radius = max(2, round(2 * size_px / 256))  # a dab of the brush: 5 px across at 256 px
    for k, (line_path, target_path) in enumerate(pairs):
        try:
            target = _fit(load_rgb(target_path, max_side_px=4 * size_px), size_px)
            if line_path is None:
                lines = xdog(target, sigma=0.5)
            else:
                real = _fit(load_rgb(line_path, max_side_px=4 * size_px), size_px)
                if real.shape != target.shape:
                    raise ImageLoadError(f"{line_path}: {real.shape[1]}x{real.shape[0]} after scaling, its "
                                         f"color twin {target.shape[1]}x{target.shape[0]}: not a pair")  # fmt: skip
                lines = sketch_to_lines(real, "as-is")
        except ImageLoadError as e:
            skipped.append(str(e))
            continue
        sketch = Image.fromarray(_u8(lines), "L")
        row: list[np.ndarray] = [lines]
        target_t = _to_tensor(target)
        for n in hint_counts:
            # the same points for every model and run: a generator seeded by (seed, image index, count)
            rng = np.random.default_rng([seed, k, n])
            layer = hint_dots(target, lines, n, rng, placement=placement, radius_px=radius)
            hints = Image.fromarray(layer, "RGBA") if n else None
            colors = np.asarray(
                model.colorize(sketch, hints, mode=mode, resolution=resolution, lineart="as-is")
            )
            out_t = _to_tensor(colors)
            scores = per_count[n]
            scores["psnr"].append(float(M.psnr(out_t, target_t)[0]))
            scores["ssim"].append(float(M.ssim(out_t, target_t)[0]))
            scores["delta_e76"].append(delta_e76(colors, target))
            if n and layer[..., 3].any():
                mask = torch.from_numpy(layer[..., 3] > 0).float()[None, None]
                scores["delta_e_hints"].append(float(M.delta_e_at_hints(out_t, target_t, mask)[0]))
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

    results = {}
    for n, scores in per_count.items():
        r = {name: M.summarize(vals) for name, vals in scores.items() if vals}
        r["psnr_median"] = float(np.median(scores["psnr"])) if scores["psnr"] else float("nan")
        r["delta_e76_median"] = float(np.median(scores["delta_e76"])) if scores["delta_e76"] else float("nan")
        # each image's scores, in the data's order: two reports on the same data compare drawing by drawing
        r["per_image"] = {k: [round(v, 4) for v in scores[k]] for k in ("psnr", "delta_e76")}
        results[str(n)] = r
    report = {
        "models": [str(d) for d in model_dirs] if not baseline else [],
        "baseline": baseline and {"kind": baseline, "detail": model.infos[0]["baseline"]},
        "model_steps": [i.get("training", {}).get("step") for i in model.infos],
        "data": str(data),
        "split": split if str(data).endswith(".jsonl") else None,
        "images": len(pairs) - len(skipped),
        "skipped": skipped,
        "size_px": size_px,
        "mode": mode if not baseline else None,
        "resolution": resolution or (None if baseline else f"auto ({_sides(model)})"),
        "tta": None if baseline else tta,
        "hint_placement": placement,
        "hint_radius_px": radius,
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


def _sides(model: Colorizer) -> str:
    sides = model.sides_px()
    return " and ".join(f"{s}" for s in sides) + " px" + (", mirrored" if model.tta else "")


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
        colored = model.colorize(Image.fromarray(_fit(sketch, size_px)), lineart="as-is")
        rows.append([sketch_to_lines(_fit(sketch, size_px), "as-is"), np.asarray(colored)])
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
    what = f"mode {report['mode']}, network at {report['resolution']}" if report.get("mode") else "baseline"
    lines = [f"{report['images']} images at {report['size_px']} px, {what}, hints {report['hint_placement']}, "
             f"seed {report['seed']}", "",
             f"{'hints':>6} {'PSNR dB':>8} {'median':>7} {'SSIM':>6} {'dE76':>6} {'median':>7} {'dE00@hints':>11} "
             f"{'|dColorful|':>12}"]  # fmt: skip
    for n, r in report["results"].items():
        de = r.get("delta_e_hints", float("nan"))
        lines.append(
            f"{n:>6} {r['psnr']:>8.2f} {r['psnr_median']:>7.2f} {r['ssim']:>6.3f} {r['delta_e76']:>6.2f} "
            f"{r['delta_e76_median']:>7.2f} {de:>11.2f} {r['colorfulness_diff']:>12.2f}"
        )
    if report.get("fid") is not None:
        lines.append(f"FID (0 hints): {report['fid']:.2f}")
    return "\n".join(lines)
