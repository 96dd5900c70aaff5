"""Losses: MSE reconstruction plus an adversarial term (lsgan by default; vanilla and hinge selectable).

Every loss is computed in float32 whatever the dtype of its inputs (the trainer may run the models
under bf16/fp16 autocast), and returned as a 0-d float32 tensor.

    losses = build_losses(cfg.loss)
    d = losses.discriminator(D(line, color), D(line, fake.detach()))  # d.total, d.real, d.fake
    g = losses.generator(D(line, fake), fake, color)  # g.total, g.adversarial, g.reconstruction
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from colorizer.config import LossConfig

ADVERSARIAL = ("lsgan", "vanilla", "hinge")


class AdversarialLoss:
    """The adversarial objective on raw discriminator scores (any shape, e.g. `(B, 1, h, w)`).

    - `"lsgan"`: least squares, D pushes real scores to 1 and fake to 0, G pushes fake to 1.
    - `"vanilla"`: the original GAN's cross-entropy on logits (non-saturating for G).
    - `"hinge"`: D: `mean(relu(1 - real)) + mean(relu(1 + fake))`; G: `-mean(fake)`.
    """

    def __init__(self, kind: str = "lsgan"):
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


def reconstruction_loss(fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between `(B, 3, H, W)` images in [-1, 1], as a float32 scalar."""
    return F.mse_loss(fake.float(), target.float())


class DiscriminatorLosses(NamedTuple):
    total: torch.Tensor  # (real + fake) / 2: halved as in pix2pix, so D learns slower than G
    real: torch.Tensor
    fake: torch.Tensor


class GeneratorLosses(NamedTuple):
    total: torch.Tensor  # adversarial_weight * adversarial + reconstruction_weight * reconstruction
    adversarial: torch.Tensor  # unweighted
    reconstruction: torch.Tensor  # unweighted


class GANLosses:
    """The weighted objectives of both players. Parts are returned unweighted, for logging."""

    def __init__(
        self,
        *,
        adversarial: str = "lsgan",
        reconstruction_weight: float = 100.0,
        adversarial_weight: float = 1.0,
    ):
        if reconstruction_weight < 0 or adversarial_weight < 0:
            raise ValueError(
                "loss weights must be >= 0, got "
                f"reconstruction_weight={reconstruction_weight}, adversarial_weight={adversarial_weight}"
            )
        self.adversarial = AdversarialLoss(adversarial)
        self.reconstruction_weight = float(reconstruction_weight)
        self.adversarial_weight = float(adversarial_weight)

    def discriminator(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> DiscriminatorLosses:
        """D's loss from its scores on real pairs and on (detached) generated pairs."""
        real, fake = self.adversarial.d_loss(real_scores, fake_scores)
        return DiscriminatorLosses(total=0.5 * (real + fake), real=real, fake=fake)

    def generator(
        self, fake_scores: torch.Tensor, fake: torch.Tensor, target: torch.Tensor
    ) -> GeneratorLosses:
        """G's loss from D's scores on its output `fake` and the distance of `fake` to `target`."""
        adversarial = self.adversarial.g_loss(fake_scores)
        reconstruction = reconstruction_loss(fake, target)
        total = self.adversarial_weight * adversarial + self.reconstruction_weight * reconstruction
        return GeneratorLosses(total=total, adversarial=adversarial, reconstruction=reconstruction)


def build_losses(cfg: LossConfig) -> GANLosses:
    """The losses described by `cfg`."""
    return GANLosses(
        adversarial=cfg.adversarial,
        reconstruction_weight=cfg.reconstruction_weight,
        adversarial_weight=cfg.adversarial_weight,
    )
