"""Benchmark: our training step beside pix2pix's, timed in the same process, in turns, on this machine.

    .venv/bin/python bench/train_step.py                    # 128 px batch 8 and 256 px batch 4, ~10 min
    .venv/bin/python bench/train_step.py --sizes 128 --rounds 3

Contenders, each on synthetic batches of the right shapes and ranges (the data pipeline is not timed):

- `ours`: `Trainer.train_step` with the shipped CPU recipe, configs/cpu-demo.yaml as it trains (bf16 autocast,
  its G, D and every loss term: L1, perceptual, hint, hinge GAN on DiffAugment'ed pairs, EMA), at the size
  and batch of the row;
- `ours, no perceptual`: the same with loss.perceptual_weight=0 (what the perceptual loss costs);
- `pix2pix`: pix2pix's own networks and step (bench/pix2pix_reference.py: unet_128 / unet_256, batch norm,
  transposed convs, dropout, PatchGAN, vanilla GAN + 100 x L1, Adam 2e-4, fp32), with ngf = ndf = 32, the
  width of our G and D, and with pix2pix's default 64.

Method: warm-up, then `--rounds` rounds; in each round every contender runs `--steps` steps in turn (A B C A B
C ...), so a change in the machine's load hits all alike. A contender's figure is the median over rounds of
its round's median step; the ratio to pix2pix is the median of the per-round ratios. Two threads (torch).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pix2pix_reference import Pix2Pix  # noqa: E402

from colorizer.config import load_config  # noqa: E402
from colorizer.train import Trainer  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def batch(b: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch as the loader gives it: line/hints/color in [-1, 1], mask in [0, 1], `(B, C, H, W)`."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(b, 1, size, size, generator=g) < 0.01).float()
    return {
        "line": torch.rand(b, 1, size, size, generator=g) * 2 - 1,
        "hints": (torch.rand(b, 3, size, size, generator=g) * 2 - 1) * mask,
        "mask": mask,
        "color": torch.rand(b, 3, size, size, generator=g) * 2 - 1,
    }


def ours(size: int, b: int, run_dir: str, *extra: str):
    cfg = load_config(ROOT / "configs" / "cpu-demo.yaml", [
        f"data.height_px={size}", f"data.width_px={size}", f"data.batch_size={b}", f"run_dir={run_dir}",
        "tracking.wandb_mode=disabled", "tracking.diagnostics_every=0", *extra])  # fmt: skip
    trainer = Trainer(cfg)
    data = trainer.to_device(batch(b, size))

    def step() -> None:
        trainer.train_step(data)
        trainer.step += 1

    return step


def pix2pix(size: int, b: int, width: int):
    model = Pix2Pix(size_px=size, ngf=width, ndf=width)
    data = batch(b, size)
    A = torch.cat([data["line"], data["hints"], data["mask"]], 1)
    return lambda: model.step(A, data["color"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="timed steps per contender per round")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_step.txt"))
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    lines = [f"# {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, 2 threads, "
             f"load average before {os.getloadavg()[0]:.2f}", "",
             "| size, batch | contender | median step | vs pix2pix (same width) | vs pix2pix 64 |",
             "|---|---|---|---|---|"]  # fmt: skip
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            b = 8 if size <= 128 else 4
            contenders = {
                "ours (cpu-demo recipe, bf16)": ours(size, b, tmp),
                "ours, no perceptual loss": ours(size, b, tmp, "loss.perceptual_weight=0"),
                "pix2pix ngf=ndf=32 (fp32)": pix2pix(size, b, 32),
                "pix2pix ngf=ndf=64 (fp32)": pix2pix(size, b, 64),
            }
            for fn in contenders.values():  # warm-up: allocator, oneDNN kernels, Adam state
                for _ in range(3):
                    fn()
            rounds: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(args.rounds):
                for name, fn in contenders.items():
                    times = []
                    for _ in range(args.steps):
                        t0 = time.perf_counter()
                        fn()
                        times.append(time.perf_counter() - t0)
                    rounds[name].append(statistics.median(times))
            ref32, ref64 = rounds["pix2pix ngf=ndf=32 (fp32)"], rounds["pix2pix ngf=ndf=64 (fp32)"]
            for name, ts in rounds.items():
                r32 = statistics.median(a / t for a, t in zip(ref32, ts, strict=True))
                r64 = statistics.median(a / t for a, t in zip(ref64, ts, strict=True))
                row = (f"| {size} px, {b} | {name} | {statistics.median(ts) * 1000:.0f} ms "
                       f"({min(ts) * 1000:.0f}-{max(ts) * 1000:.0f}) | {r32:.2f}x | {r64:.2f}x |")  # fmt: skip
                lines.append(row)
                print(row, flush=True)
    lines.append(f"\nload average after {os.getloadavg()[0]:.2f}; ratios > 1: faster than pix2pix")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
