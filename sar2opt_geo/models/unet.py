"""Pix2Pix U-Net generator, state-dict compatible with the SAR2Optical project.

The layout (attribute names, ``conv_block`` Sequentials, channel plan, skip order) reproduces the published
SAR2Optical generator so that its ``state_dict`` files load strictly: ``encoder.enc1..enc8``,
``decoder.dec1..dec8`` and ``head``. Written by hand because it is a fixed published architecture (no
library ships it); it is plain ``torch.nn``.

Encoder (C64-C128-C256-C512-C512-C512-C512-C512 for ``ngf=64``): ``Conv2d(k4, s2, p1)`` → ``BatchNorm2d`` →
``LeakyReLU(0.2)``; ``enc1`` has no norm and a bias. Decoder (CD512-CD1024-CD1024-C1024-C1024-C512-C256-C128):
``ConvTranspose2d(k4, s2, p1)`` (or, in the *upsample* variant, ``Upsample(×2)`` + ``Conv2d(k3, p1)`` to avoid
checkerboard artifacts) → ``BatchNorm2d`` → ``Dropout(0.5)`` (``dec1``-``dec3``) → ``ReLU``. After each of
``dec1``..``dec7`` the output is concatenated *after* the mirror encoder activation
(``cat([skip, up], 1)``). The head is ``Conv2d(ngf, out, 3, 1, 1)`` → ``Tanh``.

The tile size must be a multiple of 256 (8 stride-2 stages). At 256² ``enc8`` produces a 1×1 map followed by
BatchNorm: this is the published architecture and is kept as is (inference runs in eval mode, where BatchNorm
uses its running statistics).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "DownsamplingBlock",
    "UpsamplingBlock",
    "UnetEncoder",
    "UnetDecoder",
    "UnetGenerator",
    "UnetGeneratorUpsample",
]

UPSAMPLE_MODES = ("nearest", "bilinear", "bicubic")


class DownsamplingBlock(nn.Module):
    """``Conv2d(k4, s2, p1)`` [→ ``BatchNorm2d``] → ``LeakyReLU(0.2)`` held in ``conv_block``."""

    def __init__(self, c_in: int, c_out: int, use_norm: bool = True, negative_slope: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=not use_norm)
        ]
        if use_norm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(negative_slope))
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x)


class UpsamplingBlock(nn.Module):
    """Up-convolution → ``BatchNorm2d`` [→ ``Dropout(0.5)``] → ``ReLU`` held in ``conv_block``.

    With ``use_upsampling`` the up-convolution is ``Sequential(Upsample(×2, mode), Conv2d(k3, s1, p1))``
    (keys ``conv_block.0.1.weight``), otherwise ``ConvTranspose2d(k4, s2, p1)`` (``conv_block.0.weight``).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        use_dropout: bool = False,
        use_upsampling: bool = False,
        mode: str = "nearest",
    ):
        super().__init__()
        if use_upsampling:
            if mode not in UPSAMPLE_MODES:
                raise ValueError(f"upsample mode must be one of {UPSAMPLE_MODES}, got {mode!r}")
            up: nn.Module = nn.Sequential(
                nn.Upsample(scale_factor=2, mode=mode),
                nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1, bias=False),
            )
        else:
            up = nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=False)
        layers: list[nn.Module] = [up, nn.BatchNorm2d(c_out)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers.append(nn.ReLU())
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x)


class UnetEncoder(nn.Module):
    """Eight stride-2 blocks; ``forward`` returns the activations deepest first ``[x8, x7, ..., x1]``."""

    def __init__(self, in_channels: int = 3, ngf: int = 64):
        super().__init__()
        mult = (1, 2, 4, 8, 8, 8, 8, 8)
        c_prev = in_channels
        for i, m in enumerate(mult, start=1):
            setattr(self, f"enc{i}", DownsamplingBlock(c_prev, ngf * m, use_norm=i > 1))
            c_prev = ngf * m

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i in range(1, 9):
            x = getattr(self, f"enc{i}")(x)
            feats.append(x)
        return feats[::-1]


class UnetDecoder(nn.Module):
    """Eight up blocks with U-Net skips; input is the encoder output list (deepest first)."""

    def __init__(self, ngf: int = 64, use_upsampling: bool = False, mode: str = "nearest"):
        super().__init__()
        plan = [  # (c_in, c_out, dropout)
            (8 * ngf, 8 * ngf, True),
            (16 * ngf, 8 * ngf, True),
            (16 * ngf, 8 * ngf, True),
            (16 * ngf, 8 * ngf, False),
            (16 * ngf, 4 * ngf, False),
            (8 * ngf, 2 * ngf, False),
            (4 * ngf, ngf, False),
            (2 * ngf, ngf, False),
        ]
        for i, (c_in, c_out, drop) in enumerate(plan, start=1):
            block = UpsamplingBlock(c_in, c_out, use_dropout=drop, use_upsampling=use_upsampling, mode=mode)
            setattr(self, f"dec{i}", block)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[0]
        for i in range(1, 8):
            x = torch.cat([feats[i], getattr(self, f"dec{i}")(x)], 1)
        return self.dec8(x)


class UnetGenerator(nn.Module):
    """SAR2Optical U-Net generator (Pix2Pix, 8 levels), output in [-1, 1] through ``Tanh``.

    Args:
        in_channels: input channels (SAR2Optical checkpoints use 3: one SAR band replicated).
        out_channels: output channels (3 for RGB).
        ngf: width of the first layer (64 in the published model; small values for tests).
        use_upsampling: use the ``Upsample`` + ``Conv2d`` decoder (``unet_sar2optical_upsample``).
        upsample_mode: ``nearest`` (SAR2Optical default), ``bilinear`` or ``bicubic``; not stored in the
            weights, so it must be recorded in the checkpoint's ``arch_args``.

    With ``in_channels=3, ngf=64`` the model has 54,541,827 parameters and 94 state-dict entries.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        use_upsampling: bool = False,
        upsample_mode: str = "nearest",
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.ngf = ngf
        self.encoder = UnetEncoder(in_channels, ngf)
        self.decoder = UnetDecoder(ngf, use_upsampling=use_upsampling, mode=upsample_mode)
        self.head = nn.Sequential(nn.Conv2d(ngf, out_channels, kernel_size=3, stride=1, padding=1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encoder(x)))


class UnetGeneratorUpsample(UnetGenerator):
    """SAR2Optical generator with the upsampling decoder (``decoder.decN.conv_block.0.1.weight``)."""

    def __init__(
        self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, upsample_mode: str = "nearest"
    ):
        super().__init__(in_channels, out_channels, ngf, use_upsampling=True, upsample_mode=upsample_mode)
