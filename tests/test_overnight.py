"""A run left alone overnight: a console an operator reads, exit codes scripts trust, resume that heals itself,
a full disk in one line, wandb history rebuilt after kill -9."""

import errno
import fcntl
import logging
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import torch

from colorizer.checkpoint import load_checkpoint, step_files
from colorizer.cli import EXIT_INTERRUPTED, main
from colorizer.tracking import Console, read_metrics, read_wandb_history
from colorizer.train import Trainer
from tests import test_train
from tests.test_train import TINY

ROOT = Path(__file__).resolve().parent.parent
images = test_train.images  # the fixture: six drawings


def train_args(images: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(TINY), f"data.source={images}", f"run_dir={tmp_path / 'runs'}",
            "tracking.wandb_mode=disabled", *extra]  # fmt: skip


def fake_clock(monkeypatch, seconds_a_step: float) -> list[float]:
    """Training time advances `seconds_a_step` per optimizer step, nothing else moves it."""
    clock = [1000.0]
    monkeypatch.setattr("colorizer.train.time.perf_counter", lambda: clock[0])
    original = Trainer.train_step

    def step(self, batch, probe=None):
        clock[0] += seconds_a_step
        return original(self, batch, probe)

    monkeypatch.setattr(Trainer, "train_step", step)
    return clock


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records]


# ---------------------------------------------------------------- the console


def test_progress_by_time_budget_with_eta_end_time_losses_and_validation(
    images, tmp_path, monkeypatch, caplog
):
    """train.max_minutes=1 at 10 s a step ends the run at step 6, far before train.steps=1000: the lines say so."""
    caplog.set_level(logging.INFO)
    fake_clock(monkeypatch, 10.0)
    code = main(train_args(images, tmp_path, "train.steps=1000", "train.max_minutes=1", "train.log_every=3",
                           "train.val_every=3"))  # fmt: skip
    assert code == 0
    lines = messages(caplog)
    progress = [m for m in lines if m.startswith("step 3/1000")]
    assert len(progress) == 1, lines
    line = progress[0]
    # 30 s of a 60 s budget; the steps would take 997 x 10 s: time ends this run
    assert "50.0% of the 1 min budget" in line and "elapsed 0:00:30" in line and "left 0:00:30, ends " in line
    for part in ("G ", "G_l1 ", "D_real ", "img/s"):
        assert part in line
    end = time.strftime("%H:%M", time.localtime(time.time() + 30))
    assert end in line or time.strftime("%H:%M", time.localtime(time.time() + 29)) in line
    assert any(m.startswith("step 6/1000  100.0% of the 1 min budget") for m in lines), lines
    validations = [m for m in lines if m.startswith("validation at step ")]
    assert validations[0].startswith("validation at step 3: psnr ") and "(best so far)" in validations[0]
    assert len(validations) == 2 and re.search(r"\((best so far|best \S+ at step 3)\)", validations[1])
    assert "ssim" in validations[0] and "delta_e_hints" in validations[0]


def test_console_by_steps_counts_the_rate_after_the_first_step():
    console = Console(steps=8000, budget_s=0, enabled=False)
    console.step(101, 100.0, first=True)  # resumed at step 100; the first step of a session includes warm-up
    console.step(1200, 100.0 + 1099 * 0.5)  # then 2 steps a second
    status = console.status(1200, 100.0 + 1099 * 0.5)
    assert status.startswith("step 1200/8000  15.0% of the steps  elapsed 0:10:50  left 0:56:40, ends ")
    # with a budget that the steps outrun, the steps end the run
    budget = Console(steps=8000, budget_s=8 * 3600, enabled=False)
    budget.step(101, 100.0, first=True)
    assert "15.0% of the steps" in budget.status(1200, 100.0 + 1099 * 0.5)


def test_starting_says_what_it_does(images, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    assert main(train_args(images, tmp_path, "train.steps=3", "train.log_every=3")) == 0
    lines = messages(caplog)
    first = next(i for i, m in enumerate(lines) if m.startswith("step 3/3"))
    before = lines[:first]
    assert any(m.startswith("building the models") for m in before)
    assert any(m.startswith("loading data from ") for m in before)
    assert any("validation scores" in m and "training images" in m for m in before)  # a folder: said so
    assert any(m.startswith("step 1 done in ") for m in before), before


@pytest.mark.slow
def test_a_bar_on_a_terminal_plain_lines_in_a_file(images, tmp_path):
    cmd = [sys.executable, "-m", "colorizer", *train_args(images, tmp_path, "train.steps=6", "train.log_every=2",
                                                         "train.val_every=100")]  # fmt: skip
    log_file = tmp_path / "train.log"
    with open(log_file, "w") as f:
        r = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=300)
    text = log_file.read_text()
    assert r.returncode == 0, text
    assert "\r" not in text and "%|" not in text  # nohup / tee: whole lines only
    assert [line.split("  ")[0][9:] for line in text.splitlines() if "% of the steps" in line] == [
        "step 2/6", "step 4/6", "step 6/6"]  # fmt: skip
    assert all(line[:2].isdigit() and line[2] == ":" for line in text.splitlines()[:-2])  # the time on each

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    proc = subprocess.Popen(
        [*cmd, "name=on-a-terminal"], cwd=ROOT, stdin=terminal, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    out = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(controller)
    assert proc.wait(timeout=300) == 0
    shown = out.decode(errors="replace")
    assert "%|" in shown and re.search(r"\r(?!\n)", shown), (
        shown
    )  # a bar redrawn in place (a terminal ends lines \r\n)
    assert "step 6/6  100.0% of the steps" in shown


# ---------------------------------------------------------------- exit codes


def test_interrupted_run_exits_75_after_its_checkpoint(images, tmp_path, monkeypatch, capsys):
    original = Trainer.train_step

    def step(self, batch, probe=None):
        out = original(self, batch, probe)
        if self.step + 1 == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the loop: finish the step, checkpoint, stop
        return out

    monkeypatch.setattr(Trainer, "train_step", step)
    code = main(train_args(images, tmp_path, "train.steps=100", "train.checkpoint_every=100"))
    assert code == EXIT_INTERRUPTED == 75
    assert "Run the same command to resume" in capsys.readouterr().out
    files = step_files(tmp_path / "runs" / "cpu-tiny" / "checkpoints")
    assert [s for s, _ in files] == [3] and load_checkpoint(files[0][1])["step"] == 3
    monkeypatch.setattr(Trainer, "train_step", original)
    assert main(train_args(images, tmp_path, "train.steps=5")) == 0  # resumed to the end: 0


# ---------------------------------------------------------------- resume that heals itself


def truncate(path: Path) -> None:
    """Damage a file in place, as a bad disk or a cut copy does (a hard link to it would be damaged too)."""
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def test_a_truncated_newest_checkpoint_is_set_aside_and_its_copy_resumes(images, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    assert main(train_args(images, tmp_path, "train.steps=4", "train.checkpoint_every=2",
                           "train.val_every=4")) == 0  # fmt: skip
    folder = tmp_path / "runs" / "cpu-tiny" / "checkpoints"
    truncate(folder / "step_0000004.pt")
    # last.pt and best.pt are files of their own: still readable
    assert (
        load_checkpoint(folder / "last.pt")["step"] == 4 and load_checkpoint(folder / "best.pt")["step"] == 4
    )
    caplog.clear()
    assert main(train_args(images, tmp_path, "train.steps=6", "train.checkpoint_every=2",
                           "train.val_every=4")) == 0  # fmt: skip
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "\n" not in warned[0]
    assert warned[0] == (
        f"{folder / 'step_0000004.pt'} is not a readable training checkpoint: it is truncated "
        f"({(folder / 'step_0000004.pt.unreadable').stat().st_size:,} bytes; the end of the archive is missing); "
        "set aside as step_0000004.pt.unreadable; resuming from the newest readable checkpoint"
    )
    assert any(m.startswith("resuming ") and m.endswith("last.pt (step 4)") for m in messages(caplog))
    assert load_checkpoint(folder / "last.pt")["step"] == 6
    steps = [r["step"] for r in read_metrics(folder.parent) if "loss/G" in r]
    assert steps == [1, 2, 3, 4, 5, 6]  # steps 5 and 6 follow step 4: nothing lost, nothing twice


def test_when_the_copy_is_damaged_too_the_previous_step_resumes(images, tmp_path, caplog):
    assert main(train_args(images, tmp_path, "train.steps=4", "train.checkpoint_every=2",
                           "train.val_every=100")) == 0  # fmt: skip
    folder = tmp_path / "runs" / "cpu-tiny" / "checkpoints"
    truncate(folder / "step_0000004.pt")
    (folder / "last.pt").write_bytes(b"")
    caplog.set_level(logging.INFO)
    assert main(train_args(images, tmp_path, "train.steps=5", "train.checkpoint_every=2",
                           "train.val_every=100")) == 0  # fmt: skip
    assert sorted(p.name for p in folder.glob("*.unreadable")) == [
        "last.pt.unreadable",
        "step_0000004.pt.unreadable",
    ]
    assert any(
        "last.pt is not a readable training checkpoint: it is empty (0 bytes)" in m for m in messages(caplog)
    )
    assert any(m.startswith("resuming ") and m.endswith("step_0000002.pt (step 2)") for m in messages(caplog))
    assert load_checkpoint(folder / "last.pt")["step"] == 5


def test_an_unreadable_checkpoint_given_by_path_names_the_way_forward(images, tmp_path, capsys):
    bad = tmp_path / "cut.pt"
    assert main(train_args(images, tmp_path, "train.steps=2")) == 0
    bad.write_bytes((tmp_path / "runs" / "cpu-tiny" / "checkpoints" / "last.pt").read_bytes()[:5000])
    capsys.readouterr()
    assert main(train_args(images, tmp_path / "other", f"train.resume={bad}")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{bad} is not a readable training checkpoint: it is truncated" in err
    assert err.rstrip().endswith("or train.resume=auto for the run's newest readable checkpoint")
    assert bad.is_file()  # a file the user named is never renamed


# ---------------------------------------------------------------- a full disk


def test_a_full_disk_is_one_line_leaves_no_partial_file_and_wandb_does_not_hide_it(
    images,
    tmp_path,
    monkeypatch,
    capsys,
    caplog,
):
    import wandb

    real_save, real_teardown, saves = torch.save, wandb.teardown, []

    def disk_fills_up(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) == 2:  # the checkpoint of step 4: half written, then the disk is full
            f.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    def wandb_fails_too():
        real_teardown()
        raise RuntimeError("wandb-core: write run-x.wandb: no space left on device")

    monkeypatch.setattr(torch, "save", disk_fills_up)
    monkeypatch.setattr(wandb, "teardown", wandb_fails_too)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    args = train_args(images, tmp_path, "train.steps=8", "train.checkpoint_every=2", "train.val_every=100")
    code = main([a if a != "tracking.wandb_mode=disabled" else "tracking.wandb_mode=offline" for a in args])
    assert code == 1
    err = capsys.readouterr().err
    folder = tmp_path / "runs" / "cpu-tiny" / "checkpoints"
    assert err == (
        f"colorizer train: disk full while writing checkpoint {folder / 'step_0000004.pt'}; the previous checkpoint "
        f"{folder / 'step_0000002.pt'} is intact; free space and re-run\n"
    )
    assert not list((tmp_path / "runs").rglob("*.tmp")), "the partial file must go"
    assert [s for s, _ in step_files(folder)] == [2] and load_checkpoint(folder / "last.pt")["step"] == 2
    assert any("wandb could not close its run" in m for m in messages(caplog))  # said, after the real error


def test_a_full_disk_while_logging_names_the_file_and_the_intact_checkpoint(
    images, tmp_path, monkeypatch, capsys
):
    from colorizer.tracking import Tracker

    original = Tracker.log

    def log(self, values, step):
        if step == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.metrics_path))
        return original(self, values, step)

    monkeypatch.setattr(Tracker, "log", log)
    assert main(train_args(images, tmp_path, "train.steps=8", "train.checkpoint_every=2")) == 1
    run = tmp_path / "runs" / "cpu-tiny"
    assert capsys.readouterr().err == (
        f"colorizer train: disk full while writing {run / 'metrics.jsonl'}; the newest checkpoint "
        f"{run / 'checkpoints' / 'step_0000002.pt'} is intact; free space and re-run\n"
    )


# ---------------------------------------------------------------- wandb history after kill -9


@pytest.mark.slow
def test_kill_9_then_wandb_sync_rebuilds_the_whole_history(images, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_dir = tmp_path / "runs" / "cpu-tiny"
    cmd = [sys.executable, "-m", "colorizer", "train", "--config", str(TINY), f"data.source={images}",
           f"run_dir={tmp_path / 'runs'}", "tracking.wandb_mode=offline", "train.steps=100000", "train.log_every=1",
           "train.sample_every=3", "train.val_every=100000", "train.checkpoint_every=100000"]  # fmt: skip
    # its own session: kill -9 takes the process and the wandb service it started, as a crash would
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and len([r for r in read_metrics(run_dir) if "loss/G" in r]) < 7:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    rows = [r for r in read_metrics(run_dir) if "loss/G" in r]
    assert len(rows) >= 7

    assert main(["wandb-sync", str(run_dir)]) == 0
    out = capsys.readouterr().out
    files = list((run_dir / "wandb-sync" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1 and f"wandb sync {files[0].parent}" in out
    by_step: dict[int, dict] = {}
    for h in read_wandb_history(files[0]):
        by_step.setdefault(h["_step"], {}).update(h)
    for r in rows:
        assert by_step[r["step"]]["loss/G_l1"] == pytest.approx(r["loss/G_l1"])
        assert by_step[r["step"]]["throughput/images_per_s"] == pytest.approx(r["throughput/images_per_s"])
    assert by_step[3].get("samples/_type") == "image-file"  # the sample grids too
    # a second sync replaces the first: one rebuilt run, not two
    assert main(["wandb-sync", str(run_dir)]) == 0
    assert len(list((run_dir / "wandb-sync" / "wandb").glob("offline-run-*"))) == 1
