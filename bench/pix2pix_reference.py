"""pix2pix's training step as pix2pix defines it (junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py and
models/pix2pix_model.py), rewritten here so the benchmark can time it beside ours in the same process.

- G: `UnetGenerator` built from nested `UnetSkipConnectionBlock`s: 4x4 stride-2 convs down, 4x4 stride-2
  transposed convs up, BatchNorm, Dropout(0.5) in the innermost `num_downs - 5` levels, tanh; `unet_128` is
  7 downsamplings, `unet_256` 8.
- D: `NLayerDiscriminator` (the 70x70 PatchGAN, 3 layers), BatchNorm, on cat(input, output).
- Init: normal(0, 0.02) for convs, normal(1, 0.02) for BatchNorm scales.
- Step (`optimize_parameters`): fake = G(A); D: 0.5 * (BCE(D(A, fake.detach()), 0) + BCE(D(A, B), 1)) with
  D trainable; G: BCE(D(A, fake), 1) + 100 * L1(fake, B) with D frozen; Adam(2e-4, betas 0.5, 0.999); fp32.

Only the step is reproduced (no data loading, no visualizer). Checked against the upstream code by reading it.
"""

from __future__ import annotations

import torch
from torch import nn


class UnetSkipConnectionBlock(nn.Module):
    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False,
                 use_dropout=False):  # fmt: skip
        super().__init__()
        self.outermost = outermost
        input_nc = input_nc or outer_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=False)
        downrelu = nn.LeakyReLU(0.2, True)
        downnorm = nn.BatchNorm2d(inner_nc)
        uprelu = nn.ReLU(True)
        upnorm = nn.BatchNorm2d(outer_nc)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=False)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(
                inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=False
            )
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            if use_dropout:
                model += [nn.Dropout(0.5)]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    def __init__(self, input_nc, output_nc, num_downs, ngf=64, use_dropout=True):
        super().__init__()
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, use_dropout=use_dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block)
        self.model = UnetSkipConnectionBlock(
            output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True
        )

    def forward(self, x):
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    def __init__(self, input_nc, ndf=64, n_layers=3):
        super().__init__()
        seq = [nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]  # fmt: skip
        prev, mult = mult, min(2**n_layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=False),
                nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True),
                nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1)]  # fmt: skip
        self.model = nn.Sequential(*seq)

    def forward(self, x):
        return self.model(x)


def init_normal(net: nn.Module, gain: float = 0.02) -> None:
    for m in net.modules():
        name = m.__class__.__name__
        if hasattr(m, "weight") and ("Conv" in name or "Linear" in name):
            nn.init.normal_(m.weight.data, 0.0, gain)
            if getattr(m, "bias", None) is not None:
                nn.init.constant_(m.bias.data, 0.0)
        elif "BatchNorm2d" in name:
            nn.init.normal_(m.weight.data, 1.0, gain)
            nn.init.constant_(m.bias.data, 0.0)


class Pix2Pix:
    """`step(A, B)`: one pix2pix optimization step on `A (B, in_nc, H, W)` -> `B (B, 3, H, W)`."""

    def __init__(self, *, size_px: int, input_nc: int = 5, output_nc: int = 3, ngf: int = 64, ndf: int = 64):
        num_downs = {128: 7, 256: 8}[size_px]
        self.G = UnetGenerator(input_nc, output_nc, num_downs, ngf, use_dropout=True)
        self.D = NLayerDiscriminator(input_nc + output_nc, ndf, 3)
        init_normal(self.G)
        init_normal(self.D)
        self.gan = nn.BCEWithLogitsLoss()
        self.l1 = nn.L1Loss()
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.G.train()
        self.D.train()

    def step(self, A: torch.Tensor, B: torch.Tensor) -> None:
        fake = self.G(A)
        for p in self.D.parameters():
            p.requires_grad = True
        self.opt_D.zero_grad()
        pred_fake = self.D(torch.cat((A, fake), 1).detach())
        loss_fake = self.gan(pred_fake, torch.zeros_like(pred_fake))
        pred_real = self.D(torch.cat((A, B), 1))
        loss_real = self.gan(pred_real, torch.ones_like(pred_real))
        ((loss_fake + loss_real) * 0.5).backward()
        self.opt_D.step()
        for p in self.D.parameters():
            p.requires_grad = False
        self.opt_G.zero_grad()
        pred_fake = self.D(torch.cat((A, fake), 1))
        loss_G = self.gan(pred_fake, torch.ones_like(pred_fake)) + self.l1(fake, B) * 100.0
        loss_G.backward()
        self.opt_G.step()
