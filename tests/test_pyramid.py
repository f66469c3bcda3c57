"""The COG's overview pyramid computed block by block in the ``out`` tasks (issue #15, sar2opt_geo.pyramid):
GDAL's AVERAGE arithmetic (checked against a loop and against GDAL itself), GDAL's level count, and COGs that
GDAL only has to copy the levels into — the same file as GDAL's own on even sizes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import rasterio

from sar2opt_geo import io
from sar2opt_geo.pyramid import (
    _HALF,
    _MUL,
    block_levels,
    block_pyramid,
    downsample,
    level_shape,
    overview_count,
)


def reference_downsample(rgb: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A loop over 2 × 2 windows: the mean of the valid pixels rounded half up, 0 and invalid where none."""
    bands, h, w = rgb.shape
    H, W = -(-h // 2), -(-w // 2)
    out, ok = np.zeros((bands, H, W), np.uint8), np.zeros((H, W), bool)
    for i in range(H):
        for j in range(W):
            win = valid[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
            n = int(win.sum())
            if n:
                ok[i, j] = True
                for b in range(bands):
                    s = int(rgb[b, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2][win].astype(int).sum())
                    out[b, i, j] = int(np.floor(s / n + 0.5))
    return out, ok


def scene(rng: np.random.Generator, h: int, w: int, bands: int = 3):
    yy, xx = np.mgrid[0:h, 0:w]
    valid = (xx + 0.7 * yy > 0.3 * w) & (rng.random((h, w)) > 0.05)  # a slanted collar and holes
    rgb = rng.integers(0, 256, (bands, h, w), dtype=np.uint8)
    rgb[:, ~valid] = 0
    return rgb, valid


@pytest.mark.parametrize("shape", [(8, 8), (7, 9), (1, 5), (13, 1), (31, 30)])
@pytest.mark.parametrize("bands", [1, 3])
def test_downsample_matches_a_loop_over_windows(shape, bands):
    rng = np.random.default_rng(sum(shape) * bands)
    rgb, valid = scene(rng, *shape, bands)
    got, got_valid = downsample(rgb, valid)
    want, want_valid = reference_downsample(rgb, valid)
    np.testing.assert_array_equal(got_valid, want_valid)
    np.testing.assert_array_equal(got, want)
    full = np.ones(shape, bool)  # the all-valid fast path
    np.testing.assert_array_equal(downsample(rgb, full)[0], reference_downsample(rgb, full)[0])


def test_the_division_is_exact_for_every_sum_and_count():
    for n in range(1, 5):
        s = np.arange(0, 255 * n + 1, dtype=np.uint32)
        got = ((s + _HALF[n]) * _MUL[n]) >> 17
        np.testing.assert_array_equal(got, (s + n // 2) // n)


def write_staging(path, rgb, valid, geo=None):
    h, w = valid.shape
    geo = geo or io.GeoProfile(w, h, io.crs_wkt("EPSG:32631"), (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0))
    names = ["red", "green", "blue"] if rgb.shape[0] == 3 else None  # as io.CogAssembler names them
    with io.GeoTiffWriter(
        path, geo, rgb.shape[0], "uint8", internal_mask=True, compress="none", band_descriptions=names
    ) as dst:
        dst.write(0, 0, rgb, valid)
    return geo


def read_levels(path) -> list[tuple[np.ndarray, np.ndarray]]:
    with rasterio.open(path) as src:
        n = len(src.overviews(1))
        out = [(src.read(), src.read_masks(1) > 0)]
    for k in range(n):
        with rasterio.open(path, overview_level=k) as o:
            out.append((o.read(), o.read_masks(1) > 0))
    return out


@pytest.mark.parametrize("w, h", [(512, 512), (513, 40), (40, 1100), (1025, 1025), (2100, 700)])
def test_overview_count_is_what_gdals_cog_driver_makes(tmp_path, w, h):
    rgb, valid = scene(np.random.default_rng(1), h, w)
    write_staging(tmp_path / "s.tif", rgb, valid)
    io.staging_to_cog(tmp_path / "s.tif", tmp_path / "c.tif")
    assert len(read_levels(tmp_path / "c.tif")) - 1 == overview_count(w, h)


def test_block_levels_need_blocks_aligned_to_the_coarsest_level():
    assert overview_count(3072, 3072) == 3
    assert block_levels(1024, 3072, 3072) == 3
    assert block_levels(1152, 3072, 3072) == 3  # 1152 = 2^7 · 9
    assert block_levels(468, 3072, 3072) == 0  # 468 = 2^2 · 117: GDAL builds the overviews
    assert block_levels(1024, 400, 300) == 0  # no overviews at all
    assert level_shape(1301, 1100, 2) == (326, 275)


def assemble(tmp_path, name, rgb, valid, geo, chunk, levels, drop=None):
    """A COG through :class:`io.CogAssembler`, block by block as the pipeline writes it; ``drop``: a block
    whose overview levels are withheld (a block file written by an older version)."""
    h, w = valid.shape
    out = tmp_path / name
    with io.CogAssembler(out, geo, rgb.shape[0], "uint8", overview_levels=levels) as cog:
        for r in range(0, h, chunk):
            for c in range(0, w, chunk):
                b = np.ascontiguousarray(rgb[:, r : r + chunk, c : c + chunk])
                v = valid[r : r + chunk, c : c + chunk]
                pyramid = block_pyramid(b, v, levels) if levels and (r, c) != drop else None
                cog.write(r, c, b, v, pyramid)
        cog.finish()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{name}")], "staging files left"
    return out


def test_blocks_pyramids_give_gdals_cog_byte_for_byte_on_even_sizes(tmp_path):
    rgb, valid = scene(np.random.default_rng(7), 1536, 2048)
    geo = write_staging(tmp_path / "s.tif", rgb, valid)
    levels = block_levels(512, 2048, 1536)
    assert levels == 2
    ours = assemble(tmp_path, "ours.tif", rgb, valid, geo, 512, levels)
    io.staging_to_cog(tmp_path / "s.tif", tmp_path / "gdal.tif")  # GDAL computes the overviews
    for (a, am), (b, bm) in zip(read_levels(ours), read_levels(tmp_path / "gdal.tif"), strict=True):
        np.testing.assert_array_equal(am, bm)
        np.testing.assert_array_equal(a, b)
    assert io.validate_cog(ours)[0]
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (ours, tmp_path / "gdal.tif")]
    assert digest[0] == digest[1]


def test_odd_sizes_and_gcps(tmp_path):
    """Odd sizes: every level is the masked 2 × 2 mean of the one above it (ceil sizes, aligned windows);
    the GCPs, tags and band descriptions are the staging file's, exactly (GDAL's VRT would round them)."""
    h, w = 1301, 1100
    rgb, valid = scene(np.random.default_rng(8), h, w)
    gcps = tuple(
        (r + 0.123456789, c + 0.987654321, 10 + c * 1.23456789e-4, 50 - r * 9.87654321e-5, 0.0)
        for r in (0, 650, 1300)
        for c in (0, 550, 1099)
    )
    geo = io.GeoProfile(w, h, gcps=gcps, gcp_crs_wkt=io.crs_wkt("EPSG:4326"), tags={"sar2opt_model": "m"})
    levels = block_levels(256, w, h)
    assert levels == 2
    ours = assemble(tmp_path, "ours.tif", rgb, valid, geo, 256, levels)
    got = read_levels(ours)
    assert [g[1].shape for g in got] == [(h, w), level_shape(h, w, 1), level_shape(h, w, 2)]
    np.testing.assert_array_equal(got[0][0], rgb)
    for (a, am), (b, bm) in zip(got[:-1], got[1:], strict=True):
        want, want_mask = downsample(a, am)
        np.testing.assert_array_equal(bm, want_mask)
        np.testing.assert_array_equal(b, want)
    assert io.validate_cog(ours)[0]
    with rasterio.open(ours) as src:
        assert [(g.row, g.col, g.x, g.y, g.z) for g in src.gcps[0]] == [tuple(g) for g in gcps]
        assert src.tags()["sar2opt_model"] == "m"
        assert src.descriptions == ("red", "green", "blue")


def test_a_block_without_levels_lets_gdal_build_them(tmp_path):
    rgb, valid = scene(np.random.default_rng(9), 1024, 1536)
    geo = write_staging(tmp_path / "s.tif", rgb, valid)
    ours = assemble(tmp_path, "ours.tif", rgb, valid, geo, 512, 2, drop=(512, 512))
    io.staging_to_cog(tmp_path / "s.tif", tmp_path / "gdal.tif")
    assert ours.read_bytes() == (tmp_path / "gdal.tif").read_bytes()


def test_translate_writes_the_blocks_pyramid(small_scene, tiny_model_path, tmp_path, monkeypatch, capsys):
    """End to end: the COG step is given the blocks' levels, and the output's overview is the masked 2 × 2
    mean of its full-resolution pixels."""
    from conftest import run_cli

    given = []
    real = io.staging_to_cog

    def spy(*a, **k):
        given.append(k.get("overviews"))
        return real(*a, **k)

    monkeypatch.setattr(io, "staging_to_cog", spy)
    out = tmp_path / "out.tif"
    code, _, err = run_cli(
        ["translate", small_scene, out, "--model", tiny_model_path, "-q", "--chunk-size", "256"], capsys
    )
    assert code == 0, err
    assert len(given) == 1 and len(given[0]) == 1  # 700 × 530: one level, from the blocks
    levels = read_levels(out)
    assert len(levels) == 2
    for (a, am), (b, bm) in zip(levels[:-1], levels[1:], strict=True):
        want, want_mask = downsample(a, am)
        np.testing.assert_array_equal(bm, want_mask)
        np.testing.assert_array_equal(b, want)


def test_given_levels_without_a_staging_mask_is_one_error_and_no_cog(tmp_path):
    """The VRT that hands GDAL the levels needs the staging file's mask to give them to: a staging file
    without one is an OutputError (one line at the CLI), and neither the COG nor the VRT is left behind."""
    from sar2opt_geo.errors import OutputError

    rgb, valid = scene(np.random.default_rng(3), 1024, 1024)
    geo = io.GeoProfile(1024, 1024, io.crs_wkt("EPSG:32631"), (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0))
    with io.GeoTiffWriter(tmp_path / "s.tif", geo, 3, "uint8", compress="none") as dst:  # no mask
        dst.write(0, 0, rgb)
    level = tmp_path / "s.tif.ovr1"
    write_staging(level, *downsample(rgb, valid))
    with pytest.raises(OutputError, match="no per-dataset mask"):
        io.staging_to_cog(tmp_path / "s.tif", tmp_path / "c.tif", overviews=[level])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif", "s.tif.ovr1"]
