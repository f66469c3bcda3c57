"""Trainer: a few ngf=8 steps on 4 synthetic 256² pairs, exact resume, LoRA fine-tuning, CLI errors."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from sar2opt_geo.errors import UsageError
from sar2opt_geo.models.checkpoint import CheckpointMeta, load_generator, read_metadata, save_checkpoint
from sar2opt_geo.models.lora import apply_adapter, merge_lora
from sar2opt_geo.models.registry import create_model
from sar2opt_geo.training.config import TrainConfig, load_config
from sar2opt_geo.training.trainer import Run, train

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["ngf=8", "ndf=8", "batch_size=2", "val_every=1000", "checkpoint_every=1000", "log_every=1"]


def _pretrain_args(pairs, out, steps, *options):
    """``train pretrain`` arguments: PAIRS into OUT with the SMALL settings for STEPS steps, OPTIONS before
    the ``--set`` overrides (all as strings)."""
    sets = sum((["--set", s] for s in SMALL + [f"steps={steps}"]), [])
    return [str(a) for a in ("train", "pretrain", "--data", pairs, "--out", out, *options, *sets)]


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
    code, _, err = run_cli(_pretrain_args(pairs, out, 1, "-q"), capsys)
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
    names = {p.stem for p in (ROOT / "configs").glob("*.yaml")}
    assert {"pretrain", "finetune", "default_model", "cpu_quick"} <= names
    for name in sorted(names):
        load_config(ROOT / "configs" / f"{name}.yaml")
    quick = load_config(ROOT / "configs" / "cpu_quick.yaml")
    assert (quick.ngf, quick.ndf, quick.steps) == (16, 16, 2200)  # the README's measured CPU recipe


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


# ------------------------------------------------------------------ interruption, resume, atomic checkpoints


def _interrupt_at(monkeypatch, k: int, sig=signal.SIGTERM):
    """Make the running process receive ``sig`` (a real signal, through the trainer's handler) right after
    step ``k`` finished its update."""
    orig = Run.train_step

    def step(self, x, y):
        losses = orig(self, x, y)
        if self.step == k:
            signal.raise_signal(sig)
        return losses

    monkeypatch.setattr(Run, "train_step", step)


def _assert_same_state(dir_a, dir_b):
    """Generator, discriminator and both optimisers bitwise equal."""
    a, _ = load_generator(dir_a / "generator.safetensors")
    b, _ = load_generator(dir_b / "generator.safetensors")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    st_a = torch.load(dir_a / "training_state.pt", weights_only=True)
    st_b = torch.load(dir_b / "training_state.pt", weights_only=True)
    assert st_a["step"] == st_b["step"]
    for part in ("G", "D"):
        for k in st_a[part]:
            assert torch.equal(st_a[part][k], st_b[part][k]), (part, k)
    for part in ("opt_G", "opt_D"):
        for i, s in st_a[part]["state"].items():
            for k, v in s.items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(st_b[part]["state"][i][k])), (
                    part,
                    i,
                    k,
                )


@pytest.mark.parametrize(("k", "sig"), [(1, signal.SIGTERM), (2, signal.SIGINT), (3, signal.SIGTERM)])
def test_interrupt_at_any_step_then_resume_equals_uninterrupted(run4, pairs, tmp_path, monkeypatch, k, sig):
    out4, _ = run4
    out = tmp_path / "run"
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    _interrupt_at(monkeypatch, k, sig)
    s = train(pairs, out, load_config(overrides=SMALL + ["steps=4"]))
    assert s["interrupted"] == signal.Signals(sig).name and s["steps"] == k and s["stopped_early"]
    assert s["resume"] == f"sar2opt-geo train pretrain --resume {out}"
    assert torch.load(out / "training_state.pt", weights_only=True)["step"] == k
    assert len((out / "losses.csv").read_text().splitlines()) == 1 + k
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers  # restored
    monkeypatch.undo()
    s = Run(None, out, resume=True).fit()
    assert s["steps"] == 4 and s["interrupted"] is None and s["resume"] is None
    _assert_same_state(out4, out)
    assert (out / "losses.csv").read_text() == (out4 / "losses.csv").read_text()


def test_resume_before_the_first_checkpoint(run4, pairs, tmp_path):
    """A run killed before any checkpoint (run.json but no training_state.pt) resumes from step 0."""
    out = tmp_path / "run"
    train(pairs, out, load_config(overrides=SMALL + ["steps=2"]))
    for name in ("training_state.pt", "generator.safetensors", "summary.json"):
        (out / name).unlink()
    s = Run(None, out, resume=True, overrides={"steps": 4}).fit()
    assert s["steps"] == 4
    _assert_same_state(run4[0], out)


def test_failed_save_keeps_the_previous_checkpoint(pairs, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(pairs, out, load_config(overrides=SMALL + ["steps=2"]))
    state = out / "training_state.pt"
    before = state.read_bytes()
    run = Run(None, out, resume=True, overrides={"steps": 4})
    run.t0 = 0.0
    run.step = 3

    def half_write(obj, f, *a, **kw):
        f.write(before[: len(before) // 2])  # a torn write, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_write)
    with pytest.raises(OSError):
        run.save()
    monkeypatch.undo()
    assert state.read_bytes() == before
    assert torch.load(state, weights_only=True)["step"] == 2
    assert not list(out.glob(".*.tmp"))
    assert Run(None, out, resume=True, overrides={"steps": 3}).fit()["steps"] == 3


_SAVER = """
import sys, torch
from pathlib import Path
from sar2opt_geo.training.trainer import _save_torch
path = Path(sys.argv[1])
i = 0
print("ready", flush=True)
while True:  # ~32 MB per version, each a constant tensor of its version number
    i += 1
    _save_torch({"version": i, "w": torch.full((8_000_000,), float(i))}, path)
"""


def test_kill_during_save_never_corrupts_the_last_checkpoint(tmp_path):
    """SIGKILL a process that rewrites a 32 MB checkpoint in a loop, at several moments: the file at the
    final path always loads and is one whole version."""
    import subprocess
    import sys
    import time

    path = tmp_path / "training_state.pt"
    seen = set()
    for delay in (0.7, 1.3, 2.1):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.kill()
        proc.wait(30)
        if not path.exists():
            continue
        st = torch.load(path, weights_only=True)
        assert torch.equal(st["w"], torch.full((8_000_000,), float(st["version"])))
        seen.add(st["version"])
    assert seen, "no checkpoint was ever completed"


def _pretrain_cmd(pairs, out, steps):
    import sys

    return [sys.executable, "-m", "sar2opt_geo", *_pretrain_args(pairs, out, steps)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_a_real_training_process_checkpoints_and_says_how_to_resume(pairs, tmp_path, sig):
    """SIGTERM as a scheduler sends it; SIGINT as a script sends it to a background job (started with SIGINT
    ignored, as a non-interactive shell starts `cmd &`)."""
    import subprocess
    import time

    out = tmp_path / "run"
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            _pretrain_cmd(pairs, out, 500),
            stderr=err,
            stdout=subprocess.DEVNULL,
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
            if sig == signal.SIGINT
            else None,
        )
        deadline = time.time() + 120
        losses = out / "losses.csv"
        while time.time() < deadline and not (losses.exists() and len(losses.read_text().splitlines()) >= 3):
            assert proc.poll() is None, err_path.read_text()
            time.sleep(0.2)
        proc.send_signal(sig)
        rc = proc.wait(120)
    msg = err_path.read_text()
    assert rc == 128 + int(sig), msg
    assert "Traceback" not in msg
    step = torch.load(out / "training_state.pt", weights_only=True)["step"]
    assert 2 <= step < 500
    assert f"Interrupted by {signal.Signals(sig).name} at step {step}/500; checkpoint saved." in msg
    assert f"Resume with: sar2opt-geo train pretrain --resume {out}" in msg
    assert len((out / "losses.csv").read_text().splitlines()) == 1 + step
    # the printed command continues the run (here for one more step)
    import shlex
    import sys

    printed = shlex.split(msg.split("Resume with: ", 1)[1].splitlines()[0])
    assert printed[0] == "sar2opt-geo"
    res = subprocess.run(
        [sys.executable, "-m", "sar2opt_geo", *printed[1:], "--set", f"steps={step + 1}", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "summary.json").read_text())["steps"] == step + 1


# --------------------------------------------------------------------------- machine-fitting defaults, CLI


def test_loader_worker_default_from_cores():
    from sar2opt_geo.training.trainer import default_loader_workers, usable_cores

    assert [default_loader_workers(c) for c in (1, 2, 3, 4, 5, 8, 64)] == [0, 0, 2, 3, 4, 4, 4]
    assert default_loader_workers() == default_loader_workers(usable_cores())
    assert load_config().num_workers is None  # null: from the cores
    for name in ("pretrain", "finetune"):  # the shipped recipes do not hard-code a worker count
        assert load_config(ROOT / "configs" / f"{name}.yaml").num_workers is None


def test_too_many_loader_workers_warn_once_and_deprecated_alias(pairs, tmp_path, capsys):
    import os

    n = len(os.sched_getaffinity(0)) + 1
    code, _, err = run_cli(_pretrain_args(pairs, tmp_path / "w", 1, "--workers", n), capsys)
    assert code == 0, err
    assert err.count("deprecated") == 1 and "--loader-workers" in err
    assert err.count(f"num_workers={n} DataLoader processes") == 1
    assert "This DataLoader will create" not in err
    code, _, err = run_cli(
        ["train", "pretrain", "--data", pairs, "--out", tmp_path / "x", "--loader-workers", "-1"], capsys
    )
    assert code == 2


def test_help_texts(capsys):
    code, out, _ = run_cli(["train", "pretrain", "--help"], capsys)
    assert code == 0
    out = " ".join(out.split())
    assert out.count("[required unless --resume]") == 2 and "--loader-workers" in out
    assert "--workers" not in out.replace("--loader-workers", "") and "-v, --verbose" in out


@pytest.mark.parametrize("inside", [False, True])
def test_run_folder_in_the_data_folder_is_refused(pairs, tmp_path, capsys, inside):
    before = sorted(p.relative_to(pairs) for p in Path(pairs).rglob("*"))
    out = Path(pairs) / "runs" / "r" if inside else Path(pairs)
    code, _, err = run_cli(["train", "pretrain", "--data", pairs, "--out", out, "--set", "steps=1"], capsys)
    assert code == 2 and err.strip().count("\n") == 0
    assert ("inside the data folder" if inside else "is the data folder") in err
    assert sorted(p.relative_to(pairs) for p in Path(pairs).rglob("*")) == before


def test_eta_from_a_moving_window_after_warm_up():
    """Fake clock: 3 slow warm-up steps, 0.5 s steps with jitter, a 10 s validation every 100 steps; after the
    first minute the ETA is within 20 % of the time actually left; it follows a change of speed."""
    import numpy as np

    from sar2opt_geo.training.trainer import _Progress

    now = [0.0]
    total, every, val_s = 1000, 100, 10.0
    p = _Progress(total, 0, True, window_s=60.0, clock=lambda: now[0])
    rng = np.random.default_rng(0)
    durations = [8.0, 4.0, 2.0] + list(0.5 * rng.uniform(0.8, 1.2, total - 3))
    finish = sum(durations) + val_s * ((total - 1) // every) + val_s  # + the final validation
    etas = {}
    for step in range(1, total + 1):
        now[0] += durations[step - 1]
        p.step_done(step)
        etas[step] = (p.eta(step), finish - now[0])
        if step % every == 0 and step < total:
            now[0] += val_s
            p.add_periodic("validation", every, val_s)
    assert math.isnan(etas[2][0])  # no estimate during warm-up
    assert etas[total][0] == val_s  # at the last step only the final validation is left
    for step, (eta, left) in etas.items():
        if sum(durations[:step]) >= 60 and step < total - 10:
            assert abs(eta - left) <= 0.2 * left, (step, eta, left)

    # speed halves at step 200: a minute later the rate follows it
    now[0] = 0.0
    p = _Progress(400, 0, True, window_s=60.0, clock=lambda: now[0])
    for step in range(1, 401):
        now[0] += 0.5 if step <= 200 else 1.0
        p.step_done(step)
    assert p.rate() == pytest.approx(1.0)


def test_throughput_breakdown_runs_the_trainer_code(pairs):
    """The profiling helper behind the README's throughput figures measures real, positive rates."""
    from sar2opt_geo.training.throughput import measure

    res = measure(pairs, None, ["ngf=8", "ndf=8", "batch_size=2", "val_max_images=1"], 1, 0, (0,))
    rates = [res["ceiling"], res["generator_only"], res["loop[0]"]]
    assert all(math.isfinite(r["steps_per_s"]) and 0 < r["min_s"] <= r["median_s"] for r in rates)
    phases = res["phases"]["median_s"]
    assert set(phases) == {"G_forward", "D_fwd_bwd_adam", "G_adv_D_forward", "G_bwd_adam"}
    assert all(v > 0 for v in phases.values()) and sum(res["phases"]["share"].values()) == pytest.approx(
        1, abs=0.01
    )
    assert res["data"]["decode_s_per_batch"] > 0
    assert res["validation_s"] > 0 and res["cores"] >= 1
    from sar2opt_geo.training.trainer import cpu_has_native_bf16

    variants = res["variants"]
    assert set(variants) == {"pix2pix_fp32", "no_discriminator_fp32"} | (
        {"no_discriminator_bf16"} if cpu_has_native_bf16() else set()
    )
    assert variants["pix2pix_fp32"]["speedup_vs_pix2pix_fp32"] == 1
    assert all(v["median_s"] > 0 for v in variants.values())


def test_lambda_mse_adds_the_squared_error_to_the_generator_loss(pairs, tmp_path):
    """``lambda_mse`` puts mean((G(x) − y)²) into G's objective: from the same start, five steps on a fixed
    batch with only that term lower the squared error well below five adversarial-only steps; negative
    weights are refused."""
    after = {}
    for name, weight in (("adv_only", 0), ("mse", 50)):
        sets = ["steps=1", "dropout=false", "lambda_l1=0", f"lambda_mse={weight}"]
        run = Run(pairs, tmp_path / name, load_config(overrides=SMALL + sets))
        x = torch.stack([run.train_ds[0][0], run.train_ds[1][0]])
        y = torch.stack([run.train_ds[0][1], run.train_ds[1][1]])
        for _ in range(5):
            run.train_step(x, y)
        with torch.no_grad():
            after[name] = float((run.G(x) - y).square().mean())
    assert after["mse"] < 0.9 * after["adv_only"]
    with pytest.raises(UsageError, match="lambda_mse"):
        load_config(overrides=["lambda_mse=-1"])


def test_resample_augment_draws_phases_beside_unchanged_dihedral_codes():
    from sar2opt_geo.training.trainer import batch_indices

    plain = [batch_indices(40, 4, 7, s, True) for s in range(10)]
    none = [batch_indices(40, 4, 7, s, True, 0.0) for s in range(10)]
    half = [batch_indices(40, 4, 7, s, True, 0.5) for s in range(10)]
    assert plain == none
    # the same items and dihedral codes; phase bits on about half of them, reproducibly
    assert [[(i, c & 7) for i, c in b] for b in half] == plain
    phased = [c >> 3 for b in half for _, c in b]
    assert 10 <= sum(p > 0 for p in phased) <= 30 and len(set(phased)) > 5
    assert half == [batch_indices(40, 4, 7, s, True, 0.5) for s in range(10)]
    assert all(c >> 3 for b in (batch_indices(40, 4, 7, s, True, 1.0) for s in range(3)) for _, c in b)
    assert all(c == 0 for b in (batch_indices(40, 4, 7, s, False, 1.0) for s in range(3)) for _, c in b)


def test_resample_augment_config_is_checked():
    with pytest.raises(UsageError, match="resample_augment must be a probability"):
        TrainConfig(resample_augment=1.5).validate()
    with pytest.raises(UsageError, match="needs the radiometry of 8-bit dB tiles"):
        TrainConfig(resample_augment=0.5, radiometry={"scale": "linear", "clip": [0, 1]}).validate()
    assert TrainConfig(resample_augment=0.5).validate().resample_clip_db() == (-25.0, 0.0)


def test_resample_augment_reaches_the_trainer_and_resumes_exactly(run4, pairs, tmp_path):
    """With ``resample_augment=1`` every training SAR tile is resampled: the weights differ from the same run
    without it (run4), and 2 steps + resume to 4 equal 4 uninterrupted steps."""
    sets = SMALL + ["resample_augment=1.0"]
    full = tmp_path / "full"
    train(pairs, full, load_config(overrides=sets + ["steps=4"]))
    part = tmp_path / "part"
    train(pairs, part, load_config(overrides=sets + ["steps=2"]))
    assert Run(None, part, resume=True, overrides={"steps": 4}).fit()["steps"] == 4
    a, _ = load_generator(full / "generator.safetensors")
    b, _ = load_generator(part / "generator.safetensors")
    plain, _ = load_generator(run4[0] / "generator.safetensors")
    sa, sb, sp = a.state_dict(), b.state_dict(), plain.state_dict()
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6), k
    assert any(not torch.allclose(sa[k].float(), sp[k].float(), atol=1e-6) for k in sa)


def test_lambda_gan_zero_trains_without_the_discriminator(pairs, tmp_path):
    """``lambda_gan: 0`` trains G on the pixel losses alone: the discriminator is never run (no forward, no
    update: its weights and optimiser stay as built), G still learns, and the adversarial columns log 0. The
    default (1) is pix2pix's g_adv + λ·L1 and does update D."""
    runs = {}
    for name, weight in (("pix2pix", 1), ("no_gan", 0)):
        sets = ["steps=1", "dropout=false", f"lambda_gan={weight}"]
        run = Run(pairs, tmp_path / name, load_config(overrides=SMALL + sets))
        d_before = {k: v.clone() for k, v in run.D.state_dict().items()}
        d_calls = []
        run.D.register_forward_hook(lambda *a, calls=d_calls: calls.append(1))
        x = torch.stack([run.train_ds[0][0], run.train_ds[1][0]])
        y = torch.stack([run.train_ds[0][1], run.train_ds[1][1]])
        with torch.no_grad():
            err0 = float((run.G(x) - y).abs().mean())
        losses = [run.train_step(x, y) for _ in range(5)]
        with torch.no_grad():
            err5 = float((run.G(x) - y).abs().mean())
        d_same = all(torch.equal(d_before[k], v) for k, v in run.D.state_dict().items())
        runs[name] = (d_calls, d_same, losses, err0, err5, run)
    d_calls, d_same, losses, err0, err5, run = runs["no_gan"]
    assert not d_calls and d_same and not run.opt_D.state
    assert all(ls["g_adv"] == 0 and ls["d"] == 0 for ls in losses)
    assert err5 < 0.95 * err0  # G learns from the pixel losses alone (here 0.378 -> 0.351)
    d_calls, d_same, losses, *_ = runs["pix2pix"]
    assert len(d_calls) == 15 and not d_same and all(ls["d"] > 0 for ls in losses)
    with pytest.raises(UsageError, match="lambda_gan"):
        load_config(overrides=["lambda_gan=-1"])
    with pytest.raises(UsageError, match="nothing to train"):
        load_config(overrides=["lambda_gan=0", "lambda_l1=0"])


def test_precision_picks_the_autocast_dtype(pairs, tmp_path, monkeypatch, capsys):
    """``precision``: auto is fp32 on CPU (fp16 only on CUDA with amp), fp16 is refused off CUDA, bf16 runs
    G's convolutions in bfloat16 under autocast on CPU while the weights, the optimiser and loss stay fp32;
    an unknown value is refused. A CPU without native bf16 gets a warning. On the CLI a refused precision or
    a negative lambda_gan is one error line, exit 2, and no run folder."""
    from sar2opt_geo.training import trainer

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    cfg = load_config()
    assert trainer.autocast_dtype(cfg, cpu) is None and trainer.autocast_dtype(cfg, cuda) is torch.float16
    assert trainer.autocast_dtype(load_config(overrides=["amp=false"]), cuda) is None
    assert trainer.autocast_dtype(load_config(overrides=["precision=fp32"]), cuda) is None
    with pytest.raises(UsageError, match="fp16 trains on CUDA only"):
        trainer.autocast_dtype(load_config(overrides=["precision=fp16"]), cpu)
    with pytest.raises(UsageError, match="precision must be one of"):
        load_config(overrides=["precision=int8"])
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="without AVX512-BF16/AMX"):
        assert trainer.autocast_dtype(load_config(overrides=["precision=bf16"]), cpu) is torch.bfloat16
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)

    run = Run(pairs, tmp_path / "bf16", load_config(overrides=SMALL + ["steps=1", "precision=bf16"]))
    seen = []
    conv = next(m for m in run.G.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x = torch.stack([run.train_ds[0][0], run.train_ds[1][0]])
    y = torch.stack([run.train_ds[0][1], run.train_ds[1][1]])
    losses = run.train_step(x, y)
    assert seen == [torch.bfloat16] and math.isfinite(losses["g_l1"])
    for bad, says in (("precision=fp16", "CUDA only"), ("lambda_gan=-1", "lambda_gan")):
        out = tmp_path / bad.split("=")[0]
        args = ["train", "pretrain", "--data", pairs, "--out", out, "--set", bad, "--set", "device=cpu", "-q"]
        code, _, err = run_cli(args, capsys)
        assert code == 2 and says in err and err.strip().count("\n") == 0 and not out.exists()
    assert all(p.dtype == torch.float32 for p in run.G.parameters())
    assert all(s.dtype == torch.float32 for st in run.opt_G.state.values() for s in st.values() if s.dim())
