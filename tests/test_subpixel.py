"""Transposed convolutions rewritten as sub-pixel convolutions (the int8 graph's source): same outputs as the
original network in torch and in ONNX Runtime, BatchNorm folded, only kernel-4 stride-2 layers rewritten, and
an int8 graph in which every convolution is quantised."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import make_small_generator
from torch import nn

from sar2opt_geo.models.onnx_export import INT8_OP_TYPES, export_onnx, quantize_int8
from sar2opt_geo.models.registry import create_model
from sar2opt_geo.models.subpixel import SubPixelConvTranspose2d, is_rewritable, subpixel_rewrite


def _randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that folding them is really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model.eval()


def _count(model: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize(
    ("make", "n_folded"),
    [
        # the SAR2Optical U-Net: every decoder block is ConvT → BN → ReLU, then a 3×3 conv head
        (lambda: make_small_generator(ngf=4), 8),
        # pytorch-CycleGAN-and-pix2pix unet_256: the outermost ConvT has no BatchNorm after it
        (lambda: create_model("pix2pix_unet256", ngf=4), 7),
        (lambda: create_model("pix2pix_unet256", ngf=4, norm="instance"), 0),  # nothing to fold
    ],
    ids=["sar2optical", "pix2pix-batch", "pix2pix-instance"],
)
def test_rewrite_gives_the_same_outputs_and_folds_batchnorm(make, n_folded):
    model = _randomise_norms(make())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_deconv = _count(model, nn.ConvTranspose2d)
    n_bn = _count(model, nn.BatchNorm2d)
    rewritten, count = subpixel_rewrite(model)
    assert count == n_deconv == 8
    assert _count(rewritten, nn.ConvTranspose2d) == 0
    assert _count(rewritten, SubPixelConvTranspose2d) == 8
    assert n_bn - _count(rewritten, nn.BatchNorm2d) == n_folded
    x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (3, 3, 256, 256)).astype(np.float32))
    with torch.no_grad():
        a, b = model(x), rewritten(x)
    assert a.std() > 0.01
    assert torch.allclose(a, b, atol=2e-5), float((a - b).abs().max())
    # the original is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_only_kernel4_stride2_deconvolutions_are_rewritten():
    assert is_rewritable(nn.ConvTranspose2d(4, 4, 4, 2, 1))
    assert not is_rewritable(nn.ConvTranspose2d(4, 4, 3, 1, 1))
    assert not is_rewritable(nn.ConvTranspose2d(4, 4, 4, 2, 1, output_padding=1))
    assert not is_rewritable(nn.ConvTranspose2d(4, 4, 4, 2, 1, groups=2))
    seq = nn.Sequential(nn.ConvTranspose2d(3, 4, 3, 1, 1), nn.BatchNorm2d(4))
    out, count = subpixel_rewrite(seq)
    assert count == 0 and isinstance(out[0], nn.ConvTranspose2d) and isinstance(out[1], nn.BatchNorm2d)
    with pytest.raises(ValueError, match="kernel 4, stride 2"):
        SubPixelConvTranspose2d(nn.ConvTranspose2d(3, 4, 3, 1, 1))


def test_subpixel_export_runs_in_onnxruntime_like_the_original(tmp_path):
    model = make_small_generator(ngf=4)
    path = export_onnx(model, tmp_path / "sp.onnx", subpixel=True)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "ConvTranspose" not in ops
    d2s = [n for n in onnx.load(str(path)).graph.node if n.op_type == "DepthToSpace"]
    assert len(d2s) == 8
    assert all(
        onnx.helper.get_attribute_value(a) == b"DCR" for n in d2s for a in n.attribute if a.name == "mode"
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).uniform(-1, 1, (3, 3, 256, 256)).astype(np.float32)  # dynamic batch
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = sess.run(None, {"sar": x})[0]
    assert np.abs(got - ref).max() < 1e-4


def _float_convs(path) -> dict[str, int]:
    """Per convolution type: how many nodes take a float weight (not the output of a DequantizeLinear)."""
    graph = onnx.load(str(path)).graph
    dq_out = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    counts: dict[str, int] = {}
    for n in graph.node:
        if n.op_type in ("Conv", "ConvTranspose"):
            counts[n.op_type] = counts.get(n.op_type, 0) + int(n.input[1] not in dq_out)
    return counts


def test_int8_graph_quantises_every_convolution_of_the_subpixel_export(tmp_path):
    model = make_small_generator(ngf=4)
    tiles = np.random.default_rng(3).uniform(-1, 1, (2, 3, 256, 256)).astype(np.float32)
    plain = quantize_int8(export_onnx(model, tmp_path / "plain.onnx"), tiles, tmp_path / "plain-int8.onnx")
    sp = quantize_int8(
        export_onnx(model, tmp_path / "sp.onnx", subpixel=True), tiles, tmp_path / "sp-int8.onnx"
    )
    assert _float_convs(plain) == {"Conv": 0, "ConvTranspose": 8}  # ConvTranspose stays float there
    assert _float_convs(sp) == {"Conv": 0}  # every convolution int8
    graph = onnx.load(str(sp)).graph
    assert sum(n.op_type == "Conv" for n in graph.node) == 17  # 8 encoder, 8 sub-pixel, the 3×3 head
    # activations stay quantised through the layers between convolutions: each of those nodes reads the
    # output of a DequantizeLinear (ONNX Runtime fuses such Q/DQ pairs into int8 kernels)
    dq_out = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    between = [n for n in graph.node if n.op_type in INT8_OP_TYPES and n.op_type != "Conv"]
    # (the quantiser drops a ReLU whose quantised output range starts at 0: the uint8 clamp does its work)
    assert {"LeakyRelu", "Concat", "Slice", "DepthToSpace"} <= {n.op_type for n in between}
    data_inputs = {"Concat": slice(None)}  # Slice: starts/ends/axes are constants
    assert all(all(i in dq_out for i in n.input[data_inputs.get(n.op_type, slice(0, 1))]) for n in between)
    x = tiles[:1]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(sp), providers=["CPUExecutionProvider"]).run(None, {"sar": x})[0]
    assert np.abs(got - ref).mean() < 0.05  # int8: close, not exact


def test_subpixel_export_of_a_checkpoint_with_its_adapter(tiny_model_path, tmp_path):
    """The int8 graph's source for a checkpoint + LoRA adapter: the adapter is merged first (plain layers
    back), then every transposed convolution is rewritten; same outputs as the merged torch model."""
    from test_cli_model import make_adapter

    from sar2opt_geo.models.checkpoint import load_generator
    from sar2opt_geo.models.lora import apply_adapter, merge_lora
    from sar2opt_geo.models.onnx_export import export_cached

    adapter = make_adapter(tiny_model_path, tmp_path / "adapter.safetensors")
    path = export_cached(tiny_model_path, adapter, 256, folder=tmp_path / "cache", subpixel=True)
    assert path.name.endswith("-t256-bdyn-op17-sp-fp32.onnx") and "+" in path.name
    assert "ConvTranspose" not in {n.op_type for n in onnx.load(str(path)).graph.node}
    model, _ = load_generator(tiny_model_path, "cpu")
    apply_adapter(model, adapter)
    merge_lora(model)
    model.eval()
    x = np.random.default_rng(5).uniform(-1, 1, (2, 3, 256, 256)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"sar": x})[0]
    assert np.abs(got - ref).max() < 1e-4
