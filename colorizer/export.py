"""Exported models: `model.safetensors` + `model.json`, the only format the app and the CLI load.

`model.safetensors` holds the EMA generator's weights (safetensors: raw tensors, no pickle, so a
model file from a stranger cannot run code). `model.json` says how to rebuild the network and how it
was made:

    {"format": "lineart-colorizer", "format_version": 1,
     "architecture": {"generator": {base_width, depth, max_width, norm, upsample, dropout}},
     "hints": {"user_soften_sigma_px": ...},
     "training": {"step": ..., "name": ..., "data": ..., "size_hw": [h, w], "config": {...}},
     "scale": {"side_px": ..., "line_width_px": ..., ...},  (what inference brings a sketch to)
     "metrics": {...}, "code": {"commit": ..., "dirty": ...}, "exported_at": "..."}
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from colorizer.checkpoint import git_info, load_checkpoint
from colorizer.config import ConfigError, GeneratorConfig, from_dict, to_dict
from colorizer.data import training_scale
from colorizer.models.generator import UNetGenerator, build_generator

FORMAT = "lineart-colorizer"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "model.json"


class ModelLoadError(ValueError):
    """An exported model folder is missing, incomplete or not ours; the message says what to do."""


def export_checkpoint(
    checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, use_ema: bool = True, half: bool = False
) -> Path:
    """Checkpoint from `colorizer train` -> `out_dir/model.safetensors` + `model.json`. Returns `out_dir`."""
    state = load_checkpoint(checkpoint)
    cfg = from_dict(state["config"])
    weights = state["G_ema"] if use_ema and "G_ema" in state else state["G"]
    meta = {
        "training": {
            "name": cfg.name,
            "step": int(state["step"]),
            "epoch": int(state.get("epoch", 0)),
            "images_seen": int(state.get("samples_seen", 0)),
            "train_seconds": round(float(state.get("train_seconds", 0.0)), 1),
            "data": cfg.data.source,
            "size_hw": [cfg.data.height_px, cfg.data.width_px],
            "weights": "EMA generator" if weights is state.get("G_ema") else "generator",
            "config": state["config"],
            "checkpoint": str(Path(checkpoint)),
        },
        "metrics": state.get("metrics", {}),
        "code": state.get("git", {"commit": "unknown", "dirty": False}),
        # the scale inference brings sketches to (checkpoints from before it was recorded: from the config)
        "scale": state.get("scale") or training_scale(cfg),
    }
    return save_model(
        weights,
        cfg.model.G,
        out_dir,
        meta=meta,
        user_soften_sigma_px=cfg.hints.user_soften_sigma_px,
        half=half,
    )


def save_model(
    state_dict: dict[str, torch.Tensor],
    arch: GeneratorConfig,
    out_dir: str | os.PathLike,
    *,
    meta: dict[str, Any] | None = None,
    user_soften_sigma_px: float = 0.75,
    half: bool = False,
) -> Path:
    """Write generator weights and their description; both files appear atomically. `half` stores the
    floating-point weights as float16 (half the file; loading casts them back to float32)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": {"generator": to_dict(arch)},
        "hints": {"user_soften_sigma_px": user_soften_sigma_px},
        "code": git_info(),
        **(meta or {}),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"{bad[0]} does not fit in float16 (values beyond 65504); export without --half")
    info["weights_dtype"] = "float16" if half else "float32"
    tmp_w, tmp_m = out / (WEIGHTS + ".tmp"), out / (META + ".tmp")
    save_file(tensors, str(tmp_w), metadata={"format": FORMAT})
    tmp_m.write_text(json.dumps(info, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp_w, out / WEIGHTS)
    os.replace(tmp_m, out / META)
    return out


def read_model_info(model_dir: str | os.PathLike) -> dict[str, Any]:
    """`model.json` of an exported model, checked; raises ModelLoadError with what is wrong."""
    d = Path(model_dir)
    if not d.is_dir():
        raise ModelLoadError(
            f"model folder {str(d)!r} not found; export one with `colorizer export CHECKPOINT --out DIR`"
        )
    meta_path, weights_path = d / META, d / WEIGHTS
    for p in (meta_path, weights_path):
        if not p.is_file():
            others = ", ".join(sorted(x.name for x in d.iterdir())[:8]) or "nothing"
            raise ModelLoadError(
                f"{d}: no {p.name} (found: {others}). A model folder holds model.safetensors + model.json "
                "from `colorizer export`; training checkpoints (.pt) are not loaded here"
            )
    try:
        info = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ModelLoadError(f"{meta_path}: not a {FORMAT} model description")
    if int(info.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelLoadError(
            f"{meta_path}: format {info['format_version']} is newer than this code reads; update"
        )
    return info


def load_generator(
    model_dir: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[UNetGenerator, dict]:
    """Rebuild the exported generator (in eval mode) and return it with its `model.json`."""
    info = read_model_info(model_dir)
    try:
        arch = from_dict({"model": {"G": info["architecture"]["generator"]}}).model.G
    except (KeyError, TypeError, ConfigError) as e:
        raise ModelLoadError(f"{model_dir}: model.json has no usable architecture ({e})") from None
    weights_path = Path(model_dir) / WEIGHTS
    try:
        tensors = load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"{weights_path}: not a readable safetensors file ({e})") from None
    G = build_generator(arch)
    try:
        G.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ModelLoadError(
            f"{weights_path}: weights do not match the architecture in model.json ({str(e).splitlines()[0]})"
        ) from None
    return G.to(map_location).eval(), info
