"""ONNX export: parity with torch, dynamic batch, embedded metadata, atomic write, onnxruntime runner."""

import numpy as np
import onnx
import pytest
import torch

from sar2opt_geo.errors import ModelError
from sar2opt_geo.models import CheckpointMeta, LoRAConfig, create_model, inject_lora
from sar2opt_geo.models.lora import lora_modules
from sar2opt_geo.models.onnx_export import OnnxGenerator, export_onnx, read_onnx_metadata


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


@pytest.mark.parametrize("arch", ["unet_sar2optical", "unet_sar2optical_upsample", "pix2pix_unet256"])
def test_export_parity(tmp_path, arch):
    torch.manual_seed(0)
    args = {"in_channels": 1, "out_channels": 3, "ngf": 8}
    model = _randomize_bn(create_model(arch, **args))
    model.train()
    meta = CheckpointMeta(name="t", architecture=arch, arch_args=args, radiometry={"scale": "db"})
    path = export_onnx(model, tmp_path / "g.onnx", opset=17, tile_size=256, meta=meta)
    assert model.training  # mode restored
    assert [p.name for p in tmp_path.iterdir()] == ["g.onnx"]  # atomic: no temp file left
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version == 17
    assert [i.name for i in proto.graph.input] == ["sar"] and [o.name for o in proto.graph.output] == [
        "optical"
    ]
    assert read_onnx_metadata(path) == meta.to_dict()

    runner = OnnxGenerator(path)
    assert runner.providers[-1] == "CPUExecutionProvider"
    assert runner.meta["architecture"] == arch
    model.eval()
    for n in (1, 3):  # dynamic batch axis
        x = np.random.default_rng(n).standard_normal((n, 1, 256, 256)).astype(np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        got = runner(x)
        assert got.shape == (n, 3, 256, 256) and got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-3


def test_export_lora_model_merges_a_copy(tmp_path):
    torch.manual_seed(0)
    model = create_model("unet_sar2optical", in_channels=1, ngf=4)
    inject_lora(model, LoRAConfig(rank=2, dropout=0.0))
    for m in lora_modules(model).values():
        torch.nn.init.normal_(m.lora_B.weight, std=0.1)
    model.eval()
    export_onnx(model, tmp_path / "l.onnx")
    assert lora_modules(model)  # the caller's model is untouched
    x = np.random.default_rng(0).standard_normal((1, 1, 256, 256)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert np.abs(OnnxGenerator(tmp_path / "l.onnx")(x) - want).max() <= 1e-3
    assert read_onnx_metadata(tmp_path / "l.onnx") is None


def test_runner_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        OnnxGenerator(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError):
        OnnxGenerator(tmp_path / "bad.onnx")
    export_onnx(create_model("unet_sar2optical", ngf=2), tmp_path / "ok.onnx")
    with pytest.raises(ValueError):
        OnnxGenerator(tmp_path / "ok.onnx")(np.zeros((3, 256, 256), np.float32))


def test_cached_onnx_generator(tmp_path):
    from sar2opt_geo.models import checkpoint_hash, save_adapter, save_checkpoint
    from sar2opt_geo.models.onnx_export import clear_onnx_cache, get_cached_onnx_generator

    torch.manual_seed(0)
    args = {"in_channels": 1, "out_channels": 3, "ngf": 4}
    base = _randomize_bn(create_model("unet_sar2optical", **args)).eval()
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(ckpt, base, CheckpointMeta(name="m", arch_args=args))
    tuned = create_model("unet_sar2optical", **args)
    tuned.load_state_dict(base.state_dict())
    cfg = LoRAConfig(rank=2, dropout=0.0)
    inject_lora(tuned, cfg)
    for m in lora_modules(tuned).values():
        torch.nn.init.normal_(m.lora_B.weight, std=0.1)
    tuned.eval()
    adapter = save_adapter(tmp_path / "a.safetensors", tuned, cfg, checkpoint_hash(ckpt))

    cache = tmp_path / "cache"
    clear_onnx_cache()
    plain = get_cached_onnx_generator(ckpt, "cpu", cache_dir=cache)
    assert get_cached_onnx_generator(ckpt, "cpu", cache_dir=cache) is plain
    adapted = get_cached_onnx_generator(ckpt, "cpu", lora=adapter, cache_dir=cache)
    assert adapted is not plain and len(list(cache.glob("*.onnx"))) == 2
    assert plain.meta["name"] == "m"
    x = np.random.default_rng(0).standard_normal((1, 1, 512, 256)).astype(np.float32)  # dynamic H, W
    with torch.no_grad():
        assert np.abs(plain(x) - base(torch.from_numpy(x)).numpy()).max() <= 1e-3
        assert np.abs(adapted(x) - tuned(torch.from_numpy(x)).numpy()).max() <= 1e-3
    direct = get_cached_onnx_generator(next(cache.glob("*.onnx")), "cpu")
    assert direct.input_shape[2:] == ("height", "width")
    clear_onnx_cache()
