"""Architectures and registry: published parameter counts, state-dict keys, shapes."""

import pytest
import torch
from torch import nn

from sar2opt_geo.errors import ModelError
from sar2opt_geo.models import (
    PatchGAN,
    Pix2PixUnet256,
    UnetGenerator,
    UnetGeneratorUpsample,
    count_parameters,
    create_model,
    list_models,
    register_model,
)


def test_full_size_counts_pinned():
    # Param counting only: no 256² forward pass for the full models.
    gen = UnetGenerator(3, 3, 64)
    sd = gen.state_dict()
    assert count_parameters(gen) == 54_541_827
    assert len(sd) == 94
    for key in (
        "encoder.enc1.conv_block.0.weight",
        "encoder.enc1.conv_block.0.bias",
        "encoder.enc2.conv_block.1.running_mean",
        "encoder.enc8.conv_block.1.num_batches_tracked",
        "decoder.dec1.conv_block.0.weight",
        "decoder.dec8.conv_block.1.running_var",
        "head.0.weight",
        "head.0.bias",
    ):
        assert key in sd, key
    assert "encoder.enc2.conv_block.0.bias" not in sd
    assert "decoder.dec1.conv_block.0.bias" not in sd

    disc = PatchGAN(6, 64)
    dsd = disc.state_dict()
    assert count_parameters(disc) == 2_768_705
    assert "model.model.0.conv_block.0.weight" in dsd and "model.model.0.conv_block.0.bias" in dsd
    assert "model.model.1.conv_block.0.bias" not in dsd
    assert "model.model.4.weight" in dsd and "model.model.4.bias" in dsd

    p2p = Pix2PixUnet256(3, 3, 64)
    assert count_parameters(p2p) == 54_413_955
    assert len(p2p.state_dict()) == 82


def test_upsample_variant_keys():
    gen = UnetGeneratorUpsample(3, 3, ngf=8)
    sd = gen.state_dict()
    assert "decoder.dec1.conv_block.0.1.weight" in sd
    assert "decoder.dec1.conv_block.0.weight" not in sd
    up = gen.decoder.dec1.conv_block[0]
    assert isinstance(up[0], nn.Upsample) and isinstance(up[1], nn.Conv2d)
    assert up[1].kernel_size == (3, 3) and up[1].bias is None


def test_generator_structure():
    gen = UnetGenerator(2, 3, ngf=8)
    enc1 = gen.encoder.enc1.conv_block
    assert len(enc1) == 2 and enc1[0].bias is not None and enc1[0].in_channels == 2
    assert [getattr(gen.encoder, f"enc{i}").conv_block[0].out_channels for i in range(1, 9)] == [
        8,
        16,
        32,
        64,
        64,
        64,
        64,
        64,
    ]
    chans = [
        (
            getattr(gen.decoder, f"dec{i}").conv_block[0].in_channels,
            gen.decoder.get_submodule(f"dec{i}").conv_block[0].out_channels,
        )
        for i in range(1, 9)
    ]
    assert chans == [(64, 64), (128, 64), (128, 64), (128, 64), (128, 32), (64, 16), (32, 8), (16, 8)]
    for i in range(1, 9):
        has_dropout = any(isinstance(m, nn.Dropout) for m in getattr(gen.decoder, f"dec{i}").conv_block)
        assert has_dropout == (i <= 3)
    assert isinstance(gen.head[1], nn.Tanh) and gen.head[0].kernel_size == (3, 3)


@pytest.mark.parametrize("arch", ["unet_sar2optical", "unet_sar2optical_upsample", "pix2pix_unet256"])
def test_generator_forward_shape(arch):
    torch.manual_seed(0)
    gen = create_model(arch, in_channels=1, out_channels=3, ngf=4).eval()
    with torch.no_grad():
        y = gen(torch.randn(2, 1, 256, 256))
    assert y.shape == (2, 3, 256, 256)
    assert y.abs().max() <= 1.0


def test_skip_order_is_encoder_first():
    gen = UnetGenerator(3, 3, ngf=4).eval()
    seen = {}
    gen.decoder.dec2.register_forward_pre_hook(lambda m, a: seen.__setitem__("in", a[0]))
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        feats = gen.encoder(x)
        up1 = gen.decoder.dec1(feats[0])
        gen(x)
    torch.testing.assert_close(seen["in"][:, :32], feats[1])  # enc7 output first
    torch.testing.assert_close(seen["in"][:, 32:], up1)


def test_patchgan_calls_and_shape():
    disc = PatchGAN(4, ndf=8).eval()
    sar, opt = torch.randn(1, 1, 256, 256), torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        a = disc(sar, opt)
        b = disc(torch.cat([sar, opt], 1))
    assert a.shape == (1, 1, 30, 30)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError):
        disc(opt)


def test_registry():
    names = list_models()
    for n in ("unet_sar2optical", "unet_sar2optical_upsample", "pix2pix_unet256", "patchgan70"):
        assert n in names
    with pytest.raises(ModelError, match="unet_sar2optical"):
        create_model("no_such_model")
    with pytest.raises(ModelError):
        create_model("unet_sar2optical", bogus=1)
    assert isinstance(create_model("patchgan70", ndf=4), PatchGAN)

    @register_model("_test_tiny_conv")
    def _tiny(c=2):
        return nn.Conv2d(c, c, 1)

    assert "_test_tiny_conv" in list_models()
    assert create_model("_test_tiny_conv", c=3).in_channels == 3
    with pytest.raises(ModelError):
        register_model("_test_tiny_conv")(lambda: nn.Identity())
