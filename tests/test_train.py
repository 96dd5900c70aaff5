"""The training loop: overfitting one batch, exact resume, AMP on CPU, checkpoints, tracking, fine-tuning."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from colorizer.checkpoint import load_checkpoint, step_files
from colorizer.config import load_config
from colorizer.export import export_checkpoint, load_generator
from colorizer.tracking import read_metrics, read_wandb_history, read_wandb_records
from colorizer.train import Trainer, TrainingError, lr_factor, train
from tests.conftest import make_drawing, write_png

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "cpu-tiny.yaml"


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Six drawings: with batch 2 an epoch is 3 steps, so 10 steps cross three epoch boundaries."""
    root = tmp_path / "images"
    for i in range(6):
        write_png(root / f"{i}.png", make_drawing(90 + 12 * i, 130 - 8 * i, seed=i))
    return root


def tiny(images: Path, tmp_path: Path, *extra: str):
    return load_config(
        TINY,
        [f"data.source={images}", f"run_dir={tmp_path / 'runs'}", "tracking.wandb_mode=disabled", *extra],
    )


def stop_at(trainer: Trainer, step: int) -> None:
    """Deliver a SIGTERM to the loop after optimizer step `step`, as the signal handler would."""
    original = trainer.train_step

    def wrapped(batch, probe=None):
        out = original(batch, probe)
        if trainer.step + 1 == step:
            trainer.stop._handle(signal.SIGTERM, None)
        return out

    trainer.train_step = wrapped


def wait_for_metrics(metrics: Path, lines: int = 3, timeout_s: float = 120) -> None:
    """Wait until a run in another process has logged `lines` lines to `metrics` (or `timeout_s` passed)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < lines):
        time.sleep(0.2)


def assert_same_state(a: dict, b: dict, path: str = "") -> None:
    assert a.keys() == b.keys(), path
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, dict):
            assert_same_state(x, y, f"{path}.{k}")
        elif torch.is_tensor(x):
            assert torch.equal(x, y), f"{path}.{k} differs"
        else:
            assert x == y, f"{path}.{k}: {x} != {y}"


# ---------------------------------------------------------------- learning


def test_overfit_one_batch_drives_reconstruction_down_10x(images, tmp_path):
    cfg = tiny(images, tmp_path, "train.overfit_batches=1", "train.steps=150", "optim.lr_G=2e-3",
               "optim.schedule=constant", "train.checkpoint_every=1000", "train.sample_every=1000")  # fmt: skip
    result = train(cfg)
    rows = [r for r in read_metrics(result.run_dir) if "train/mse" in r]
    first = rows[0]["train/mse"]
    last = sum(r["train/mse"] for r in rows[-10:]) / 10
    assert last < first / 10, (
        f"reconstruction {first:.4f} -> {last:.4f}: a model that cannot overfit one batch is broken"
    )
    # the first log shows the trivial guess beside the loss, in the same units
    assert 0 < rows[0]["baseline/mean_color_mse"] < 2


def test_lr_schedules():
    assert lr_factor(0, 100, schedule="constant", warmup=0, decay_start_frac=0.5) == 1.0
    assert lr_factor(49, 100, schedule="linear", warmup=0, decay_start_frac=0.5) == 1.0
    assert lr_factor(75, 100, schedule="linear", warmup=0, decay_start_frac=0.5) == pytest.approx(0.5)
    assert lr_factor(99, 100, schedule="linear", warmup=0, decay_start_frac=0.5) == pytest.approx(0.02)
    assert lr_factor(0, 100, schedule="cosine", warmup=10, decay_start_frac=0.5) == pytest.approx(0.1)
    assert lr_factor(55, 100, schedule="cosine", warmup=10, decay_start_frac=0.5) == pytest.approx(0.5)


# ---------------------------------------------------------------- checkpoints and resume


def test_resume_is_exact_across_epoch_boundaries(images, tmp_path):
    extra = ("train.steps=10", "train.checkpoint_every=100", "model.G.dropout=0.5", "optim.warmup_steps=2")
    straight = tiny(images, tmp_path / "a", *extra)
    train(straight)
    resumed_cfg = tiny(images, tmp_path / "b", *extra)
    first = Trainer(resumed_cfg)
    stop_at(first, 6)  # epoch = 3 steps: stops mid-way through epoch 2, resumes into it
    r = first.fit()
    assert r.interrupted and r.step == 6
    assert [s for s, _ in step_files(r.run_dir / "checkpoints")] == [6]
    r2 = train(resumed_cfg)  # train.resume=auto picks up step 6
    assert r2.step == 10 and not r2.interrupted

    a = load_checkpoint(tmp_path / "a" / "runs" / "cpu-tiny" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "runs" / "cpu-tiny" / "checkpoints" / "last.pt")
    for key in ("G", "D", "G_ema", "opt_G", "opt_D", "sched_G", "scaler"):
        assert_same_state(a[key], b[key], key)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    # and no step was logged twice or lost
    steps = [row["step"] for row in read_metrics(r2.run_dir) if "loss/G" in row]
    assert steps == list(range(1, 11))


def test_checkpoints_are_plain_tensors_and_pruned(images, tmp_path):
    cfg = tiny(images, tmp_path, "train.steps=12", "train.checkpoint_every=2", "train.keep_last=2")
    result = train(cfg)
    folder = result.run_dir / "checkpoints"
    assert [s for s, _ in step_files(folder)] == [10, 12]  # the last K remain, oldest pruned
    assert (folder / "last.pt").is_file() and (folder / "best.pt").is_file()
    assert not list(folder.glob("*.tmp"))
    state = torch.load(folder / "last.pt", weights_only=True)  # no pickled code needed
    assert state["step"] == 12 and state["config"]["name"] == "cpu-tiny"
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert len(state["git"]["commit"]) in (7, 40) or state["git"]["commit"] == "unknown"
    best = torch.load(folder / "best.pt", weights_only=True)
    assert best["best_metric"] == min(best["best_metric"], state["best_metric"])


def test_resume_no_refuses_to_overwrite(images, tmp_path):
    train(tiny(images, tmp_path, "train.steps=2"))
    with pytest.raises(TrainingError, match="already holds checkpoints"):
        train(tiny(images, tmp_path, "train.steps=4", "train.resume=no"))


def test_nan_loss_stops_with_step_and_name(images, tmp_path, monkeypatch):
    cfg = tiny(images, tmp_path, "train.steps=10", "train.checkpoint_every=2")
    trainer = Trainer(cfg)
    original = trainer.objective.generator

    def poisoned(fake, batch, scores=None):
        total, parts = original(fake, batch, scores)
        if trainer.step + 1 == 5:
            parts["loss/G_l1"] = parts["loss/G_l1"] * float("nan")
        return total, parts

    monkeypatch.setattr(trainer.objective, "generator", poisoned)
    with pytest.raises(TrainingError, match=r"loss/G_l1 is nan at step 5"):
        trainer.fit()
    # checkpoints before the NaN survive; nothing was saved from the diverged state
    assert [s for s, _ in step_files(trainer.ckpt_dir)] == [2, 4]


def test_sigterm_writes_checkpoint_and_exits_cleanly(images, tmp_path):
    run_dir = tmp_path / "runs"
    cmd = [sys.executable, "-m", "colorizer", "train", "--config", str(TINY), f"data.source={images}",
           f"run_dir={run_dir}", "tracking.wandb_mode=disabled", "train.steps=100000",
           "train.checkpoint_every=100000", "train.sample_every=100000", "train.val_every=100000"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_metrics(run_dir / "cpu-tiny" / "metrics.jsonl")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out  # interrupted, checkpoint written: `&& colorizer export` does not run
    assert "Run the same command to resume" in out and "Traceback" not in out
    files = step_files(run_dir / "cpu-tiny" / "checkpoints")
    assert len(files) == 1
    state = load_checkpoint(files[0][1])
    assert state["step"] == files[0][0] >= 3


# ---------------------------------------------------------------- precision


def test_bf16_autocast_on_cpu(images, tmp_path):
    cfg = tiny(images, tmp_path, "train.steps=3", "train.amp=bf16")
    trainer = Trainer(cfg)
    assert trainer.amp_dtype == torch.bfloat16
    result = trainer.fit()
    assert result.step == 3
    rows = [r for r in read_metrics(result.run_dir) if "loss/G" in r]
    assert rows and all(isinstance(r["loss/G"], float) for r in rows)  # finite, not "nan"
    assert all(p.dtype == torch.float32 for p in trainer.G.parameters())  # master weights stay float32


def test_fp16_on_cpu_is_a_clear_error(images, tmp_path):
    with pytest.raises(TrainingError, match="fp16 needs CUDA"):
        Trainer(tiny(images, tmp_path, "train.amp=fp16"))


# ---------------------------------------------------------------- tracking


def test_wandb_offline_and_metrics_record_the_same_run(images, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = tiny(images, tmp_path, "tracking.wandb_mode=offline", "train.steps=4", "train.sample_every=2",
               "train.log_every=1")  # fmt: skip
    result = train(cfg)
    rows = read_metrics(result.run_dir)
    losses = [r for r in rows if "loss/G" in r]
    assert [r["step"] for r in losses] == [1, 2, 3, 4]
    for key in ("loss/G_l1", "loss/G_perceptual", "loss/G_hint", "loss/G_adversarial", "loss/D_real",
                "loss/D_fake", "D/score_real", "D/score_fake", "grad_norm/G", "clipped/G", "lr/G", "train/mse",
                "throughput/images_per_s"):  # fmt: skip
        assert key in losses[0]
    assert "baseline/mean_color_mse" in losses[0]
    assert sorted(p.name for p in (result.run_dir / "samples").iterdir()) == [
        "samples_0000002.png", "samples_0000004.png"]  # fmt: skip

    runs = list((result.run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, "offline by default: a local run folder, no login"
    history = read_wandb_history(runs[0])
    by_step: dict[int, dict] = {}
    for h in history:
        by_step.setdefault(h["_step"], {}).update(h)
    for r in losses:
        assert by_step[r["step"]]["loss/G_l1"] == pytest.approx(r["loss/G_l1"])
    assert by_step[2].get("samples/_type") == "image-file", by_step[2]  # the sample grid went to wandb too


def test_online_without_key_is_a_clear_error_not_a_prompt(images, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    from colorizer.tracking import TrackingError

    with pytest.raises(TrackingError, match="WANDB_API_KEY"):
        train(tiny(images, tmp_path, "tracking.wandb_mode=online", "train.steps=1"))


def test_resume_continues_the_same_wandb_run(images, tmp_path):
    extra = ("tracking.wandb_mode=offline", "train.steps=4", "train.checkpoint_every=100")
    t = Trainer(tiny(images, tmp_path, *extra))
    stop_at(t, 2)
    t.fit()
    first_id = load_checkpoint(t.ckpt_dir / "last.pt")["wandb_id"]
    train(tiny(images, tmp_path, *extra))
    assert first_id and load_checkpoint(t.ckpt_dir / "last.pt")["wandb_id"] == first_id
    files = list((t.run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2  # one offline folder per process; `wandb sync` merges them into one run
    ids = {r.run.run_id for f in files for r in read_wandb_records(f) if r.WhichOneof("record_type") == "run"}
    assert ids == {first_id}


# ---------------------------------------------------------------- fine-tuning and export


def test_export_round_trip_gives_the_same_outputs(images, tmp_path):
    result = train(tiny(images, tmp_path, "train.steps=3"))
    out = export_checkpoint(result.run_dir / "checkpoints" / "last.pt", tmp_path / "model")
    G, info = load_generator(out)
    state = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    assert info["training"]["step"] == 3 and info["architecture"]["generator"]["base_width"] == 8
    ref = Trainer(tiny(images, tmp_path / "x")).G_ema
    ref.load_state_dict(state["G_ema"])
    x = torch.randn(2, 5, 32, 48)
    assert torch.equal(G(x), ref.eval()(x))
    # --half: half the file, float32 on load, outputs within float16 rounding
    half = export_checkpoint(result.run_dir / "checkpoints" / "last.pt", tmp_path / "half", half=True)
    G16, info16 = load_generator(half)
    assert info16["weights_dtype"] == "float16" and next(G16.parameters()).dtype == torch.float32
    size, size16 = ((d / "model.safetensors").stat().st_size for d in (out, half))
    assert size16 < 0.6 * size
    assert (G16(x) - G(x)).abs().max() < 0.02


def test_pickle_disguised_as_a_model_is_refused(tmp_path):
    import pickle

    from colorizer.export import ModelLoadError, save_model

    model = tmp_path / "model"
    save_model(Trainer.__init__.__globals__["build_generator"](load_config(TINY).model.G).state_dict(),
               load_config(TINY).model.G, model)  # fmt: skip
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (model / "model.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_generator(model)
    assert not marker.exists()


def test_fine_tune_freezes_exactly_the_requested_levels(images, tmp_path):
    base = train(tiny(images, tmp_path / "base", "train.steps=2"))
    model = export_checkpoint(base.run_dir / "checkpoints" / "last.pt", tmp_path / "model")
    G0, _ = load_generator(model)
    cfg = tiny(images, tmp_path / "ft", f"train.init_from={model}", "train.freeze_encoder_levels=1",
               "train.steps=3", "optim.lr_G=1e-2")  # fmt: skip
    trainer = Trainer(cfg)
    for (name, p0), p in zip(G0.named_parameters(), trainer.G.parameters(), strict=True):
        assert torch.equal(p0, p), f"{name} not initialized from the exported model"
    trainer.fit()
    frozen, moved = [], []
    for (name, p0), p in zip(G0.named_parameters(), trainer.G.parameters(), strict=True):
        (frozen if name.startswith("encoder.0.") else moved).append((name, torch.equal(p0, p)))
    assert frozen and all(same for _, same in frozen), "a frozen parameter changed"
    assert all(not same for _, same in moved), [n for n, same in moved if same]


def test_init_from_with_another_architecture_is_a_clear_error(images, tmp_path):
    base = train(tiny(images, tmp_path / "base", "train.steps=1"))
    model = export_checkpoint(base.run_dir / "checkpoints" / "last.pt", tmp_path / "model")
    with pytest.raises(TrainingError, match="differs from model.G"):
        Trainer(tiny(images, tmp_path / "ft", f"train.init_from={model}", "model.G.base_width=16"))


def test_without_the_adversarial_loss_only_G_learns(images, tmp_path):
    """loss.adversarial_weight=0 is the regression baseline: D is never run or updated, G still learns."""
    cfg = tiny(images, tmp_path, "loss.adversarial_weight=0", "train.steps=4", "train.val_every=100")
    trainer = Trainer(cfg)
    D_before = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    G_before = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    result = trainer.fit()
    assert result.step == 4
    assert all(torch.equal(D_before[k], v) for k, v in trainer.D.state_dict().items())
    assert any(not torch.equal(G_before[k], v) for k, v in trainer.G.state_dict().items())
    rows = [r for r in read_metrics(result.run_dir) if "loss/G" in r]
    assert rows and not any(
        k.startswith(("loss/D", "loss/G_adversarial", "grad_norm/D")) for r in rows for k in r
    )
    assert all(r["loss/G_l1"] > 0 for r in rows)


def test_time_budget_stops_the_run_and_counts_across_resumes(images, tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("colorizer.train.time.perf_counter", lambda: clock[0])
    cfg = tiny(images, tmp_path, "train.steps=1000", "train.max_minutes=1", "optim.schedule=linear",
               "optim.decay_start_frac=0", "train.val_every=1000")  # fmt: skip

    def ten_seconds_a_step(trainer: Trainer) -> Trainer:
        original = trainer.train_step

        def step(batch, probe=None):
            clock[0] += 10.0
            return original(batch, probe)

        trainer.train_step = step
        return trainer

    trainer = ten_seconds_a_step(Trainer(cfg))
    stop_at(trainer, 3)  # a SIGTERM after 30 s of the 60 s budget
    first = trainer.fit()
    assert first.interrupted and first.step == 3
    state = load_checkpoint(first.last_checkpoint)
    assert state["train_seconds"] == pytest.approx(30.0)
    # the schedule follows time, which is further along than 3 of 1000 steps: half the budget, half the lr
    assert trainer.opt_G.param_groups[0]["lr"] == pytest.approx(0.5 * cfg.optim.lr_G, rel=0.05)

    second = ten_seconds_a_step(Trainer(cfg)).fit()
    assert second.step == 6 and not second.interrupted  # 30 s more: the 60 s budget is spent
    assert load_checkpoint(second.last_checkpoint)["train_seconds"] == pytest.approx(60.0)
    third = Trainer(cfg).fit()  # nothing left: returns at once
    assert third.step == 6


def test_checkpoints_name_the_code_the_run_started_with(images, tmp_path, monkeypatch):
    """A commit made while a run trains must not be credited with its checkpoints."""
    monkeypatch.setattr("colorizer.train.git_info", lambda *a, **k: {"commit": "a" * 40, "dirty": False})
    trainer = Trainer(tiny(images, tmp_path, "train.steps=2"))
    monkeypatch.setattr("colorizer.train.git_info", lambda *a, **k: {"commit": "b" * 40, "dirty": True})
    result = trainer.fit()
    assert load_checkpoint(result.last_checkpoint)["git"]["commit"] == "a" * 40
    out = export_checkpoint(result.last_checkpoint, tmp_path / "model")
    assert load_generator(out)[1]["code"]["commit"] == "a" * 40
    assert load_checkpoint(result.last_checkpoint)["train_seconds"] > 0
    assert load_generator(out)[1]["training"]["train_seconds"] >= 0  # rounded to 0.1 s
