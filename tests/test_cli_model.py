"""``sar2opt-geo model info|convert|export-onnx|merge-lora`` and ``translate --lora``, through the CLI.

Foreign checkpoints come from the independent reference networks of ``test_convert`` (SAR2Optical's
generator and its upsampling variant, pytorch-CycleGAN-and-pix2pix's ``unet_256``), saved with ``torch.save``
in their usual wrappers. Every failure must be one line on stderr, exit code 1 (2 for usage errors), and leave
nothing at the output path.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from conftest import run_cli
from test_cli import assert_clean_error
from test_convert import RefPix2PixUnet, RefSar2OpticalGen, _max_diff, _Payload, _randomized

from sar2opt_geo import io
from sar2opt_geo.models import (
    SEN12_DB_PRESET,
    LoRAConfig,
    checkpoint_hash,
    count_parameters,
    get_cached_generator,
    inject_lora,
    load_generator,
    read_metadata,
    save_adapter,
)
from sar2opt_geo.models.lora import lora_modules
from sar2opt_geo.radiometry import Radiometry


def make_adapter(base_path, out, std=0.01, seed=0, base_hash=None):
    """A rank-2 adapter for ``base_path`` whose B weights are random (so it changes the output by a few DN
    while keeping activations in a sane range)."""
    model, meta = load_generator(base_path)
    cfg = LoRAConfig(rank=2, alpha=4.0, dropout=0.0)
    inject_lora(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.weight.copy_(torch.randn(m.lora_B.weight.shape, generator=g) * std)
    base_hash = checkpoint_hash(base_path) if base_hash is None else base_hash
    return str(save_adapter(out, model, cfg, base_hash, base_name=meta.name))


@pytest.fixture(scope="module")
def adapter_path(tiny_model_path, tmp_path_factory):
    return make_adapter(tiny_model_path, tmp_path_factory.mktemp("adapter") / "adapter.safetensors")


def _json(args, capsys):
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    return json.loads(out)


# ------------------------------------------------------------------------------------------------ info


def test_info_checkpoint(tiny_model_path, capsys):
    d = _json(["model", "info", tiny_model_path, "--json"], capsys)
    meta = read_metadata(tiny_model_path)
    model, _ = load_generator(tiny_model_path)
    assert d["kind"] == "checkpoint" and d["name"] == "tiny-test-unet"
    assert d["architecture"] == "unet_sar2optical" and d["arch_args"] == meta.arch_args
    assert d["parameters"] == count_parameters(model)
    assert d["input_bands"] == ["VV"] and d["radiometry"] == meta.radiometry
    assert d["radiometry_summary"] == Radiometry.from_dict(meta.radiometry).describe()
    assert d["lora"] is None and d["preprocess"] is None
    assert d["provenance"] == meta.provenance and d["sha256_16"] == checkpoint_hash(tiny_model_path)

    code, out, err = run_cli(["model", "info", tiny_model_path], capsys)
    assert code == 0, err
    lines = {ln.split("  ", 1)[0]: ln.split("  ", 1)[1].strip() for ln in out.splitlines()}
    assert f"{count_parameters(model):,}" in out
    assert Radiometry.from_dict(meta.radiometry).describe() in out
    assert lines["lora"] == "none" and lines["architecture"] == "unet_sar2optical"
    assert "tests/conftest.py" in lines["provenance"]


def test_info_adapter_onnx_and_foreign(tiny_model_path, adapter_path, tmp_path, capsys):
    d = _json(["model", "info", adapter_path, "--json"], capsys)
    assert d["kind"] == "lora-adapter" and d["rank"] == 2 and d["alpha"] == 4.0
    assert d["base_checkpoint_hash"] == checkpoint_hash(tiny_model_path)
    assert d["base_checkpoint_name"] == "tiny-test-unet" and len(d["targets"]) == 17
    code, out, _ = run_cli(["model", "info", adapter_path], capsys)
    assert code == 0 and "base checkpoint hash" in out and checkpoint_hash(tiny_model_path) in out

    onnx_path = tmp_path / "m.onnx"
    code, _, err = run_cli(["model", "export-onnx", tiny_model_path, onnx_path, "-q"], capsys)
    assert code == 0, err
    d = _json(["model", "info", onnx_path, "--json"], capsys)
    assert d["kind"] == "onnx" and d["opset"] == 17 and d["embedded_metadata"]
    assert d["inputs"] == {"sar": ["batch", 3, 256, 256]} and d["outputs"] == {
        "optical": ["batch", 3, 256, 256]
    }
    assert d["name"] == "tiny-test-unet" and d["architecture"] == "unet_sar2optical" and d["lora"] is None

    ref = _randomized(RefPix2PixUnet(1, 3, ngf=4), seed=2)
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "latest_net_G.pth")
    d = _json(["model", "info", tmp_path / "latest_net_G.pth", "--json"], capsys)
    assert d["kind"] == "foreign" and d["detected_format"] == "pix2pix_unet256"
    assert d["arch_args"] == {"in_channels": 1, "out_channels": 3, "ngf": 4, "norm": "batch"}


# --------------------------------------------------------------------------------------------- convert


@pytest.mark.parametrize(
    "case",
    ["sar2optical_plain", "sar2optical_wrapped_prefixed", "sar2optical_upsample", "pix2pix_latest_net_G"],
)
def test_convert_cli(case, tmp_path, capsys):
    if case == "pix2pix_latest_net_G":
        ref = _randomized(RefPix2PixUnet(3, 3, ngf=8), seed=5)
        src = tmp_path / "latest_net_G.pth"
        torch.save(ref.state_dict(), src)
        arch = "pix2pix_unet256"
    elif case == "sar2optical_upsample":
        ref = _randomized(RefSar2OpticalGen(3, 3, f=8, upsample=True, mode="bilinear"), seed=3)
        src = tmp_path / "up.pt"
        torch.save(ref.state_dict(), src)
        arch = "unet_sar2optical_upsample"
    else:
        ref = _randomized(RefSar2OpticalGen(3, 3, f=8))
        src = tmp_path / "sar2optical_G.pth"
        sd = ref.state_dict()
        if case == "sar2optical_wrapped_prefixed":
            sd = {"gen_state_dict": {"_orig_mod.gen." + k: v for k, v in sd.items()}, "epoch": 3}
        torch.save(sd, src)
        arch = "unet_sar2optical"
    dst = tmp_path / "native.safetensors"
    args = ["model", "convert", src, dst, "--radiometry", "sen12-db", "--bands", "VV", "--name", "conv"]
    if case == "sar2optical_upsample":
        args += ["--upsample-mode", "bilinear"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert "wrote" in err and arch in err
    meta = read_metadata(dst)
    assert meta.architecture == arch and meta.name == "conv" and meta.input_bands == ["VV"]
    assert meta.radiometry == SEN12_DB_PRESET
    assert meta.provenance["converted_from"]["file"] == src.name
    model, _ = load_generator(dst)
    assert _max_diff(ref, model, 3) <= 1e-5


def test_convert_options(tmp_path, capsys):
    ref = _randomized(RefSar2OpticalGen(2, 3, f=4))
    src = tmp_path / "g.pth"
    torch.save(ref.state_dict(), src)
    rad = {"scale": "db", "clip": [-30.0, 5.0], "out_range": [-1.0, 1.0]}
    (tmp_path / "rad.json").write_text(json.dumps(rad))
    dst = tmp_path / "g.safetensors"
    code, _, err = run_cli(
        ["model", "convert", src, dst, "--radiometry", tmp_path / "rad.json", "--bands", "VV, VH", "-q"],
        capsys,
    )
    assert code == 0 and err == ""
    meta = read_metadata(dst)
    assert meta.radiometry == rad and meta.input_bands == ["VV", "VH"] and meta.name == "g"
    assert meta.arch_args["in_channels"] == 2
    # invalid radiometry file and bad output suffix: usage errors, nothing written
    (tmp_path / "bad.json").write_text(json.dumps({"scale": "db", "clip": [0, -25]}))
    out = tmp_path / "h.safetensors"
    code, _, err = run_cli(["model", "convert", src, out, "--radiometry", tmp_path / "bad.json"], capsys)
    assert_clean_error(code, err, str(out), expected_code=2, contains="clip")
    code, _, err = run_cli(["model", "convert", src, tmp_path / "h.pth"], capsys)
    assert_clean_error(code, err, str(tmp_path / "h.pth"), expected_code=2, contains=".safetensors")


def test_convert_key_errors(tmp_path, capsys):
    sd = RefSar2OpticalGen(3, 3, f=4).state_dict()
    sd.pop("decoder.dec3.conv_block.1.running_mean")
    sd.pop("head.0.bias")
    sd["decoder.dec3.extra"] = torch.zeros(1)
    torch.save({"state_dict": sd}, tmp_path / "broken.pth")
    out = tmp_path / "broken.safetensors"
    code, _, err = run_cli(["model", "convert", tmp_path / "broken.pth", out], capsys)
    assert_clean_error(code, err, str(out), contains="missing keys")
    for key in (
        "decoder.dec3.conv_block.1.running_mean",
        "head.0.bias",
        "unexpected keys: decoder.dec3.extra",
    ):
        assert key in err


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch_save_wrapped", "raw_pickle"])
def test_convert_refuses_code_execution_payload(how, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    src = tmp_path / "evil.pth"
    if how == "torch_save_wrapped":
        torch.save({"state_dict": RefSar2OpticalGen(3, 3, f=4).state_dict(), "x": _Payload(marker)}, src)
    else:
        src.write_bytes(pickle.dumps(_Payload(marker)))
    out = tmp_path / "evil.safetensors"
    code, _, err = run_cli(["model", "convert", src, out], capsys)
    assert_clean_error(code, err, str(out), contains="refused")
    code, _, err = run_cli(["model", "info", src], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "refused" in err
    assert not marker.exists()


# ---------------------------------------------------------------------------- outputs, corrupt inputs


def test_existing_outputs_need_overwrite(tiny_model_path, adapter_path, tmp_path, capsys):
    torch.save(_randomized(RefSar2OpticalGen(3, 3, f=4)).state_dict(), tmp_path / "g.pth")
    cases = {
        "convert": (["model", "convert", tmp_path / "g.pth"], tmp_path / "c.safetensors"),
        "export": (["model", "export-onnx", tiny_model_path], tmp_path / "e.onnx"),
        "merge": (["model", "merge-lora", tiny_model_path, adapter_path], tmp_path / "m.safetensors"),
    }
    for args, out in cases.values():
        out.write_bytes(b"keep me")
        code, _, err = run_cli(args + [out, "-q"], capsys)
        assert code == 1 and "already exists" in err and len(err.strip().splitlines()) == 1
        assert out.read_bytes() == b"keep me"
        code, _, err = run_cli(args + [out, "-q", "--overwrite"], capsys)
        assert code == 0, err
        assert out.read_bytes() != b"keep me"
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("." + out.name)]
        assert not leftovers


def test_corrupt_and_truncated_safetensors(tiny_model_path, adapter_path, tmp_path, capsys):
    data = open(tiny_model_path, "rb").read()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    bad_adapter = tmp_path / "bad_adapter.safetensors"
    bad_adapter.write_bytes(open(adapter_path, "rb").read()[:-50])
    runs = [
        (["model", "convert", trunc], tmp_path / "o1.safetensors", "truncated"),
        (["model", "export-onnx", trunc], tmp_path / "o2.onnx", "truncated"),
        (["model", "merge-lora", trunc, adapter_path], tmp_path / "o3.safetensors", "truncated"),
        (["model", "merge-lora", tiny_model_path, bad_adapter], tmp_path / "o4.safetensors", "bad_adapter"),
        (["model", "export-onnx", garbage], tmp_path / "o5.onnx", "garbage.safetensors"),
        (["model", "export-onnx", tiny_model_path, "--lora", bad_adapter], tmp_path / "o6.onnx", "truncated"),
    ]
    for args, out, contains in runs:
        code, _, err = run_cli(args + [out], capsys)
        assert_clean_error(code, err, str(out), contains=contains)
    for path in (trunc, garbage, bad_adapter):
        code, out, err = run_cli(["model", "info", path], capsys)
        assert code == 1 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"\x08\x07 not a model")
    code, _, err = run_cli(["model", "info", bad_onnx], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "onnx" in err.lower()


# ------------------------------------------------------------------------------ export-onnx, merge-lora


def test_export_onnx_with_lora(tiny_model_path, adapter_path, tmp_path, capsys):
    from sar2opt_geo.models.onnx_export import OnnxGenerator, read_onnx_metadata

    out = tmp_path / "lora.onnx"
    code, _, err = run_cli(
        ["model", "export-onnx", tiny_model_path, out, "--lora", adapter_path, "--opset", "17"], capsys
    )
    assert code == 0, err
    assert "lora adapter.safetensors" in err
    md = read_onnx_metadata(out)
    assert md["lora"]["adapter_hash"] == checkpoint_hash(adapter_path) and md["lora"]["rank"] == 2
    merged, _ = get_cached_generator(tiny_model_path, "cpu", lora=adapter_path)
    base, _ = load_generator(tiny_model_path)
    runner = OnnxGenerator(out)
    for n in (1, 3):  # dynamic batch axis
        x = np.random.default_rng(n).uniform(-1, 0.3, (n, 3, 256, 256)).astype(np.float32)
        with torch.inference_mode():
            want = merged(torch.from_numpy(x)).numpy()
            plain = base(torch.from_numpy(x)).numpy()
        got = runner(x)
        assert got.shape == (n, 3, 256, 256)
        assert np.abs(got - want).max() <= 1e-3
        assert np.abs(got - plain).max() > 0.02  # the adapter is really in there
    code, _, err = run_cli(
        ["model", "export-onnx", tiny_model_path, tmp_path / "x.onnx", "--opset", "3"], capsys
    )
    assert_clean_error(code, err, str(tmp_path / "x.onnx"), expected_code=2, contains="opset")


def test_merge_lora(tiny_model_path, adapter_path, tmp_path, capsys):
    out = tmp_path / "merged.safetensors"
    code, _, err = run_cli(["model", "merge-lora", tiny_model_path, adapter_path, out], capsys)
    assert code == 0, err
    meta = read_metadata(out)
    assert meta.name == "tiny-test-unet+adapter"
    assert meta.lora["adapter_file"] == "adapter.safetensors"
    assert meta.lora["adapter_hash"] == checkpoint_hash(adapter_path) and meta.lora["rank"] == 2
    assert meta.lora["base_checkpoint_hash"] == checkpoint_hash(tiny_model_path)
    prov = meta.provenance["lora_merged"]
    assert prov["adapter"] == "adapter.safetensors" and prov["base"] == os.path.basename(tiny_model_path)
    assert meta.provenance["source"].startswith("tests/conftest.py")  # base provenance kept
    model, _ = load_generator(out)
    merged, _ = get_cached_generator(tiny_model_path, "cpu", lora=adapter_path)
    for k, v in merged.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    d = _json(["model", "info", out, "--json"], capsys)
    assert d["lora"]["adapter_hash"] == checkpoint_hash(adapter_path)

    # an adapter trained on another base checkpoint is refused
    other = make_adapter(tiny_model_path, tmp_path / "other.safetensors", base_hash="0123456789abcdef")
    bad_out = tmp_path / "bad.safetensors"
    code, _, err = run_cli(["model", "merge-lora", tiny_model_path, other, bad_out], capsys)
    assert_clean_error(code, err, str(bad_out), contains="trained on base checkpoint")
    # an adapter whose layers do not exist in the base
    small = tmp_path / "small.safetensors"
    from sar2opt_geo.models import CheckpointMeta, create_model, save_checkpoint

    p2p = CheckpointMeta(name="p", architecture="pix2pix_unet256", arch_args={"ngf": 4})
    save_checkpoint(small, create_model("pix2pix_unet256", ngf=4), p2p)
    unbound = make_adapter(tiny_model_path, tmp_path / "a2.safetensors", base_hash="")
    code, _, err = run_cli(["model", "merge-lora", small, unbound, bad_out], capsys)
    assert_clean_error(code, err, str(bad_out), contains="missing keys")


# -------------------------------------------------------------------------------- translate --lora, tags


def test_translate_lora_equals_merged_and_tags(small_scene, tiny_model_path, adapter_path, tmp_path, capsys):
    merged = tmp_path / "merged.safetensors"
    code, _, err = run_cli(["model", "merge-lora", tiny_model_path, adapter_path, merged, "-q"], capsys)
    assert code == 0, err
    common = ["--device", "cpu", "--filter", "lee", "--window", "5", "-q"]
    a, b, plain = tmp_path / "lora.tif", tmp_path / "merged.tif", tmp_path / "plain.tif"
    for args in (
        ["translate", small_scene, a, "--model", tiny_model_path, "--lora", adapter_path],
        ["translate", small_scene, b, "--model", merged],
        ["translate", small_scene, plain, "--model", tiny_model_path],
    ):
        code, _, err = run_cli(args + common, capsys)
        assert code == 0, err
    ra, meta = io.read_raster(a, masked=True)
    rb, _ = io.read_raster(b)
    rp, _ = io.read_raster(plain)
    valid = meta["mask"] > 0
    assert np.abs(ra.astype(int) - rb.astype(int)).max() <= 1
    assert np.abs(ra.astype(int) - rp.astype(int))[:, valid].mean() > 1  # the adapter changes the output

    tags = meta["tags"]
    assert tags["SAR2OPT_MODEL"] == "tiny-test-unet"
    assert tags["SAR2OPT_MODEL_HASH"] == f"{checkpoint_hash(tiny_model_path)}+{checkpoint_hash(adapter_path)}"
    assert tags["SAR2OPT_ADAPTER"] == "adapter.safetensors"
    rad = Radiometry.from_dict(read_metadata(tiny_model_path).radiometry)
    assert tags["SAR2OPT_RADIOMETRY"] == rad.describe()
    assert json.loads(tags["SAR2OPT_FILTER"])["name"] == "lee"
    assert json.loads(tags["SAR2OPT_TILING"]) == {"tile": 256, "overlap": 64, "blend": "raised-cosine"}
    assert tags["SAR2OPT_TOOL"].startswith("sar2opt-geo ")
    _, mmeta = io.read_raster(b)
    assert mmeta["tags"]["SAR2OPT_MODEL"] == "tiny-test-unet+adapter"
    assert mmeta["tags"]["SAR2OPT_MODEL_HASH"] == checkpoint_hash(merged)
    assert mmeta["tags"]["SAR2OPT_ADAPTER"] == "none"


def test_translate_lora_for_another_base_is_refused(small_scene, tiny_model_path, tmp_path, capsys):
    other = make_adapter(tiny_model_path, tmp_path / "other.safetensors", base_hash="0123456789abcdef")
    out = tmp_path / "o.tif"
    args = ["translate", small_scene, out, "--model", tiny_model_path, "--lora", other, "--device", "cpu"]
    code, _, err = run_cli(args + ["-q"], capsys)
    assert_clean_error(code, err, str(out), contains="trained on base checkpoint")
