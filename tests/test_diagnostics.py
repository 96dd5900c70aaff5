"""Diagnostics against hand-computed values, model selection, and what the run records."""

import json

import pytest
import torch
from torch import nn

from colorizer.diagnostics import Histogram, StepProbe, dead_share
from colorizer.tracking import read_metrics, read_wandb_history
from colorizer.train import train
from tests.test_train import images, tiny  # noqa: F401  (fixture)


class OneByOne(nn.Module):
    """y = ReLU(w * x) with a 1x1 conv: gradients and updates are computable by hand."""

    def __init__(self, weights: list[float]):
        super().__init__()
        self.conv = nn.Conv2d(1, len(weights), 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(weights).view(-1, 1, 1, 1))
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x))


def test_dead_units_grad_norm_and_update_ratio_match_hand_computation():
    model = OneByOne([1.0, -2.0, 3.0, -0.5])
    x = torch.rand(2, 1, 4, 6) + 0.1  # strictly positive: channels with a negative weight never fire
    probe = StepProbe({"M": model}).attach()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(x)
    out.sum().backward()
    probe.record_grads("M")
    opt.step()
    probe.record_update("M")
    probe.detach()

    assert probe.dead["M.act"] == 0.5  # 2 of 4 channels never positive
    # dL/dw_c = sum(x) for a live channel, 0 for a dead one (the ReLU passes no gradient)
    s = float(x.sum())
    expected_grad = torch.tensor([s, 0.0, s, 0.0])
    assert probe.grad_norms["M.conv"] == pytest.approx(float(expected_grad.norm()), rel=1e-5)
    w = torch.tensor([1.0, -2.0, 3.0, -0.5])
    assert probe.update_ratios["M.conv"] == pytest.approx(
        float((0.1 * expected_grad).norm() / w.norm()), rel=1e-5
    )
    # histograms count every value
    assert sum(probe.activations["M.act"].counts) == x.numel() * 4
    assert sum(probe.weights["M.conv"].counts) == 4 and sum(probe.grads["M.conv"].counts) == 4
    # hooks are gone after the step: ordinary steps pay nothing
    assert not model.act._forward_hooks


def test_dead_share_and_histogram_edges():
    x = torch.zeros(2, 3, 2, 2)
    x[:, 0] = 1.0
    assert dead_share(x) == pytest.approx(2 / 3)  # zero is not active
    h = Histogram.of(torch.tensor([0.0, 1.0, 1.0, 2.0]), bins=2)
    assert h.counts == [1, 3] and h.edges() == [0.0, 1.0, 2.0]


def test_far_off_update_ratios_are_flagged():
    probe = StepProbe({"G": nn.Identity()})
    probe.update_ratios = {"G.a": 1e-3, "G.b": 1e-7, "G.c": 0.5}
    notes = "\n".join(probe.warnings())
    assert "G.b" in notes and "barely learns" in notes
    assert "G.c" in notes and "too high" in notes
    assert "G.a" not in notes


def test_training_records_histograms_in_metrics_and_wandb(images, tmp_path):  # noqa: F811
    cfg = tiny(images, tmp_path, "tracking.wandb_mode=offline", "train.steps=4", "tracking.diagnostics_every=2",
               "tracking.histogram_bins=8")  # fmt: skip
    result = train(cfg)
    rows = read_metrics(result.run_dir)
    diag = [r for r in rows if any(k.startswith("dead_units/") for k in r)]
    assert [r["step"] for r in diag] == [2, 4]
    assert "dead_units/G.decoder.0.0" in diag[0] and 0 <= diag[0]["dead_units/G.decoder.0.0"] <= 1
    assert any(k.startswith("update_ratio/D.") for k in diag[0])
    assert "grad_norm_first_over_last/G" in diag[0]
    hists = [r for r in rows if any(k.startswith("hist/") for k in r)]
    assert [r["step"] for r in hists] == [2, 4]
    h = hists[0]["hist/weights/G.encoder.0.0"]
    assert len(h["counts"]) == 8 and h["low"] < h["high"]
    assert "hist/D/scores_real" in hists[0] and "hist/pre_activations/G.decoder.0.0" in hists[0]

    run_file = next((result.run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    logged = {}
    for row in read_wandb_history(run_file):
        logged.update({k: v for k, v in row.items() if k.startswith("hist/weights/G.encoder.0.0")})
    assert logged.get("hist/weights/G.encoder.0.0/_type") == "histogram"
    assert sum(logged["hist/weights/G.encoder.0.0/values"]) == sum(h["counts"])


def test_diagnostics_off_records_nothing(images, tmp_path):  # noqa: F811
    result = train(tiny(images, tmp_path, "train.steps=3", "tracking.diagnostics_every=0"))
    assert not any(k.startswith(("hist/", "dead_units/")) for r in read_metrics(result.run_dir) for k in r)


# ---------------------------------------------------------------- model selection


def test_validation_metrics_best_checkpoint_and_early_stopping(images, tmp_path):  # noqa: F811
    # lr 1e-30 (an update far below float32 resolution): nothing improves after the first validation, so patience 2
    # stops after the third
    cfg = tiny(images, tmp_path, "train.steps=40", "train.val_every=2", "train.early_stop_patience=2",
               "optim.lr_G=1e-30", "optim.lr_D=1e-30", "train.checkpoint_every=100", "train.val_metric=psnr")  # fmt: skip
    result = train(cfg)
    assert result.early_stopped and result.step == 6
    val = [r for r in read_metrics(result.run_dir) if "val/psnr" in r]
    assert [r["step"] for r in val] == [2, 4, 6]
    for key in ("val/reconstruction_mse", "val/ssim", "val/delta_e_hints"):
        assert key in val[0]
    best = torch.load(result.run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert best["step"] == 2  # the first validation was the best; later equal scores do not replace it
    last = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == 6
    assert json.dumps(last["metrics"])  # plain values, exported into model.json
