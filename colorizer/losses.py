"""Losses by name. G's objective is `sum(weight[name] * term)` over `G_TERMS` with a nonzero weight
(`loss.<name>_weight` in the config); D's is the adversarial loss on its scores of real and fake pairs.

    objective = Objective(cfg.loss).to(device)
    d_total, d_parts = objective.discriminator(D(*objective.augment(line, color)), D(*objective.augment(line, fake)))
    g_total, g_parts = objective.generator(fake, batch, D(*objective.augment(line, fake)))
    # parts: {"loss/G_l1": ..., "loss/G_perceptual": ..., "loss/D_real": ...}, 0-d float32 tensors, unweighted

A new loss is a function `(objective, fake, batch, scores) -> 0-d tensor` in `G_TERMS` and a `<name>_weight`
in `LossConfig`. Every term is computed in float32 whatever the autocast dtype of its inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from colorizer.augment import DiffAugment
from colorizer.config import LossConfig

ADVERSARIAL = ("lsgan", "vanilla", "hinge")


class AdversarialLoss:
    """The adversarial objective on raw discriminator scores (any shape, e.g. `(B, 1, h, w)`).

    - `"lsgan"`: least squares, D pushes real scores to 1 and fake to 0, G pushes fake to 1.
    - `"vanilla"`: the original GAN's cross-entropy on logits (non-saturating for G).
    - `"hinge"`: D: `mean(relu(1 - real)) + mean(relu(1 + fake))`; G: `-mean(fake)`.
    """

    def __init__(self, kind: str = "hinge"):
        if kind not in ADVERSARIAL:
            raise ValueError(f"adversarial loss must be one of {', '.join(ADVERSARIAL)}; got {kind!r}")
        self.kind = kind

    def d_loss(
        self, real_scores: torch.Tensor, fake_scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(loss_real, loss_fake)` for the discriminator, each a float32 scalar (the mean over patches)."""
        real, fake = real_scores.float(), fake_scores.float()
        if self.kind == "lsgan":
            return F.mse_loss(real, torch.ones_like(real)), F.mse_loss(fake, torch.zeros_like(fake))
        if self.kind == "vanilla":
            return (
                F.binary_cross_entropy_with_logits(real, torch.ones_like(real)),
                F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)),
            )
        return F.relu(1.0 - real).mean(), F.relu(1.0 + fake).mean()

    def g_loss(self, fake_scores: torch.Tensor) -> torch.Tensor:
        """The generator's adversarial loss on D's scores of its output, a float32 scalar."""
        fake = fake_scores.float()
        if self.kind == "lsgan":
            return F.mse_loss(fake, torch.ones_like(fake))
        if self.kind == "vanilla":
            return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
        return -fake.mean()


class PerceptualLoss(nn.Module):
    """Distance between the frozen EfficientNet-Lite0 features (strides 2, 4, 8) of two `(B, 3, H, W)` images
    in [-1, 1]: per feature map, channels normalized to unit length at each position (as LPIPS does), then the
    mean absolute difference; the maps' distances averaged. Weights: ImageNet (colorizer.pretrained).

    `downsample`: the images are first reduced by this factor (area): the features then see strides 2-8 of
    the reduced image (4-16 of the original at 2), a quarter of the cost; colors and shapes of regions are
    what the loss is for, the pixel terms keep the edges."""

    def __init__(self, *, pretrained: bool = True, downsample: int = 2):
        from colorizer.models.efficientnet import EfficientNetLite0

        super().__init__()
        if downsample < 1:
            raise ValueError(f"loss.perceptual_downsample must be >= 1, got {downsample}")
        self.downsample = downsample
        self.net = EfficientNetLite0(last_tap=2)
        if pretrained:
            from colorizer.pretrained import load_efficientnet_lite0

            load_efficientnet_lite0(self.net)
        self.net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # batch norms keep their ImageNet statistics

    def forward(self, fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if fake.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # On CPUs this network's depthwise convolutions run faster in float32 than under bf16 autocast
            # (BENCHMARKS.md, training step); on GPUs autocast stays on.
            with torch.autocast("cpu", enabled=False):
                return self._distance(fake.float(), target.float())
        return self._distance(fake, target)

    def _distance(self, fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.downsample > 1:
            fake = F.avg_pool2d(fake, self.downsample)
            target = F.avg_pool2d(target, self.downsample)
        with torch.no_grad():
            real_features = self.net(target)
        total = fake.new_zeros((), dtype=torch.float32)
        for a, b in zip(self.net(fake), real_features, strict=True):
            a, b = a.float(), b.float()
            a = a / (a.norm(dim=1, keepdim=True) + 1e-6)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-6)
            total = total + (a - b).abs().mean()
        return total / len(self.net.taps)


def l1_term(
    objective: Objective, fake: torch.Tensor, batch: dict, scores: torch.Tensor | None
) -> torch.Tensor:
    return F.l1_loss(fake.float(), batch["color"].float())


def mse_term(
    objective: Objective, fake: torch.Tensor, batch: dict, scores: torch.Tensor | None
) -> torch.Tensor:
    return F.mse_loss(fake.float(), batch["color"].float())


def perceptual_term(
    objective: Objective, fake: torch.Tensor, batch: dict, scores: torch.Tensor | None
) -> torch.Tensor:
    return objective.perceptual(fake, batch["color"])


def hint_term(
    objective: Objective, fake: torch.Tensor, batch: dict, scores: torch.Tensor | None
) -> torch.Tensor:
    """L1 between the output and the hint's own color (hints / mask, in [-1, 1]) where a hint covers at least
    half a pixel: per sample the mean over its hinted pixels (0 without hints), then the mean over the batch
    (so equal shares of a batch, e.g. the processes of a DDP run, average to the whole batch's value)."""
    mask = batch["mask"].float()
    where = (mask > 0.5).float()  # (B, 1, H, W)
    wanted = batch["hints"].float() / mask.clamp_min(1e-3)
    per_sample = ((fake.float() - wanted).abs() * where).flatten(1).sum(1)
    count = where.flatten(1).sum(1) * fake.shape[1]
    return (per_sample / count.clamp_min(1.0)).mean()


def adversarial_term(
    objective: Objective, fake: torch.Tensor, batch: dict, scores: torch.Tensor | None
) -> torch.Tensor:
    if scores is None:
        raise ValueError("the adversarial term needs D's scores of the output")
    return objective.adversarial.g_loss(scores)


# name -> term; its weight is LossConfig.<name>_weight. The order is the order of the log line.
G_TERMS: dict[str, Callable[..., torch.Tensor]] = {
    "l1": l1_term,
    "mse": mse_term,
    "perceptual": perceptual_term,
    "hint": hint_term,
    "adversarial": adversarial_term,
}


class Objective(nn.Module):
    """Both players' objectives from `LossConfig`; holds the frozen perceptual network (move it with `.to`)."""

    def __init__(self, cfg: LossConfig, *, pretrained: bool = True):
        super().__init__()
        self.weights = {name: float(getattr(cfg, f"{name}_weight")) for name in G_TERMS}
        bad = {k: v for k, v in self.weights.items() if v < 0}
        if bad:
            raise ValueError(
                f"loss weights must be >= 0, got {', '.join(f'loss.{k}_weight={v}' for k, v in bad.items())}"
            )
        if self.weights["l1"] == 0 and self.weights["mse"] == 0:
            raise ValueError("G needs a reconstruction term: set loss.l1_weight or loss.mse_weight above 0")
        self.adversarial = AdversarialLoss(cfg.adversarial)
        self.augment = DiffAugment(cfg.diffaugment)
        self.perceptual = (
            PerceptualLoss(pretrained=pretrained, downsample=cfg.perceptual_downsample)
            if self.weights["perceptual"] > 0
            else None
        )

    @property
    def gan(self) -> bool:
        """Whether D takes part (adversarial weight > 0)."""
        return self.weights["adversarial"] > 0

    def generator(
        self, fake: torch.Tensor, batch: dict[str, torch.Tensor], scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G's weighted objective and its unweighted parts `{"loss/G_<name>": ...}` (terms with weight 0 are
        not computed), plus `"loss/G"`, the weighted total."""
        parts: dict[str, torch.Tensor] = {}
        total = fake.new_zeros((), dtype=torch.float32)
        for name, term in G_TERMS.items():
            weight = self.weights[name]
            if weight == 0:
                continue
            value = term(self, fake, batch, scores)
            parts[f"loss/G_{name}"] = value
            total = total + weight * value
        parts["loss/G"] = total
        return total, parts

    def discriminator(
        self, real_scores: torch.Tensor, fake_scores: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D's objective (real + fake) and its parts, with D's mean scores."""
        real, fake = self.adversarial.d_loss(real_scores, fake_scores)
        return real + fake, {
            "loss/D_real": real,
            "loss/D_fake": fake,
            "D/score_real": real_scores.detach().float().mean(),
            "D/score_fake": fake_scores.detach().float().mean(),
        }
