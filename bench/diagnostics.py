"""Benchmark: what the per-layer diagnostics cost a training step.

    .venv/bin/python bench/diagnostics.py                      # demo and default architectures
    .venv/bin/python bench/diagnostics.py --configs cpu-demo --steps 20

Times `Trainer.train_step` on synthetic batches (the data pipeline is not measured) without a probe and
with one (hooks on every activation, per-layer histograms of weights, gradients and pre-activations, dead
units, gradient norms, update ratios, D score histograms), then reports the extra time of one diagnostic
step and the overhead averaged over the default interval (`tracking.diagnostics_every`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from colorizer.config import TrackingConfig, load_config  # noqa: E402
from colorizer.diagnostics import StepProbe  # noqa: E402
from colorizer.train import Trainer  # noqa: E402

SIZES = {"cpu-demo": (128, 8), "default": (256, 2)}  # (crop px, batch) on this CPU


def batch(size: int, n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "line": torch.rand(n, 1, size, size, generator=g) * 2 - 1,
        "hints": torch.zeros(n, 3, size, size),
        "mask": torch.zeros(n, 1, size, size),
        "color": torch.rand(n, 3, size, size, generator=g) * 2 - 1,
    }


def time_steps(trainer: Trainer, b: dict, steps: int, probe: bool) -> float:
    times = []
    for _ in range(steps):
        p = StepProbe({"G": trainer.G, "D": trainer.D}) if probe else None
        t0 = time.perf_counter()
        trainer.train_step(b, p)
        if p is not None:
            p.scalars(), p.histograms(), p.warnings()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=list(SIZES))
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    every = TrackingConfig().diagnostics_every
    print(f"| architecture | crop, batch | plain step | diagnostic step | overhead every {every} steps |")
    print("|---|---|---|---|---|")
    for name in args.configs:
        size, n = SIZES[name]
        cfg = load_config(ROOT / "configs" / f"{name}.yaml", ["train.device=cpu", "train.amp=off"])
        trainer = Trainer(cfg)
        b = trainer.to_device(batch(size, n))
        time_steps(trainer, b, 2, probe=False)  # warm-up
        plain = time_steps(trainer, b, args.steps, probe=False)
        diag = time_steps(trainer, b, max(3, args.steps // 2), probe=True)
        overhead = (diag - plain) / (every * plain) * 100
        print(
            f"| {name} | {size}x{size}, {n} | {plain * 1000:.0f} ms | {diag * 1000:.0f} ms | {overhead:.3f} % |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
