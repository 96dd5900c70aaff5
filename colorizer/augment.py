"""DiffAugment (Zhao et al. 2020): differentiable augmentations of every pair the discriminator sees.

Real and generated pairs go through the same random distribution of changes (each sample its own draw), and
G's gradient flows back through them, so D cannot win by memorizing a thousand training images and G is not
pushed to reproduce the augmentations. Policies, as in the paper's code:

- `color`: brightness (+U(-0.5, 0.5)), saturation (x U(0, 2)), contrast (x U(0.5, 1.5)) of the color image;
- `translation`: a shift of up to 1/8 of the size, zero (mid-grey) padding, line art and color alike;
- `cutout`: a square of half the size set to zero, line art and color alike.

Tensors are `(B, C, H, W)` in [-1, 1]. The random draws come from a `torch.Generator` the caller seeds (the
trainer: from the seed, the step and the pass), made for the whole global batch and sliced at `offset`: a
process of a DDP run draws exactly what a single process draws for the same samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


class _Draws:
    """Uniform draws for `b` samples out of `total`, from `generator` on the CPU, moved to `device`."""

    def __init__(
        self, generator: torch.Generator | None, offset: int, b: int, total: int, device: torch.device
    ):
        self.generator, self.offset, self.b, self.total, self.device = generator, offset, b, total, device

    def rand(self, dtype: torch.dtype) -> torch.Tensor:
        r = torch.rand(self.total, generator=self.generator)[self.offset : self.offset + self.b]
        return r.to(self.device, dtype).view(-1, 1, 1, 1)

    def randint(self, low: int, high: int) -> torch.Tensor:
        r = torch.randint(low, high, (self.total,), generator=self.generator)[
            self.offset : self.offset + self.b
        ]
        return r.to(self.device).view(-1, 1, 1)


def _color(x: torch.Tensor, draw: _Draws) -> torch.Tensor:
    x = x + (draw.rand(x.dtype) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (draw.rand(x.dtype) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (draw.rand(x.dtype) + 0.5) + mean


def _translation(x: torch.Tensor, draw: _Draws, ratio: float = 0.125) -> torch.Tensor:
    """Each sample shifted by up to `ratio` of its size, zeros coming in (the paper's zero padding)."""
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = draw.randint(-sy, sy + 1).view(-1).tolist()
    tx = draw.randint(-sx, sx + 1).view(-1).tolist()
    padded = F.pad(x, [sx, sx, sy, sy])
    return torch.stack(
        [padded[i, :, sy + ty[i] : sy + ty[i] + h, sx + tx[i] : sx + tx[i] + w] for i in range(b)]
    )


def _cutout(x: torch.Tensor, draw: _Draws, ratio: float = 0.5) -> torch.Tensor:
    """Each sample with a square of `ratio` of its size, centered anywhere, set to zero."""
    _, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = draw.randint(0, h + (1 - ch % 2)).view(-1, 1, 1) - ch // 2  # (B, 1, 1): the square's top
    ox = draw.randint(0, w + (1 - cw % 2)).view(-1, 1, 1) - cw // 2
    ys = torch.arange(h, device=x.device).view(1, -1, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, -1)
    inside = (ys >= oy) & (ys < oy + ch) & (xs >= ox) & (xs < ox + cw)  # (B, H, W)
    return x * (~inside).to(x.dtype)[:, None]


class DiffAugment:
    """`augment(line, color) -> (line, color)` with the policies named in `policy` ("color,translation,cutout";
    "" is the identity)."""

    def __init__(self, policy: str = "color,translation,cutout"):
        names = [p.strip() for p in policy.split(",") if p.strip()]
        unknown = [p for p in names if p not in POLICIES]
        if unknown:
            raise ValueError(f"loss.diffaugment: unknown {unknown[0]!r}; choose from {', '.join(POLICIES)}")
        self.policies = tuple(names)

    def __bool__(self) -> bool:
        return bool(self.policies)

    def __call__(
        self,
        line: torch.Tensor,
        color: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        offset: int = 0,
        total: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, 1, H, W)` line, `(B, 3, H, W)` color -> the same shapes, augmented. The batch is samples
        `offset .. offset + B` of a global batch of `total` (default B) drawn from `generator`."""
        if not self.policies:
            return line, color
        b = line.shape[0]
        total = b if total is None else total
        if not 0 <= offset <= total - b:
            raise ValueError(f"a batch of {b} at offset {offset} does not fit in a global batch of {total}")
        draw = _Draws(generator, offset, b, total, line.device)
        if "color" in self.policies:
            color = _color(color, draw)
        pair = torch.cat([line, color.to(line.dtype)], dim=1)
        if "translation" in self.policies:
            pair = _translation(pair, draw)
        if "cutout" in self.policies:
            pair = _cutout(pair, draw)
        return pair[:, :1], pair[:, 1:]
