"""Trainer: a few ngf=8 steps on 4 synthetic 256² pairs, exact resume, LoRA fine-tuning, CLI errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from sar2opt_geo.models.checkpoint import CheckpointMeta, load_generator, read_metadata, save_checkpoint
from sar2opt_geo.models.lora import apply_adapter, merge_lora
from sar2opt_geo.models.registry import create_model
from sar2opt_geo.training.config import load_config
from sar2opt_geo.training.trainer import Run, train

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["ngf=8", "ndf=8", "batch_size=2", "val_every=1000", "checkpoint_every=1000", "log_every=1"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    from sar2opt_geo.synth import write_pairs

    root = tmp_path_factory.mktemp("train_pairs")
    write_pairs(root, 4, seed=11)
    return root


@pytest.fixture(scope="module")
def run4(pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("run4") / "run"
    summary = train(pairs, out, load_config(overrides=SMALL + ["steps=4"]))
    return out, summary


def test_steps_finite_and_files(run4):
    out, summary = run4
    assert summary["steps"] == 4 and summary["trainable_fraction"] == 1.0
    rows = (out / "losses.csv").read_text().splitlines()[1:]
    assert len(rows) == 4 and all(math.isfinite(float(v)) for r in rows for v in r.split(","))
    for name in (
        "generator.safetensors",
        "training_state.pt",
        "split.json",
        "metrics.csv",
        "summary.json",
        "plots/losses.png",
        "run.json",
    ):
        assert (out / name).exists(), name
    meta = read_metadata(out / "generator.safetensors")
    assert (
        meta.input_bands == ["VV"] and meta.radiometry["clip"] == [-25.0, 0.0] and meta.radiometry["quantize"]
    )
    assert meta.provenance["steps"] == 4 and meta.provenance["seed"] == 0 and "config" in meta.provenance
    st = torch.load(out / "training_state.pt", weights_only=True)
    assert st["step"] == 4 and {"torch", "numpy_keys", "python_state"} <= set(st["rng"])
    split = json.loads((out / "split.json").read_text())["data"]
    assert len(split["train"]) == 2 and len(split["val"]) == 1 and len(split["test"]) == 1


def test_resume_matches_uninterrupted(run4, pairs, tmp_path):
    out4, _ = run4
    out = tmp_path / "run"
    train(pairs, out, load_config(overrides=SMALL + ["steps=2"]))
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    s = Run(None, out, resume=True, overrides={"steps": 4}).fit()
    assert s["steps"] == 4
    a, _ = load_generator(out4 / "generator.safetensors")
    b, _ = load_generator(out / "generator.safetensors")
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6), k
    st_a = torch.load(out4 / "training_state.pt", weights_only=True)
    st_b = torch.load(out / "training_state.pt", weights_only=True)
    for k in st_a["D"]:
        assert torch.allclose(st_a["D"][k].float(), st_b["D"][k].float(), atol=1e-6), k


def test_lora_finetune_trains_only_adapters(tiny_model_path, pairs, tmp_path):
    base, _ = load_generator(tiny_model_path)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    cfg = load_config(
        overrides=SMALL + ["steps=1", "lora=true", "lora_rank=4", "lora_alpha=8", "lora_lr=0.01"]
    )
    run = Run(pairs, tmp_path / "ft", cfg, mode="finetune", base=tiny_model_path)
    summary = run.fit()
    assert 0 < summary["trainable_fraction"] < 0.5
    assert summary["trainable_parameters"] == sum(p.numel() for p in run.G.parameters() if p.requires_grad)
    trainable = [n for n, p in run.G.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    after = run.G.state_dict()
    for k, v in before.items():  # base weights and BatchNorm statistics bitwise unchanged
        key = k if k in after else k.replace(".weight", ".base.weight").replace(".bias", ".base.bias")
        assert torch.equal(after[key], v), k
    assert any(v.abs().sum() > 0 for k, v in after.items() if ".lora_B." in k)  # adapters did move
    adapter = tmp_path / "ft" / "adapter.safetensors"
    assert adapter.stat().st_size < Path(tiny_model_path).stat().st_size / 2
    assert json.loads((tmp_path / "ft" / "adapter.json").read_text())["rank"] == 4
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    run.G.eval()
    with torch.no_grad():
        ref = run.G(x)
        m, _ = load_generator(tiny_model_path)
        merged = merge_lora(apply_adapter(m, adapter)).eval()
        assert torch.allclose(merged(x), ref, atol=1e-5)
        g, meta = load_generator(tmp_path / "ft" / "generator.safetensors")
        assert meta.lora["rank"] == 4 and torch.allclose(g(x), ref, atol=1e-5)


def test_cli_pretrain_and_errors(pairs, tmp_path, capsys):
    out = tmp_path / "cli"
    code, _, err = run_cli(
        [
            "train",
            "pretrain",
            "--data",
            pairs,
            "--out",
            out,
            "-q",
            *sum((["--set", s] for s in SMALL + ["steps=1"]), []),
        ],
        capsys,
    )
    assert code == 0, err
    assert (out / "generator.safetensors").exists()
    code, _, err = run_cli(["train", "pretrain", "--data", pairs, "--out", out, "--set", "steps=1"], capsys)
    assert code == 1 and "--resume" in err
    code, _, err = run_cli(["train", "pretrain", "--resume", tmp_path / "missing"], capsys)
    assert code == 2 and "cannot resume" in err and err.strip().count("\n") == 0
    code, _, err = run_cli(
        ["train", "pretrain", "--data", pairs, "--out", tmp_path / "x", "--set", "nonsense=1"], capsys
    )
    assert code == 2 and "'nonsense'" in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("ngf: 8\nbogus_key: 3\n")
    code, _, err = run_cli(
        ["train", "pretrain", "--data", pairs, "--out", tmp_path / "y", "--config", cfg], capsys
    )
    assert code == 2 and "'bogus_key'" in err


@pytest.mark.parametrize("arch", ["patchgan70", "pix2pix_unet256"])
def test_finetune_refuses_other_architectures(arch, pairs, tmp_path, capsys):
    args = (
        {"in_channels": 6, "ndf": 8}
        if arch == "patchgan70"
        else {"in_channels": 3, "out_channels": 3, "ngf": 8}
    )
    ckpt = tmp_path / f"{arch}.safetensors"
    save_checkpoint(
        ckpt, create_model(arch, **args), CheckpointMeta(name=arch, architecture=arch, arch_args=args)
    )
    code, _, err = run_cli(
        ["train", "finetune", "--base", ckpt, "--data", pairs, "--out", tmp_path / "ft", "--lora"], capsys
    )
    assert code == 1 and arch in err and "unet_sar2optical" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "ft" / "training_state.pt").exists()


def test_shipped_configs_load():
    for name in ("pretrain", "finetune", "default_model"):
        load_config(ROOT / "configs" / f"{name}.yaml")


def test_dropout_off_makes_training_forward_deterministic(pairs, tmp_path):
    """``dropout=false`` zeroes the architecture's Dropout(0.5) layers (same weights and keys) and survives
    a resume, so the train-mode generator is deterministic; the default keeps pix2pix's dropout noise."""
    on = Run(pairs, tmp_path / "on", load_config(overrides=SMALL + ["steps=1"]))
    drops = [m for m in on.G.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 3 and all(m.p == 0.5 for m in drops)
    x = torch.stack([on.train_ds[0][0], on.train_ds[1][0]])
    on.G.train()
    assert not torch.equal(on.G(x), on.G(x))

    out = tmp_path / "off"
    train(pairs, out, load_config(overrides=SMALL + ["steps=1", "dropout=false"]))
    off = Run(None, out, resume=True, overrides={"steps": 2})
    assert {m.p for m in off.G.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}
    off.G.train()
    assert torch.equal(off.G(x), off.G(x))
    assert set(off.G.state_dict()) == set(on.G.state_dict())

    # fine-tuning keeps what the base was trained with unless told otherwise
    ft = Run(
        pairs,
        tmp_path / "ft",
        load_config(overrides=SMALL),
        mode="finetune",
        base=out / "generator.safetensors",
    )
    assert {m.p for m in ft.G.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}
    ft_on = Run(
        pairs,
        tmp_path / "ft_on",
        load_config(overrides=SMALL + ["dropout=true"]),
        mode="finetune",
        base=out / "generator.safetensors",
    )
    assert {m.p for m in ft_on.G.modules() if isinstance(m, torch.nn.Dropout)} == {0.5}
