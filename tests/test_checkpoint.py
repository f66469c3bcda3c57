"""Native .safetensors checkpoints: round trip, metadata, strict loading, refusal of foreign files, caches."""

import hashlib
import json
import pickle
import threading

import pytest
import torch
from safetensors.torch import save_file

from sar2opt_geo.errors import CheckpointKeyError, ModelError
from sar2opt_geo.models import (
    CheckpointMeta,
    checkpoint_hash,
    clean_state_dict,
    clear_model_cache,
    count_parameters,
    create_model,
    get_cached_generator,
    load_generator,
    read_metadata,
    save_checkpoint,
)
from sar2opt_geo.models import checkpoint as ckpt

ARGS = {"in_channels": 1, "out_channels": 3, "ngf": 4}


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
    return model


def _meta(**kw):
    d = {
        "name": "tiny",
        "architecture": "unet_sar2optical",
        "arch_args": dict(ARGS),
        "input_bands": ["VV"],
        "radiometry": {"scale": "db", "clip": [-25.0, 0.0]},
        "preprocess": {"speckle": "lee", "size": 5},
        "provenance": {"source": "unit test"},
    }
    d.update(kw)
    return CheckpointMeta(**d)


@pytest.fixture
def tiny_ckpt(tmp_path):
    torch.manual_seed(0)
    model = _randomize_bn(create_model("unet_sar2optical", **ARGS))
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, model, _meta())
    return path, model.eval()


def test_round_trip(tiny_ckpt, tmp_path):
    path, model = tiny_ckpt
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]  # no temp file left
    loaded, meta = load_generator(path)
    assert not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert int(loaded.encoder.enc2.conv_block[1].num_batches_tracked) > 0
    x = torch.randn(1, 1, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert meta == _meta()
    assert meta.to_dict()["format"] == "sar2opt-geo/1"


def test_metadata_in_header(tiny_ckpt):
    path, _ = tiny_ckpt
    n = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + n])
    embedded = json.loads(header["__metadata__"]["sar2opt_geo"])
    assert embedded["input_bands"] == ["VV"] and embedded["lora"] is None
    assert set(embedded) == {
        "format",
        "name",
        "architecture",
        "arch_args",
        "input_bands",
        "radiometry",
        "preprocess",
        "lora",
        "provenance",
    }
    meta = read_metadata(path)
    assert meta.arch_args == ARGS and meta.preprocess == {"speckle": "lee", "size": 5}
    assert CheckpointMeta.from_dict(meta.to_dict()) == meta


def test_meta_validation():
    with pytest.raises(ModelError, match="format"):
        CheckpointMeta.from_dict({"format": "other/9", "name": "x", "architecture": "a", "arch_args": {}})
    with pytest.raises(ModelError, match="architecture"):
        CheckpointMeta.from_dict({"format": "sar2opt-geo/1", "name": "x", "arch_args": {}})
    with pytest.raises(ModelError):
        CheckpointMeta.from_json("{not json")


def _write_native(path, tensors, meta):
    save_file(tensors, str(path), metadata={"sar2opt_geo": meta.to_json()})


def test_key_errors_are_listed(tiny_ckpt, tmp_path):
    path, model = tiny_ckpt
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd.pop("head.0.bias")
    sd["extra.weight"] = torch.zeros(2)
    sd["encoder.enc1.conv_block.0.weight"] = torch.zeros(4, 2, 4, 4)
    bad = tmp_path / "bad.safetensors"
    _write_native(bad, sd, _meta())
    with pytest.raises(CheckpointKeyError) as info:
        load_generator(bad)
    err = info.value
    assert err.missing == ["head.0.bias"] and err.unexpected == ["extra.weight"]
    assert len(err.shape_mismatch) == 1 and "encoder.enc1.conv_block.0.weight" in err.shape_mismatch[0]
    assert "head.0.bias" in str(err) and "bad.safetensors" in str(err)


@pytest.mark.parametrize(
    "kind",
    [
        "pickle",
        "torch_zip",
        "truncated",
        "truncated_header",
        "garbage",
        "empty",
        "no_meta",
        "bad_json",
        "bad_arch",
    ],
)
def test_not_native_raises_model_error(kind, tiny_ckpt, tmp_path):
    path, model = tiny_ckpt
    bad = tmp_path / f"{kind}.safetensors"
    data = path.read_bytes()
    if kind == "pickle":
        bad.write_bytes(pickle.dumps({"a": 1}))
    elif kind == "torch_zip":
        torch.save(model.state_dict(), bad)
    elif kind == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_header":
        bad.write_bytes(data[:40])
    elif kind == "garbage":
        bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\x00" * 64)
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "no_meta":
        save_file({"a": torch.zeros(2)}, str(bad))
    elif kind == "bad_json":
        save_file({"a": torch.zeros(2)}, str(bad), metadata={"sar2opt_geo": "{oops"})
    elif kind == "bad_arch":
        _write_native(bad, {"a": torch.zeros(2)}, _meta(architecture="resnet9000"))
    with pytest.raises(ModelError) as info:
        load_generator(bad)
    msg = str(info.value)
    assert "\n" not in msg and bad.name in msg or kind in ("bad_json", "bad_arch")
    if kind == "bad_arch":
        assert "unet_sar2optical" in msg  # lists the valid names


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        read_metadata(tmp_path / "nope.safetensors")


def test_refuses_unmerged_lora(tmp_path):
    from sar2opt_geo.models import LoRAConfig, inject_lora

    model = inject_lora(create_model("unet_sar2optical", **ARGS), LoRAConfig(rank=2))
    with pytest.raises(ModelError, match="LoRA"):
        save_checkpoint(tmp_path / "x.safetensors", model, _meta())


def test_checkpoint_hash(tiny_ckpt, tmp_path):
    path, model = tiny_ckpt
    h = checkpoint_hash(path)
    # the short identity is the first 16 hex digits of the file's sha256
    assert h == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert checkpoint_hash(path) == h
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(path.read_bytes())
    assert checkpoint_hash(copy) == h
    save_checkpoint(copy, model, _meta(name="other"))
    assert checkpoint_hash(copy) != h


def test_clean_state_dict():
    sd = {
        "module._orig_mod.gen.head.0.weight": 1,
        "generator.module.encoder.x": 2,
        "model.model.0.weight": 3,
        "head.0.bias": 4,
    }
    assert clean_state_dict(sd) == {
        "head.0.weight": 1,
        "encoder.x": 2,
        "model.model.0.weight": 3,
        "head.0.bias": 4,
    }


def test_count_parameters():
    model = create_model("patchgan70", in_channels=2, ndf=4)
    total = count_parameters(model)
    model.model.model[0].conv_block[0].weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == total - 2 * 4 * 16


def test_model_cache(tiny_ckpt, monkeypatch):
    path, _ = tiny_ckpt
    clear_model_cache()
    calls = []
    real = ckpt.load_generator
    monkeypatch.setattr(ckpt, "load_generator", lambda *a, **k: calls.append(1) or real(*a, **k))
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(get_cached_generator(path, "cpu"))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert all(r[0] is results[0][0] for r in results)
    model, meta = get_cached_generator(str(path), torch.device("cpu"))
    assert model is results[0][0] and meta.name == "tiny" and not model.training
    clear_model_cache()
    assert get_cached_generator(path)[0] is not model
    clear_model_cache()


def test_header_length_with_low_byte_0x80_is_not_taken_for_a_pickle(tmp_path):
    """A safetensors header length whose first (low) byte is 0x80 — like a pickle's PROTO opcode — loads."""
    import torch
    from safetensors.torch import save_file

    from sar2opt_geo.models.checkpoint import read_state_dict

    for pad in range(64):
        path = tmp_path / f"t{pad}.safetensors"
        save_file({"w": torch.zeros(2)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        raise AssertionError("no padding gave a header length with low byte 0x80")
    assert torch.equal(read_state_dict(path)["w"], torch.zeros(2))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoints_and_adapters_get_the_usual_file_permissions(tmp_path, umask):
    """A checkpoint or an adapter file is created as any output is (0666 minus the umask): readable by the
    group's workers under umask 022, private under 077 (safetensors' own save_file makes every file 0600)."""
    import os
    import stat

    from sar2opt_geo.models import LoRAConfig, inject_lora, save_adapter

    old = os.umask(umask)
    try:
        model = create_model("unet_sar2optical", **ARGS)
        ckpt_path = save_checkpoint(tmp_path / "g.safetensors", model, _meta())
        lora = inject_lora(create_model("unet_sar2optical", **ARGS), LoRAConfig(rank=2))
        adapter = save_adapter(tmp_path / "a.safetensors", lora, LoRAConfig(rank=2), "0" * 64)
    finally:
        os.umask(old)
    for path in (ckpt_path, adapter):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "g.safetensors"]
    load_generator(ckpt_path)
