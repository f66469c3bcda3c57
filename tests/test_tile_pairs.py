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

    res = tile_pairs(sar, part, tmp_path / "p.zarr", tile_size=64, stride=64, max_nodata=0.0)
    assert res["pairs"] == 4 and res["skipped"] == res["windows"] - 4


def test_quiet_and_verbose_options(scene, tmp_path, capsys):
    sar, opt, _ = scene
    code, out, _ = run_cli(["tile-pairs", "--help"], capsys)
    assert code == 0 and "-q, --quiet" in out and "-v, --verbose" in out
    code, _, err = run_cli(["tile-pairs", sar, opt, tmp_path / "q.zarr", "--tile-size", 128, "-q"], capsys)
    assert code == 0 and err == ""
    code, _, err = run_cli(["tile-pairs", sar, opt, tmp_path / "v.zarr", "--tile-size", 128, "-v"], capsys)
    assert code == 0 and "wrote" in err
