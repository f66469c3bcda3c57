"""LoRA for Conv2d and ConvTranspose2d: exact merge, freezing, adapters on disk, budget on the full model."""

import json

import pytest
import torch
from torch import nn

from sar2opt_geo.errors import CheckpointKeyError, ModelError
from sar2opt_geo.models import (
    CheckpointMeta,
    LoRAConfig,
    LoRAConv2d,
    LoRAConvTranspose2d,
    apply_adapter,
    checkpoint_hash,
    clear_model_cache,
    count_parameters,
    create_model,
    get_cached_generator,
    inject_lora,
    load_adapter,
    lora_state_dict,
    merge_lora,
    save_adapter,
    save_checkpoint,
    trainable_fraction,
)
from sar2opt_geo.models.lora import FrozenBatchNorm2d, lora_modules, read_adapter_metadata, remove_lora


def _perturb_b(model_or_layer, std=0.2, seed=0):
    """B starts at zero (no-op adapter); give it values so the adapter actually changes outputs."""
    g = torch.Generator().manual_seed(seed)
    layers = [model_or_layer] if hasattr(model_or_layer, "lora_B") else lora_modules(model_or_layer).values()
    with torch.no_grad():
        for m in layers:
            m.lora_B.weight.copy_(torch.randn(m.lora_B.weight.shape, generator=g) * std)


def _randomize_bn(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


@pytest.mark.parametrize(
    "base",
    [
        nn.Conv2d(5, 7, 4, 2, 1),
        nn.Conv2d(5, 7, 3, 1, 2, dilation=2, bias=False),
        nn.Conv2d(5, 7, 3, 1, 1, padding_mode="reflect"),
        nn.ConvTranspose2d(5, 7, 4, 2, 1, bias=False),
        nn.ConvTranspose2d(5, 7, 3, 2, 1, output_padding=1),
        nn.ConvTranspose2d(6, 3, (3, 5), (1, 2), (1, 2), dilation=(2, 1)),
    ],
    ids=["conv_k4s2", "conv_dil", "conv_reflect", "convT_k4s2", "convT_outpad", "convT_anisotropic"],
)
def test_layer_merge_exact(base):
    torch.manual_seed(0)
    cls = LoRAConvTranspose2d if isinstance(base, nn.ConvTranspose2d) else LoRAConv2d
    layer = cls(base, rank=3, alpha=6, dropout=0.3)
    assert type(layer.lora_A) is type(base)
    assert layer.lora_A.kernel_size == base.kernel_size and layer.lora_A.stride == base.stride
    assert layer.lora_A.out_channels == 3 and layer.lora_A.bias is None
    assert (
        isinstance(layer.lora_B, nn.Conv2d)
        and layer.lora_B.kernel_size == (1, 1)
        and layer.lora_B.bias is None
    )
    assert torch.count_nonzero(layer.lora_B.weight) == 0
    assert layer.scaling == 2.0
    x = torch.randn(2, base.in_channels, 9, 11)
    with torch.no_grad():
        y0 = base(x)
        layer.eval()
        torch.testing.assert_close(layer(x), y0)  # zero-initialised B: exact no-op
        _perturb_b(layer)
        y = layer(x)
        assert (y - y0).abs().max() > 1e-2
        merged = merge_lora(layer)
    assert type(merged) is type(base)
    with torch.no_grad():
        assert (merged(x) - y).abs().max().item() <= 1e-5


@pytest.mark.parametrize("arch", ["unet_sar2optical", "unet_sar2optical_upsample", "pix2pix_unet256"])
def test_whole_generator_merge_exact(arch):
    torch.manual_seed(0)
    model = _randomize_bn(create_model(arch, in_channels=1, out_channels=3, ngf=8))
    n_convs = sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())
    inject_lora(model, LoRAConfig(rank=4, alpha=8, dropout=0.1))
    assert len(lora_modules(model)) == n_convs
    _perturb_b(model, std=0.05)
    model.eval()
    x = torch.randn(1, 1, 256, 256)
    with torch.no_grad():
        y = model(x)
        merge_lora(model)
        y_merged = model(x)
    assert not lora_modules(model)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert set(model.state_dict()) == set(
        create_model(arch, in_channels=1, out_channels=3, ngf=8).state_dict()
    )
    diff = (y_merged - y).abs().max().item()
    assert diff <= 1e-5, diff


def test_freezing_and_batchnorm():
    torch.manual_seed(0)
    model = create_model("unet_sar2optical", in_channels=1, ngf=4)
    inject_lora(model, LoRAConfig(rank=2))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(isinstance(m, FrozenBatchNorm2d) and not m.training for m in bns)
    assert model.decoder.dec1.conv_block[2].training  # dropout follows model.train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    base_w = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        loss = model(torch.randn(2, 1, 256, 256)).square().mean()
        loss.backward()
        opt.step()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in stats.items())  # BN statistics untouched
    assert all(torch.equal(after[k], v) for k, v in base_w.items())  # base weights untouched
    assert any(torch.count_nonzero(m.lora_B.weight) for m in lora_modules(model).values())  # B learned


def test_targets_and_errors():
    model = create_model("unet_sar2optical", ngf=4)
    inject_lora(model, LoRAConfig(rank=2, target=["decoder.*", "head"]))
    names = set(lora_modules(model))
    assert "head.0" in names and "decoder.dec1.conv_block.0" in names
    assert not any(n.startswith("encoder") for n in names)
    with pytest.raises(ModelError, match="already"):
        inject_lora(model, LoRAConfig())
    remove_lora(model)
    assert not lora_modules(model)
    with pytest.raises(ModelError, match="matches no"):
        inject_lora(model, LoRAConfig(target=["nothing.*"]))
    with pytest.raises(ModelError):
        LoRAConfig(rank=0)


def test_rank16_budget_on_full_generator():
    """Rank-16 LoRA on every conv of the ngf=64 generator: the real figure is 3.79 % (above 3 %).

    A's full k×k kernel into r channels costs r/C_out of the base layer, i.e. 16/512 = 3.1 % on the wide
    layers and much more on the narrow ones (e.g. 16/64 = 25 % on dec8), so 3 % is out of reach at rank 16
    with this design; rank 8 is well under it (1.93 %).
    """
    model = create_model("unet_sar2optical")
    base = count_parameters(model)
    inject_lora(model, LoRAConfig(rank=16))
    trainable = count_parameters(model, trainable_only=True)
    assert trainable == 2_147_120
    assert count_parameters(model) == base + trainable == 56_688_947
    frac = trainable_fraction(model)
    assert frac == pytest.approx(0.03788, abs=1e-5)
    assert frac > 0.03
    model8 = inject_lora(create_model("unet_sar2optical"), LoRAConfig(rank=8))
    assert trainable_fraction(model8) <= 0.03


def test_adapter_round_trip(tmp_path):
    torch.manual_seed(0)
    args = {"in_channels": 1, "out_channels": 3, "ngf": 4}
    base = _randomize_bn(create_model("unet_sar2optical", **args))
    ckpt_path = tmp_path / "base.safetensors"
    save_checkpoint(ckpt_path, base, CheckpointMeta(name="base", arch_args=args))
    base_hash = checkpoint_hash(ckpt_path)

    tuned = create_model("unet_sar2optical", **args)
    tuned.load_state_dict(base.state_dict())
    config = LoRAConfig(rank=2, alpha=4, dropout=0.0, target=["decoder.*"])
    inject_lora(tuned, config)
    _perturb_b(tuned, std=0.1)
    tuned.eval()
    adapter = tmp_path / "ad.safetensors"
    save_adapter(adapter, tuned, config, base_hash, {"epochs": 3}, base_name="base")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    state, cfg = load_adapter(adapter)
    assert set(state) == set(lora_state_dict(tuned))
    assert all(".lora_A." in k or ".lora_B." in k for k in state)
    assert cfg.rank == 2 and cfg.alpha == 4 and cfg.target == list(lora_modules(tuned))
    info = read_adapter_metadata(adapter)
    assert info["base_checkpoint_hash"] == base_hash and info["base_checkpoint_name"] == "base"
    assert info["extra"] == {"epochs": 3} and info["target"] == ["decoder.*"]
    n = int.from_bytes(adapter.read_bytes()[:8], "little")
    assert "sar2opt_geo_lora" in json.loads(adapter.read_bytes()[8 : 8 + n])["__metadata__"]

    fresh = create_model("unet_sar2optical", **args)
    fresh.load_state_dict(base.state_dict())
    apply_adapter(fresh, adapter, expected_base_hash=base_hash)
    fresh.eval()
    x = torch.randn(1, 1, 256, 256)
    with torch.no_grad():
        want = tuned(x)
        torch.testing.assert_close(fresh(x), want)

    with pytest.raises(ModelError, match="trained on base"):
        apply_adapter(
            create_model("unet_sar2optical", **args), adapter, expected_base_hash="0123456789abcdef"
        )
    with pytest.raises(CheckpointKeyError):  # different width: shapes do not match
        apply_adapter(create_model("unet_sar2optical", in_channels=1, ngf=8), adapter)

    clear_model_cache()
    cached, meta = get_cached_generator(ckpt_path, "cpu", lora=adapter)
    assert not lora_modules(cached) and meta.lora["base_checkpoint_hash"] == base_hash
    with torch.no_grad():
        assert (cached(x) - want).abs().max().item() <= 1e-5
    plain, _ = get_cached_generator(ckpt_path, "cpu")
    assert plain is not cached
    clear_model_cache()
