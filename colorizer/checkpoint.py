"""Training checkpoints: everything needed to continue a run exactly, and nothing that runs code.

A checkpoint is a dict of tensors and plain values (no pickled classes), so
`torch.load(path, weights_only=True)` reads it. It is written to a temporary file, flushed and
then renamed over its final name: a run killed mid-write never leaves a corrupt checkpoint.

Layout of `runs/<name>/checkpoints/`:

    step_0005000.pt   one file a checkpoint; the newest `keep_last` are kept
    last.pt           hard link to the newest step file (what `colorizer export` and resume read)
    best.pt           hard link to (or copy of) the checkpoint with the best validation metric
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1
STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or is not one of ours; the message says which file and why."""


# --------------------------------------------------------------------------------------------------
# RNG states as plain values


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and every CUDA device's RNG state, as tensors and plain values."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": _to_plain(random.getstate()),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured (CUDA states only where the devices exist)."""
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


def _to_plain(x: Any) -> Any:
    return [_to_plain(v) for v in x] if isinstance(x, tuple | list) else x


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x


# --------------------------------------------------------------------------------------------------
# Code version


def git_info(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """`{"commit": sha or "unknown", "dirty": bool, "dirty_files": [...]}` of the repository holding this code
    (the modified tracked files, at most 50: what the commit alone does not say)."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        changed = [line[3:] for line in status.splitlines() if line.strip()]
        return {"commit": sha, "dirty": bool(changed), "dirty_files": changed[:50]}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": False, "dirty_files": []}


# --------------------------------------------------------------------------------------------------
# Files


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` to `<path>.tmp`, fsync, then rename: readers see the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Point `dst` at `src`'s content atomically (hard link where the file system allows, else a copy)."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def step_files(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """`(step, path)` of the step checkpoints in `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_FILE.match(p.name))]
    return sorted(found)


def save_checkpoint(
    state: dict[str, Any], folder: str | os.PathLike, *, step: int, keep_last: int, is_best: bool = False
) -> Path:
    """Write `state` as `step_<step>.pt`, update `last.pt` (and `best.pt`), keep the newest `keep_last`."""
    folder = Path(folder)
    path = folder / f"step_{step:07d}.pt"
    atomic_torch_save({"format_version": FORMAT_VERSION, **state}, path)
    _link_or_copy(path, folder / "last.pt")
    if is_best:
        _link_or_copy(path, folder / "best.pt")
    for _, old in step_files(folder)[: -max(1, keep_last)]:
        old.unlink(missing_ok=True)  # last.pt / best.pt are links of their own: they survive this
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True` (no code runs); clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file; all mean the same
        raise CheckpointError(
            f"{path}: not a readable training checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            "Only checkpoints written by `colorizer train` can be loaded; nothing from it was executed."
        ) from None
    if not isinstance(state, dict) or "format_version" not in state or "G" not in state:
        raise CheckpointError(f"{path}: not a colorizer training checkpoint (no format_version / G weights)")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {state['format_version']} is newer than this code reads ({FORMAT_VERSION}); "
            "update the code"
        )
    return state


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The newest step checkpoint in `folder`, or None."""
    files = step_files(folder)
    return files[-1][1] if files else None
