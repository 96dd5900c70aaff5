"""One training loop for CPU and CUDA: `colorizer train --config configs/X.yaml [key=value ...]`.

Each optimizer step, as in pix2pix:

    fake = G(line, hints, mask)
    D phase: D(augment(line, color)) -> real, D(augment(line, fake.detach())) -> fake; hinge/lsgan/vanilla
    G phase (D frozen): sum of the weighted named terms (colorizer.losses: l1, mse, perceptual, hint,
                        adversarial on D(augment(line, fake)))
    G_ema <- beta * G_ema + (1 - beta) * G, beta ramping up to train.ema_decay

Both phases run through one update routine (`_update`: backward, gradient norm, safety clip, optimizer step).

Progress is counted in optimizer steps. The data stream is a function of (seed, sample position)
(see colorizer.data), so resume restarts the loader at `step * batch_size` without replaying data:
N straight steps and k steps + resume + N-k steps give the same weights, bit for bit on the CPU.

Run folder `runs/<name>/`: config.yaml (resolved), metrics.jsonl, samples/, checkpoints/, wandb/.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import gc
import logging
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from colorizer import distributed
from colorizer import metrics as M
from colorizer.checkpoint import (
    CheckpointError,
    git_info,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_aside,
    set_rng_state,
    step_files,
)
from colorizer.config import Config, ConfigError, save_config, to_dict
from colorizer.data import ColorizationDataset, make_loader, resolve_items, training_scale
from colorizer.diagnostics import StepProbe
from colorizer.losses import Objective
from colorizer.models.discriminator import build_discriminator
from colorizer.models.generator import build_generator
from colorizer.tracking import Console, Tracker

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """The run cannot go on (NaN loss, bad settings); the message says where and what to try."""


@dataclass
class Phase:
    """One player's update: its name in logs ("G", "D"), module, optimizer and trainable parameters."""

    name: str
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    interrupted: bool = False  # stopped by SIGINT/SIGTERM, after writing its checkpoint: run again to resume
    last_checkpoint: Path | None = None
    early_stopped: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    # What ended it: "steps" (train.steps reached), "time budget", "early stop", or "signal" (interrupted).
    ended_by: str = "steps"


# --------------------------------------------------------------------------------------------------
# Device, precision, schedule


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    return torch.device(name)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `train.amp` on `device`, or None for float32.

    auto: CUDA -> bf16 where supported, else fp16 (with a GradScaler); CPU -> float32.
    """
    if mode == "off":
        return None
    if device.type == "cuda":
        if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
            return torch.bfloat16
        return torch.float16
    if mode == "fp16":
        raise TrainingError("train.amp=fp16 needs CUDA; on the CPU use train.amp=bf16 (or off)")
    return torch.bfloat16 if mode == "bf16" else None


def lr_factor(step: int, total: int, *, schedule: str, warmup: int, decay_start_frac: float) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based) of `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "linear":  # pix2pix: constant, then linear to zero
        start = int(total * decay_start_frac)
        if step < start:
            return 1.0
        return max(0.0, 1.0 - (step - start) / max(1, total - start))
    progress = (step - warmup) / max(1, total - warmup)  # cosine
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# --------------------------------------------------------------------------------------------------
# Pieces


def generator_input(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """`(B, 1+3+1, H, W)`: line art, hint colors, hint mask (the order the generator expects)."""
    return torch.cat([batch["line"], batch["hints"], batch["mask"]], dim=1)


def ema_beta(step: int, decay: float, warmup: bool = True) -> float:
    """The EMA's decay at optimizer step `step` (1-based): `min(decay, (1 + step) / (10 + step))` with the warm-up
    (G_ema follows G closely early on, when G moves fast and its init is worthless), else `decay`."""
    return min(decay, (1.0 + step) / (10.0 + step)) if warmup else decay


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """`ema <- decay * ema + (1 - decay) * model` for parameters; buffers copied."""
    ema_params = list(ema.parameters())
    params = list(model.parameters())
    torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


def mean_color_mse(color: torch.Tensor) -> float:
    """MSE of the trivial guess "every pixel is the batch's mean color" (what the model must beat)."""
    mean = color.mean(dim=(0, 2, 3), keepdim=True)
    return float(((color - mean) ** 2).mean())


def sample_grid(batch: dict[str, torch.Tensor], fake: torch.Tensor) -> Image.Image:
    """Rows `line | hints | output | target` as one image (de-normalized)."""
    from colorizer.inspect_data import tile_grid

    def img(x: torch.Tensor) -> np.ndarray:
        return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()

    rows = []
    for i in range(fake.shape[0]):
        mask = batch["mask"][i].float().cpu()
        hint_rgb = (batch["hints"][i].float().cpu() + mask) * 0.5  # premultiplied [0, 1]
        on_paper = (
            ((hint_rgb + (1 - mask)) * 255).clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        )
        line = img(batch["line"][i].expand(3, -1, -1))
        rows.append([line, on_paper, img(fake[i]), img(batch["color"][i])])
    return tile_grid(rows, labels=("line", "hints", "output", "target"))


class StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current step (a second SIGINT aborts at once)."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: the caller handles stopping
                pass
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        log.warning("%s received: finishing this step, writing a checkpoint, then stopping", self.signal)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------------------------------
# The loop


class Trainer:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        t = cfg.train
        self.device = resolve_device(t.device)
        self.dist = distributed.setup(self.device.type)
        if self.dist.enabled:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", self.dist.local_rank)
            if cfg.data.batch_size % self.dist.world_size:
                raise ConfigError(
                    f"data.batch_size={cfg.data.batch_size} is the global batch and must divide by the "
                    f"{self.dist.world_size} processes; use a multiple of {self.dist.world_size}"
                )
        log.info("building the models on %s%s", self.device,
                 " (loading the pretrained encoder)" if cfg.model.G.encoder != "scratch" else "")  # fmt: skip
        self.amp_dtype = resolve_amp(t.amp, self.device)
        self.run_dir = Path(cfg.run_dir) / cfg.name
        self.ckpt_dir = self.run_dir / "checkpoints"
        torch.manual_seed(cfg.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels

        self.G = build_generator(cfg.model.G)
        if cfg.model.G.encoder == "efficientnet_lite0":
            from colorizer.pretrained import PretrainedWeightsError, load_efficientnet_lite0

            try:
                load_efficientnet_lite0(self.G.encoder)  # ImageNet features to start from (resume overwrites)
            except PretrainedWeightsError as e:
                raise TrainingError(str(e)) from None
        self.G = self.G.to(self.device)
        self.D = build_discriminator(cfg.model.D).to(self.device)
        if t.init_from:
            self._init_from(t.init_from)
        if t.freeze_encoder_levels:
            self.G.freeze_encoder(t.freeze_encoder_levels)
        if t.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        if self.dist.enabled and "batch" in (cfg.model.G.norm, cfg.model.D.norm):
            # batch statistics over the global batch, as in a single-process run
            self.G = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.G)
            self.D = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.D)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        # Wrappers for the forward passes (DDP, then compile); the raw modules stay the ones saved and
        # averaged (a compiled module's state dict gains `_orig_mod.` prefixes, a DDP one `module.`).
        # D's step uses DDP (its gradients are averaged); G's step runs the raw D with its parameters
        # frozen: D is not updated there, so there is nothing to synchronize.
        G_fwd, D_step = self.G, self.D
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            G_fwd = torch.nn.parallel.DistributedDataParallel(self.G, device_ids=ids)
            D_step = torch.nn.parallel.DistributedDataParallel(self.D, device_ids=ids)
        self.G_fwd = torch.compile(G_fwd) if t.compile else G_fwd
        self.D_step_fwd = torch.compile(D_step) if t.compile else D_step
        self.D_frozen_fwd = torch.compile(self.D) if t.compile else self.D

        # The code this process runs, read once at start: a commit made while training must not be credited.
        self.code = git_info()
        self.train_seconds = 0.0  # training time of earlier sessions of this run (from the checkpoint)
        self._session_start: float | None = None
        o = cfg.optim
        # Fused Adam: one kernel for every parameter, on CUDA and on the CPU (bench/train_step.py: the optimizer
        # step alone 11 -> 3 ms on the CPU, the whole bf16 step -3%).
        fused = self.device.type in ("cuda", "cpu")
        self.opt_G = torch.optim.Adam(
            [p for p in self.G.parameters() if p.requires_grad], lr=o.lr_G, betas=o.betas,
            weight_decay=o.weight_decay, fused=fused, foreach=None if fused else True,
        )  # fmt: skip
        self.opt_D = torch.optim.Adam(
            self.D.parameters(), lr=o.lr_D, betas=o.betas, weight_decay=o.weight_decay,
            fused=fused, foreach=None if fused else True,
        )  # fmt: skip

        def factor(step: int) -> float:
            if t.max_minutes > 0:  # a time budget: the schedule follows whichever is further along
                step = max(step, min(t.steps, int(t.steps * self.elapsed_s() / (60 * t.max_minutes))))
            return lr_factor(
                step, t.steps, schedule=o.schedule, warmup=o.warmup_steps, decay_start_frac=o.decay_start_frac
            )

        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, factor)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, factor)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        from colorizer.pretrained import PretrainedWeightsError

        try:
            self.objective = Objective(cfg.loss).to(self.device)
        except (ValueError, PretrainedWeightsError) as e:
            raise TrainingError(str(e)) from None
        self.phase_G = Phase("G", self.G, self.opt_G, [p for p in self.G.parameters() if p.requires_grad])
        self.phase_D = Phase("D", self.D, self.opt_D, list(self.D.parameters()))
        self.step = 0
        self.best_metric = math.inf  # in "lower is better" units (see _score)
        self.best_step = 0
        self.validations_without_improvement = 0
        self.wandb_id: str | None = None
        self.stop = StopFlag()
        self.early_stopped = False
        self._rng_all: list[dict] | None = None

    # ---------------------------------------------------------------- setup helpers

    def _init_from(self, model_dir: str) -> None:
        from colorizer.export import load_generator

        G, info = load_generator(model_dir)
        want = to_dict(self.cfg.model.G)
        have = info["architecture"]["generator"]
        if want != have:
            raise TrainingError(
                f"train.init_from={model_dir}: its generator {have} differs from model.G {want}; "
                "set model.G to the exported architecture"
            )
        self.G.load_state_dict(G.state_dict())
        log.info("generator initialized from %s (step %s)", model_dir, info.get("training", {}).get("step"))

    def elapsed_s(self) -> float:
        """Seconds this run has trained, earlier sessions included."""
        now = time.perf_counter()
        return self.train_seconds + (now - self._session_start if self._session_start is not None else 0.0)

    def out_of_time(self) -> bool:
        t = self.cfg.train
        return t.max_minutes > 0 and self.elapsed_s() >= 60 * t.max_minutes

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        fmt = torch.channels_last if self.cfg.train.channels_last else torch.contiguous_format
        return {
            k: batch[k].to(self.device, non_blocking=True, memory_format=fmt)
            for k in ("line", "hints", "mask", "color")
        }

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        return {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "sched_G": self.sched_G.state_dict(),
            "sched_D": self.sched_D.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "samples_seen": self.step * self.cfg.data.batch_size,
            "epoch": self.step * self.cfg.data.batch_size // max(1, self.n_items),
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "validations_without_improvement": self.validations_without_improvement,
            "config": to_dict(self.cfg),
            "rng": self._rng_all[0] if self._rng_all else rng_state(),
            "rng_ranks": self._rng_all or [rng_state()],
            "world_size": self.dist.world_size,
            "git": self.code,
            "wandb_id": self.wandb_id or "",
            "metrics": dict(self.last_metrics),
            "train_seconds": self.elapsed_s(),
            "scale": self.scale,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.sched_G.load_state_dict(state["sched_G"])
        self.sched_D.load_state_dict(state["sched_D"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best_metric = float(state.get("best_metric", math.inf))
        self.best_step = int(state.get("best_step", 0))
        self.validations_without_improvement = int(state.get("validations_without_improvement", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.wandb_id = state.get("wandb_id") or None
        ranks = state.get("rng_ranks") or [state["rng"]]
        if len(ranks) == self.dist.world_size:
            set_rng_state(ranks[self.dist.rank])
        else:
            set_rng_state(ranks[0])
            log.warning(
                "checkpoint written by %d processes, resumed by %d: data order is exact, dropout noise is not",
                len(ranks), self.dist.world_size,
            )  # fmt: skip

    def _find_resume(self) -> tuple[Path | None, dict[str, Any] | None]:
        """The checkpoint to continue from and its state, or (None, None) for a fresh run.

        train.resume=auto takes the newest readable one: an unreadable checkpoint (truncated, damaged) is
        reported in one line and set aside as `<name>.unreadable` (never deleted). Under DDP rank 0 decides
        (and renames); every rank then reads the file it chose."""
        r = self.cfg.train.resume
        if r is True:
            r = "auto"
        if r is False or r in ("no", "never"):
            existing = latest_checkpoint(self.ckpt_dir)
            if existing is not None:
                raise TrainingError(
                    f"{self.run_dir} already holds checkpoints (newest {existing.name}) and train.resume=no; "
                    "choose another name=..., delete the folder, or resume with train.resume=auto"
                )
            return None, None
        if r != "auto":
            path = Path(r)
            if not path.is_file():
                raise TrainingError(f"train.resume={r}: no such checkpoint file")
            try:
                return path, load_checkpoint(path)
            except CheckpointError as e:
                raise TrainingError(
                    f"{e}; give another file with train.resume=PATH, or train.resume=auto for the run's newest "
                    "readable checkpoint"
                ) from None
        outcome: tuple[str, str | None] = ("ok", None)
        state = None
        if self.dist.is_main:
            try:
                path, state = self._newest_readable()
                outcome = ("ok", str(path) if path else None)
            except TrainingError as e:
                outcome = ("error", str(e))
        kind, value = distributed.broadcast_object(outcome, self.dist)
        if kind == "error":
            raise TrainingError(value)
        if value is None:
            return None, None
        return Path(value), state if state is not None else load_checkpoint(value)

    def _newest_readable(self) -> tuple[Path | None, dict[str, Any] | None]:
        """Step files newest first, with last.pt (a copy of the newest when it was written) right after the
        newest: a damaged newest step file resumes from its intact copy, not from an older step."""
        steps = [p for _, p in reversed(step_files(self.ckpt_dir))]
        last = self.ckpt_dir / "last.pt"
        queue = steps[:1] + ([last] if last.is_file() else []) + steps[1:]
        aside: list[str] = []
        for i, path in enumerate(queue):
            try:
                state = load_checkpoint(path)
            except CheckpointError as e:
                moved = set_aside(path)
                aside.append(moved.name)
                log.warning(
                    "%s; set aside as %s; resuming from the newest readable checkpoint", e, moved.name
                )
                continue
            older = [p for p in queue[i + 1 :] if p != last]
            if path == last and older and int(state["step"]) < int(older[0].stem.split("_")[1]):
                continue  # last.pt lags behind (its copy failed): the newer step file wins
            return path, state
        if aside:
            raise TrainingError(
                f"no readable checkpoint in {self.ckpt_dir} (set aside: {', '.join(aside)}); run the same command "
                "again to start this run over from step 0, or give a checkpoint with train.resume=PATH"
            )
        return None, None

    # ---------------------------------------------------------------- data

    def _datasets(self) -> tuple[ColorizationDataset, list[dict[str, torch.Tensor]]]:
        cfg = self.cfg
        train_set = ColorizationDataset(cfg, split=cfg.data.split)
        self.n_items = len(train_set)
        # Fixed validation batches: the val split when the manifest has one, else the first training items,
        # with a fixed augmentation and fixed hints (epoch 0): the same images for every validation, every
        # sample grid and every resume, so scores compare across steps and runs.
        if Path(cfg.data.source).is_dir():
            val_items = train_set.items
            log.info(
                "data.source is a folder: validation scores %d of its training images (a manifest with a %r split, "
                "from `crawler filter`, gives held-out ones)",
                min(len(val_items), max(2, cfg.train.val_images)), cfg.data.val_split,
            )  # fmt: skip
        else:
            try:
                val_items = resolve_items(cfg.data.source, cfg.data.val_split)
            except ValueError:
                val_items = train_set.items
                log.info(
                    "no %r split in %s: validating on training images", cfg.data.val_split, cfg.data.source
                )
        val_set = ColorizationDataset(cfg, items=val_items)
        n = min(len(val_set), max(2, cfg.train.val_images))
        samples = [val_set[(0, i)] for i in range(n)]
        size = max(2, min(cfg.data.batch_size, 8))
        val_batches = [
            {
                k: torch.stack([s[k] for s in samples[i : i + size]])
                for k in ("line", "hints", "mask", "color")
            }
            for i in range(0, n, size)
        ]
        return train_set, val_batches

    def _batches(self, train_set: ColorizationDataset):
        cfg = self.cfg
        bs = cfg.data.batch_size
        if cfg.train.overfit_batches > 0:
            # The same few batches again and again, augmentation frozen: a model that cannot drive the
            # reconstruction loss down here has a bug, not a data problem.
            loader = make_loader(train_set, batch_size=bs // self.dist.world_size, workers=0, seed=cfg.seed,
                                 shuffle=False, rank=self.dist.rank, world_size=self.dist.world_size)  # fmt: skip
            fixed = []
            for b in loader:
                fixed.append(b)
                if len(fixed) == cfg.train.overfit_batches:
                    break
            step = self.step
            while True:
                yield fixed[step % len(fixed)]
                step += 1
        loader = make_loader(
            train_set,
            batch_size=bs // self.dist.world_size,
            workers=cfg.data.workers,
            seed=cfg.seed,
            start_sample=self.step * bs,
            pin_memory=self.device.type == "cuda",
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        yield from loader

    # ---------------------------------------------------------------- one step

    def train_step(
        self, batch: dict[str, torch.Tensor], probe: StepProbe | None = None
    ) -> dict[str, torch.Tensor]:
        """One D and one G update. Returns the step's numbers by name, as 0-d device tensors (no host sync):
        G's terms unweighted (`loss/G_l1` ...) and weighted total (`loss/G`), D's (`loss/D_real`, `loss/D_fake`,
        `D/score_real`, `D/score_fake`), each player's gradient norm before clipping and whether it was clipped
        (`grad_norm/G`, `clipped/G` ...), and `train/mse`, the batch's MSE (comparable to the mean-color
        baseline whatever the loss). With the adversarial weight at 0 (the no-GAN baseline) D is never run.
        With a `probe`, also records per-layer diagnostics of this step (see colorizer.diagnostics).
        """
        if probe is not None and not self.cfg.train.compile:  # hooks would break compiled graphs
            probe.attach()
        line, color = batch["line"], batch["color"]
        with self.autocast():
            fake = self.G_fwd(generator_input(batch))  # (B, 3, H, W)
        numbers: dict[str, torch.Tensor] = {}
        scores = None
        if self.objective.gan:
            # D: real pairs up, fake pairs down; the generator is not part of this graph. One forward over
            # real and fake pairs together (DDP allows one forward per backward); with instance/group norm or
            # none this equals two separate calls, sample by sample.
            self.D.requires_grad_(True)
            real_pair, fake_pair = self._augment(line, color, 0), self._augment(line, fake.detach(), 1)
            with self.autocast():
                all_scores = self.D_step_fwd(*(torch.cat(x) for x in zip(real_pair, fake_pair, strict=True)))
            real_scores, fake_scores = all_scores.chunk(2)
            d_total, d_parts = self.objective.discriminator(real_scores, fake_scores)
            numbers |= d_parts | self._update(self.phase_D, d_total, probe)
            if probe is not None:
                probe.record_scores(real_scores, fake_scores)
            # G's adversarial term: the frozen D on a (differentiable) augmentation of its output.
            self.D.requires_grad_(False)
            with self.autocast():
                scores = self.D_frozen_fwd(*self._augment(line, fake, 2))
        with self.autocast():  # the perceptual network runs in the step's precision; the terms are float32
            g_total, g_parts = self.objective.generator(fake, batch, scores)
        numbers |= g_parts | self._update(self.phase_G, g_total, probe)
        if probe is not None:
            probe.detach()
        self.scaler.update()
        self.sched_G.step()
        if self.objective.gan:
            self.sched_D.step()  # without D, its optimizer and schedule stay untouched
        t = self.cfg.train
        ema_update(self.G_ema, self.G, ema_beta(self.step + 1, t.ema_decay, t.ema_warmup))
        numbers["train/mse"] = ((fake.detach().float() - color.float()) ** 2).mean()
        return numbers

    def _augment(
        self, line: torch.Tensor, color: torch.Tensor, draw: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """DiffAugment of this rank's pairs, its random draws a function of (seed, step, `draw`) made for the
        global batch: resume and DDP see exactly the augmentations of one uninterrupted process."""
        g = torch.Generator()
        g.manual_seed((self.cfg.seed & 0xFFFFFFFF) * 1_000_003 + self.step * 4 + draw)
        b = line.shape[0]
        return self.objective.augment(line, color, generator=g, offset=self.dist.rank * b,
                                      total=b * self.dist.world_size)  # fmt: skip

    def _update(self, phase: Phase, loss: torch.Tensor, probe: StepProbe | None) -> dict[str, torch.Tensor]:
        """Backward `loss` into `phase`'s parameters, clip them to `optim.grad_clip` (a safety net), step its
        optimizer. Returns its gradient norm before clipping and whether the clip fired."""
        clip = self.cfg.optim.grad_clip
        phase.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(phase.optimizer)
        if probe is not None:
            probe.record_grads(phase.name)
        norm = torch.nn.utils.clip_grad_norm_(phase.params, clip if clip > 0 else math.inf)
        self.scaler.step(phase.optimizer)
        if probe is not None:
            probe.record_update(phase.name)
        norm = norm.detach().float()
        clipped = (norm > clip).float() if clip > 0 else torch.zeros_like(norm)
        return {f"grad_norm/{phase.name}": norm, f"clipped/{phase.name}": clipped}

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """G_ema's output for a batch, float32 `(B, 3, H, W)` in [-1, 1]."""
        batch = self.to_device(batch)
        with self.autocast():
            return self.G_ema(generator_input(batch)).float()

    @torch.no_grad()
    def validate(self, val_batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """G_ema on the fixed validation images: reconstruction MSE, PSNR, SSIM, Delta E 2000 at the hints."""
        mse, psnr, ssim, de = [], [], [], []
        for batch in val_batches:
            fake = self.generate(batch).cpu()
            color = batch["color"].float()
            mse.append(float(torch.nn.functional.mse_loss(fake, color)) * len(fake))
            out01, target01 = (fake + 1) / 2, (color + 1) / 2
            psnr += M.psnr(out01, target01).tolist()
            ssim += M.ssim(out01, target01).tolist()
            de += M.delta_e_at_hints(out01, target01, batch["mask"]).tolist()
        n = sum(len(b["color"]) for b in val_batches)
        return {
            "val/reconstruction_mse": sum(mse) / n,
            "val/psnr": M.summarize(psnr),
            "val/ssim": M.summarize(ssim),
            "val/delta_e_hints": M.summarize(de),
        }

    def _score(self, metrics: dict[str, float]) -> float:
        """The configured validation metric as "lower is better"."""
        value = metrics[f"val/{self.cfg.train.val_metric}"]
        if not math.isfinite(value):
            return math.inf
        return -value if self.cfg.train.val_metric in ("psnr", "ssim") else value

    # ---------------------------------------------------------------- run

    def fit(self) -> TrainResult:
        cfg, t = self.cfg, self.cfg.train
        resume_from, state = self._find_resume()
        self.last_metrics: dict[str, float] = {}
        log.info("loading data from %s", cfg.data.source)
        train_set, val_batches = self._datasets()
        lines = [(x[0].numpy() + 1) / 2 for b in val_batches for x in b["line"]]
        self.scale = training_scale(cfg, lines)
        if state is not None:
            self.load_state_dict(state)
            del state
            log.info("resuming %s from %s (step %d)", self.run_dir, resume_from, self.step)
        if self.step >= t.steps:
            log.info(
                "%s already reached train.steps=%d; raise train.steps to train longer", self.run_dir, t.steps
            )
            return TrainResult(self.run_dir, self.step, last_checkpoint=latest_checkpoint(self.ckpt_dir))
        if self.out_of_time():
            log.info(
                "%s already spent its time budget train.max_minutes=%g (step %d); raise it to train longer",
                self.run_dir, t.max_minutes, self.step,
            )  # fmt: skip
            return TrainResult(self.run_dir, self.step, last_checkpoint=latest_checkpoint(self.ckpt_dir),
                               ended_by="time budget")  # fmt: skip
        if self.dist.world_size > self.n_items:
            raise TrainingError(f"{self.dist.world_size} processes but only {self.n_items} training images")

        log.info(
            "run %s: %d train images, device %s (%d process%s), amp %s, G %.2fM params, D %.2fM params",
            self.run_dir, self.n_items, self.device, self.dist.world_size, "es" if self.dist.enabled else "",
            self.amp_dtype or "off", sum(p.numel() for p in self.G.parameters()) / 1e6,
            sum(p.numel() for p in self.D.parameters()) / 1e6,
        )  # fmt: skip
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
        tracker = Tracker(
            self.run_dir,
            mode=cfg.tracking.wandb_mode,
            project=cfg.tracking.project,
            name=cfg.name,
            config=to_dict(cfg),
            run_id=self.wandb_id,
            resume_step=self.step if resume_from is not None else None,
            enabled=self.dist.is_main,  # under DDP only rank 0 writes metrics, samples and wandb
        )
        self.wandb_id = tracker.run_id
        baseline = mean_color_mse(torch.cat([b["color"] for b in val_batches]))
        if resume_from is None:
            tracker.summary({"baseline/mean_color_mse": baseline})

        self.G.train()
        self.D.train()
        # per-step numbers, read once per log interval
        pending: list[tuple[int, dict[str, torch.Tensor]]] = []
        last_ckpt: Path | None = None
        ended_by = "steps"
        t_last, step_last = time.perf_counter(), self.step
        self._session_start = t_last
        first_step = self.step + 1
        first_log = resume_from is None
        console = Console(steps=t.steps, budget_s=60 * t.max_minutes, enabled=self.dist.is_main)
        self.console = console
        exit_code = 1
        try:
            with self.stop as stop:
                console.begin()
                log.info("step %d: starting the data loader and the first step", first_step)
                batches = self._batches(train_set)
                while self.step < t.steps:
                    batch = self.to_device(next(batches))
                    lr = self.opt_G.param_groups[0]["lr"]
                    every = cfg.tracking.diagnostics_every
                    probe = None
                    if every > 0 and (self.step + 1) % every == 0 and self.dist.is_main:
                        probe = StepProbe({"G": self.G, "D": self.D}, bins=cfg.tracking.histogram_bins)
                    numbers = self.train_step(batch, probe)
                    self.step += 1
                    pending.append((self.step, numbers))
                    console.step(self.step, self.elapsed_s(), first=self.step == first_step)
                    if self.step == first_step and self.step % t.log_every and self.dist.is_main:
                        log.info("step %d done in %.1f s; a progress line every %d steps",
                                 self.step, time.perf_counter() - t_last, t.log_every)  # fmt: skip
                    stopping = distributed.any_rank(stop.signal is not None, self.dist, self.device)
                    # no time budget, no extra collective per step under DDP
                    out_of_time = t.max_minutes > 0 and distributed.any_rank(
                        self.out_of_time(), self.dist, self.device
                    )
                    at_end = self.step >= t.steps or stopping or out_of_time
                    if probe is not None:
                        names = sorted(numbers)
                        self._check_finite(
                            names, torch.stack([numbers[k] for k in names])[None].cpu(), [self.step]
                        )
                        tracker.log(probe.scalars(), step=self.step)
                        tracker.log_histograms(probe.histograms(), step=self.step)
                        for note in probe.warnings():
                            log.warning("step %d: %s", self.step, note)
                    if self.step % t.log_every == 0 or at_end:
                        names = sorted(pending[-1][1])
                        stacked = torch.stack([torch.stack([n[k] for k in names]) for _, n in pending])
                        rows = distributed.mean(stacked, self.dist).cpu()  # (steps, names)
                        self._check_finite(names, rows, [s for s, _ in pending])
                        now = time.perf_counter()
                        values = dict(zip(names, rows.mean(0).tolist(), strict=True))
                        values.update(
                            {
                                "lr/G": lr,
                                "throughput/images_per_s": (self.step - step_last)
                                * cfg.data.batch_size
                                / max(now - t_last, 1e-9),
                                "epoch": self.step * cfg.data.batch_size / self.n_items,
                            }
                        )
                        if first_log:
                            values["baseline/mean_color_mse"] = baseline
                            if self.dist.is_main:
                                log.info(
                                    "step %d: MSE %.4f; predicting the mean color scores %.4f "
                                    "(the model must get below that)",
                                    self.step, values["train/mse"], baseline,
                                )  # fmt: skip
                            first_log = False
                        tracker.log(values, step=self.step)
                        self.last_metrics.update({k: float(v) for k, v in values.items()})
                        console.interval(self.step, self.elapsed_s(), values)
                        pending.clear()
                        t_last, step_last = now, self.step
                    if (self.step % t.sample_every == 0 or at_end) and self.dist.is_main:
                        grid = sample_grid(val_batches[0], self.generate(val_batches[0]))
                        tracker.log_image(
                            "samples", grid, self.step, caption="line | hints | output | target"
                        )
                    improved = False
                    patience = t.early_stop_patience
                    if self.step % t.val_every == 0 or at_end:
                        if self.dist.is_main:  # G_ema is the same on every rank
                            improved = self._validate_and_select(val_batches, tracker)
                        give_up = patience > 0 and self.validations_without_improvement >= patience
                        improved, give_up = distributed.broadcast_flags(
                            [improved, give_up], self.dist, self.device
                        )
                    else:
                        give_up = False
                    if self.step % t.checkpoint_every == 0 or at_end or improved or give_up:
                        last_ckpt = self._checkpoint(is_best=improved)
                    if give_up:
                        log.warning(
                            "early stop at step %d: val/%s has not improved for %d validations "
                            "(best %.4f at step %d, in best.pt)",
                            self.step, t.val_metric, patience, abs(self.best_metric), self.best_step,
                        )  # fmt: skip
                        self.early_stopped = True
                        ended_by = "early stop"
                        break
                    if out_of_time and not stopping:
                        log.info(
                            "time budget train.max_minutes=%g spent at step %d; raise it to train longer",
                            t.max_minutes, self.step,
                        )  # fmt: skip
                        ended_by = "time budget"
                        break
                    if stopping:
                        ended_by = "signal"
                        log.warning(
                            "stopped by %s at step %d, checkpoint written; run the same command to resume",
                            stop.signal or "a signal to another process", self.step,
                        )  # fmt: skip
                        break
            exit_code = 0
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            newest = latest_checkpoint(self.ckpt_dir)
            intact = (
                f"the newest checkpoint {newest} is intact" if newest else "no checkpoint was written yet"
            )
            raise TrainingError(
                f"disk full while writing {e.filename or 'into ' + str(self.run_dir)}; {intact}; free space and re-run"
            ) from None
        finally:
            console.close()
            tracker.finish(exit_code=exit_code)  # never raises: the real error, if any, is the one shown
            if self.dist.enabled:
                # DDP's reducers and the gloo/nccl state they hold go now, while the interpreter is whole: left
                # to the exit, gloo's threads can abort the process after a clean stop ("terminate called
                # without an active exception", exit code 134 instead of 0 or 75)
                self.G_fwd, self.D_step_fwd, self.D_frozen_fwd = self.G, self.D, self.D
                gc.collect()
            distributed.teardown(self.dist)
        return TrainResult(self.run_dir, self.step, ended_by == "signal", last_ckpt, self.early_stopped,
                           dict(self.last_metrics), ended_by)  # fmt: skip

    def _validate_and_select(self, val_batches: list[dict[str, torch.Tensor]], tracker: Tracker) -> bool:
        """Score G_ema on the validation images, log it, and say whether it is the best so far."""
        metrics = self.validate(val_batches)
        tracker.log(metrics, step=self.step)
        self.last_metrics.update(metrics)
        score = self._score(metrics)
        improved = score < self.best_metric
        if improved:
            self.best_metric, self.best_step = score, self.step
            self.validations_without_improvement = 0
            tracker.summary({f"best/{k}": v for k, v in metrics.items()} | {"best/step": self.step})
        else:
            self.validations_without_improvement += 1
        self.console.validation(self.step, metrics, self.cfg.train.val_metric, best=improved,
                                best_value=abs(self.best_metric), best_step=self.best_step)  # fmt: skip
        return improved

    def _checkpoint(self, *, is_best: bool) -> Path:
        """Every rank's RNG state goes in (collective); rank 0 writes; the others learn its outcome, so a
        full disk stops every rank with the same message."""
        self._rng_all = distributed.gather_objects(rng_state(), self.dist)  # type: ignore[assignment]
        path = self.ckpt_dir / f"step_{self.step:07d}.pt"
        error = None
        if self.dist.is_main:
            try:
                path = save_checkpoint(
                    self.state_dict(),
                    self.ckpt_dir,
                    step=self.step,
                    keep_last=self.cfg.train.keep_last,
                    is_best=is_best,
                )
                log.info("checkpoint %s%s", path, " (best so far)" if is_best else "")
            except CheckpointError as e:  # a full disk: one line, the partial file already removed
                error = str(e)
        self._rng_all = None
        error = distributed.broadcast_object(error, self.dist)
        if error:
            raise TrainingError(error)
        return path

    def _check_finite(self, names: list[str], rows: torch.Tensor, steps: list[int]) -> None:
        """`rows (steps, names)`: a NaN or inf loss stops the run, naming the loss and the step."""
        losses = [j for j, k in enumerate(names) if k.startswith("loss/")]
        bad = ~torch.isfinite(rows[:, losses])
        if bad.any():
            i, j = (int(v) for v in bad.nonzero()[0])
            j = losses[j]
            raise TrainingError(
                f"{names[j]} is {rows[i, j].item()} at step {steps[i]}: training diverged. "
                "Nothing was saved from this point; the last checkpoint is intact. Try a lower learning rate "
                "(optim.lr_G / optim.lr_D), optim.grad_clip, or train.amp=off"
            )


def train(cfg: Config) -> TrainResult:
    """Train (or resume) the run `cfg.run_dir/cfg.name` to `cfg.train.steps` optimizer steps."""
    return Trainer(cfg).fit()
