"""The discriminator: a PatchGAN (pix2pix's NLayerDiscriminator) conditioned on the line art.

`D(line, color)` scores overlapping patches of `cat(line, color)`: `(B, 1, H, W)` line art in [-1, 1] and
`(B, 3, H, W)` RGB in [-1, 1] (real or generated) give `(B, 1, h, w)` raw scores (no sigmoid; the loss
decides how to read them). With `layers` stride-2 convs the map is `h = H / 2**layers - 2` for H a multiple
of `2**layers`; `layers=3` is the 70x70 PatchGAN.

    conv 4x4 s2 (no norm) -> LeakyReLU(0.2)
    (layers - 1) x [conv 4x4 s2 -> norm -> LeakyReLU(0.2)]     widths double, capped at 8 * base_width
    conv 4x4 s1 -> norm -> LeakyReLU(0.2)
    conv 4x4 s1 -> 1 channel

`spectral_norm=True` wraps every conv (all `layers + 2`) in torch's spectral norm parametrization and
leaves `norm` as configured: the two are independent choices. Spectral norm alone (SNGAN) is
`norm="none"`; spectral norm with instance norm is SPADE's "spectralinstance".
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from colorizer.config import DiscriminatorConfig
from colorizer.models import NORMS, init_weights, norm_layer

MAX_WIDTH_MULTIPLE = 8  # pix2pix caps the discriminator width at 8 * base_width


class PatchDiscriminator(nn.Module):
    """PatchGAN: `(B, 1, H, W) line, (B, 3, H, W) color -> (B, 1, h, w)` raw scores, one per patch."""

    def __init__(
        self,
        *,
        line_channels: int = 1,
        color_channels: int = 3,
        base_width: int = 64,
        layers: int = 3,
        norm: str = "instance",
        spectral_norm: bool = False,
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
        if layers < 1:
            raise ValueError(f"layers must be at least 1, got {layers}")
        if base_width < 1:
            raise ValueError(f"base_width must be at least 1, got {base_width}")
        self.line_channels = line_channels
        self.color_channels = color_channels
        self.layers = layers
        normed = norm != "none"

        def width(n: int) -> int:
            return base_width * min(2**n, MAX_WIDTH_MULTIPLE)

        body: list[nn.Module] = [
            nn.Conv2d(line_channels + color_channels, base_width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        for n in range(1, layers + 1):
            stride = 2 if n < layers else 1  # the last of these keeps the size (pix2pix)
            body += [
                nn.Conv2d(width(n - 1), width(n), 4, stride=stride, padding=1, bias=not normed),
                norm_layer(norm, width(n)),
                nn.LeakyReLU(0.2),
            ]
        body.append(nn.Conv2d(width(layers), 1, 4, stride=1, padding=1))
        self.body = nn.Sequential(*body)

        init_weights(self)
        if spectral_norm:
            # After init: the parametrization's power iteration starts from the initialized weights.
            for m in self.body:
                if isinstance(m, nn.Conv2d):
                    _spectral_norm(m)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """`(h, w)` of the score map for an `H x W` input.

        Each stride-2 conv halves (flooring), each of the two stride-1 convs loses one pixel.
        """
        for _ in range(self.layers):
            h, w = h // 2, w // 2
        return h - 2, w - 2

    def forward(self, line: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
        # (B, 1, H, W), (B, 3, H, W) -> (B, 1, h, w)
        if line.ndim != 4 or color.ndim != 4:
            raise ValueError(
                f"expected (B, C, H, W) batches, got line {tuple(line.shape)} and color {tuple(color.shape)}"
            )
        if line.shape[1] != self.line_channels or color.shape[1] != self.color_channels:
            raise ValueError(
                f"expected {self.line_channels} line channel(s) and {self.color_channels} color channels, "
                f"got {line.shape[1]} and {color.shape[1]}"
            )
        if line.shape[0] != color.shape[0] or line.shape[2:] != color.shape[2:]:
            raise ValueError(
                f"line {tuple(line.shape)} and color {tuple(color.shape)} must share batch size, H and W"
            )
        h, w = line.shape[2:]
        if min(self.output_size(h, w)) < 1:
            raise ValueError(
                f"input {h}x{w} is too small for a {self.layers}-layer PatchGAN; "
                f"H and W must be at least {3 * 2**self.layers}"
            )
        x = torch.cat([line, color], dim=1)  # (B, 4, H, W)
        return self.body(x)  # (B, 1, h, w)


def build_discriminator(cfg: DiscriminatorConfig) -> PatchDiscriminator:
    """The discriminator described by `cfg` (1 line channel, 3 color channels)."""
    return PatchDiscriminator(
        base_width=cfg.base_width, layers=cfg.layers, norm=cfg.norm, spectral_norm=cfg.spectral_norm
    )
