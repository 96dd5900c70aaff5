"""Shared fixtures: drawings made by the tests (nothing is downloaded), odd and broken files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def make_drawing(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A line-and-flat-color drawing `(H, W, 3) uint8`: filled shapes with black outlines on white."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 255, np.uint8)
    for _ in range(6):
        color = tuple(int(v) for v in rng.integers(30, 230, 3))
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = int(rng.integers(max(4, min(height, width) // 10), max(5, min(height, width) // 3)))
        if rng.random() < 0.5:
            cv2.circle(img, center, radius, color, -1)
            cv2.circle(img, center, radius, (0, 0, 0), 2)
        else:
            p2 = (center[0] + radius, center[1] + radius // 2)
            cv2.rectangle(img, center, p2, color, -1)
            cv2.rectangle(img, center, p2, (0, 0, 0), 2)
    return img


def write_png(path: Path, rgb: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture
def drawings_dir(tmp_path: Path) -> Path:
    """A folder (with a sub-folder) of six drawings of different, non-square sizes."""
    root = tmp_path / "drawings"
    sizes = [(200, 120), (120, 200), (256, 256), (180, 300), (300, 180), (150, 150)]
    for i, (h, w) in enumerate(sizes):
        sub = root / ("a" if i % 2 else "b")
        write_png(sub / f"{i}.png", make_drawing(h, w, seed=i))
    return root


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
