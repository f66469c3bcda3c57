"""Transposed convolutions rewritten as sub-pixel convolutions, for the int8 graph.

A ``ConvTranspose2d(kernel 4, stride 2, padding 1)`` — every up-sampling layer of the pix2pix U-Net — gives
output pixel ``(2i + a, 2j + b)`` from the 2 × 2 input pixels around ``(i, j)`` with the kernel taps of its
phase ``(a, b)``: rows ``i - 1, i`` with taps 3, 1 for ``a = 0`` and rows ``i, i + 1`` with taps 2, 0 for
``a = 1`` (columns alike). So it equals ONE ordinary 2 × 2 convolution with ``4 · C_out`` outputs over the
input padded by one pixel (output ``(h + 1) × (w + 1)``; phase ``(a, b)`` is its block ``a·2 + b`` shifted by
``(a, b)``), followed by a depth-to-space interleave of the four phases — the same multiply-adds, no
zero taps. A BatchNorm2d right after it (eval mode: a per-channel affine map, which commutes with the
interleave) is folded into the convolution's weights and bias.

Why: ONNX Runtime quantises ``Conv`` nodes into fused int8 kernels (VNNI / AMX on x86) but runs a quantised
``ConvTranspose`` as float between quantise/dequantise round trips, and the decoder's transposed convolutions
hold most of the U-Net's multiply-adds (their inputs are the skip concatenations; at ngf 32: 73 % of the
SAR2Optical U-Net's 2.09 G, 67 % of pix2pix unet_256's 1.55 G multiply-adds per 256² tile). With the rewrite
every convolution of the network runs in int8. Measured by ``scripts/bench_int8.py`` (ONNX Runtime 1.32,
2 cores of an Intel Xeon with AVX512-VNNI and AMX, batch 2, three rounds, tiles/s): bundled model fp32 66–75,
int8 of the original graph 77–85, int8 of the rewritten graph 82–97; random SAR2Optical U-Net at ngf 32 fp32
20–24, 20–24, 27–37. In fp32 the rewrite is no faster there (75–79 and 20–26 tiles/s, within the rounds'
spread), so only the int8 graph uses it (:func:`sar2opt_geo.models.onnx_export.export_cached`
``subpixel=True``).

Hand-written: no maintained library rewrites transposed convolutions for ONNX Runtime's quantiser.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SubPixelConvTranspose2d", "is_rewritable", "subpixel_rewrite"]

# kernel taps of the two input rows (columns) each output phase reads, in window order
_TAPS = ((3, 1), (2, 0))


class _InterleavePhases(torch.autograd.Function):
    """The four phases of the 2 × 2 convolution's output ``(N, 4·C, H + 1, W + 1)`` cut out (phase ``(a, b)``:
    channel block ``a·2 + b``, rows ``a .. a + H``, columns ``b .. b + W``) and interleaved into
    ``(N, C, 2H, 2W)``. Exported as four ONNX ``Slice`` nodes, a ``Concat`` and a ``DepthToSpace`` in DCR mode
    (channel index = phase · C + c; torch's ``pixel_shuffle`` is CRD), which the quantiser keeps in int8."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, c: int) -> torch.Tensor:  # noqa: ARG004 - torch.autograd.Function signature
        n, _, h1, w1 = y.shape
        h, w = h1 - 1, w1 - 1
        x = y.new_empty(n, c, h, 2, w, 2)
        for a in (0, 1):
            for b in (0, 1):
                k = a * 2 + b
                x[:, :, :, a, :, b] = y[:, k * c : (k + 1) * c, a : a + h, b : b + w]
        return x.reshape(n, c, 2 * h, 2 * w)

    @staticmethod
    def symbolic(g, y, c):
        def const(v):
            return g.op("Constant", value_t=torch.tensor(v, dtype=torch.int64))

        big = 2**62
        phases = [
            g.op(
                "Slice",
                y,
                const([k * c, a, b]),
                const([(k + 1) * c, -1 if a == 0 else big, -1 if b == 0 else big]),
                const([1, 2, 3]),
            )
            for k, (a, b) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1)))
        ]
        return g.op("DepthToSpace", g.op("Concat", *phases, axis_i=1), blocksize_i=2, mode_s="DCR")


class SubPixelConvTranspose2d(nn.Module):
    """Inference-only equivalent of a ``ConvTranspose2d(k=4, s=2, p=1)`` (optionally followed by an eval-mode
    ``BatchNorm2d``, folded in): output ``(N, C_out, 2H, 2W)`` for input ``(N, C_in, H, W)``."""

    def __init__(self, deconv: nn.ConvTranspose2d, bn: nn.BatchNorm2d | None = None):
        super().__init__()
        if not is_rewritable(deconv):
            raise ValueError(f"not a ConvTranspose2d(kernel 4, stride 2, padding 1): {deconv}")
        w = deconv.weight.detach().float()  # (C_in, C_out, 4, 4)
        c_out = w.shape[1]
        bias = deconv.bias.detach().float() if deconv.bias is not None else torch.zeros(c_out)
        scale = torch.ones(c_out)
        if bn is not None:
            scale = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
            bias = (bias - bn.running_mean.float()) * scale + bn.bias.detach().float()
        blocks = []
        for a in (0, 1):
            for b in (0, 1):
                k = w[:, :, list(_TAPS[a])][:, :, :, list(_TAPS[b])]  # (C_in, C_out, 2, 2)
                blocks.append(k.permute(1, 0, 2, 3) * scale[:, None, None, None])
        # (4·C_out, C_in, 2, 2): phase blocks in the order (0, 0), (0, 1), (1, 0), (1, 1)
        self.weight = nn.Parameter(torch.cat(blocks, 0).contiguous(), requires_grad=False)
        self.bias = nn.Parameter(bias.repeat(4).contiguous(), requires_grad=False)
        self.out_channels = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _InterleavePhases.apply(F.conv2d(x, self.weight, self.bias, padding=1), self.out_channels)


def is_rewritable(m: nn.Module) -> bool:
    """Whether ``m`` is a transposed convolution this module rewrites (kernel 4, stride 2, padding 1, no
    groups, dilation or output padding)."""
    return (
        isinstance(m, nn.ConvTranspose2d)
        and tuple(m.kernel_size) == (4, 4)
        and tuple(m.stride) == (2, 2)
        and tuple(m.padding) == (1, 1)
        and tuple(m.output_padding) == (0, 0)
        and tuple(m.dilation) == (1, 1)
        and m.groups == 1
    )


def subpixel_rewrite(model: nn.Module) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``model`` with every rewritable transposed convolution replaced by a
    :class:`SubPixelConvTranspose2d` (and a BatchNorm2d that directly follows it in the same ``Sequential``
    folded in and replaced by ``Identity``); returns (copy, number of layers rewritten). The original is left
    unchanged. Same outputs up to float rounding (tested)."""
    out = copy.deepcopy(model).eval()
    count = 0
    for parent in out.modules():
        names = list(parent._modules)
        for i, name in enumerate(names):
            child = parent._modules[name]
            if not is_rewritable(child):
                continue
            bn = None
            if isinstance(parent, nn.Sequential) and i + 1 < len(names):
                nxt = parent._modules[names[i + 1]]
                if (
                    isinstance(nxt, nn.BatchNorm2d)
                    and nxt.track_running_stats
                    and nxt.running_mean is not None
                ):
                    bn = nxt
                    parent._modules[names[i + 1]] = nn.Identity()
            parent._modules[name] = SubPixelConvTranspose2d(child, bn)
            count += 1
    return out, count
