"""tile-pairs: aligned tile pairs from co-registered rasters (same grid, other grid, no overlap)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from conftest import run_cli
from rasterio.transform import Affine
from rasterio.warp import Resampling, reproject

from sar2opt_geo.training.datasets import PairedTileDataset


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from sar2opt_geo.synth import SceneSpec, write_scene

    out = tmp_path_factory.mktemp("tp")
    sar, opt = write_scene(out, SceneSpec(width=300, height=280, seed=4, footprint=False))
    opt20 = out / "optical_20m.tif"
    with rasterio.open(opt) as src:
        prof = src.profile.copy()
        a = src.transform
        t2 = Affine(20, 0, a.c, 0, -20, a.f)
        prof.update(width=src.width // 2, height=src.height // 2, transform=t2)
        data = np.zeros((3, prof["height"], prof["width"]), np.uint8)
        reproject(
            src.read(),
            data,
            src_transform=a,
            src_crs=src.crs,
            dst_transform=t2,
            dst_crs=src.crs,
            resampling=Resampling.average,
        )
        with rasterio.open(opt20, "w", **prof) as dst:
            dst.write(data)
    return sar, opt, opt20


def test_same_and_other_grid(scene, tmp_path, capsys):
    sar, opt, opt20 = scene
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    code, _, err = run_cli(["tile-pairs", sar, opt, a, "--tile-size", 128, "--stride", 64], capsys)
    assert code == 0, err
    code, _, err = run_cli(["tile-pairs", sar, opt20, b, "--tile-size", 128, "--stride", 64], capsys)
    assert code == 0, err and "resampled" in err
    da, db = PairedTileDataset(a, "all"), PairedTileDataset(b, "all")
    assert len(da) == len(db) == 9 and da.tile_size == (128, 128)
    sa, oa = da.read_uint8(4)
    sb, ob = db.read_uint8(4)
    assert np.array_equal(sa, sb) and sa.shape == (1, 128, 128)
    # same grid: exactly the optical raster's window
    with rasterio.open(opt) as src:
        import zarr

        g = zarr.open_group(str(a), mode="r")
        r, c, h, w = g["window"][4]
        assert np.array_equal(oa, src.read(window=((r, r + h), (c, c + w))))
        left, bottom, right, top = g["bounds"][4]
        assert (left, top) == pytest.approx(src.transform @ (c, r))
    # other grid: optical resampled onto the SAR grid, close to the original
    diff = np.abs(oa.astype(float) - ob.astype(float))
    assert np.corrcoef(oa.ravel(), ob.ravel())[0, 1] > 0.8 and diff.mean() < 20
    x, y = da[0]
    assert x.shape == y.shape == (3, 128, 128)


def test_nodata_filter_and_errors(scene, tmp_path, capsys):
    from sar2opt_geo.synth import SceneSpec, write_scene

    sar, opt, _ = scene
    far = tmp_path / "far"
    _, far_opt = write_scene(
        far, SceneSpec(width=64, height=64, seed=1, origin=(900000.0, 5000000.0), footprint=False)
    )
    code, out, err = run_cli(["tile-pairs", sar, far_opt, tmp_path / "x.zarr", "--tile-size", 64], capsys)
    assert code == 1 and "do not overlap" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "x.zarr").exists()
    # an optical raster covering only part of the SAR grid: tiles outside it are skipped at max-nodata 0
    part = tmp_path / "part.tif"
    with rasterio.open(opt) as src:
        prof = src.profile.copy()
        prof.update(width=150, height=140)
        with rasterio.open(part, "w", **prof) as dst:
            dst.write(src.read(window=((0, 140), (0, 150))))
    from sar2opt_geo.training.pairs import tile_pairs

    res = tile_pairs(
        sar, part, tmp_path / "p.zarr", input_scale="linear", tile_size=64, stride=64, max_nodata=0.0
    )
    assert res["pairs"] == 4 and res["skipped"] == res["windows"] - 4


def test_quiet_and_verbose_options(scene, tmp_path, capsys):
    sar, opt, _ = scene
    code, out, _ = run_cli(["tile-pairs", "--help"], capsys)
    assert code == 0 and "-q, --quiet" in out and "-v, --verbose" in out
    code, _, err = run_cli(["tile-pairs", sar, opt, tmp_path / "q.zarr", "--tile-size", 128, "-q"], capsys)
    assert code == 0 and err == ""
    code, _, err = run_cli(["tile-pairs", sar, opt, tmp_path / "v.zarr", "--tile-size", 128, "-v"], capsys)
    assert code == 0 and "wrote" in err


# ------------------------------------------------------------------ the SAR input scale, decided as translate


UTM_10M = Affine(10, 0, 500000, 0, -10, 5000000)


def _write(path, data, transform=UTM_10M, nodata=None):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs="EPSG:32633",
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data)
    return path


def _pairs(tmp_path, sar_raster, capsys, *extra):
    import zarr

    opt = _write(
        tmp_path / "opt.tif", np.random.default_rng(3).integers(0, 256, (3, 128, 128), dtype=np.uint8)
    )
    out = tmp_path / "pairs.zarr"
    code, _, err = run_cli(
        ["tile-pairs", sar_raster, opt, out, "--tile-size", 64, "--stride", 64, "-q", *extra], capsys
    )
    assert code == 0, err
    g = zarr.open_group(str(out), mode="r")
    sar = np.asarray(g["sar"][:])
    rows = [np.concatenate(list(sar[i : i + 2, 0]), axis=1) for i in (0, 2)]  # 2 x 2 tiles, row-major
    return np.concatenate(rows, axis=0), dict(g.attrs)


def test_uint8_sar_is_cut_as_the_levels_translate_feeds_the_model(tmp_path, capsys):
    """A uint8 SAR raster holds the 8-bit levels of the model's radiometry: tile-pairs stores the levels
    translate's normalisation feeds the model (not DN, nor one level up from rounding a level's centre)."""
    from sar2opt_geo.plan import levels_range
    from sar2opt_geo.radiometry import Radiometry, normalize, resolve_stats, to_linear
    from sar2opt_geo.training.pairs import RADIOMETRY, sar_to_db_uint8

    raw = np.random.default_rng(7).integers(0, 256, (1, 128, 128), dtype=np.uint8)
    cut, attrs = _pairs(tmp_path, _write(tmp_path / "sar.tif", raw), capsys)
    assert attrs["sar_input_scale"] == "levels"
    rad = Radiometry.from_dict(RADIOMETRY)
    lin = to_linear(raw, "levels", levels=levels_range(rad))
    valid = np.ones(raw.shape[1:], bool)
    fed = normalize(lin, valid, rad, resolve_stats(rad, None, 1))[0]  # what translate gives the model
    fed_levels = np.rint((fed + 1.0) * 127.5).astype(np.uint8)
    assert np.array_equal(fed_levels, raw[0])
    assert np.array_equal(cut, fed_levels)
    # the round-half-up training quantisation of a level's centre is ambiguous: it moves many levels up
    assert np.mean(sar_to_db_uint8(lin[0], valid) != raw[0]) > 0.2
    # read as DN (the old integer = DN rule), the cut would be far off
    assert np.mean(sar_to_db_uint8(to_linear(raw[0], "dn"), valid) != raw[0]) > 0.9


@pytest.mark.parametrize("code,scale", [("gdfmnh", "db"), ("safmnh", "amplitude"), ("gpfmnh", "linear")])
def test_hyp3_named_sar_is_cut_in_its_named_scale(tmp_path, capsys, code, scale):
    """An ASF HyP3 RTC file is read in the scale its name says (amplitude floats ≥ 0 are not linear)."""
    from sar2opt_geo.radiometry import from_linear, to_linear
    from sar2opt_geo.training.pairs import sar_to_db_uint8

    rng = np.random.default_rng(11)
    db = rng.uniform(-28.0, 2.0, (1, 128, 128)).astype(np.float32)
    raw = from_linear(to_linear(db, "db"), scale)
    name = f"S1A_IW_20180128T161201_DVP_RTC30_G_{code}_FD6A_VV.tif"
    cut, attrs = _pairs(tmp_path, _write(tmp_path / name, raw), capsys)
    assert attrs["sar_input_scale"] == scale and "HyP3" in attrs["sar_input_scale_reason"]
    valid = np.ones(raw.shape[1:], bool)
    assert np.array_equal(cut, sar_to_db_uint8(to_linear(raw[0], scale), valid))
    # the dB ramp itself, within one level (float32 round trips)
    ref = np.floor((np.clip(db[0], -25, 0) + 25) * 255 / 25 + 0.5)
    assert np.abs(cut.astype(int) - ref).max() <= 1


def test_bare_uint16_sar_is_refused_unless_dn_is_given(tmp_path, capsys):
    from sar2opt_geo.radiometry import to_linear
    from sar2opt_geo.training.pairs import sar_to_db_uint8

    raw = np.random.default_rng(5).integers(20, 4000, (1, 128, 128), dtype=np.uint16)
    sar = _write(tmp_path / "dn.tif", raw)
    opt = _write(tmp_path / "opt.tif", np.zeros((3, 128, 128), np.uint8))
    out = tmp_path / "x.zarr"
    code, _, err = run_cli(["tile-pairs", sar, opt, out, "--tile-size", 64], capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "uint16 values without calibration" in lines[0] and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob("x.zarr*"))
    # with the calibration constant given, as translate takes it
    cut, attrs = _pairs(tmp_path, sar, capsys, "--input-scale", "dn", "--calibration-constant", 100)
    assert attrs["sar_input_scale"] == "dn" and attrs["sar_calibration_constant"] == 100
    valid = np.ones(raw.shape[1:], bool)
    assert np.array_equal(cut, sar_to_db_uint8(to_linear(raw[0], "dn", constant=100.0), valid))
    code, _, err = run_cli(["tile-pairs", sar, opt, out, "--calibration-constant", 100], capsys)
    assert code == 2 and "only applies with --input-scale dn" in err


def test_undeclared_nodata_in_the_sar_is_nodata(tmp_path, capsys):
    """A value found in the wild (−9999, not declared by the file) is nodata, as translate takes it."""
    raw = np.full((1, 128, 128), 0.05, np.float32)
    raw[0, 70:, :10] = -9999.0  # in the lower-left tile only
    cut, attrs = _pairs(tmp_path, _write(tmp_path / "sar.tif", raw), capsys, "--max-nodata", 0.5)
    assert attrs["sar_input_scale"] == "linear"
    lower_left = cut[64:, :64]
    assert np.all(lower_left[6:, :10] == 0) and np.all(lower_left[:6] > 0) and np.all(cut[:64] > 0)


# ------------------------------------------------------------------ --dual-pol: the VV, VH, VV/VH composite


@pytest.fixture(scope="module")
def dual_scene(tmp_path_factory):
    """A VV + VH scene with a nodata collar (footprint) and a copy with its bands swapped and named as words
    (``sigma0_VH``, ``sigma0_VV``)."""
    from sar2opt_geo.synth import SceneSpec, write_scene

    out = tmp_path_factory.mktemp("dual")
    sar, opt = write_scene(out, SceneSpec(width=256, height=192, bands=("VV", "VH"), seed=9, footprint=True))
    swapped = out / "swapped.tif"
    with rasterio.open(sar) as src:
        prof = src.profile.copy()
        data = src.read()
    with rasterio.open(swapped, "w", **prof) as dst:
        dst.write(data[::-1])
        dst.descriptions = ("sigma0_VH", "sigma0_VV")
    return sar, swapped, opt


def test_dual_pol_stores_the_composite_levels(dual_scene, tmp_path, capsys):
    import zarr

    from sar2opt_geo.radiometry import DUAL_POL_COMPOSITE, Radiometry, composite_levels

    sar, swapped, opt = dual_scene
    out = tmp_path / "dual.zarr"
    args = ["--tile-size", 64, "--stride", 64, "--max-nodata", 1.0, "-q"]
    code, _, err = run_cli(["tile-pairs", sar, opt, out, "--dual-pol", *args], capsys)
    assert code == 0, err
    g = zarr.open_group(str(out), mode="r")
    stored = np.asarray(g["sar"][:])
    assert stored.shape == (12, 3, 64, 64) and g["sar"].chunks == (1, 3, 64, 64)
    attrs = dict(g.attrs)
    assert attrs["radiometry"] == DUAL_POL_COMPOSITE and attrs["input_bands"] == ["VV", "VH"]
    assert "G = VH dB clipped to [-32, -7]" in attrs["sar_encoding"] and "VV - VH" in attrs["sar_encoding"]
    rad = Radiometry.from_dict(DUAL_POL_COMPOSITE)
    partial = 0
    with rasterio.open(sar) as s, rasterio.open(opt) as o:
        assert s.descriptions == ("VV", "VH") and s.nodata == 0
        for i, (r, c, h, w) in enumerate(g["window"][:]):
            win = ((r, r + h), (c, c + w))
            lin = s.read(window=win)
            valid = np.all(lin != s.nodata, axis=0) & (o.dataset_mask(window=win) > 0)
            partial += bool(0 < valid.mean() < 1)
            want = composite_levels(np.where(valid, lin, 0).astype(np.float32), rad, valid)
            want[:, ~valid] = 0
            assert np.array_equal(stored[i], want), i
    assert partial > 0  # the nodata collar crosses some tiles
    # bands found as words of their descriptions, in any order: the same store
    code, _, err = run_cli(["tile-pairs", swapped, opt, tmp_path / "sw.zarr", "--dual-pol", *args], capsys)
    assert code == 0, err
    assert np.array_equal(np.asarray(zarr.open_group(str(tmp_path / "sw.zarr"), mode="r")["sar"][:]), stored)
    # the dataset reads the 3-channel tiles as they are
    ds = PairedTileDataset(out, "all")
    s3, _ = ds.read_uint8(5)
    x, y = ds[5]
    assert s3.shape == (3, 64, 64) and np.array_equal(s3, stored[5])
    assert np.array_equal(x.numpy(), s3.astype(np.float32) * np.float32(2 / 255) - 1) and y.shape == x.shape
    # without --dual-pol: the single-pol store, as before
    code, _, err = run_cli(["tile-pairs", sar, opt, tmp_path / "single.zarr", *args], capsys)
    assert code == 0, err
    g1 = zarr.open_group(str(tmp_path / "single.zarr"), mode="r")
    assert g1["sar"].shape == (12, 1, 64, 64) and g1.attrs["input_bands"] == ["VV"]
    assert g1.attrs["radiometry"]["clip"] == [-25.0, 0.0]


def test_dual_pol_needs_vv_and_vh_bands(scene, tmp_path, capsys):
    sar, opt, _ = scene  # VV only
    out = tmp_path / "x.zarr"
    code, _, err = run_cli(["tile-pairs", sar, opt, out, "--tile-size", 128, "--dual-pol"], capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "VV and VH" in lines[0] and "named VH" in lines[0] and lines[0].endswith("1 band(s): VV)")
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob("x.zarr*"))


def test_dual_pol_refuses_8bit_levels(tmp_path, capsys):
    raw = np.random.default_rng(2).integers(0, 256, (1, 128, 128), dtype=np.uint8)
    sar = _write(tmp_path / "chip.tif", raw)
    opt = _write(tmp_path / "opt.tif", np.zeros((3, 128, 128), np.uint8))
    out = tmp_path / "x.zarr"
    code, _, err = run_cli(["tile-pairs", sar, opt, out, "--tile-size", 64, "--dual-pol"], capsys)
    assert code == 2 and "--dual-pol" in err and "levels" in err and err.strip().count("\n") == 0, err
    assert not out.exists()
