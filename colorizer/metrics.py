"""Image quality metrics for colorization, on `(B, 3, H, W)` RGB tensors in [0, 1].

- `psnr`: peak signal-to-noise ratio in dB (higher is better; identical images give +inf, capped at 100).
- `ssim`: structural similarity on luma, Gaussian window 11 px, sigma 1.5 (Wang et al. 2004), in [-1, 1].
- `delta_e2000`: CIE Delta E 2000 between two colors per pixel (sRGB D65 -> CIE Lab), 0 = identical,
  about 2.3 = just noticeable; `delta_e_at_hints` averages it where the hint mask is on.
- `colorfulness`: Hasler & Suesstrunk (2003) M3, 0 for grey images, ~100+ for very colorful ones.
- `fid`: Frechet distance between Inception-v3 pool features, only with weights the user provides.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

MAX_PSNR_DB = 100.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of `(B, C, H, W)` tensors in [0, 1]; identical images give MAX_PSNR_DB."""
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp(max=MAX_PSNR_DB)


def _luma(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True) if x.shape[1] == 3 else x


def ssim(a: torch.Tensor, b: torch.Tensor, *, window_px: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM of `(B, 3|1, H, W)` tensors in [0, 1], on luma (valid-region Gaussian window)."""
    x, y = _luma(a.float()), _luma(b.float())
    side = min(x.shape[-1], x.shape[-2])
    if side < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 px, got {tuple(x.shape[-2:])}")
    if side < window_px:  # small images: a smaller window, its sigma scaled alike
        sigma, window_px = sigma * side / window_px, side if side % 2 else side - 1
    coords = torch.arange(window_px, dtype=torch.float32, device=x.device) - (window_px - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = (g / g.sum()).view(1, 1, 1, -1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, g), g.transpose(-1, -2))

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB `(..., 3, H, W)` in [0, 1] -> CIE Lab (D65), L in [0, 100]."""
    rgb = rgb.float().clamp(0, 1)
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = torch.tensor(
        [
            [0.4124564, 0.3575761, 0.1804375],
            [0.2126729, 0.7151522, 0.0721750],
            [0.0193339, 0.1191920, 0.9503041],
        ],
        dtype=lin.dtype,
        device=lin.device,
    )
    xyz = torch.einsum("ij,...jhw->...ihw", m, lin)
    white = torch.tensor([0.95047, 1.0, 1.08883], dtype=lin.dtype, device=lin.device).view(3, 1, 1)
    t = xyz / white
    eps, kappa = 216 / 24389, 24389 / 27
    f = torch.where(t > eps, t.clamp_min(1e-12) ** (1 / 3), (kappa * t + 16) / 116)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def delta_e2000(lab1: torch.Tensor, lab2: torch.Tensor) -> torch.Tensor:
    """CIEDE2000 between Lab tensors `(..., 3, H, W)` -> `(..., H, W)` (Sharma, Wu, Dalal 2005)."""
    # float64: the hue terms flip at exactly 180 degrees apart, where float32 rounding picks the wrong side
    L1, a1, b1 = lab1.double().unbind(-3)
    L2, a2, b2 = lab2.double().unbind(-3)
    C1, C2 = torch.hypot(a1, b1), torch.hypot(a2, b2)
    Cm = (C1 + C2) / 2
    G = 0.5 * (1 - torch.sqrt(Cm**7 / (Cm**7 + 25.0**7)))
    a1p, a2p = (1 + G) * a1, (1 + G) * a2
    C1p, C2p = torch.hypot(a1p, b1), torch.hypot(a2p, b2)
    h1p = torch.rad2deg(torch.atan2(b1, a1p)) % 360
    h2p = torch.rad2deg(torch.atan2(b2, a2p)) % 360
    dLp = L2 - L1
    dCp = C2p - C1p
    dh = h2p - h1p
    dh = torch.where(dh > 180, dh - 360, torch.where(dh < -180, dh + 360, dh))
    dh = torch.where(C1p * C2p == 0, torch.zeros_like(dh), dh)
    dHp = 2 * torch.sqrt(C1p * C2p) * torch.sin(torch.deg2rad(dh / 2))
    Lpm = (L1 + L2) / 2
    Cpm = (C1p + C2p) / 2
    hsum = h1p + h2p
    hpm = torch.where(
        C1p * C2p == 0,
        hsum,
        torch.where(
            (h1p - h2p).abs() <= 180, hsum / 2, torch.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2)
        ),
    )
    T = (
        1
        - 0.17 * torch.cos(torch.deg2rad(hpm - 30))
        + 0.24 * torch.cos(torch.deg2rad(2 * hpm))
        + 0.32 * torch.cos(torch.deg2rad(3 * hpm + 6))
        - 0.20 * torch.cos(torch.deg2rad(4 * hpm - 63))
    )
    d_theta = 30 * torch.exp(-(((hpm - 275) / 25) ** 2))
    Rc = 2 * torch.sqrt(Cpm**7 / (Cpm**7 + 25.0**7))
    Sl = 1 + 0.015 * (Lpm - 50) ** 2 / torch.sqrt(20 + (Lpm - 50) ** 2)
    Sc = 1 + 0.045 * Cpm
    Sh = 1 + 0.015 * Cpm * T
    Rt = -torch.sin(torch.deg2rad(2 * d_theta)) * Rc
    de = torch.sqrt((dLp / Sl) ** 2 + (dCp / Sc) ** 2 + (dHp / Sh) ** 2 + Rt * (dCp / Sc) * (dHp / Sh))
    return de.float()


def delta_e_at_hints(
    output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5
) -> torch.Tensor:
    """Mean Delta E 2000 per image where `mask (B, 1, H, W) > threshold` (NaN for an image without hints)."""
    de = delta_e2000(rgb_to_lab(output), rgb_to_lab(target))  # (B, H, W)
    m = (mask[:, 0] > threshold).float()
    count = m.flatten(1).sum(1)
    total = (de * m).flatten(1).sum(1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def colorfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler & Suesstrunk colorfulness per image of `(B, 3, H, W)` in [0, 1] (computed on 0..255)."""
    r, g, b = (rgb.float() * 255).unbind(1)
    rg = (r - g).flatten(1)
    yb = (0.5 * (r + g) - b).flatten(1)
    std = torch.sqrt(rg.var(1, unbiased=False) + yb.var(1, unbiased=False))
    mean = torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return std + 0.3 * mean


# --------------------------------------------------------------------------------------------------
# FID (only with Inception weights the user has; nothing is downloaded)


def load_inception(weights_path: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """torchvision's Inception-v3 with the user's state dict (a `.pth` of tensors, read with weights_only)."""
    from torchvision.models import inception_v3

    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("AuxLogits")]:
        raise ValueError(
            f"{weights_path}: not torchvision Inception-v3 weights (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    net.fc = torch.nn.Identity()
    return net.eval().to(device)


@torch.no_grad()
def inception_features(net: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """`(B, 3, H, W)` in [0, 1] -> `(B, 2048)` pool features (ImageNet normalization, 299 px)."""
    x = F.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=x.device).view(1, 3, 1, 1)
    out = net((x - mean) / std)
    out = out.logits if hasattr(out, "logits") else out
    return out.double().cpu().numpy()


def frechet_distance(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """FID between two feature sets `(N, D)`: |mu1-mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2)."""
    mu1, mu2 = feats1.mean(0), feats2.mean(0)
    s1, s2 = np.cov(feats1, rowvar=False), np.cov(feats2, rowvar=False)
    # Tr((S1 S2)^1/2) = sum of sqrt of the eigenvalues of S1^1/2 S2 S1^1/2 (symmetric PSD: stable with eigh)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    eig = np.linalg.eigvalsh(root1 @ s2 @ root1)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0, None)).sum())
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def summarize(values: list[float]) -> float:
    """Mean of the finite values (NaN when none)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(sum(finite) / len(finite)) if finite else float("nan")
