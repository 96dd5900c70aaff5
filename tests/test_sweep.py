"""Random search: Optuna trials on the tiny config, and the wandb sweep file the trainer understands."""

import json
import logging
from pathlib import Path

import pytest
import yaml

from colorizer.cli import main
from colorizer.config import load_config
from colorizer.sweep import run_sweep
from tests.test_train import TINY, images  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_three_tiny_trials_sample_distinct_values_and_write_the_best_config(images, tmp_path):  # noqa: F811
    cfg = load_config(TINY, [f"data.source={images}", f"run_dir={tmp_path}", "tracking.wandb_mode=disabled",
                             "train.steps=3", "train.val_every=3"])  # fmt: skip
    best, score, path = run_sweep(cfg, trials=3)
    import optuna

    study = optuna.load_study(
        study_name="cpu-tiny-sweep", storage=f"sqlite:///{tmp_path / 'cpu-tiny-sweep' / 'optuna.db'}"
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    lrs = {t.params["optim.lr_G"] for t in done}
    assert len(lrs) == 3 and all(1e-5 <= v <= 1e-3 for v in lrs)  # distinct samples from the range
    assert score == max(t.value for t in done)  # psnr: higher is better
    written = load_config(path)  # a config the trainer accepts as it is
    assert written == best and written.optim.lr_G == study.best_trial.params["optim.lr_G"]
    for t in done:
        assert (tmp_path / "cpu-tiny-sweep" / f"trial-{t.number:03d}" / "metrics.jsonl").is_file()
    # re-running continues the same study
    run_sweep(cfg, trials=1)
    assert len(optuna.load_study(study_name="cpu-tiny-sweep", storage=study._storage).trials) == 4


def test_wandb_sweep_file_names_real_config_keys():
    sweep = yaml.safe_load((ROOT / "configs" / "sweep.yaml").read_text())
    assert sweep["method"] == "random"
    overrides = []
    for key, spec in sweep["parameters"].items():
        value = spec.get("value", spec.get("min", (spec.get("values") or [None])[0]))
        overrides.append(f"{key}={value}")
    cfg = load_config(ROOT / "configs" / "default.yaml", overrides)  # unknown keys would raise here
    assert cfg.optim.lr_G == pytest.approx(1e-5)
    assert "${args_no_hyphens}" in sweep["command"]


@pytest.mark.slow
def test_a_folder_sweep_scores_its_trials_on_held_out_images(images, tmp_path, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    cfg = load_config(TINY, [f"data.source={images}", f"run_dir={tmp_path}", "tracking.wandb_mode=disabled",
                             "train.steps=2", "train.val_every=2"])  # fmt: skip
    _, _, best_path = run_sweep(cfg, trials=1)
    manifest = tmp_path / "cpu-tiny-sweep" / "holdout.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    val = {r["id"] for r in rows if r["split"] == "val"}
    train = {r["id"] for r in rows if r["split"] == "train"}
    assert len(val) == 1 and len(train) == 5 and val | train == {f"{i}.png" for i in range(6)}
    said = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith(f"data.source {images} is a folder: holding out 1 of its 6 images (10%)") for m in said
    )
    trial = load_config(tmp_path / "cpu-tiny-sweep" / "trial-000" / "config.yaml")
    assert (trial.data.source, trial.data.split, trial.data.val_split) == (str(manifest), "train", "val")
    assert any(m.startswith(f"run {tmp_path / 'cpu-tiny-sweep' / 'trial-000'}: 5 train images") for m in said)
    assert load_config(best_path).data.source == str(images)  # the full run trains on the whole folder


def test_an_interrupted_trial_stops_the_sweep_with_exit_75(images, tmp_path, monkeypatch, capsys):  # noqa: F811
    from colorizer.train import TrainResult

    started = []

    def stopped_by_sigterm(cfg):
        started.append(cfg.name)
        return TrainResult(Path(cfg.run_dir) / cfg.name, 1, interrupted=True, ended_by="signal")

    monkeypatch.setattr("colorizer.train.train", stopped_by_sigterm)
    code = main(["sweep", "--config", str(TINY), "--trials", "3", f"data.source={images}", f"run_dir={tmp_path}",
                 "tracking.wandb_mode=disabled"])  # fmt: skip
    assert code == 75 and started == ["trial-000"]  # no further trial starts after Ctrl-C / SIGTERM
    assert "stopped by a signal during trial 0" in capsys.readouterr().out
