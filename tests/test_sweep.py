"""Random search: Optuna trials on the tiny config, and the wandb sweep file the trainer understands."""

from pathlib import Path

import pytest
import yaml

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
