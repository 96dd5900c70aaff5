"""Training checkpoints: everything needed to continue a run exactly, and nothing that runs code.

A checkpoint is a dict of tensors and plain values (no pickled classes), so
`torch.load(path, weights_only=True)` reads it. It is written to a temporary file, flushed and
then renamed over its final name: a run killed mid-write never leaves a corrupt checkpoint.

Layout of `runs/<name>/checkpoints/`:

    step_0005000.pt   one file a checkpoint; the newest `keep_last` are kept
    last.pt           a copy of the newest step file (what `colorizer export` reads)
    best.pt           a copy of the checkpoint with the best validation metric
    *.unreadable      a checkpoint resume could not read, set aside (never deleted)

last.pt and best.pt are files of their own, not links: a damaged step file leaves them readable.
"""

from __future__ import annotations

import errno
import os
import pickle
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


class DiskFullError(CheckpointError):
    """The disk filled up while a checkpoint was written; the partial file is gone, the older ones are intact."""


def _disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def _write_atomic(path: Path, write: Any) -> None:
    """`write(file)` into `<path>.tmp`, fsync, rename over `path`: readers see the old file or the new, never
    half of one. Whatever fails, the temporary file is removed (a full disk must not stay fuller)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` to `<path>.tmp`, fsync, then rename: readers see the old file or the new, never half."""
    _write_atomic(Path(path), lambda f: torch.save(obj, f))


def _copy_atomic(src: Path, dst: Path) -> None:
    """`dst` becomes a file of its own with `src`'s content (not a hard link: a step file damaged later must
    not take last.pt or best.pt with it)."""
    with open(src, "rb") as f_src:
        _write_atomic(dst, lambda f: shutil.copyfileobj(f_src, f, 1 << 20))


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
    """Write `state` as `step_<step>.pt`, update `last.pt` (and `best.pt`), keep the newest `keep_last`.

    A full disk raises `DiskFullError` naming the file and the newest intact checkpoint; nothing partial stays."""
    folder = Path(folder)
    path = folder / f"step_{step:07d}.pt"
    target = path
    try:
        atomic_torch_save({"format_version": FORMAT_VERSION, **state}, path)
        target = folder / "last.pt"
        _copy_atomic(path, target)
        if is_best:
            target = folder / "best.pt"
            _copy_atomic(path, target)
    except OSError as e:
        if not _disk_full(e):
            raise
        intact = [p for _, p in step_files(folder)]
        previous = (
            f"the previous checkpoint {intact[-1]} is intact" if intact else "no earlier checkpoint exists"
        )
        raise DiskFullError(
            f"disk full while writing checkpoint {target}; {previous}; free space and re-run"
        ) from None
    for _, old in step_files(folder)[: -max(1, keep_last)]:
        old.unlink(missing_ok=True)  # last.pt / best.pt are files of their own: they survive this
    return path


def _why_unreadable(path: Path, e: BaseException) -> str:
    """What is wrong with a file `torch.load` refused, as one complete clause."""
    size = path.stat().st_size
    if size == 0:
        return "it is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(max(0, size - 65_557))  # a zip ends with its directory record, in the last 64 KiB + 22 bytes
        tail = f.read()
    if head != b"PK\x03\x04":
        return f"it is not a PyTorch checkpoint archive ({size:,} bytes)"
    if b"PK\x05\x06" not in tail:
        return f"it is truncated ({size:,} bytes; the end of the archive is missing)"
    if isinstance(e, pickle.UnpicklingError):
        return "it holds Python objects, not only tensors and plain values (refused unread; nothing ran)"
    first = (str(e).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")
    return f"it is damaged ({type(e).__name__}: {first})" if first else f"it is damaged ({type(e).__name__})"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True` (no code runs); clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file; all mean the same
        raise CheckpointError(
            f"{path} is not a readable training checkpoint: {_why_unreadable(path, e)}"
        ) from None
    if not isinstance(state, dict) or "format_version" not in state or "G" not in state:
        raise CheckpointError(f"{path}: not a colorizer training checkpoint (no format_version / G weights)")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {state['format_version']} is newer than this code reads ({FORMAT_VERSION}); "
            "update the code"
        )
    return state


def set_aside(path: str | os.PathLike) -> Path:
    """Rename an unreadable checkpoint to `<name>.unreadable[.N]` (kept for a person to look at, never deleted;
    no longer a step file, so resume and pruning pass it by). Returns the new path."""
    path = Path(path)
    aside = path.with_name(path.name + ".unreadable")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.unreadable.{n}")
    os.replace(path, aside)
    return aside


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The newest step checkpoint in `folder`, or None."""
    files = step_files(folder)
    return files[-1][1] if files else None
