"""70×70 PatchGAN discriminator (Pix2Pix), state-dict layout of the SAR2Optical project.

Keys are ``model.model.0.conv_block.0.weight`` … ``model.model.4.weight``: the attribute ``model`` is a
:class:`PatchGANBody` whose own ``model`` is an ``nn.Sequential`` of four :class:`DiscBlock` (each a
``conv_block`` Sequential) followed by the final ``Conv2d(512, 1, 4, 1, 1)``. Written by hand: a fixed, tiny
published architecture in plain ``torch.nn``.

Blocks (``ndf=64``): C64 (no norm, with bias, stride 2) → C128 (s2) → C256 (s2) → C512 (s1), each
``Conv2d(k4, p1)`` → ``BatchNorm2d`` → ``LeakyReLU(0.2)``; convolutions after the first have no bias. The
output is a map of *logits* (no sigmoid; use ``BCEWithLogitsLoss``), 30×30 for a 256² input, each logit
seeing a 70×70 receptive field. 2,768,705 parameters for 3 + 3 input channels.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DiscBlock", "PatchGANBody", "PatchGAN"]


class DiscBlock(nn.Module):
    """``Conv2d(k4, p1)`` [→ ``BatchNorm2d``] → ``LeakyReLU(0.2)`` in ``conv_block``."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2, use_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel_size=4, stride=stride, padding=1, bias=not use_norm)
        ]
        if use_norm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.2))
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x)


class PatchGANBody(nn.Module):
    """Holds the ``model`` Sequential (four blocks and the final 1-channel convolution)."""

    def __init__(self, in_channels: int = 6, ndf: int = 64):
        super().__init__()
        self.model = nn.Sequential(
            DiscBlock(in_channels, ndf, stride=2, use_norm=False),
            DiscBlock(ndf, ndf * 2, stride=2),
            DiscBlock(ndf * 2, ndf * 4, stride=2),
            DiscBlock(ndf * 4, ndf * 8, stride=1),
            nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=1, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PatchGAN(nn.Module):
    """Conditional 70×70 PatchGAN on ``concat(SAR, optical)``.

    ``forward(sar, optical)`` concatenates the two tensors along channels (SAR first);
    ``forward(x)`` with a single tensor takes an already concatenated input with ``in_channels`` channels.
    Returns logits of shape ``(N, 1, H/8 - 2, W/8 - 2)``.
    """

    def __init__(self, in_channels: int = 6, ndf: int = 64):
        super().__init__()
        self.in_channels = in_channels
        self.model = PatchGANBody(in_channels, ndf)

    def forward(self, sar: torch.Tensor, optical: torch.Tensor | None = None) -> torch.Tensor:
        x = sar if optical is None else torch.cat([sar, optical], 1)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"PatchGAN expects {self.in_channels} input channels, got {x.shape[1]}")
        return self.model(x)
