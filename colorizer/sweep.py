"""`colorizer sweep`: random hyperparameter search with Optuna, offline, resumable, shareable.

    colorizer sweep --config configs/cpu-demo.yaml --trials 20 train.steps=500
    colorizer sweep --config configs/default.yaml --trials 50 --storage postgresql://user@host/db  # several machines

Random search, not grid search: with a few parameters that matter and many that do not, random samples
try more distinct values of each (Bergstra & Bengio 2012). Each trial is a short `colorizer train` run
(`runs/<study>/trial-NNN/`) scored on the validation metric (`train.val_metric`) of its last validation.
The study lives in Optuna's embedded SQLite file `runs/<study>/optuna.db` by default (re-running the
command continues it); any SQLAlchemy URL lets several machines share one study. The best trial's full
config is written to `runs/<study>/best.yaml`, ready for `colorizer train --config`.

The search space (log-uniform where a factor matters more than a difference):
    optim.lr_G            log-uniform 1e-5 .. 1e-3
    optim.lr_D            log-uniform 1e-5 .. 1e-3
    loss.l1_weight        log-uniform 10 .. 300
    loss.perceptual_weight  log-uniform 1 .. 100
    loss.adversarial      lsgan | hinge | vanilla
    model.G.base_width    the config's width x {0.5, 1, 2}
    hints.no_hint_prob    uniform 0.3 .. 0.7
The same space for `wandb sweep` is in configs/sweep.yaml.

Trials are scored on held-out images: with a manifest its `val` split; with a plain folder as `data.source`
a tenth of its images (at least one), chosen by a hash of each file's path, written to `runs/<study>/holdout.jsonl`
and left out of every trial's training (a score on training images would reward memorizing them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import replace
from pathlib import Path

from colorizer.config import Config, _deep_merge, from_dict, parse_override, save_config, to_dict

log = logging.getLogger(__name__)

VAL_SHARE = 0.1  # of a plain folder's images, held out for scoring the trials


class SweepInterrupted(Exception):
    """SIGINT/SIGTERM stopped a trial: the sweep stops too (not a RuntimeError: Optuna must not go on)."""


def holdout_manifest(folder: str, out: Path, share: float = VAL_SHARE) -> tuple[Path, int, int]:
    """`out`: a manifest of `folder`'s images with `share` of them (at least one) as split "val", the rest "train".

    The held-out images are those whose paths inside the folder have the smallest md5: the same folder gives the
    same split, whatever the order files are listed in. Returns (out, training images, validation images)."""
    from colorizer.data import scan_folder

    items = scan_folder(folder)
    if len(items) < 2:
        raise ValueError(f"data.source={folder}: a sweep needs at least 2 images (one held out for scoring)")

    def draw(item) -> str:
        return hashlib.md5(item.id.encode("utf-8")).hexdigest()

    n_val = min(len(items) - 1, max(1, round(share * len(items))))
    val = {it.id for it in sorted(items, key=draw)[:n_val]}
    lines = [json.dumps({"path": str(Path(it.path).resolve()), "id": it.id,
                         "split": "val" if it.id in val else "train"}) for it in items]  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out, len(items) - len(val), len(val)


def sample_overrides(trial, cfg: Config) -> list[str]:
    """One point of the search space as `key=value` overrides (Optuna records each value by key)."""
    w = cfg.model.G.base_width
    widths = sorted({max(4, w // 2), w, w * 2})
    return [
        f"optim.lr_G={trial.suggest_float('optim.lr_G', 1e-5, 1e-3, log=True)}",
        f"optim.lr_D={trial.suggest_float('optim.lr_D', 1e-5, 1e-3, log=True)}",
        f"loss.l1_weight={trial.suggest_float('loss.l1_weight', 10.0, 300.0, log=True)}",
        f"loss.perceptual_weight={trial.suggest_float('loss.perceptual_weight', 1.0, 100.0, log=True)}",
        f"loss.adversarial={trial.suggest_categorical('loss.adversarial', ['lsgan', 'hinge', 'vanilla'])}",
        f"model.G.base_width={trial.suggest_categorical('model.G.base_width', widths)}",
        f"hints.no_hint_prob={trial.suggest_float('hints.no_hint_prob', 0.3, 0.7)}",
    ]


def apply(cfg: Config, overrides: list[str]) -> Config:
    values = to_dict(cfg)
    for text in overrides:
        values = _deep_merge(values, parse_override(text))
    return from_dict(values)


def run_sweep(
    cfg: Config,
    *,
    trials: int,
    storage: str | None = None,
    study_name: str | None = None,
    sampler: str = "random",
) -> tuple[Config, float, Path]:
    """Run `trials` more trials; returns (best config, its score, path of best.yaml)."""
    import optuna
    from optuna.samplers import RandomSampler, TPESampler

    from colorizer.train import train

    study_name = study_name or f"{cfg.name}-sweep"
    root = Path(cfg.run_dir) / study_name
    root.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(root / 'optuna.db').resolve()}"
    maximize = cfg.train.val_metric in ("psnr", "ssim")
    samplers = {"random": RandomSampler(seed=cfg.seed), "tpe": TPESampler(seed=cfg.seed)}
    if sampler not in samplers:
        raise ValueError(f"sampler must be one of {', '.join(samplers)}, got {sampler!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize" if maximize else "minimize",
        sampler=samplers[sampler],
        load_if_exists=True,
    )
    metric = f"val/{cfg.train.val_metric}"
    data = cfg.data
    if Path(cfg.data.source).is_dir():
        manifest, n_train, n_val = holdout_manifest(cfg.data.source, root / "holdout.jsonl")
        log.info(
            "data.source %s is a folder: holding out %d of its %d images (%g%%) to score the trials on (%s); "
            "the trials train on the other %d",
            cfg.data.source, n_val, n_train + n_val, 100 * VAL_SHARE, manifest, n_train,
        )  # fmt: skip
        data = replace(cfg.data, source=str(manifest), split="train", val_split="val")

    def objective(trial) -> float:
        overrides = sample_overrides(trial, cfg)
        trial_cfg = apply(cfg, overrides)
        trial_cfg = replace(trial_cfg, name=f"trial-{trial.number:03d}", run_dir=str(root), data=data,
                            train=replace(trial_cfg.train, resume="no"))  # fmt: skip
        trial.set_user_attr("overrides", overrides)
        log.info("trial %d: %s", trial.number, " ".join(overrides))
        result = train(trial_cfg)
        if result.interrupted:
            raise SweepInterrupted(
                f"sweep {study_name} stopped by a signal during trial {trial.number} (unfinished, not scored); "
                "run the same command to continue the study"
            )
        value = result.metrics.get(metric, math.nan)
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"{metric} is {value}")
        trial.set_user_attr("run_dir", str(result.run_dir))
        return value

    study.optimize(objective, n_trials=trials, catch=(RuntimeError, ValueError))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise RuntimeError(f"no trial of {study_name} completed; see the log above for why")
    best = study.best_trial
    best_cfg = replace(apply(cfg, best.user_attrs["overrides"]), name=f"{cfg.name}-best")
    path = root / "best.yaml"
    save_config(best_cfg, path)
    return best_cfg, float(best.value), path
