"""Image-quality metrics on RGB 0..255, per image (then averaged by the caller).

* L1: mean absolute difference (0..255 scale).
* PSNR: ``10 · log10(255² / MSE)``; identical images (MSE 0) give ``PSNR_CAP`` (100 dB) instead of inf.
* SSIM: the standard Gaussian-window SSIM of Wang et al. (2004): 11×11 Gaussian window, σ = 1.5,
  K1 = 0.01, K2 = 0.03, L = 255, population (biased) local statistics, computed on the "valid" part of the
  image (no padding: the 5-pixel border is left out, as in the reference MATLAB ``ssim_index``), per channel
  and averaged over the RGB channels. Written in torch (``conv2d`` with a separable window), float64.

Model outputs in [−1, 1] are mapped to 0..255 by ``(y + 1) / 2 · 255`` (not quantised).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

PSNR_CAP = 100.0


def to_255(y: torch.Tensor) -> torch.Tensor:
    """Model range [−1, 1] → float 0..255 (clamped)."""
    return (y.double().clamp(-1, 1) + 1) * 0.5 * 255.0


def _as_batch(a) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).double()
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t[None]
    return t


def l1(a, b) -> torch.Tensor:
    """Per-image mean absolute error; inputs ``(N, C, H, W)`` (or one image) on 0..255."""
    a, b = _as_batch(a), _as_batch(b)
    return (a - b).abs().flatten(1).mean(1)


def psnr(a, b, data_range: float = 255.0) -> torch.Tensor:
    """Per-image PSNR in dB (capped at ``PSNR_CAP``)."""
    a, b = _as_batch(a), _as_batch(b)
    mse = ((a - b) ** 2).flatten(1).mean(1)
    out = torch.full_like(mse, PSNR_CAP)
    nz = mse > 0
    out[nz] = (10 * torch.log10(data_range**2 / mse[nz])).clamp(max=PSNR_CAP)
    return out


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    a, b, data_range: float = 255.0, win: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03
) -> torch.Tensor:
    """Per-image SSIM (mean over the valid map and over channels)."""
    a, b = _as_batch(a), _as_batch(b)
    n, c, h, w = a.shape
    if h < win or w < win:
        raise ValueError(f"SSIM needs images of at least {win}x{win}, got {w}x{h}")
    g = gaussian_window(win, sigma)
    gx = g.view(1, 1, 1, win).repeat(c, 1, 1, 1)
    gy = g.view(1, 1, win, 1).repeat(c, 1, 1, 1)

    def filt(t):
        return F.conv2d(F.conv2d(t, gx, groups=c), gy, groups=c)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_a, mu_b = filt(a), filt(b)
    s_aa = filt(a * a) - mu_a**2
    s_bb = filt(b * b) - mu_b**2
    s_ab = filt(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * s_ab + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2)
    return (num / den).flatten(2).mean(2).mean(1)


def image_metrics(pred_255, truth_255) -> dict[str, np.ndarray]:
    """``{"psnr", "ssim", "l1"}`` per image as numpy arrays."""
    return {
        "psnr": psnr(pred_255, truth_255).numpy(),
        "ssim": ssim(pred_255, truth_255).numpy(),
        "l1": l1(pred_255, truth_255).numpy(),
    }


def summarize(values: list[float] | np.ndarray) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()) if v.size else math.nan
