"""scripts/bench_full_product.py (issue #15), on a small product: the measurement it writes has the real GRD
layout and DN that calibrate back to the simulator's σ⁰, and the translate run is timed and reported."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import rasterio

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "bench_full_product.py"
_SPEC = importlib.util.spec_from_file_location("bench_full_product", _PATH)
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_the_product_is_real_layout_and_calibrates_to_the_simulated_sigma0(tmp_path, tiny_model_path, capsys):
    from sar2opt_geo.sentinel1.product import open_product
    from sar2opt_geo.sentinel1.synth import ProductSpec, write_product
    from sar2opt_geo.synth import SceneSpec, render_window

    source = write_product(tmp_path / "src", ProductSpec(width=600, height=500, seed=2), truth=False).safe
    args = ["--safe", str(source), "--workdir", str(tmp_path / "w"), "--seed", "5"]
    res = bench.main([*args, "--extra-args", f"--model {tiny_model_path} --backend torch"])
    printed = capsys.readouterr().out
    safe = Path(res["safe"])
    prod = open_product(safe)
    assert prod.polarisations == ("VV", "VH") and prod.shape == (500, 600)
    for band in prod.bands:
        with rasterio.open(band.measurement) as src:
            assert src.block_shapes == [(1, 600)] and src.compression is None and src.dtypes == ("uint16",)
    # DN = sqrt(A² σ⁰ + η): calibrated and denoised, the simulator's σ⁰ comes back (up to DN rounding)
    spec = SceneSpec(width=600, height=500, bands=("VV", "VH"), seed=5, footprint=False)
    sigma0 = render_window(spec, 0, 0, 500, 600)[0]
    data, valid = prod.read_window(None, 0, 500, 0, 600)
    rows, cols = np.nonzero(valid)
    assert (
        rows.min() == bench.BORDER[0]
        and cols.min() == bench.BORDER[1]
        and cols.max() == 600 - bench.BORDER[1] - 1
    )
    got, want = data[:, valid], sigma0[:, valid]
    bright = want > 0.02
    assert np.median(np.abs(got[bright] / want[bright] - 1)) < 0.01
    assert res["tiles"] > 0 and res["peak"] > 0 and res["wall"] > 0 and Path(res["output"]).exists()
    for row in (
        "| tiles evaluated |",
        "| wall time |",
        "| peak memory (process tree RSS) |",
        "| throughput |",
    ):
        assert row in printed
    # a second run reuses the product instead of writing it again
    mtime = Path(prod.bands[0].measurement).stat().st_mtime_ns
    bench.build_product(source, tmp_path / "w", 5)
    assert Path(prod.bands[0].measurement).stat().st_mtime_ns == mtime


def test_calibrate_is_timed_too(tmp_path, capsys):
    from sar2opt_geo.sentinel1.synth import ProductSpec, write_product

    source = write_product(tmp_path / "src", ProductSpec(width=300, height=260, seed=3), truth=False).safe
    res = bench.main(["--safe", str(source), "--workdir", str(tmp_path / "w"), "--command", "calibrate"])
    printed = capsys.readouterr().out
    assert res["tiles"] is None and res["output"].endswith("sigma0.tif") and Path(res["output"]).exists()
    assert (
        ": calibrate |" in printed and "| tiles evaluated |" not in printed and "Mpx/s of output" in printed
    )


def test_the_pipeline_alone_with_the_identity_model(tmp_path, capsys):
    from sar2opt_geo.sentinel1.synth import ProductSpec, write_product

    spec = ProductSpec(width=300, height=260, polarisations=("VV",), seed=4)
    source = write_product(tmp_path / "src", spec, truth=False).safe
    res = bench.main(["--safe", str(source), "--workdir", str(tmp_path / "w"), "--identity-model"])
    printed = capsys.readouterr().out
    assert "identity.onnx" in " ".join(res["cmd"]) and res["tiles"] > 0
    assert "| CPU a tile |" in printed and "cores per 1000 tiles/s" in printed
