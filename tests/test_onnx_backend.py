"""``translate --backend onnx``: the ONNX Runtime backend through the same pipeline as torch.

Parity is checked twice on a translate of ``small_scene`` with the tiny checkpoint: on the model outputs in
[-1, 1] for exactly the tiles the pipeline feeds the ONNX runner (each batch is also run through torch), and
on the final uint8 rasters.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import replace

import numpy as np
import pytest
from conftest import run_cli
from test_cli import assert_clean_error
from test_cli_model import make_adapter

from sar2opt_geo import io, tasks
from sar2opt_geo.models import checkpoint_hash
from sar2opt_geo.models.onnx_export import _providers_for, clear_onnx_cache, get_cached_onnx_generator


@pytest.fixture(autouse=True)
def _fresh_onnx_cache():
    clear_onnx_cache()
    yield
    clear_onnx_cache()


class TwinPredict:
    """Wraps the pipeline's predict: every ONNX batch is also run with torch on the same tiles."""

    def __init__(self, monkeypatch):
        self.batches = []
        self.lock = threading.Lock()
        real = tasks.predict_async

        def twin(ref, x, batch_size):
            y = real(ref, x, batch_size).result()
            if ref.backend == "onnx":
                y_torch = real(replace(ref, backend="torch"), x, batch_size).result()
                with self.lock:
                    self.batches.append((len(x), y, y_torch))
            done = Future()
            done.set_result(y)
            return done

        monkeypatch.setattr(tasks, "predict_async", twin)

    @property
    def tiles(self) -> int:
        return sum(n for n, _, _ in self.batches)

    @property
    def max_diff(self) -> float:
        return max(float(np.abs(y - t).max()) for _, y, t in self.batches)


def _translate(capsys, scene, out, model, *extra):
    code, _, err = run_cli(
        ["translate", scene, out, "--model", model, "--device", "cpu", "-q", *extra], capsys
    )
    assert code == 0, err
    return io.read_raster(out, masked=True)


def test_onnx_backend_matches_torch(small_scene, tiny_model_path, tmp_path, capsys, monkeypatch):
    rt, mt = _translate(capsys, small_scene, tmp_path / "torch.tif", tiny_model_path, "--backend", "torch")
    twin = TwinPredict(monkeypatch)
    ro, mo = _translate(capsys, small_scene, tmp_path / "onnx.tif", tiny_model_path, "--backend", "onnx")

    # model outputs on the very tiles the pipeline ran through ONNX Runtime
    assert twin.tiles >= 6
    for _, y, y_torch in twin.batches:
        assert y.dtype == np.float32 and y.shape == y_torch.shape and y.shape[1:] == (3, 256, 256)
        assert y.min() >= -1.0 and y.max() <= 1.0
    assert twin.max_diff <= 1e-3, twin.max_diff
    # final rasters
    assert ro.shape == rt.shape and ro.dtype == np.uint8
    assert (mo["mask"] == mt["mask"]).all()
    assert np.abs(ro.astype(int) - rt.astype(int)).max() <= 1
    assert rt[:, mt["mask"] > 0].std() > 3  # a real picture, not a constant
    assert mo["tags"]["SAR2OPT_BACKEND"] == "onnx" and mt["tags"]["SAR2OPT_BACKEND"] == "torch"
    assert mo["tags"]["SAR2OPT_MODEL_HASH"] == checkpoint_hash(tiny_model_path)
    # the runner the pipeline used: CPU here (CUDA only when onnxruntime has it and a GPU was asked for)
    runner = get_cached_onnx_generator(tiny_model_path, "cpu", tile_size=256)
    assert runner.providers == ["CPUExecutionProvider"]


def test_onnx_backend_with_lora(small_scene, tiny_model_path, tmp_path, capsys, monkeypatch):
    adapter = make_adapter(tiny_model_path, tmp_path / "adapter.safetensors")
    rt, _ = _translate(capsys, small_scene, tmp_path / "torch.tif", tiny_model_path, "--lora", adapter)
    twin = TwinPredict(monkeypatch)
    ro, mo = _translate(
        capsys, small_scene, tmp_path / "onnx.tif", tiny_model_path, "--lora", adapter, "--backend", "onnx"
    )
    assert twin.tiles > 0 and twin.max_diff <= 1e-3
    assert np.abs(ro.astype(int) - rt.astype(int)).max() <= 1
    assert mo["tags"]["SAR2OPT_ADAPTER"] == "adapter.safetensors"
    assert mo["tags"]["SAR2OPT_MODEL_HASH"].endswith("+" + checkpoint_hash(adapter))


def test_onnx_backend_bad_adapter_is_one_clean_error(small_scene, tiny_model_path, tmp_path, capsys):
    """An adapter trained on another base: one line naming both hashes, exit 1, nothing left behind."""
    other = make_adapter(tiny_model_path, tmp_path / "other.safetensors", base_hash="0123456789abcdef")
    out = tmp_path / "o.tif"
    code, _, err = run_cli(
        ["translate", small_scene, out, "--model", tiny_model_path, "--lora", other, "--backend", "onnx"]
        + ["--device", "cpu", "-q"],
        capsys,
    )
    assert_clean_error(code, err, str(out), contains="trained on base checkpoint")
    assert "0123456789abcdef" in err and checkpoint_hash(tiny_model_path) in err, err


def test_provider_choice():
    import onnxruntime as ort

    assert _providers_for("cpu") == ["CPUExecutionProvider"]
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    expected = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    assert _providers_for("cuda") == expected
    assert _providers_for("cuda:0") == expected


def _export(tiny_model_path, path, *extra):
    import onnx

    code = None
    from sar2opt_geo.cli import main

    try:
        main(["model", "export-onnx", str(tiny_model_path), str(path), "-q", *map(str, extra)])
    except SystemExit as exc:
        code = exc.code
    assert code in (0, None) and onnx.load(str(path)).graph.node
    return str(path)


def test_translate_with_an_onnx_file(small_scene, tiny_model_path, tmp_path, capsys):
    """``--model X.onnx`` (from ``model export-onnx``) runs on ONNX Runtime with the radiometry and bands
    embedded in the export; same picture as the checkpoint it came from."""
    onnx_path = _export(tiny_model_path, tmp_path / "tiny.onnx")
    capsys.readouterr()
    rt, mt = _translate(capsys, small_scene, tmp_path / "torch.tif", tiny_model_path)
    ro, mo = _translate(capsys, small_scene, tmp_path / "file.tif", onnx_path)
    assert (mo["mask"] == mt["mask"]).all()
    assert np.abs(ro.astype(int) - rt.astype(int)).max() <= 1
    assert mo["tags"]["SAR2OPT_BACKEND"] == "onnx"
    assert mo["tags"]["SAR2OPT_MODEL"] == "tiny-test-unet"  # the name embedded in the export
    assert mo["tags"]["SAR2OPT_MODEL_HASH"] == checkpoint_hash(onnx_path)


def _translate_err(capsys, scene, out, model, *extra):
    return run_cli(["translate", scene, out, "--model", model, "--device", "cpu", "-q", *extra], capsys)


def test_onnx_file_errors(small_scene, tiny_model_path, tmp_path, capsys):
    import onnx

    onnx_path = _export(tiny_model_path, tmp_path / "tiny.onnx")
    capsys.readouterr()
    out = str(tmp_path / "o.tif")
    code, _, err = _translate_err(capsys, small_scene, out, onnx_path, "--backend", "torch")
    assert_clean_error(code, err, out, expected_code=2, contains="runs with --backend onnx")
    code, _, err = _translate_err(capsys, small_scene, out, onnx_path, "--tile-size", "512")
    assert_clean_error(code, err, out, expected_code=2, contains="exported for 256x256 tiles")
    code, _, err = _translate_err(capsys, small_scene, out, onnx_path, "--lora", tiny_model_path)
    assert_clean_error(code, err, out, contains="cannot be applied to an .onnx model")
    # an ONNX file exported elsewhere (no embedded radiometry/bands)
    proto = onnx.load(onnx_path)
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    code, _, err = _translate_err(capsys, small_scene, out, bare)
    assert_clean_error(code, err, out, contains="no sar2opt-geo metadata")
    # not an ONNX file at all, and a missing one
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage" * 50)
    code, _, err = _translate_err(capsys, small_scene, out, junk)
    assert_clean_error(code, err, out, contains="not a readable ONNX model")
    code, _, err = _translate_err(capsys, small_scene, out, tmp_path / "missing.onnx")
    assert_clean_error(code, err, out, expected_code=2, contains="does not exist")


def test_cpu_passes_run_single_threaded_side_by_side(tiny_model_path, monkeypatch):
    """ONNX Runtime on CPU: one single-threaded pass per usable core at a time. ``predict`` of many tiles
    spreads its batches over the pool (several run at once); the result is the sequential one, in order."""
    from sar2opt_geo import translate
    from sar2opt_geo.defaults import usable_cores

    ref = translate.make_model_ref(tiny_model_path, "cpu", "onnx", tile_size=256)
    runner = translate._onnx_model(ref)
    assert runner.session.get_session_options().intra_op_num_threads == 1
    assert translate._forward_pool("onnx-cpu")._max_workers == usable_cores()
    assert translate._forward_pool("device")._max_workers == 1  # torch and CUDA: one pass at a time

    x = translate.probe_batch(3, 256, n=7, seed=4)
    sequential = np.concatenate([runner(x[i : i + 2]) for i in range(0, 7, 2)])
    running, peak, lock = [0], [0], threading.Lock()
    real = translate._predict_onnx

    def counting(ref_, xb, bs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            threading.Event().wait(0.05)  # keep the pass open long enough for the others to start
            return real(ref_, xb, bs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(translate, "_predict_onnx", counting)
    got = translate.predict(ref, x, batch_size=2)
    assert np.array_equal(got, sequential)
    assert peak[0] == min(usable_cores(), 4)  # 4 batches of ≤ 2 tiles

    # one batch (what each pipeline task submits at a time) runs in the calling thread: no hand-off
    seen = []
    monkeypatch.setattr(
        translate,
        "_predict_onnx",
        lambda r, xb, bs: seen.append(threading.current_thread()) or real(r, xb, bs),
    )
    fut = translate.predict_async(ref, x[:2], 2)
    assert fut.done() and seen == [threading.current_thread()]
    assert np.array_equal(fut.result(), sequential[:2])
    monkeypatch.setattr(
        translate, "_predict_onnx", lambda *a: (_ for _ in ()).throw(RuntimeError("pass failed"))
    )
    with pytest.raises(RuntimeError, match="pass failed"):
        translate.predict_async(ref, x[:2], 2).result()


def test_concatenated_future_keeps_order_and_errors():
    from sar2opt_geo.translate import _concatenated

    a, b = Future(), Future()
    both = _concatenated([a, b])
    b.set_result(np.ones((1, 2)))
    assert not both.done()
    a.set_result(np.zeros((2, 2)))
    assert both.result().tolist() == [[0, 0], [0, 0], [1, 1]]
    c, d = Future(), Future()
    failed = _concatenated([c, d])
    c.set_exception(RuntimeError("pass failed"))
    d.set_result(np.ones((1, 2)))
    with pytest.raises(RuntimeError, match="pass failed"):
        failed.result()
