"""The ``unet_256`` generator of *pytorch-CycleGAN-and-pix2pix*, with its exact state-dict layout.

``latest_net_G.pth`` files of that project store keys such as ``model.model.0.weight`` and
``model.model.1.model.1.weight``: the generator's ``model`` is the outermost ``UnetSkipConnectionBlock``,
whose own ``model`` is an ``nn.Sequential`` that nests the next block at index 1 (outermost) or 3 (middle
blocks). This module re-creates that recursion (written by hand because the original is not a package one
could depend on) so those files load strictly:

* outermost: ``[Conv2d(input_nc, ngf, 4, 2, 1, bias=use_bias)] + [submodule] +
  [ReLU, ConvTranspose2d(2·ngf, output_nc, 4, 2, 1, bias=True), Tanh]``
* middle: ``[LeakyReLU(0.2), Conv2d(outer, inner, bias=use_bias), norm(inner)] + [submodule] +
  [ReLU, ConvTranspose2d(2·inner, outer, bias=use_bias), norm(outer)]`` (+ ``Dropout(0.5)`` at the end of
  the three middle 8·ngf blocks when ``use_dropout``)
* innermost: ``[LeakyReLU(0.2), Conv2d(8·ngf, 8·ngf, bias=use_bias), ReLU,
  ConvTranspose2d(8·ngf, 8·ngf, bias=use_bias), norm]``
* non-outermost blocks return ``cat([x, model(x)], 1)``.

``use_bias``: the original sets ``use_bias = (norm_layer == InstanceNorm2d)``, so with the default
``norm="batch"`` every convolution is bias-free except the outermost up-convolution (whose bias is left at
PyTorch's default ``True``); with ``norm="instance"`` (``affine=False``, no running statistics) all
convolutions have a bias.

In-place activations: the original uses ``LeakyReLU(0.2, inplace=True)`` as the first layer of each
non-outermost block, which rewrites ``x`` before ``torch.cat([x, self.model(x)], 1)`` reads it, so its skip
branch carries ``LeakyReLU(x)``. That concatenation always feeds the parent block's ``ReLU`` first, and
``ReLU(LeakyReLU(x)) == ReLU(x)``, so plain (not in-place) activations give identical outputs and gradients;
they are used here (safe for autograd, ONNX export and LoRA). The test suite checks the equivalence against an
independent re-implementation that keeps the in-place layers.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["UnetSkipConnectionBlock", "Pix2PixUnet256"]

NORMS = ("batch", "instance")


def _norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class UnetSkipConnectionBlock(nn.Module):
    """One level of the recursive U-Net (see the module docstring for the layer lists)."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: str = "batch",
        use_dropout: bool = False,
    ):
        super().__init__()
        self.outermost = outermost
        use_bias = norm == "instance"
        if input_nc is None:
            input_nc = outer_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers = [downconv, submodule, nn.ReLU(), upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            layers = [nn.LeakyReLU(0.2), downconv, nn.ReLU(), upconv, _norm_layer(norm, outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(
                inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias
            )
            layers = [
                nn.LeakyReLU(0.2),
                downconv,
                _norm_layer(norm, inner_nc),
                submodule,
                nn.ReLU(),
                upconv,
                _norm_layer(norm, outer_nc),
            ]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        if not innermost and submodule is None:
            raise ValueError("non-innermost blocks need a submodule")
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class Pix2PixUnet256(nn.Module):
    """``define_G(netG="unet_256")`` of pytorch-CycleGAN-and-pix2pix (8 down-sampling levels).

    Args:
        input_nc: input channels; output_nc: output channels; ngf: width of the first layer;
        norm: ``"batch"`` (default of pix2pix) or ``"instance"``; use_dropout: ``Dropout(0.5)`` in the three
        middle 8·ngf blocks (pix2pix trains with dropout; it has no weights, so it does not change keys).

    Tile size must be a multiple of 256. With ``input_nc=output_nc=3, ngf=64``: 54,413,955
    parameters (82 state-dict entries).
    """

    num_downs = 8

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = True,
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.in_channels = input_nc
        self.out_channels = output_nc
        self.ngf = ngf
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for _ in range(self.num_downs - 5):
            block = UnetSkipConnectionBlock(
                ngf * 8, ngf * 8, submodule=block, norm=norm, use_dropout=use_dropout
            )
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(
            output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True, norm=norm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
