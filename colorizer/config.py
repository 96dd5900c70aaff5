"""Typed configuration: one tree of frozen dataclasses holds every default.

`configs/*.yaml` hold overrides only; `key=value` pairs from the command line come last:

    cfg = load_config("configs/cpu-tiny.yaml", ["data.height_px=96", "optim.lr_G=1e-4"])

Unknown keys and values of the wrong type raise `ConfigError` naming the dotted key, so a typo in
an overnight run's config fails in the first second, not after eight hours.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and what to do."""


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
    base_width: int = 64
    depth: int = 7  # number of downsamplings: H and W must be divisible by 2**depth
    max_width: int = 512
    norm: Literal["instance", "group", "batch", "none"] = "instance"
    upsample: Literal["transpose", "resize"] = "resize"
    dropout: float = 0.0


@dataclass(frozen=True)
class DiscriminatorConfig:
    base_width: int = 64
    layers: int = 3  # 3 = the 70x70 PatchGAN of pix2pix
    norm: Literal["instance", "group", "batch", "none"] = "instance"
    spectral_norm: bool = False


@dataclass(frozen=True)
class ModelConfig:
    G: GeneratorConfig = field(default_factory=GeneratorConfig)
    D: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)


@dataclass(frozen=True)
class LossConfig:
    adversarial: Literal["lsgan", "vanilla", "hinge"] = "lsgan"
    reconstruction_weight: float = 100.0  # MSE weight, as pix2pix weights its L1
    adversarial_weight: float = 1.0


@dataclass(frozen=True)
class OptimConfig:
    lr_G: float = 2e-4  # pix2pix defaults
    lr_D: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    schedule: Literal["constant", "linear", "cosine"] = "linear"
    warmup_steps: int = 0
    decay_start_frac: float = 0.5  # linear: constant for this share of the run, then linear to 0
    grad_clip: float = 10.0  # max global norm; 0 disables


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
# Loading, merging, checking


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Return `value` converted to the annotated type `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is Literal:
        if isinstance(value, bool) and value not in args:
            # YAML 1.1 reads off/no/false (on/yes/true) as booleans: `train.amp=off` means the choice "off"
            spelled = ("off", "no", "false") if not value else ("on", "yes", "true")
            value = next((a for a in args if a in spelled), value)
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key}: {value!r} is not one of {choices}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(key, value, option)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} fits none of {_type_name(tp)}")
    if origin is tuple:
        if isinstance(value, str):
            raise ConfigError(f"{key}: expected a list like [a, b], got the string {value!r}")
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            if len(value) == 0:
                raise ConfigError(f"{key}: expected at least one value")
            return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                try:
                    f = float(value.replace("_", ""))
                except ValueError:
                    f = None
                if f is not None and f.is_integer():
                    return int(f)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected text, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # a bug in this file


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        key = prefix + str(unknown[0])
        close = [n for n in names if n.lower() == str(unknown[0]).lower().replace("-", "_")]
        hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
        raise ConfigError(f"unknown config key {key!r}{hint}; known keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = _coerce(prefix + f.name, values[f.name], hints[f.name])
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """The config as plain nested dicts/lists (JSON/YAML-safe, no tuples)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _deep_merge(base: dict, update: dict, prefix: str = "") -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v, f"{prefix}{k}.")
        else:
            out[k] = v
    return out


def parse_override(text: str) -> dict:
    """`"optim.lr_G=1e-4"` -> `{"optim": {"lr_G": 1e-4}}` (values parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. optim.lr_G=1e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {key}: cannot parse {raw!r}: {e}") from None
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- YAML file at `path` <- `key=value` overrides, type-checked."""
    values: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} not found; the shipped ones are in configs/")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping of settings at the top level")
        values = loaded
    for text in overrides:
        values = _deep_merge(values, parse_override(text))
    return _build(Config, values)


def from_dict(values: dict) -> Config:
    """Rebuild a Config from `to_dict` output (e.g. the copy stored in a checkpoint)."""
    return _build(Config, values)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
