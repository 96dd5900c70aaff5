from pathlib import Path

import pytest

from colorizer.config import Config, ConfigError, from_dict, load_config, save_config, to_dict

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_without_file():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.hints.no_hint_prob == 0.5
    assert cfg.loss.adversarial == "hinge" and cfg.loss.l1_weight == 100 and cfg.model.D.spectral_norm


@pytest.mark.parametrize("name", ["default", "cpu-demo", "cpu-tiny"])
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.name == name
    # every shipped size must fit the U-Net's downsampling
    assert cfg.data.height_px % 2**cfg.model.G.depth == 0
    assert cfg.data.width_px % 2**cfg.model.G.depth == 0


def test_yaml_then_command_line_precedence(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr_G: 1e-3\ndata:\n  height_px: 64\n")
    cfg = load_config(p, ["optim.lr_G=5e-5"])
    assert cfg.optim.lr_G == pytest.approx(5e-5)  # command line wins over the file
    assert cfg.data.height_px == 64  # the file wins over the default
    assert cfg.data.width_px == 256  # untouched default


def test_yaml_scientific_notation_without_dot_is_a_float(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr_D: 1e-4\n")  # PyYAML reads this as the string "1e-4"
    assert load_config(p).optim.lr_D == pytest.approx(1e-4)


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.hieght_px=64", "data.hieght_px"),
        ("nonsense=1", "nonsense"),
        ("model.G.widht=3", "model.G.widht"),
    ],
)
def test_unknown_keys_are_named(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_unknown_key_in_file_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  stepz: 10\n")
    with pytest.raises(ConfigError, match=r"train\.stepz"):
        load_config(p)


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.height_px=big", "data.height_px"),
        ("data.height_px=1.5", "data.height_px"),
        ("optim.lr_G=fast", "optim.lr_G"),
        ("data.hflip=maybe", "data.hflip"),
        ("loss.adversarial=wgan", "loss.adversarial"),
        ("data.crop_scale=[0.5]", "data.crop_scale"),
        ("data.crop_scale=0.5", "data.crop_scale"),
        ("model.G=3", "model.G"),
    ],
)
def test_wrong_types_are_named(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")):
        load_config(None, [override])


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["data.height_px"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]


def test_round_trip_through_dict_and_yaml(tmp_path):
    cfg = load_config(None, ["data.crop_scale=[0.3, 0.9]", "seed=7", "lineart.xdog_sigmas=[0.4]"])
    assert from_dict(to_dict(cfg)) == cfg
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


def test_off_on_the_command_line_is_the_choice_not_a_boolean(tmp_path):
    """YAML reads `off` as False; for a setting whose choices include "off" it means that choice."""
    assert load_config(None, ["train.amp=off"]).train.amp == "off"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  amp: off\n")  # unquoted in a file, too
    assert load_config(cfg, []).train.amp == "off"
    with pytest.raises(ConfigError, match="train.amp"):
        load_config(None, ["train.amp=yes"])  # no "on"/"yes" choice: still a clear error


# ---------------------------------------------------------------- ranges, checked before anything is written


@pytest.mark.parametrize(
    "override, line",
    [
        ("train.checkpoint_every=0", "train.checkpoint_every=0: must be at least 1"),
        ("train.log_every=0", "train.log_every=0: must be at least 1"),
        ("train.val_every=-2", "train.val_every=-2: must be at least 1"),
        ("train.steps=-5", "train.steps=-5: must be at least 1"),
        ("train.max_minutes=-30", "train.max_minutes=-30.0: must be 0 or more (0 means no time budget)"),
        ("train.ema_decay=2", "train.ema_decay=2.0: must be at least 0 and below 1"),
        ("optim.betas=[0.5, 1.0]", "optim.betas=[0.5, 1.0]: must be at least 0 and below 1"),
        ("hints.no_hint_prob=1.5", "hints.no_hint_prob=1.5: a share: must be between 0 and 1"),
        ("optim.lr_G=-1e-4", "optim.lr_G=-0.0001: a learning rate must be above 0 (e.g. 2e-4)"),
        ("optim.lr_D=0", "optim.lr_D=0.0: a learning rate must be above 0 (e.g. 2e-4)"),
        ("data.batch_size=0", "data.batch_size=0: must be at least 1"),
        ("data.crop_scale=[0.9, 0.5]",
         "data.crop_scale=[0.9, 0.5]: the first value is the low end and must not exceed the second"),
    ],
)  # fmt: skip
def test_out_of_range_values_are_refused_before_the_run_folder_exists(override, line, tmp_path, capsys):
    from colorizer.cli import main

    runs = tmp_path / "runs"
    assert (
        main(["train", "--config", str(ROOT / "configs" / "cpu-tiny.yaml"), f"run_dir={runs}", override]) == 2
    )
    assert capsys.readouterr().err == f"colorizer train: config error: {line}\n"
    assert not runs.exists()


def test_every_bad_value_on_a_line_of_its_own(capsys):
    from colorizer.cli import main

    code = main(["train", "train.log_every=0", "train.steps=-5", "optim.lr_G=-1", "train.ema_decay=1"])
    assert code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(e.startswith("colorizer train: config error: ") for e in err)
    assert {e.split(": ")[2].split("=")[0] for e in err} == {
        "train.log_every", "train.steps", "optim.lr_G", "train.ema_decay"}  # fmt: skip


def test_batch_must_divide_by_the_processes_torchrun_starts(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(
        ConfigError, match=r"^data\.batch_size=6 is the global batch and must divide by the 4 "
    ):
        load_config(None, ["data.batch_size=6"])
    assert load_config(None, ["data.batch_size=8"]).data.batch_size == 8
