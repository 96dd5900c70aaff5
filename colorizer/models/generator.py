"""The generator: a pix2pix-style U-Net from (line art, hints, mask) to a color image.

Input `(B, 5, H, W)`, channels in this order:

    line:  1 channel in [-1, 1]  (+1 white paper, -1 black ink)
    hints: 3 channels in [-1, 1] (hint RGB, premultiplied by the mask, 0 where no hint)
    mask:  1 channel in [0, 1]   (hint coverage)

Output `(B, 3, H, W)` RGB in [-1, 1] (tanh). H and W must be multiples of `2**depth`
(`G.multiple`); inference pads other sizes.

Layout for depth D, widths w_i = min(base_width * 2**i, max_width):

    encoder[i]  i = 0..D-1  [LeakyReLU(0.2)] -> conv 4x4 stride 2 -> [norm]  (B, w_i, H/2**(i+1), W/2**(i+1))
    decoder[j]  j = 0..D-1  ReLU -> x2 up -> [norm] [dropout]                 innermost level first
                            x2 up: 4x4 transposed conv, or nearest resize + 3x3 conv ("resize")
                            input: the bottleneck, or cat(previous decoder output, matching encoder output)
                            dropout (when > 0): the DROPOUT_LEVELS decoder levels next to the bottleneck

As in pix2pix the activation opens a level (so the skip carries the pre-activation features), the outermost
encoder level has no activation in front and no norm, and the bottleneck (encoder[D-1], 1x1 for a
2**D input) is not normalized: instance norm of one value is undefined (torch refuses it in training)
and batch norm there would depend on the batch size. The outermost decoder level ends in tanh instead
of a norm.
"""

from __future__ import annotations

import torch
from torch import nn

from colorizer.config import GeneratorConfig
from colorizer.models import NORMS, init_weights, norm_layer

UPSAMPLES = ("transpose", "resize")
DROPOUT_LEVELS = 3  # decoder levels next to the bottleneck that get dropout (pix2pix uses 3)


def _upconv(upsample: str, in_channels: int, out_channels: int, bias: bool) -> list[nn.Module]:
    if upsample == "transpose":
        return [nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=bias)]
    # Nearest, not bilinear: its CUDA backward is deterministic (bilinear's is not), and the 3x3 conv
    # that follows smooths it; either way there is no checkerboard from uneven kernel overlap.
    return [
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=bias),
    ]


class UNetGenerator(nn.Module):
    """U-Net encoder-decoder with skip connections: `(B, 5, H, W) -> (B, 3, H, W)` in [-1, 1].

    `encoder` is an `nn.ModuleList` ordered outermost (full resolution) first; freezing "the first k
    encoder levels" means `encoder[:k]` (see `freeze_encoder`). `decoder` is ordered as it runs,
    innermost first. Batch norm makes `train()` and `eval()` differ (batch statistics vs running
    averages); dropout, when > 0, acts in `train()` only.
    """

    def __init__(
        self,
        *,
        in_channels: int = 5,
        out_channels: int = 3,
        base_width: int = 64,
        depth: int = 7,
        max_width: int = 512,
        norm: str = "instance",
        upsample: str = "resize",
        dropout: float = 0.0,
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
        if upsample not in UPSAMPLES:
            raise ValueError(f"upsample must be one of {', '.join(UPSAMPLES)}; got {upsample!r}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        if base_width < 1 or max_width < base_width:
            raise ValueError(f"need 1 <= base_width <= max_width, got {base_width} and {max_width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        self.multiple = 2**depth
        self.widths = [min(base_width * 2**i, max_width) for i in range(depth)]
        normed = norm != "none"

        encoder = []
        for i, width in enumerate(self.widths):
            outermost, innermost = i == 0, i == depth - 1
            has_norm = normed and not outermost and not innermost
            layers: list[nn.Module] = [] if outermost else [nn.LeakyReLU(0.2)]
            prev = in_channels if outermost else self.widths[i - 1]
            layers.append(nn.Conv2d(prev, width, 4, stride=2, padding=1, bias=not has_norm))
            if has_norm:
                layers.append(norm_layer(norm, width))
            encoder.append(nn.Sequential(*layers))
        self.encoder = nn.ModuleList(encoder)

        decoder = []
        for i in reversed(range(depth)):  # level i brings H/2**(i+1) back to H/2**i
            outermost, innermost = i == 0, i == depth - 1
            in_width = self.widths[i] if innermost else 2 * self.widths[i]
            out_width = out_channels if outermost else self.widths[i - 1]
            has_norm = normed and not outermost
            layers = [nn.ReLU(), *_upconv(upsample, in_width, out_width, bias=not has_norm)]
            if outermost:
                layers.append(nn.Tanh())
            else:
                if has_norm:
                    layers.append(norm_layer(norm, out_width))
                if dropout > 0 and i >= depth - DROPOUT_LEVELS:
                    layers.append(nn.Dropout(dropout))
            decoder.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(decoder)

        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 5, H, W) -> (B, 3, H, W)
        if x.ndim != 4:
            raise ValueError(f"expected a (B, {self.in_channels}, H, W) batch, got shape {tuple(x.shape)}")
        _, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} input channels (line 1 + hint RGB 3 + mask 1), got {c}"
            )
        if h % self.multiple or w % self.multiple:
            raise ValueError(
                f"H and W must be divisible by {self.multiple} (2**depth), got {h}x{w}; "
                "pad the input (inference pads automatically)"
            )
        skips = []
        for level in self.encoder:
            x = level(x)  # (B, w_i, H / 2**(i+1), W / 2**(i+1))
            skips.append(x)
        x = skips.pop()  # bottleneck: (B, w_{D-1}, H / 2**D, W / 2**D)
        for j, level in enumerate(self.decoder):  # level i = D-1-j
            if j > 0:
                x = torch.cat([x, skips.pop()], dim=1)  # (B, 2 * w_i, H / 2**(i+1), W / 2**(i+1))
            x = level(x)  # (B, w_{i-1}, H / 2**i, W / 2**i); the last level gives (B, 3, H, W)
        return x

    def freeze_encoder(self, levels: int) -> None:
        """Stop gradients to the parameters of the `levels` outermost encoder levels (fine-tuning).

        The other encoder levels are made trainable. Batch-norm running averages in the frozen levels
        still update in `train()` mode.
        """
        if not 0 <= levels <= self.depth:
            raise ValueError(f"levels must be in [0, {self.depth}] (the generator's depth), got {levels}")
        for i, level in enumerate(self.encoder):
            level.requires_grad_(i >= levels)


class EfficientUNetGenerator(nn.Module):
    """A U-Net whose encoder is EfficientNet-Lite0 (ImageNet-pretrained when its weights are loaded, see
    colorizer.pretrained): `(B, 5, H, W) -> (B, 3, H, W)` in [-1, 1], H and W multiples of 32.

    The line art enters through the pretrained stem as a grey RGB image; hints and mask through a small stem
    of their own (zero at init, so the pretrained features start undisturbed) added to it. The decoder goes
    back up through the encoder's five feature maps (strides 32 -> 2) and the input itself (stride 1), each
    level: x2 nearest resize, concatenate the skip, 3x3 conv, norm, ReLU; a 3x3 conv and tanh at the end.

    The encoder's batch norms keep their ImageNet statistics (always in eval mode): training batches of a
    few line drawings would only make them noisy, and `train()` and `eval()` then compute the same thing.
    """

    def __init__(
        self,
        *,
        in_channels: int = 5,
        out_channels: int = 3,
        decoder_widths: tuple[int, ...] = (96, 64, 48, 32, 24),
        norm: str = "group",
    ):
        from colorizer.models.efficientnet import STEM_WIDTH, TAP_WIDTHS, EfficientNetLite0

        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
        if len(decoder_widths) != len(TAP_WIDTHS):
            raise ValueError(
                f"decoder_widths needs {len(TAP_WIDTHS)} widths (strides 16 to 1), got {decoder_widths}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.multiple = 32
        self.encoder = EfficientNetLite0()
        self.hint_stem = nn.Conv2d(in_channels - 1, STEM_WIDTH, 3, stride=2, padding=1, bias=False)
        skips = list(reversed(TAP_WIDTHS[:-1])) + [in_channels]  # strides 16, 8, 4, 2, 1
        prev = TAP_WIDTHS[-1]
        decoder = []
        for width, skip in zip(decoder_widths, skips, strict=True):
            decoder.append(
                nn.Sequential(
                    nn.Conv2d(prev + skip, width, 3, padding=1, bias=norm == "none"),
                    norm_layer(norm, width),
                    nn.ReLU(),
                )
            )
            prev = width
        self.decoder = nn.ModuleList(decoder)
        self.to_rgb = nn.Conv2d(prev, out_channels, 3, padding=1)
        init_weights(self.decoder)
        init_weights(self.to_rgb)
        nn.init.zeros_(self.hint_stem.weight)

    def train(self, mode: bool = True) -> EfficientUNetGenerator:
        super().train(mode)
        for m in self.encoder.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 5, H, W) -> (B, 3, H, W)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected a (B, {self.in_channels}, H, W) batch (line 1 + hint RGB 3 + mask 1), got {tuple(x.shape)}"
            )
        h, w = x.shape[2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(
                f"H and W must be divisible by {self.multiple}, got {h}x{w}; pad the input (inference pads)"
            )
        line = x[:, :1]
        stem = self.encoder.stem(line.expand(-1, 3, -1, -1)) + self.hint_stem(x[:, 1:])  # (B, 32, H/2, W/2)
        features = self.encoder.trunk(stem)  # strides 2, 4, 8, 16, 32
        y = features[-1]
        for level, skip in zip(self.decoder, [*reversed(features[:-1]), x], strict=True):
            y = nn.functional.interpolate(y, scale_factor=2.0, mode="nearest")
            y = level(torch.cat([y, skip], dim=1))
        return torch.tanh(self.to_rgb(y))

    def freeze_encoder(self, levels: int) -> None:
        """Stop gradients to the stem and the encoder blocks up to its `levels`-th feature map (0..5)."""
        from colorizer.models.efficientnet import TAPS

        if not 0 <= levels <= len(TAPS):
            raise ValueError(f"levels must be in [0, {len(TAPS)}], got {levels}")
        last = TAPS[levels - 1] if levels else -1
        self.encoder._conv_stem.requires_grad_(levels == 0)
        self.encoder._bn0.requires_grad_(levels == 0)
        for i, block in enumerate(self.encoder._blocks):
            block.requires_grad_(i > last)


def build_generator(cfg: GeneratorConfig) -> UNetGenerator | EfficientUNetGenerator:
    """The generator described by `cfg` (5 input channels, 3 output channels), randomly initialized (an
    efficientnet_lite0 encoder gets its ImageNet weights from colorizer.pretrained, by the trainer)."""
    if cfg.encoder == "efficientnet_lite0":
        return EfficientUNetGenerator(decoder_widths=tuple(cfg.decoder_widths), norm=cfg.norm)
    return UNetGenerator(
        base_width=cfg.base_width,
        depth=cfg.depth,
        max_width=cfg.max_width,
        norm=cfg.norm,
        upsample=cfg.upsample,
        dropout=cfg.dropout,
    )
