"""The networks: a U-Net generator and a PatchGAN discriminator, plus the pieces both share.

    from colorizer.models import build_generator, build_discriminator
    G = build_generator(cfg.model.G)      # (B, 5, H, W) -> (B, 3, H, W) in [-1, 1]
    D = build_discriminator(cfg.model.D)  # (B, 1, H, W), (B, 3, H, W) -> (B, 1, h, w) raw scores

Models take explicit keyword arguments; the `build_*` factories are the only place that reads the config.
No model here does I/O, logging or device choice.
"""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("instance", "group", "batch", "none")


def group_count(channels: int, max_groups: int = 32) -> int:
    """The largest group count <= `max_groups` that divides `channels` (GroupNorm needs a divisor)."""
    groups = min(max_groups, channels)
    while channels % groups:
        groups -= 1
    return groups


def norm_layer(kind: str, channels: int) -> nn.Module:
    """A 2-d normalization over `channels` feature maps; `"none"` gives an identity.

    Every kind has a learned affine (scale and shift), so the conv before it needs no bias: a bias in
    front of a mean-subtracting norm is cancelled exactly and would never receive a gradient.
    """
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(group_count(channels), channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {kind!r}")


_NORM_TYPES = (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)
_CONV_TYPES = (nn.Conv2d, nn.ConvTranspose2d)


@torch.no_grad()
def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """pix2pix's "normal" init, in place, over `module` and all its children.

    Conv weights ~ N(0, std), norm scales ~ N(1, std), all biases 0. A conv under spectral norm
    (torch.nn.utils.parametrizations.spectral_norm) has its *original* weight initialized and its
    power-iteration vectors refreshed, so the normalized weight it exposes has spectral norm ~1 from
    the first step instead of being divided by a stale estimate.
    """
    for m in module.modules():
        if isinstance(m, _CONV_TYPES):
            parametrizations = getattr(m, "parametrizations", None)
            if parametrizations is not None and "weight" in parametrizations:
                original = parametrizations.weight.original
                original.normal_(0.0, std)
                for p in parametrizations.weight:
                    _refresh_spectral_norm(p, original)
            else:
                m.weight.normal_(0.0, std)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, _NORM_TYPES) and m.weight is not None:
            m.weight.normal_(1.0, std)
            m.bias.zero_()


def _refresh_spectral_norm(parametrization: nn.Module, weight: torch.Tensor) -> None:
    # torch's _SpectralNorm runs 15 power iterations on the weight it is registered with; after a
    # re-init those vectors belong to another matrix. Redo them on the new weight (same private
    # helpers torch uses at registration); other parametrizations are left alone.
    power = getattr(parametrization, "_power_method", None)
    reshape = getattr(parametrization, "_reshape_weight_to_matrix", None)
    if power is None or reshape is None or not hasattr(parametrization, "_u"):
        return
    power(reshape(weight), 15)


# The submodules import the helpers above, so they are imported after them.
from colorizer.models.discriminator import PatchDiscriminator, build_discriminator  # noqa: E402
from colorizer.models.generator import EfficientUNetGenerator, UNetGenerator, build_generator  # noqa: E402

__all__ = [
    "NORMS",
    "EfficientUNetGenerator",
    "PatchDiscriminator",
    "UNetGenerator",
    "build_discriminator",
    "build_generator",
    "group_count",
    "init_weights",
    "norm_layer",
]
