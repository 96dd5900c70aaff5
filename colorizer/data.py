"""Datasets over a manifest.jsonl or a folder of images, built on the fly.

A sample is what the model sees, every tensor `(C, H, W) float32`:

    line:  (1, H, W) in [-1, 1]   line art synthesized from the target; +1 white paper, -1 black ink
    hints: (3, H, W) in [-1, 1]   hint colors, premultiplied by the mask (0 where no hint)
    mask:  (1, H, W) in [0, 1]    hint coverage
    color: (3, H, W) in [-1, 1]   the target, RGB

Normalization: `x / 127.5 - 1` for images, so 0 is mid-grey; `denormalize` inverts it.

Randomness comes from a NumPy generator seeded by `(seed, epoch, index)`, never from global
state, so a sample depends on nothing else: the number of DataLoader workers does not change a
batch, and resume from any step is exact without replaying the data.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from colorizer.config import Config, DataConfig
from colorizer.hints import simulate_hints
from colorizer.lineart import random_lineart, stroke_width_px

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

# Pillow's decompression-bomb guard stays on (a warning at 89 Mpx, an error at 179 Mpx); `load_rgb`
# turns its warning into an error too: nobody trains on a 100-megapixel picture by accident.


class ImageLoadError(Exception):
    """An image file could not be used; the message names the file and the reason."""


# --------------------------------------------------------------------------------------------------
# Loading


def to_rgb_on_white(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparency is composited on white (line art drawn on nothing is on paper).

    Handles 1, L, LA, P (with or without transparency), RGBA, CMYK, YCbCr, I;16 and I (16/32-bit grey,
    scaled by their real range), F.
    """
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if mode in ("I", "F") and arr.max() <= 255 and arr.min() >= 0:
            hi = 255.0  # 8-bit content stored in a wide mode
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode != "RGB":
        return img.convert("RGB")
    return img


def load_rgb(path: str | os.PathLike, *, max_side_px: int | None = None) -> np.ndarray:
    """Read an image file -> `(H, W, 3) uint8 RGB`, transparency on white, EXIF rotation applied.

    Animated files give their first frame. Images larger than `max_side_px` are reduced on load
    (JPEG draft mode, then area resize). Raises `ImageLoadError` naming the file and the problem.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if max_side_px and img.format == "JPEG":
                    img.draft("RGB", (max_side_px, max_side_px))
                img.seek(0)
                img = ImageOps.exif_transpose(img)
                img.load()
                rgb = np.asarray(to_rgb_on_white(img))
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise ImageLoadError(
            f"{path}: not an image Pillow can read (wrong format or corrupt header)"
        ) from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageLoadError(
            f"{path}: too many pixels, refused as a possible decompression bomb ({e})"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(f"{path}: unreadable or truncated image ({e})") from None
    if rgb.ndim != 3 or rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise ImageLoadError(f"{path}: image too small ({rgb.shape[1]}x{rgb.shape[0]} px)")
    if max_side_px and max(rgb.shape[:2]) > max_side_px:
        scale = max_side_px / max(rgb.shape[:2])
        size = (max(2, round(rgb.shape[1] * scale)), max(2, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


# --------------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class Item:
    path: str  # absolute or relative to the working directory
    id: str


def read_manifest(path: str | os.PathLike, split: str | None = None) -> list[Item]:
    """Items of a `manifest.jsonl` (paths relative to the manifest's folder), optionally one split."""
    path = Path(path)
    root = path.parent
    items: list[Item] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
                rel = rec["path"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: not a manifest record with a 'path' ({e})") from None
            if split is not None and rec.get("split") != split:
                continue
            items.append(Item(path=str(root / rel), id=str(rec.get("id", rel))))
    return items


def scan_folder(folder: str | os.PathLike) -> list[Item]:
    """Image files under `folder`, recursively, in a stable (sorted) order."""
    folder = Path(folder)
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
    )
    return [Item(path=str(p), id=str(p.relative_to(folder))) for p in files]


def resolve_items(source: str, split: str | None) -> list[Item]:
    """A manifest.jsonl (filtered to `split`) or a folder of images -> items; clear error if neither."""
    p = Path(source)
    if p.is_file() and p.suffix == ".jsonl":
        items = read_manifest(p, split)
        if not items:
            raise ValueError(f"{source}: no entries with split={split!r}; check data.split / the manifest")
        return items
    if p.is_dir():
        items = scan_folder(p)
        if not items:
            exts = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise ValueError(f"{source}: no images found (looked recursively for {exts})")
        return items
    raise ValueError(
        f"data.source={source!r} is neither a manifest.jsonl nor a folder of images; "
        "build one with `crawler filter` or point data.source at a folder"
    )


# --------------------------------------------------------------------------------------------------
# Transforms: pure functions of (array, rng)


def random_crop_params(
    h: int, w: int, rng: np.random.Generator, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[float, float, float, float]:
    """A random resized crop window `(top, left, height, width)` in source pixels (torchvision's rule)."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = math.sqrt(target * aspect)
        ch = math.sqrt(target / aspect)
        if 0 < cw <= w and 0 < ch <= h:
            top = rng.uniform(0, h - ch)
            left = rng.uniform(0, w - cw)
            return top, left, ch, cw
    # Fallback: the largest centered window of a ratio within range.
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, w / ratio[0]
    elif in_ratio > ratio[1]:
        ch, cw = h, h * ratio[1]
    else:
        cw, ch = w, h
    return (h - ch) / 2, (w - cw) / 2, ch, cw


def augment(color: np.ndarray, rng: np.random.Generator, cfg: DataConfig) -> np.ndarray:
    """`(h, w, 3) uint8` source -> `(H, W, 3) uint8` crop of `cfg.height_px x cfg.width_px`.

    Random resized crop, horizontal flip and a small rotation, done in a single affine warp (one
    interpolation, borders white). Large reductions are pre-shrunk with area interpolation so
    thin lines do not alias.
    """
    out_h, out_w = cfg.height_px, cfg.width_px
    h, w = color.shape[:2]
    top, left, ch, cw = random_crop_params(h, w, rng, cfg.crop_scale, cfg.crop_ratio)
    flip = cfg.hflip and rng.random() < 0.5
    angle = float(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)) if cfg.rotate_deg > 0 else 0.0

    # Pre-shrink so the warp below scales by at most ~1.5x down (bilinear aliases beyond that).
    shrink = min(out_w / cw, out_h / ch) * 1.5
    if shrink < 1.0:
        sw, sh = max(2, round(w * shrink)), max(2, round(h * shrink))
        fx, fy = sw / w, sh / h
        color = cv2.resize(color, (sw, sh), interpolation=cv2.INTER_AREA)
        top, left, ch, cw = top * fy, left * fx, ch * fy, cw * fx

    # Affine map from output pixel centers to source: scale + rotation about the crop center (+ flip).
    sx, sy = cw / out_w, ch / out_h
    a = math.radians(angle)
    cos, sin = math.cos(a), math.sin(a)
    fx = -1.0 if flip else 1.0
    # out (u, v) relative to the output center -> source (x, y) relative to the crop center
    m = np.array([[fx * sx * cos, -sy * sin], [fx * sx * sin, sy * cos]], np.float64)
    c_src = np.array([left + cw / 2 - 0.5, top + ch / 2 - 0.5])
    c_out = np.array([out_w / 2 - 0.5, out_h / 2 - 0.5])
    t = c_src - m @ c_out
    affine = np.hstack([m, t[:, None]])
    return cv2.warpAffine(
        color,
        affine,
        (out_w, out_h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(255, 255, 255),
    )


def normalize_image(x: np.ndarray) -> np.ndarray:
    """`(H, W, C)` uint8 in 0..255 or float in [0, 1] -> `(C, H, W) float32 in [-1, 1]`."""
    x = (
        x.astype(np.float32) * (1.0 / 127.5) - 1.0
        if x.dtype == np.uint8
        else x.astype(np.float32) * 2.0 - 1.0
    )
    if x.ndim == 2:
        x = x[..., None]
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """`[-1, 1]` -> `[0, 1]`, clamped (for display)."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def make_sample(color: np.ndarray, rng: np.random.Generator, cfg: Config) -> dict[str, np.ndarray]:
    """A training sample from an already cropped target `(H, W, 3) uint8` (see module doc)."""
    lines = random_lineart(color, rng, cfg.lineart)  # (H, W) [0, 1]
    hint_rgb, mask = simulate_hints(color, rng, cfg.hints)  # (H, W, 3) [0, 1] premultiplied, (H, W)
    return {
        "line": normalize_image(lines),
        # premultiplied in [0, 1] -> [-1, 1] where hinted, exactly 0 where not
        "hints": np.ascontiguousarray((hint_rgb * 2.0 - mask[..., None]).transpose(2, 0, 1)),
        "mask": np.ascontiguousarray(mask[None]),
        "color": normalize_image(color),
    }


def training_scale(cfg: Config, lines: list[np.ndarray] | None = None) -> dict:
    """The scale the model is trained at, recorded in checkpoints and `model.json` so inference can bring a
    sketch to it: the crop (`crop_hw`), the longer side a whole drawing has in such a crop (`side_px`: the
    crop covers `crop_scale` of the source's area, sqrt(mean share) of its side), and the median stroke
    width of the training line art `lines` (`(H, W)` in [0, 1], e.g. the validation samples)."""
    d = cfg.data
    side = max(d.height_px, d.width_px) / math.sqrt(sum(d.crop_scale) / 2)
    widths = [w for w in (stroke_width_px(x) for x in (lines or [])) if w is not None]
    return {
        "crop_hw": [d.height_px, d.width_px],
        "crop_scale": list(d.crop_scale),
        "source_max_px": d.max_source_px,
        "side_px": round(side, 1),
        "line_width_px": round(float(np.median(widths)), 2) if widths else None,
        "line_width_samples": len(widths),
    }


# --------------------------------------------------------------------------------------------------
# Dataset and loader


def sample_rng(seed: int, epoch: int, index: int, attempt: int = 0) -> np.random.Generator:
    """The generator for one sample: a function of (seed, epoch, index[, attempt]) only."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, index, attempt, 0x5EED])


class ColorizationDataset(torch.utils.data.Dataset):
    """Samples for training/inspection from a manifest split or a folder.

    Index with `ds[(epoch, i)]` (what `EpochSampler` yields) or `ds[i]` (epoch 0). A file that
    cannot be read is logged once, counted in the sample's `"skipped"`, and replaced by the next
    readable item, so one broken file never stops an overnight run.
    """

    def __init__(self, cfg: Config, *, split: str | None = None, items: list[Item] | None = None):
        self.cfg = cfg
        self.items = items if items is not None else resolve_items(cfg.data.source, split or cfg.data.split)
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.items)

    def load_crop(self, index: int, rng: np.random.Generator) -> np.ndarray:
        color = load_rgb(self.items[index].path, max_side_px=self.cfg.data.max_source_px)
        return augment(color, rng, self.cfg.data)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        n = len(self.items)
        max_tries = max(1, min(n, int(math.ceil(n * self.cfg.data.max_bad_files_share)) + 1))
        for attempt in range(max_tries):
            i = (index + attempt) % n
            # A stand-in for a broken file gets its own augmentation, not a copy of item i's sample.
            rng = sample_rng(self.cfg.seed, epoch, index, attempt)
            try:
                color = self.load_crop(i, rng)
            except ImageLoadError as e:
                if str(e) not in self._warned:
                    self._warned.add(str(e))
                    log.warning("skipping unreadable file: %s", e)
                continue
            sample = {k: torch.from_numpy(v) for k, v in make_sample(color, rng, self.cfg).items()}
            sample["index"] = i
            sample["skipped"] = attempt
            return sample
        raise RuntimeError(
            f"{max_tries} files in a row could not be read (last: {self.items[(index + max_tries - 1) % n].path}); "
            f"the data at {self.cfg.data.source} looks broken: check it with `colorizer inspect`"
        )


class EpochSampler(torch.utils.data.Sampler):
    """Yields `(epoch, index)` keys: a fresh permutation each epoch from `(seed, epoch)`.

    `start` skips into the stream without touching any data (exact, instant resume).
    Endless when `epochs` is None.

    Distributed (`world_size > 1`): the stream is the same global stream for every rank, cut into global
    batches of `rank_batch * world_size` keys; rank r takes keys `[r * rank_batch, (r + 1) * rank_batch)` of
    each global batch. So a DDP run sees exactly the batches of a single-process run with the same global
    batch size, the per-epoch shuffle included, and `start` (in global samples) resumes both alike.
    """

    def __init__(
        self,
        n: int,
        *,
        seed: int,
        shuffle: bool = True,
        start: int = 0,
        epochs: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        rank_batch: int = 1,
    ):
        if n <= 0:
            raise ValueError("EpochSampler needs at least one item")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.n, self.seed, self.shuffle, self.start, self.epochs = n, seed, shuffle, start, epochs
        self.rank, self.world_size, self.rank_batch = rank, world_size, rank_batch

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, 0x0DE5]).permutation(self.n)

    def _global(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.n)
        while self.epochs is None or epoch < self.epochs:
            order = self.order(epoch)
            for i in order[offset:]:
                yield epoch, int(i)
            offset = 0
            epoch += 1

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.world_size == 1:
            yield from self._global()
            return
        global_batch = self.rank_batch * self.world_size
        lo, hi = self.rank * self.rank_batch, (self.rank + 1) * self.rank_batch
        for k, key in enumerate(self._global()):
            if lo <= (self.start + k) % global_batch < hi:
                yield key

    def __len__(self) -> int:
        if self.epochs is None:
            raise TypeError("an endless sampler has no length")
        return max(0, self.epochs * self.n - self.start) // self.world_size


def _worker_init(_: int) -> None:
    # Ctrl-C reaches the whole process group: the trainer handles it (checkpoint, then stop) and
    # shuts the workers down; a worker dying on it mid-batch would turn a clean stop into a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Workers each use one thread; parallelism comes from the workers, not from oversubscription.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def make_loader(
    dataset: ColorizationDataset,
    *,
    batch_size: int,
    workers: int,
    seed: int,
    shuffle: bool = True,
    start_sample: int = 0,
    epochs: int | None = None,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> torch.utils.data.DataLoader:
    """A DataLoader whose batches depend only on (seed, position), whatever `workers` is.

    With `world_size > 1`, `batch_size` is this rank's share of the global batch (see EpochSampler)."""
    if workers > 0:
        # OpenCV's thread pool does not survive fork(): a worker forked after this process ran a
        # multi-threaded cv2 call hangs forever on its first cv2 call. With one thread here, the
        # pool is gone and fork is safe (the workers give the parallelism anyway).
        cv2.setNumThreads(1)
    sampler = EpochSampler(
        len(dataset), seed=seed, shuffle=shuffle, start=start_sample, epochs=epochs,
        rank=rank, world_size=world_size, rank_batch=batch_size,
    )  # fmt: skip
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        worker_init_fn=_worker_init if workers > 0 else None,
        persistent_workers=False,
        pin_memory=pin_memory,
        drop_last=False,
        generator=g,
        prefetch_factor=4 if workers > 0 else None,
    )
