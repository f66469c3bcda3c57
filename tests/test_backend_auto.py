"""``--backend auto`` (the default): engine choice, fallback to torch, the ONNX export cache (two processes
racing for it), the batch size per engine and from device memory, and CUDA out-of-memory retries (faked on
CPU)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import run_cli
from test_cli import assert_clean_error

from sar2opt_geo import io, translate
from sar2opt_geo.defaults import ENGINE_BATCH_SIZE
from sar2opt_geo.errors import ModelError
from sar2opt_geo.models import checkpoint_hash
from sar2opt_geo.models.onnx_export import (
    OnnxGenerator,
    cache_dir,
    cached_export_path,
    clear_onnx_cache,
    export_cached,
)


@pytest.fixture(autouse=True)
def _fresh_caches():
    clear_onnx_cache()
    translate._AUTO_BATCH.clear()
    yield
    clear_onnx_cache()
    translate._AUTO_BATCH.clear()


def _translate(capsys, scene, out, model, *extra):
    args = ["translate", scene, out, "--model", model, "--device", "cpu", "-q", *extra]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    return io.read_raster(out, masked=True)


def test_auto_runs_onnx_on_cpu_within_1_dn_of_torch(small_scene, tiny_model_path, tmp_path, capsys):
    ra, ma = _translate(capsys, small_scene, tmp_path / "auto.tif", tiny_model_path)
    rt, mt = _translate(capsys, small_scene, tmp_path / "torch.tif", tiny_model_path, "--backend", "torch")
    assert ma["tags"]["SAR2OPT_BACKEND"] == "onnx" and mt["tags"]["SAR2OPT_BACKEND"] == "torch"
    assert (ma["mask"] == mt["mask"]).all()
    assert np.abs(ra.astype(int) - rt.astype(int)).max() <= 1
    assert rt[:, mt["mask"] > 0].std() > 3  # a real picture
    # exported once into the user cache dir (the tests point it at a temporary folder), keyed by the
    # checkpoint hash, tile size, batch policy, opset and precision
    cached = cached_export_path(checkpoint_hash(tiny_model_path), tile_size=256)
    assert cached.parent == cache_dir() and cached.is_file()
    assert cached.name == f"{checkpoint_hash(tiny_model_path)}-t256-bdyn-op17-fp32.onnx"
    assert OnnxGenerator(cached).input_shape[1:] == (3, 256, 256)


def test_forced_backends_still_force(small_scene, tiny_model_path, tmp_path, capsys):
    _, mo = _translate(capsys, small_scene, tmp_path / "o.tif", tiny_model_path, "--backend", "onnx")
    assert mo["tags"]["SAR2OPT_BACKEND"] == "onnx"
    choice = translate.select_engine(tiny_model_path, "cpu", backend="torch")
    assert (choice.backend, choice.batch_size) == ("torch", ENGINE_BATCH_SIZE["torch"])


def test_auto_falls_back_to_torch_when_parity_fails(tiny_model_path, monkeypatch, caplog):
    monkeypatch.setattr(translate, "onnx_parity", lambda *a, **k: (7, "probe batch: max 7 DN"))
    with caplog.at_level(logging.WARNING, logger="sar2opt_geo.translate"):
        choice = translate.select_engine(tiny_model_path, "cpu")
    assert choice.backend == "torch" and choice.batch_size == ENGINE_BATCH_SIZE["torch"]
    assert "max 7 DN (over 1 DN)" in choice.reason
    assert any("--backend auto: torch, because probe batch: max 7 DN" in r.message for r in caplog.records)


def test_auto_falls_back_to_torch_when_export_fails(
    small_scene, tiny_model_path, tmp_path, capsys, monkeypatch
):
    from sar2opt_geo.models import onnx_export

    def broken(*a, **k):
        raise ModelError("ONNX export failed: unsupported operator")

    monkeypatch.setattr(onnx_export, "export_onnx", broken)
    choice = translate.select_engine(tiny_model_path, "cpu", tile_size=512)  # not cached yet
    assert choice.backend == "torch"
    assert "does not export to ONNX (ONNX export failed: unsupported operator)" in choice.reason
    # through the CLI: the run finishes with torch and says so in its tags
    clear_onnx_cache()
    r, m = _translate(capsys, small_scene, tmp_path / "fb.tif", tiny_model_path, "--tile-size", "512")
    assert m["tags"]["SAR2OPT_BACKEND"] == "torch" and r[:, m["mask"] > 0].std() > 3


def test_onnx_parity_measures_dn_and_keeps_the_verdict(tiny_model_path, monkeypatch):
    from sar2opt_geo.models import cache as model_cache

    verdict = cached_export_path(checkpoint_hash(tiny_model_path), tile_size=256)
    verdict = verdict.with_name(verdict.name + ".parity.json")
    verdict.unlink(missing_ok=True)
    dn, reason = translate.onnx_parity(tiny_model_path, None, 256)
    assert dn is not None and 0 <= dn <= 1 and reason.endswith(f"max {dn} DN")
    assert verdict.is_file()
    # the next run takes the verdict without loading the torch model for the probe
    monkeypatch.setattr(model_cache, "get_cached_generator", lambda *a, **k: pytest.fail("probe ran again"))
    assert translate.onnx_parity(tiny_model_path, None, 256) == (dn, reason + " (cached)")
    # another onnxruntime version (or output range) probes again
    verdict.write_text(verdict.read_text().replace('"onnxruntime": "', '"onnxruntime": "0.0-'))
    monkeypatch.undo()
    assert translate.onnx_parity(tiny_model_path, None, 256) == (dn, reason)
    a = np.full((1, 3, 4, 4), -1.0, np.float32)  # DN 0
    assert translate.output_dn_diff(a, a + 2.0 / 255) == 1  # 1 DN = 2/255 in [-1, 1]
    assert translate.output_dn_diff(a, a + 6.0 / 255) == 3


def test_batch_size_per_engine_and_from_memory(tiny_model_path):
    assert translate.select_engine(tiny_model_path, "cpu").batch_size == ENGINE_BATCH_SIZE["onnx"]
    assert translate.select_engine(tiny_model_path, "cpu", batch_size=3).batch_size == 3
    # CUDA workers of a remote cluster (checked on the client's CPU): torch, batch from free device memory
    gpu = translate.select_engine(tiny_model_path, "cuda", remote=True)
    assert (gpu.backend, gpu.batch_size) == ("torch", 0)
    assert translate.batch_from_memory(10 * 2**30, 2**30, share=0.5) == 5
    assert translate.batch_from_memory(2**20, 2**30) == 1
    assert translate.batch_from_memory(2**40, 2**20, cap=64) == 64


def test_precision_engine_combinations_are_usage_errors(small_scene, tiny_model_path, tmp_path, capsys):
    cases = [
        (["--precision", "int8", "--backend", "torch"], "int8 runs on ONNX Runtime"),
        (["--precision", "bf16", "--backend", "onnx"], "bf16 runs on torch"),
        (["--precision", "fp16"], "fp16 needs a CUDA device"),
        (["--precision", "fp64"], "Invalid value for '--precision'"),
    ]
    for extra, msg in cases:
        out = tmp_path / "x.tif"
        code, _, err = run_cli(
            ["translate", small_scene, out, "--model", tiny_model_path, "--device", "cpu", *extra], capsys
        )
        assert_clean_error(code, err, out, expected_code=2, contains=msg)


class _FakeOOMModel(torch.nn.Module):
    """Raises CUDA out-of-memory for batches over ``limit`` tiles; otherwise returns tanh of the input."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.seen = limit, []

    def forward(self, x):
        self.seen.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return torch.tanh(x)


def test_cuda_oom_halves_the_batch_and_retries(monkeypatch, caplog):
    fake = _FakeOOMModel(limit=2)
    monkeypatch.setattr(translate, "_torch_model", lambda ref: fake)
    ref = translate.ModelRef(path="fake.safetensors", digest="0" * 16, device="cpu", backend="torch")
    x = np.random.default_rng(0).uniform(-1, 1, (11, 3, 8, 8)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="sar2opt_geo.translate"):
        y = translate.predict(ref, x, batch_size=8)
    np.testing.assert_allclose(y, np.tanh(x), atol=1e-6)
    assert fake.seen[:3] == [8, 4, 2] and set(fake.seen[3:]) <= {1, 2} and sum(fake.seen[2:]) == 11
    assert sum("batch size halved to 4" in r.message for r in caplog.records) == 1
    # on device (torch tensors kept there for blending): same values
    y2 = translate.predict_async(ref, x, 2, on_device=True).result()
    assert isinstance(y2, torch.Tensor) and np.allclose(y2.numpy(), np.tanh(x), atol=1e-6)
    fake.limit = 0  # even one tile does not fit: the error is raised, not looped on
    with pytest.raises(torch.cuda.OutOfMemoryError):
        translate.predict(ref, x[:1], batch_size=1)


def test_cache_dir_conventions(monkeypatch, tmp_path):
    monkeypatch.setenv("SAR2OPT_GEO_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" / "onnx"
    monkeypatch.delenv("SAR2OPT_GEO_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert cache_dir() == tmp_path / "xdg" / "sar2opt-geo" / "onnx"
        monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: relative paths are invalid
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert cache_dir() == tmp_path / "home" / ".cache" / "sar2opt-geo" / "onnx"


RACER = textwrap.dedent(
    """
    import sys, time
    from sar2opt_geo.models.onnx_export import export_cached, OnnxGenerator
    ckpt, folder, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.005)
    p = export_cached(ckpt, tile_size=256, folder=folder)
    print(p, OnnxGenerator(p).input_shape)
    """
)


def test_two_processes_racing_for_the_export_both_get_a_complete_file(tiny_model_path, tmp_path):
    import time

    folder = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = str(time.time() + 3.0)  # both processes past their imports, then export at the same moment
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, tiny_model_path, str(folder), start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "(3, 256, 256)" in out.replace("'batch', ", "")
    files = sorted(os.listdir(folder))
    assert files == [f"{checkpoint_hash(tiny_model_path)}-t256-bdyn-op17-fp32.onnx"], files  # no temp left
    # a later run uses the file as it is (no new export); a truncated file would be exported again
    target = folder / files[0]
    mtime = target.stat().st_mtime_ns
    assert export_cached(tiny_model_path, tile_size=256, folder=folder) == target
    assert target.stat().st_mtime_ns == mtime
    target.write_bytes(target.read_bytes()[:1000])
    assert export_cached(tiny_model_path, tile_size=256, folder=folder) == target
    assert OnnxGenerator(target).input_shape[1:] == (3, 256, 256)


def test_onnx_runtime_threads_do_not_spin(tiny_model_path):
    """The pipeline's threads share the cores with the model: ONNX Runtime's intra-op threads must not
    spin-wait between operators (measured 1.6x slower end to end on 2 loaded cores with spinning)."""
    runner = translate._onnx_model(translate.make_model_ref(tiny_model_path, "cpu", "onnx", tile_size=256))
    opts = runner.session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spinning = OnnxGenerator(runner.path, spinning=True).session.get_session_options()
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
