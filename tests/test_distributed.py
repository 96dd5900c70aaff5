"""DDP on the CPU with gloo: two processes train like one process with the same global batch."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from colorizer.config import load_config
from colorizer.data import EpochSampler
from colorizer.train import Trainer
from tests.test_train import TINY, images, wait_for_metrics  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def overrides(images: Path, run_dir: Path, *extra: str) -> list[str]:  # noqa: F811
    return [f"data.source={images}", f"run_dir={run_dir}", "tracking.wandb_mode=disabled", "data.batch_size=4",
            "optim.schedule=constant", "train.checkpoint_every=100", *extra]  # fmt: skip


def _rank_main(rank: int, world: int, port: int, args: list[str], out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    trainer = Trainer(load_config(TINY, args))
    trainer.fit()
    torch.save({k: v.clone() for k, v in trainer.G.state_dict().items()}, Path(out) / f"rank{rank}.pt")


def run_ddp(args: list[str], out: Path, world: int = 2) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_rank_main, args=(world, free_port(), args, str(out)), nprocs=world, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]


def max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_sampler_splits_each_global_batch_across_ranks():
    single = list(EpochSampler(10, seed=3, epochs=2))
    ranks = [list(EpochSampler(10, seed=3, epochs=2, rank=r, world_size=2, rank_batch=2)) for r in range(2)]
    rebuilt = []
    for b in range(5):  # global batches of 4: rank 0 takes the first 2 keys, rank 1 the next 2
        rebuilt += ranks[0][2 * b : 2 * b + 2] + ranks[1][2 * b : 2 * b + 2]
    assert rebuilt == single[:20]
    resumed = list(EpochSampler(10, seed=3, epochs=2, start=8, rank=1, world_size=2, rank_batch=2))
    assert resumed == ranks[1][4:]


def test_two_processes_match_one_with_the_same_global_batch(images, tmp_path):  # noqa: F811
    args = overrides(images, tmp_path / "ddp", "train.steps=5")
    rank0, rank1 = run_ddp(args, tmp_path / "ddp-out")
    assert max_diff(rank0, rank1) == 0.0, "DDP ranks drifted apart"
    single = Trainer(load_config(TINY, overrides(images, tmp_path / "one", "train.steps=5")))
    single.fit()
    assert max_diff(rank0, single.G.state_dict()) < 1e-4  # same global batch: the same training
    # only rank 0 wrote the run folder
    ckpts = sorted(p.name for p in (tmp_path / "ddp" / "cpu-tiny" / "checkpoints").glob("step_*.pt"))
    assert ckpts == ["step_0000005.pt"]
    state = torch.load(tmp_path / "ddp" / "cpu-tiny" / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2


def test_resume_under_ddp(images, tmp_path):  # noqa: F811
    straight = run_ddp(overrides(images, tmp_path / "a", "train.steps=6"), tmp_path / "a-out")[0]
    run_ddp(overrides(images, tmp_path / "b", "train.steps=3"), tmp_path / "b-out")
    resumed = run_ddp(overrides(images, tmp_path / "b", "train.steps=6"), tmp_path / "b-out2")[0]
    assert max_diff(straight, resumed) < 1e-6


def test_batch_that_does_not_divide_is_a_clear_error(images, tmp_path):  # noqa: F811
    with pytest.raises(Exception, match="must divide by the 2 processes"):
        run_ddp(overrides(images, tmp_path, "data.batch_size=3", "train.steps=1"), tmp_path / "x")


def test_torchrun_command_line(images, tmp_path):  # noqa: F811
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--nproc_per_node=2", f"--master_port={free_port()}", "-m", "colorizer", "train",
           "--config", str(TINY), *overrides(images, tmp_path, "train.steps=3")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "cpu-tiny" / "checkpoints" / "last.pt").is_file()
    assert "2 processes" in r.stderr
    # rank 0 speaks for the run: each line once, not once per process
    assert r.stderr.count("step 3/3  ") == 1 and r.stderr.count("validation at step 3:") == 1, r.stderr
    assert r.stdout.count("ended by steps") == 1


def test_sigterm_under_colorizer_torchrun_checkpoints_and_exits_75_without_a_traceback(images, tmp_path):  # noqa: F811
    cmd = [sys.executable, "-m", "colorizer", "torchrun", "--nproc_per_node=2", f"--master_port={free_port()}",
           "train", "--config", str(TINY), *overrides(images, tmp_path, "train.steps=100000", "train.log_every=1",
                                                      "train.checkpoint_every=100000", "train.val_every=100000",
                                                      "train.sample_every=100000")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wait_for_metrics(tmp_path / "cpu-tiny" / "metrics.jsonl", timeout_s=240)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-3000:]
    assert "Traceback" not in err and "Traceback" not in out
    assert (
        "colorizer torchrun: stopped by SIGTERM; checkpoint " in err
        and "Run the same command to resume" in err
    )
    files = sorted((tmp_path / "cpu-tiny" / "checkpoints").glob("step_*.pt"))
    assert len(files) == 1
    state = torch.load(files[0], weights_only=True)
    assert state["step"] >= 3 and state["world_size"] == 2
