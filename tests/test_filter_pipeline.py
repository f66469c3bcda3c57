"""The filter command and translate's --filter / --preprocess run the same windowed Dask machinery:
results equal whole-array processing whatever the chunking."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

from sar2opt_geo import io
from sar2opt_geo.distributed import ThreadedExecutor
from sar2opt_geo.filter_run import run_filter
from sar2opt_geo.filters import apply_filter, make_filter_spec
from sar2opt_geo.plan import TranslateOptions
from sar2opt_geo.radiometry import from_linear, to_linear
from sar2opt_geo.run import run_translate


@pytest.mark.parametrize("name", ["lee", "refined_lee", "median"])
def test_filter_command_equals_whole_array(small_scene, tmp_path, name):
    spec = make_filter_spec(name, window=7)
    sar, meta = io.read_raster(small_scene)
    valid = sar[0] > 0
    expected = apply_filter(sar.astype(np.float32), valid, spec)[0]
    for chunk in (128, 300):
        out = tmp_path / f"{name}-{chunk}.tif"
        run_filter(small_scene, str(out), spec, ThreadedExecutor(2), chunk_size=chunk)
        got, gmeta = io.read_raster(out, masked=True)
        assert gmeta["crs"] == meta["crs"] and gmeta["transform"] == meta["transform"]
        assert ((gmeta["mask"] > 0) == valid).all()
        rel = np.abs(got[0][valid] - expected[valid]) / np.maximum(np.abs(expected[valid]), 1e-12)
        assert rel.max() <= 1e-5


def test_filter_db_input_filters_linear_and_returns_db(small_scene, tmp_path):
    sar, meta = io.read_raster(small_scene)
    valid = sar[0] > 0
    db = np.where(valid, from_linear(sar[0], "db"), 0).astype(np.float32)
    import rasterio

    src = tmp_path / "db.tif"
    with rasterio.open(
        src,
        "w",
        driver="GTiff",
        width=db.shape[1],
        height=db.shape[0],
        count=1,
        dtype="float32",
        crs=meta["crs"],
        transform=meta["transform"],
    ) as dst:
        dst.write(db, 1)
        dst.write_mask(np.where(valid, 255, 0).astype(np.uint8))
    spec = make_filter_spec("boxcar", window=5)
    out = tmp_path / "f.tif"
    res = run_filter(str(src), str(out), spec, ThreadedExecutor(2), chunk_size=200)
    assert res["scale"] == "db"  # negative values detected as dB
    got, _ = io.read_raster(out)
    expected = from_linear(apply_filter(to_linear(db, "db")[None], valid, spec), "db")[0]
    assert np.abs(got[0][valid] - expected[valid]).max() < 1e-3


def test_translate_with_filter_is_chunk_invariant(small_scene, tiny_model_path, tmp_path):
    outs = []
    for chunk in (192, 576):
        out = tmp_path / f"lee-{chunk}.tif"
        opts = TranslateOptions(
            model=tiny_model_path, device="cpu", chunk_size=chunk, filter=make_filter_spec("lee", window=7)
        )
        run_translate(small_scene, str(out), opts, ThreadedExecutor(2))
        outs.append(io.read_raster(out)[0].astype(int))
    plain = tmp_path / "plain.tif"
    run_translate(
        small_scene, str(plain), TranslateOptions(model=tiny_model_path, device="cpu"), ThreadedExecutor(2)
    )
    assert np.abs(outs[0] - outs[1]).max() <= 1
    assert np.abs(outs[0] - io.read_raster(plain)[0].astype(int)).mean() > 1  # the filter changes the output
    assert "lee" in io.read_raster(tmp_path / "lee-192.tif")[1]["tags"]["SAR2OPT_FILTER"]


def test_translate_with_sar2optical_profile(small_scene, tiny_model_path, tmp_path, monkeypatch):
    """The model sees the SAR2Optical chain computed with scene-level statistics: tile inputs equal the
    whole-scene preprocessing (away from the scene border), and the output does not depend on chunking."""
    from sar2opt_geo import tasks
    from sar2opt_geo.sar2optical import Sar2OpticalProfile, sar2optical_preprocess

    profile = Sar2OpticalProfile(filter="frost", window=5)
    seen = {}
    real = tasks.model_input

    def spy(job, r0, r1, c0, c1, **kw):
        x, v = real(job, r0, r1, c0, c1, **kw)
        seen[(r0, c0)] = (x, job.preprocess_stats)
        return x, v

    monkeypatch.setattr(tasks, "model_input", spy)
    outs = []
    for chunk in (192, 576):
        out = tmp_path / f"pre-{chunk}.tif"
        opts = TranslateOptions(model=tiny_model_path, device="cpu", chunk_size=chunk, preprocess=profile)
        run_translate(small_scene, str(out), opts, ThreadedExecutor(2))
        outs.append(io.read_raster(out)[0].astype(int))
    assert np.abs(outs[0] - outs[1]).max() <= 1
    # whole-scene reference with the same scene statistics
    sar, _ = io.read_raster(small_scene)
    valid = sar[0] > 0
    db = np.clip(from_linear(np.maximum(sar[0], 0), "db"), -25, 0)
    u8 = np.floor((db + 25) / 25 * 255).astype(np.uint8)
    u8[~valid] = 0
    (x00, stats) = seen[(0, 0)]
    ref = sar2optical_preprocess(u8, profile, stretch_bounds=stats["stretch_bounds"][0])
    ref_x = ref.astype(np.float32) / 255 * 2 - 1
    ref_x[~valid] = -1
    h, w = min(x00.shape[1], ref_x.shape[0]), min(x00.shape[2], ref_x.shape[1])
    inner = (slice(3, h - 3), slice(3, w - 3))
    assert np.abs(x00[0][inner] - ref_x[:h, :w][inner]).max() <= 2 / 255 + 1e-6


def test_filter_cli_bad_options(small_scene, tmp_path, capsys):
    out = tmp_path / "o.tif"
    code, _, err = run_cli(["filter", small_scene, out, "--filter", "lee", "--window", "4"], capsys)
    assert code == 2 and "window" in err and len(err.strip().splitlines()) == 1 and not out.exists()
    code, _, err = run_cli(["filter", small_scene, out, "--filter", "wiener"], capsys)
    assert code == 2 and "refined_lee" in err and not out.exists()
    code, _, err = run_cli(["filter", small_scene, out, "--filter", "lee", "--enl", "-1"], capsys)
    assert code == 2 and not out.exists()
    code, _, err = run_cli(["filter", small_scene, out, "--filter", "lee", "-q"], capsys)
    assert code == 0 and out.exists()


def test_nan_and_inf_are_nodata(tmp_path, tiny_model_path, caplog):
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    a = (0.05 * rng.gamma(4.4, 1 / 4.4, size=(300, 300))).astype(np.float32)
    a[10:40, 10:40] = np.nan
    a[100, 100] = np.inf
    src = tmp_path / "nan.tif"
    with rasterio.open(
        src,
        "w",
        driver="GTiff",
        width=300,
        height=300,
        count=1,
        dtype="float32",
        crs="EPSG:32633",
        transform=from_origin(0, 0, 10, 10),
    ) as dst:
        dst.write(a, 1)
    out = tmp_path / "o.tif"
    run_translate(
        str(src), str(out), TranslateOptions(model=tiny_model_path, device="cpu"), ThreadedExecutor(2)
    )
    _, meta = io.read_raster(out, masked=True)
    m = meta["mask"] > 0
    assert not m[10:40, 10:40].any() and not m[100, 100] and m[200:, 200:].all()


def test_enl_auto_is_estimated_from_the_scene(small_scene, tmp_path):
    """Synthetic s1 scenes carry Gamma speckle with ENL 4.4; --enl auto estimates it from homogeneous
    areas of the scene and the filter runs with that number (recorded in the output tags)."""
    import json

    out = tmp_path / "auto.tif"
    res = run_filter(small_scene, str(out), make_filter_spec("lee", enl="auto"), ThreadedExecutor(2))
    enl = res["filter"]["enl"]
    assert isinstance(enl, float) and 3.0 < enl < 6.0, enl
    assert json.loads(io.read_raster(out)[1]["tags"]["SAR2OPT_FILTER"])["enl"] == enl
