"""scripts/bench_speed.py: the identity ONNX model of its second pipeline-alone row is a model ``translate``
accepts, and what comes out is the model's input itself (so that row measures the pipeline and nothing
else); its I/O floor runs with the pipeline's COG configuration or GDAL's default."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from conftest import run_cli

from sar2opt_geo import io

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "bench_speed.py"
_SPEC = importlib.util.spec_from_file_location("bench_speed", _PATH)
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_identity_model_translates_to_its_input(small_scene, tmp_path, capsys):
    model = bench.identity_onnx(tmp_path / "identity.onnx")
    out = tmp_path / "out.tif"
    code, _, err = run_cli(["translate", small_scene, out, "--model", model, "--device", "cpu"], capsys)
    assert code == 0, err
    rgb, meta = io.read_raster(out, masked=True)
    valid = meta["mask"] > 0
    assert valid.any() and not valid.all()
    # the one SAR band replicated to three channels and returned as it went in: a grey image, not constant
    assert np.array_equal(rgb[0], rgb[1]) and np.array_equal(rgb[0], rgb[2])
    assert rgb[0][valid].std() > 5 and (rgb[:, ~valid] == 0).all()


def test_io_floor_with_either_cog_configuration_writes_the_same_cog(small_scene, tmp_path, capsys):
    code, _, err = run_cli(
        ["translate", small_scene, tmp_path / "rgb.tif", "--model", bench.identity_onnx(tmp_path / "i.onnx")],
        capsys,
    )
    assert code == 0, err
    for name, default in (("a.tif", False), ("b.tif", True)):
        wall, cpu = bench.io_floor(tmp_path / "rgb.tif", tmp_path / name, gdal_default_tmp=default)
        assert wall > 0 and cpu > 0 and io.validate_cog(tmp_path / name)[0]
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()


def test_profile_rows_are_found_in_a_profiled_run(small_scene, tmp_path):
    """``--profile``: a run under the synchronous scheduler, profiled in this process, holds the functions
    the table's rows name (a renamed function would print a silent 0.00 row)."""
    model = bench.identity_onnx(tmp_path / "identity.onnx")
    # chunk 384: 2 × 2 blocks, so the out tasks have border strips to add up
    runs = bench.profile_pipeline({700: small_scene}, model, tmp_path, repeat=1, chunk_size=384)
    ((cpu, stats),) = runs.values()
    assert cpu > 0
    assert (tmp_path / "p700.tif").exists()
    # the warp's rows are found in a product's run (a GeoTIFF on its own grid is never warped)
    product = bench.make_input("product", tmp_path / "product", 200)
    ((_, product_stats),) = bench.profile_pipeline({200: product}, model, tmp_path, repeat=1).values()
    for label, suffix, func, kind in bench.PROFILE_ROWS:
        if "waiting" in label:  # the identity engine may never make the block wait
            continue
        warped = suffix in ("warp.py", "product.py")
        assert bench._profile_value(product_stats if warped else stats, suffix, func, kind) > 0, label


def test_tasks_table_rows_are_timed_and_the_package_is_left_as_it_was(tmp_path, capsys, monkeypatch):
    """``--tasks``: every row of the table is a function the tasks call (a renamed one would print no row),
    and the timing wrappers are removed afterwards (the bench may run inside another process's tests)."""
    import argparse

    from sar2opt_geo import tasks

    before = tasks.fill_nodata
    monkeypatch.delenv("SAR2OPT_GEO_CACHE_DIR", raising=False)
    bench.run_tasks(argparse.Namespace(large=1100, repeat=1))
    out = capsys.readouterr().out
    for _, _, label in bench.TASK_ROWS:
        assert f"| {label} |" in out, label
    assert tasks.fill_nodata is before
    import os

    assert "SAR2OPT_GEO_CACHE_DIR" not in os.environ


def test_compare_runs_every_checkout_from_its_own_folder(tmp_path, capsys, monkeypatch):
    """``--compare``: each --checkout's package is the one its runs import (PYTHONPATH first, the working
    directory outside any checkout), every size runs once per round for each, and the table has a row each."""
    import argparse
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[1]
    other = tmp_path / "other"
    shutil.copytree(root / "sar2opt_geo", other / "sar2opt_geo", ignore=shutil.ignore_patterns("__pycache__"))
    seen = []
    real_run = subprocess.run

    def spy(cmd, *a, **k):
        if "translate" in cmd:
            seen.append((k["env"]["PYTHONPATH"], str(k["cwd"])))
        return real_run(cmd, *a, **k)

    monkeypatch.setattr(bench.subprocess, "run", spy)
    ns = argparse.Namespace(small=256, large=512, repeat=1, checkout=[str(root), str(other)], input="geotiff")
    bench.run_compare(ns)
    out = capsys.readouterr().out
    assert f"| {root} |" in out and f"| {other} |" in out and "1.00, 1.00" in out
    assert sorted(p for p, _ in seen) == sorted([str(root)] * 3 + [str(other)] * 3)  # warm-up + 2 sizes
    assert all(not cwd.startswith((str(root), str(other))) for _, cwd in seen)


def test_product_inputs_are_a_safe_product_and_its_map_scene(tmp_path):
    """``--input product`` reads a Sentinel-1 SAFE product (warped: its output grid is the map grid, larger
    than the radar side); ``--input product-map`` the same footprint's map-projected σ⁰ GeoTIFF."""
    from sar2opt_geo.source import open_source

    safe = bench.make_input("product", tmp_path / "p", 128)
    assert safe.endswith(".SAFE")
    scene = open_source(safe)
    assert scene.product is not None and scene.warp is not None and bench._pixels(safe) > 128 * 128
    sigma0 = bench.make_input("product-map", tmp_path / "m", 128)
    assert sigma0.endswith(".tif") and getattr(open_source(sigma0), "warp", None) is None


def test_the_strips_inputs_are_the_geotiff_scene_in_gdals_default_layout(tmp_path):
    """``--input geotiff-strips``: the same pixels as ``--input geotiff``, stripped and uncompressed, so the
    pipeline reads it with GDAL's direct I/O; ``geotiff-deflate-strips`` the same strips compressed."""
    import rasterio

    from sar2opt_geo import io

    tiled = io.open_scene(bench.make_input("geotiff", tmp_path / "t", 300))
    strips = io.open_scene(bench.make_input("geotiff-strips", tmp_path / "s", 300))
    deflate = io.open_scene(bench.make_input("geotiff-deflate-strips", tmp_path / "d", 300))
    assert tiled.tiled and not tiled.direct_io
    assert strips.direct_io and not strips.tiled and strips.block_shape[1] == 300
    assert deflate.compressed_strips and not deflate.tiled and deflate.block_shape[1] == 300
    for other in (strips, deflate):
        with rasterio.open(tiled.path) as a, rasterio.open(other.path) as b:
            assert np.array_equal(a.read(), b.read(), equal_nan=True) and a.profile["crs"] == b.profile["crs"]
