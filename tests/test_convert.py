"""Conversion of foreign checkpoints, checked against independent re-implementations of the published layouts.

The reference networks below are written from the published code's structure (SAR2Optical's
``UnetGenerator``; pytorch-CycleGAN-and-pix2pix's ``UnetSkipConnectionBlock`` recursion, with its in-place
activations), independently of ``sar2opt_geo.models``; they get random weights and BatchNorm statistics,
are saved with ``torch.save`` in the usual wrappers, converted, and the converted model must reproduce
their outputs.
"""

import os
import pickle
import shlex

import pytest
import torch
from torch import nn

from sar2opt_geo.errors import CheckpointKeyError, ModelError
from sar2opt_geo.models import (
    SEN12_DB_PRESET,
    convert_checkpoint,
    detect_format,
    load_generator,
    read_metadata,
    save_checkpoint,
)
from sar2opt_geo.models.checkpoint import file_sha256
from sar2opt_geo.models.convert import infer_arch_args, load_foreign_state_dict

# ----------------------------------------------------------------- reference: SAR2Optical generator


class _RefDown(nn.Module):
    def __init__(self, c_in, c_out, norm=True):
        super().__init__()
        mods = [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not norm)]
        mods += [nn.BatchNorm2d(c_out)] if norm else []
        self.conv_block = nn.Sequential(*mods, nn.LeakyReLU(0.2))

    def forward(self, x):
        return self.conv_block(x)


class _RefUp(nn.Module):
    def __init__(self, c_in, c_out, dropout=False, upsample=False, mode="nearest"):
        super().__init__()
        if upsample:
            first = nn.Sequential(
                nn.Upsample(scale_factor=2, mode=mode), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)
            )
        else:
            first = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False)
        mods = [first, nn.BatchNorm2d(c_out)] + ([nn.Dropout(0.5)] if dropout else []) + [nn.ReLU()]
        self.conv_block = nn.Sequential(*mods)

    def forward(self, x):
        return self.conv_block(x)


class _RefEncoder(nn.Module):
    def __init__(self, c, f):
        super().__init__()
        self.enc1 = _RefDown(c, f, norm=False)
        self.enc2 = _RefDown(f, 2 * f)
        self.enc3 = _RefDown(2 * f, 4 * f)
        self.enc4 = _RefDown(4 * f, 8 * f)
        self.enc5 = _RefDown(8 * f, 8 * f)
        self.enc6 = _RefDown(8 * f, 8 * f)
        self.enc7 = _RefDown(8 * f, 8 * f)
        self.enc8 = _RefDown(8 * f, 8 * f)

    def forward(self, x):
        x1 = self.enc1(x)
        x2 = self.enc2(x1)
        x3 = self.enc3(x2)
        x4 = self.enc4(x3)
        x5 = self.enc5(x4)
        x6 = self.enc6(x5)
        x7 = self.enc7(x6)
        return [self.enc8(x7), x7, x6, x5, x4, x3, x2, x1]


class _RefDecoder(nn.Module):
    def __init__(self, f, up, mode):
        super().__init__()
        kw = {"upsample": up, "mode": mode}
        self.dec1 = _RefUp(8 * f, 8 * f, dropout=True, **kw)
        self.dec2 = _RefUp(16 * f, 8 * f, dropout=True, **kw)
        self.dec3 = _RefUp(16 * f, 8 * f, dropout=True, **kw)
        self.dec4 = _RefUp(16 * f, 8 * f, **kw)
        self.dec5 = _RefUp(16 * f, 4 * f, **kw)
        self.dec6 = _RefUp(8 * f, 2 * f, **kw)
        self.dec7 = _RefUp(4 * f, f, **kw)
        self.dec8 = _RefUp(2 * f, f, **kw)

    def forward(self, x):
        h = torch.cat([x[1], self.dec1(x[0])], 1)
        h = torch.cat([x[2], self.dec2(h)], 1)
        h = torch.cat([x[3], self.dec3(h)], 1)
        h = torch.cat([x[4], self.dec4(h)], 1)
        h = torch.cat([x[5], self.dec5(h)], 1)
        h = torch.cat([x[6], self.dec6(h)], 1)
        h = torch.cat([x[7], self.dec7(h)], 1)
        return self.dec8(h)


class RefSar2OpticalGen(nn.Module):
    def __init__(self, c_in=3, c_out=3, f=8, upsample=False, mode="nearest"):
        super().__init__()
        self.encoder = _RefEncoder(c_in, f)
        self.decoder = _RefDecoder(f, upsample, mode)
        self.head = nn.Sequential(nn.Conv2d(f, c_out, 3, 1, 1, bias=True), nn.Tanh())

    def forward(self, x):
        return self.head(self.decoder(self.encoder(x)))


# ------------------------------------------------------- reference: pytorch-CycleGAN-and-pix2pix unet_256


class RefUnetSkipBlock(nn.Module):
    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False,
                 norm_layer=nn.BatchNorm2d, use_dropout=False):  # fmt: skip
        super().__init__()
        self.outermost = outermost
        use_bias = norm_layer == nn.InstanceNorm2d
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        downnorm = norm_layer(inner_nc)
        uprelu = nn.ReLU(True)
        upnorm = norm_layer(outer_nc)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv] + [submodule] + [uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv] + [uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(
                inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias
            )
            model = [downrelu, downconv, downnorm] + [submodule] + [uprelu, upconv, upnorm]
            if use_dropout:
                model = model + [nn.Dropout(0.5)]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)  # x is modified in place by the first LeakyReLU


class RefPix2PixUnet(nn.Module):
    def __init__(self, input_nc, output_nc, num_downs=8, ngf=8, norm_layer=nn.BatchNorm2d, use_dropout=True):
        super().__init__()
        block = RefUnetSkipBlock(ngf * 8, ngf * 8, innermost=True, norm_layer=norm_layer)
        for _ in range(num_downs - 5):
            block = RefUnetSkipBlock(
                ngf * 8, ngf * 8, submodule=block, norm_layer=norm_layer, use_dropout=use_dropout
            )
        block = RefUnetSkipBlock(ngf * 4, ngf * 8, submodule=block, norm_layer=norm_layer)
        block = RefUnetSkipBlock(ngf * 2, ngf * 4, submodule=block, norm_layer=norm_layer)
        block = RefUnetSkipBlock(ngf, ngf * 2, submodule=block, norm_layer=norm_layer)
        self.model = RefUnetSkipBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True,
                                      norm_layer=norm_layer)  # fmt: skip

    def forward(self, x):
        return self.model(x)


# -------------------------------------------------------------------------------------------- helpers


def _randomized(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.num_batches_tracked.fill_(123)
    return model.eval()


def _max_diff(ref, converted, c_in, seed=1):
    x = torch.randn(2, c_in, 256, 256, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = ref(x.clone())
        got = converted(x.clone())
    return (got - want).abs().max().item()


# ---------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": {"gen." + k: v for k, v in sd.items()}},
        lambda sd: {"gen_state_dict": {"_orig_mod." + k: v for k, v in sd.items()}, "epoch": 7},
        lambda sd: {"generator": {"module." + k: v for k, v in sd.items()}, "optimizer": {"lr": 0.1}},
    ],
    ids=["plain", "state_dict_gen", "gen_state_dict_compiled", "generator_ddp"],
)
def test_sar2optical_conversion(tmp_path, wrap):
    ref = _randomized(RefSar2OpticalGen(3, 3, f=8))
    src = tmp_path / "sar2optical_G.pth"
    torch.save(wrap(ref.state_dict()), src)
    dst = tmp_path / "out" / "model.safetensors"
    meta = convert_checkpoint(src, dst, bands=["VV"], name="s2o")
    assert meta.architecture == "unet_sar2optical"
    assert meta.arch_args == {"in_channels": 3, "out_channels": 3, "ngf": 8}
    assert meta.radiometry == SEN12_DB_PRESET and meta.input_bands == ["VV"] and meta.name == "s2o"
    conv = meta.provenance["converted_from"]
    assert conv == {"file": "sar2optical_G.pth", "sha256": file_sha256(src)} and len(conv["sha256"]) == 64
    assert read_metadata(dst) == meta
    model, _ = load_generator(dst)
    assert _max_diff(ref, model, 3) <= 1e-5


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_sar2optical_upsample_conversion(tmp_path, mode):
    ref = _randomized(RefSar2OpticalGen(3, 3, f=8, upsample=True, mode=mode), seed=3)
    src = tmp_path / "up.pt"
    torch.save(ref.state_dict(), src)
    meta = convert_checkpoint(src, tmp_path / "up.safetensors", upsample_mode=mode)
    assert meta.architecture == "unet_sar2optical_upsample"
    assert meta.arch_args["upsample_mode"] == mode
    model, _ = load_generator(tmp_path / "up.safetensors")
    assert _max_diff(ref, model, 3) <= 1e-5


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_pix2pix_unet256_conversion(tmp_path, norm):
    norm_layer = nn.BatchNorm2d if norm == "batch" else nn.InstanceNorm2d
    ref = _randomized(RefPix2PixUnet(3, 3, ngf=8, norm_layer=norm_layer), seed=5)
    sd = ref.state_dict()
    assert "model.model.0.weight" in sd and "model.model.1.model.1.weight" in sd
    src = tmp_path / "latest_net_G.pth"
    torch.save(sd, src)
    radiometry = {"scale": "db", "clip": [-30.0, 5.0]}
    meta = convert_checkpoint(src, tmp_path / "p2p.safetensors", radiometry=radiometry, bands=["VH"])
    assert meta.architecture == "pix2pix_unet256"
    assert meta.arch_args == {"in_channels": 3, "out_channels": 3, "ngf": 8, "norm": norm}
    # one band for 3 input channels: convert derives the replication from the weights
    assert meta.radiometry == {**radiometry, "replicate_to": 3}
    assert meta.input_bands == ["VH"] and meta.name == "latest_net_G"
    model, _ = load_generator(tmp_path / "p2p.safetensors")
    # The reference keeps the original's in-place LeakyReLU (skip carries LeakyReLU(x)); outputs still match.
    assert _max_diff(ref, model, 3) <= 1e-5


def test_native_safetensors_input_passes_through(tmp_path):
    ref = _randomized(RefSar2OpticalGen(3, 3, f=4))
    src = tmp_path / "a.pth"
    torch.save(ref.state_dict(), src)
    first = convert_checkpoint(src, tmp_path / "a.safetensors", radiometry={"k": 1}, name="first")
    second = convert_checkpoint(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert first.radiometry == {"k": 1, "replicate_to": 3}  # one band, 3 input channels: derived
    assert second.name == "first" and second.radiometry == first.radiometry
    assert second.arch_args == first.arch_args
    assert second.provenance["converted_from"]["file"] == "a.safetensors"
    model, _ = load_generator(tmp_path / "b.safetensors")
    assert _max_diff(ref, model, 3) <= 1e-5


def test_plain_safetensors_input(tmp_path):
    from safetensors.torch import save_file

    ref = _randomized(RefSar2OpticalGen(3, 3, f=4, upsample=True), seed=7)
    save_file(
        {"gen." + k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "w.safetensors")
    )
    meta = convert_checkpoint(tmp_path / "w.safetensors", tmp_path / "n.safetensors")
    assert meta.architecture == "unet_sar2optical_upsample" and meta.arch_args["upsample_mode"] == "nearest"
    model, _ = load_generator(tmp_path / "n.safetensors")
    assert _max_diff(ref, model, 3) <= 1e-5


def test_detect_format_and_inference():
    s2o = RefSar2OpticalGen(2, 3, f=4).state_dict()
    assert detect_format(s2o) == "unet_sar2optical"
    assert infer_arch_args(s2o, "unet_sar2optical") == {"in_channels": 2, "out_channels": 3, "ngf": 4}
    assert detect_format({"gen." + k: v for k, v in s2o.items()}) == "unet_sar2optical"
    assert (
        detect_format(RefSar2OpticalGen(3, 3, f=4, upsample=True).state_dict()) == "unet_sar2optical_upsample"
    )
    p2p = RefPix2PixUnet(1, 3, ngf=4).state_dict()
    assert detect_format(p2p) == "pix2pix_unet256"
    assert infer_arch_args(p2p, "pix2pix_unet256")["in_channels"] == 1
    with pytest.raises(ModelError, match="7 levels"):
        detect_format(RefPix2PixUnet(3, 3, num_downs=7, ngf=4).state_dict())
    from sar2opt_geo.models import PatchGAN

    assert detect_format(PatchGAN(6, 4).state_dict()) == "patchgan70"
    with pytest.raises(ModelError, match="unrecognised"):
        detect_format({"foo.weight": torch.zeros(1)})


def test_discriminator_and_key_errors(tmp_path):
    from sar2opt_geo.models import PatchGAN

    torch.save(PatchGAN(6, 4).state_dict(), tmp_path / "D.pth")
    with pytest.raises(ModelError, match="discriminator"):
        convert_checkpoint(tmp_path / "D.pth", tmp_path / "D.safetensors")
    sd = RefSar2OpticalGen(3, 3, f=4).state_dict()
    sd.pop("decoder.dec3.conv_block.1.running_mean")
    sd["decoder.dec3.extra"] = torch.zeros(1)
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(CheckpointKeyError) as info:
        convert_checkpoint(tmp_path / "broken.pth", tmp_path / "broken.safetensors")
    assert info.value.missing == ["decoder.dec3.conv_block.1.running_mean"]
    assert info.value.unexpected == ["decoder.dec3.extra"]
    assert not (tmp_path / "broken.safetensors").exists()


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def test_payload_is_real(tmp_path):
    # Sanity check of the test itself: plain unpickling of the payload does create the marker.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe)))
    assert probe.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch_save_wrapped", "raw_pickle"])
def test_malicious_pickle_refused(tmp_path, how):
    marker = tmp_path / "PWNED"
    src = tmp_path / "evil.pth"
    sd = RefSar2OpticalGen(3, 3, f=4).state_dict()
    if how == "torch_save_wrapped":
        torch.save({"state_dict": sd, "extra": _Payload(marker)}, src)
    else:
        src.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ModelError) as info:
        convert_checkpoint(src, tmp_path / "evil.safetensors")
    assert "\n" not in str(info.value) and "refused" in str(info.value)
    if how == "torch_save_wrapped":
        assert f"{os.system.__module__}.system" in str(info.value)  # names the blocked callable
    with pytest.raises(ModelError):
        load_foreign_state_dict(src)
    with pytest.raises(ModelError):
        load_generator(src)  # the native loader never unpickles
    renamed = tmp_path / "evil.safetensors"
    renamed.write_bytes(src.read_bytes())
    with pytest.raises(ModelError):
        load_generator(renamed)
    assert not marker.exists()


def test_corrupt_inputs(tmp_path):
    ref = _randomized(RefSar2OpticalGen(3, 3, f=4))
    good = tmp_path / "good.safetensors"
    from sar2opt_geo.models import CheckpointMeta, create_model

    model = create_model("unet_sar2optical", ngf=4)
    model.load_state_dict(ref.state_dict())
    save_checkpoint(good, model, CheckpointMeta(name="g", arch_args={"ngf": 4}))
    data = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelError, match="truncated"):
        convert_checkpoint(tmp_path / "trunc.safetensors", tmp_path / "x.safetensors")
    with pytest.raises(ModelError, match="truncated"):
        load_generator(tmp_path / "trunc.safetensors")
    (tmp_path / "trunc.pth").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ModelError, match="trunc.pth"):
        convert_checkpoint(tmp_path / "trunc.pth", tmp_path / "y.safetensors")
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    with pytest.raises(ModelError, match="unsupported"):
        convert_checkpoint(tmp_path / "model.onnx", tmp_path / "z.safetensors")
    with pytest.raises(ModelError, match="not found"):
        convert_checkpoint(tmp_path / "missing.pth", tmp_path / "z.safetensors")
