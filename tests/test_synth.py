"""Tests of the synthetic paired SAR/optical scene generator (sar2opt_geo.synth)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio
from conftest import run_cli
from rasterio.crs import CRS

from sar2opt_geo import synth
from sar2opt_geo.errors import UsageError
from sar2opt_geo.io import read_png
from sar2opt_geo.synth import (
    SceneSpec,
    landcover_window,
    render_window,
    speckle_window,
    write_pairs,
    write_scene,
)

# A 300 x 400 window of a large scene that holds a town, a river, a lake, forest and fields (seed 1).
BIG = SceneSpec(20000, 20000, ("VV", "VH"), seed=1, footprint=False)
TOWN_WINDOW = (1550, 300, 300, 400)


def _tiled(spec, row0, col0, rows, cols):
    """Render a window as the irregular tiling given by row and column cut points."""
    sar = np.zeros((len(spec.bands), rows[-1] - rows[0], cols[-1] - cols[0]), np.float32)
    opt = np.zeros((3,) + sar.shape[1:], np.uint8)
    valid = np.zeros(sar.shape[1:], bool)
    for r0, r1 in zip(rows[:-1], rows[1:], strict=True):
        for c0, c1 in zip(cols[:-1], cols[1:], strict=True):
            s, o, v = render_window(spec, row0 + r0, col0 + c0, r1 - r0, c1 - c0)
            sar[:, r0 - rows[0] : r1 - rows[0], c0 - cols[0] : c1 - cols[0]] = s
            opt[:, r0 - rows[0] : r1 - rows[0], c0 - cols[0] : c1 - cols[0]] = o
            valid[r0 - rows[0] : r1 - rows[0], c0 - cols[0] : c1 - cols[0]] = v
    return sar, opt, valid


@pytest.mark.parametrize("domain", ["s1", "gf3"])
def test_window_consistency_small_scene(domain):
    spec = SceneSpec(400, 300, ("VV", "VH"), seed=7, domain=domain)
    sar, opt, valid = render_window(spec, 0, 0, 300, 400)
    assert sar.shape == (2, 300, 400) and sar.dtype == np.float32
    assert opt.shape == (3, 300, 400) and opt.dtype == np.uint8
    assert valid.shape == (300, 400) and valid.dtype == bool
    t_sar, t_opt, t_valid = _tiled(spec, 0, 0, [0, 1, 37, 150, 151, 300], [0, 129, 130, 250, 397, 400])
    assert np.array_equal(sar, t_sar)
    assert np.array_equal(opt, t_opt)
    assert np.array_equal(valid, t_valid)


def test_window_consistency_town_river():
    r, c, h, w = TOWN_WINDOW
    lc = landcover_window(BIG, r, c, h, w)
    present = set(np.unique(lc).tolist())
    assert {synth.WATER, synth.CROP, synth.URBAN, synth.ROAD, synth.FOREST} <= present
    sar, opt, valid = render_window(BIG, r, c, h, w)
    t_sar, t_opt, t_valid = _tiled(BIG, r, c, [0, 70, 71, 213, 300], [0, 3, 200, 331, 400])
    assert np.array_equal(sar, t_sar) and np.array_equal(opt, t_opt) and np.array_equal(valid, t_valid)
    # land cover of sub-windows agrees as well
    assert np.array_equal(lc[10:50, 300:333], landcover_window(BIG, r + 10, c + 300, 40, 33))


def test_determinism_and_seeds():
    spec = SceneSpec(160, 120, ("VV",), seed=3)
    a = render_window(spec, 0, 0, 120, 160)
    b = render_window(spec, 0, 0, 120, 160)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    other = render_window(SceneSpec(160, 120, ("VV",), seed=4), 0, 0, 120, 160)
    assert not np.array_equal(a[0], other[0])
    assert not np.array_equal(a[1], other[1])


def test_class_backscatter_levels():
    # the window spans the whole range extent, so the incidence-angle trend averages out over each class
    r, c, h, w = 1000, 0, 1024, 1024
    spec = SceneSpec(1024, 20000, ("VV", "VH"), seed=1, footprint=False)
    sar, opt, _ = render_window(spec, r, c, h, w)
    lc = landcover_window(spec, r, c, h, w)

    def mean_db(band, cls):
        m = np.isin(lc, cls)
        assert m.sum() > 2000, cls
        return 10 * math.log10(float(sar[band][m].mean()))

    water = mean_db(0, [synth.WATER])
    assert -24.0 <= water <= -20.0
    assert mean_db(1, [synth.WATER]) < water - 6.0
    vegetation = mean_db(0, [synth.CROP, synth.FOREST, synth.GRASS])
    assert -13.0 <= vegetation <= -8.5
    urban = mean_db(0, [synth.URBAN])
    assert urban > vegetation + 6.0
    forest_vv, forest_vh = mean_db(0, [synth.FOREST]), mean_db(1, [synth.FOREST])
    assert -12.0 <= forest_vv <= -9.0 and -17.0 <= forest_vh <= -14.0
    assert -17.0 <= mean_db(0, [synth.BARE]) <= -13.0  # smooth bare soil -17.5 dB, rough ploughed -13.5 dB
    assert mean_db(0, [synth.BARE]) > water + 4.0  # bare soil is not confused with water
    # cross-pol ratio: vegetation (volume scattering) keeps VH relatively stronger than bare soil or water
    assert forest_vv - forest_vh < mean_db(0, [synth.BARE]) - mean_db(1, [synth.BARE])
    # optical: water dark, vegetation greener than red
    water_rgb = opt[:, lc == synth.WATER].mean(axis=1)
    forest_rgb = opt[:, lc == synth.FOREST].mean(axis=1)
    assert water_rgb.max() < 90 and forest_rgb[1] > forest_rgb[0]


def _material_window(spec, r, c, h, w):
    win = synth._Window(spec, r, c, h, w)
    return win, win.mat


def test_crop_types_separated_in_backscatter():
    # mean VV / VH per crop material over a large window (speckle averages out; the incidence trend cancels
    # over the range extent): the literature ordering of C-band crop backscatter
    spec = SceneSpec(1024, 20000, ("VV", "VH"), seed=1, footprint=False)
    r, c, h, w = 1000, 0, 1024, 1024
    sar, _, _ = render_window(spec, r, c, h, w)
    _, mat = _material_window(spec, r, c, h, w)

    def mean_db(band, name):
        m = mat == synth._MAT[name]
        assert m.sum() > 1000, name
        return 10 * math.log10(float(sar[band][m].mean()))

    order = [
        "bare_soil",
        "cereal_ripe",
        "ploughed",
        "meadow",
        "cereal_green",
        "root_crop",
        "maize",
        "rapeseed",
    ]
    vv = [mean_db(0, n) for n in order]
    assert all(b - a > 0.6 for a, b in zip(vv, vv[1:], strict=False)), dict(zip(order, vv, strict=True))
    assert -19.5 <= vv[0] <= -15.5 and -17.5 <= vv[1] <= -13.5 and -10.5 <= vv[-2] <= -6.5
    vh = {n: mean_db(1, n) for n in order}
    assert vh["rapeseed"] == max(vh.values())  # rapeseed: strongest volume scattering in VH
    assert vh["cereal_ripe"] < vh["meadow"] - 3.0  # ripe cereal: weak VH
    assert vh["bare_soil"] == min(vh.values())


def test_field_latent_drives_both_views():
    # one latent per field: fields with higher backscatter (more biomass / moisture) are darker and, for
    # green crops, relatively greener in the optical; the field means are predictable from the speckled SAR
    # (a window in the middle of a wide scene: the incidence angle is nearly constant across it)
    spec = SceneSpec(20000, 20000, ("VV",), seed=1, footprint=False)
    r, c, h, w = 1000, 9500, 1024, 1024
    sar, opt, _ = render_window(spec, r, c, h, w)
    win, mat = _material_window(spec, r, c, h, w)
    for name in ("cereal_green", "maize", "bare_soil", "cereal_ripe"):
        m = mat == synth._MAT[name]
        keys, inv = np.unique(win.fieldvar[m], return_inverse=True)
        n = np.bincount(inv)
        big = n >= 300
        assert big.sum() >= 5, name
        sar_db = 10 * np.log10(np.bincount(inv, sar[0][m]) / n)[big]
        lum = (np.bincount(inv, opt.astype(np.float64).sum(0)[m]) / n)[big]
        assert np.corrcoef(sar_db, lum)[0, 1] < -0.8, name
        assert np.corrcoef(keys[big], sar_db)[0, 1] > 0.8, name
        if name in ("cereal_green", "maize"):
            green = (np.bincount(inv, opt[1][m] / (opt.astype(np.float64).sum(0)[m] + 1)) / n)[big]
            assert np.corrcoef(sar_db, green)[0, 1] > 0.5, name


@pytest.mark.parametrize(("domain", "expected"), [("s1", 4.4), ("gf3", None)])
def test_speckle_statistics(domain, expected):
    spec = SceneSpec(1000, 1000, ("VV",), seed=11, domain=domain)
    s = speckle_window(spec, 100, 200, 512, 512).astype(np.float64)
    if expected is None:  # K distribution: Gamma(L) speckle times Gamma(nu) texture
        looks, nu = synth.GF3_LOOKS_FACTOR * spec.enl, synth.GF3_TEXTURE_ORDER
        expected = 1.0 / (1 / looks + 1 / nu + 1 / (looks * nu))
    assert abs(s.mean() - 1.0) < 0.01
    enl = s.mean() ** 2 / s.var()
    assert abs(enl - expected) < 0.1 * expected
    # the speckle applied in render_window: a homogeneous area (one material, no texture) has ENL ~ L
    assert np.array_equal(s[:5, :7], speckle_window(spec, 100, 200, 5, 7).astype(np.float64))


def test_speckle_enl_on_homogeneous_scene_area():
    # the lake of the town window: sigma0 varies smoothly there, so the local ENL is that of the speckle
    r, c, h, w = TOWN_WINDOW
    spec = SceneSpec(20000, 20000, ("VV",), seed=1, footprint=False, enl=4.4)
    sar, _, _ = render_window(spec, r, c, h, w)
    lc = landcover_window(spec, r, c, h, w)
    rows, cols = np.nonzero(lc == synth.WATER)
    r0, c0 = int(np.median(rows)), int(np.median(cols))
    patch = sar[0, r0 - 12 : r0 + 12, c0 - 12 : c0 + 12].astype(np.float64)
    assert (lc[r0 - 12 : r0 + 12, c0 - 12 : c0 + 12] == synth.WATER).all()
    enl = patch.mean() ** 2 / patch.var()
    assert 3.3 < enl < 5.5  # 576 samples: sampling error of the ENL estimate is ~10 %


def test_write_scene_footprint_and_masks(tmp_path):
    spec = SceneSpec(400, 300, ("VV", "VH"), seed=5)
    seen = []
    sar_path, opt_path = write_scene(tmp_path, spec, block=128, progress=lambda n, t: seen.append((n, t)))
    assert sar_path == tmp_path / "sar.tif" and opt_path == tmp_path / "optical.tif"
    assert seen[-1] == (12, 12) and [n for n, _ in seen] == list(range(1, 13))
    with rasterio.open(sar_path) as src:
        assert src.count == 2 and src.dtypes == ("float32", "float32")
        assert src.nodata == 0
        assert src.descriptions == ("VV", "VH")
        assert src.crs == CRS.from_epsg(32633)
        assert tuple(src.transform)[:6] == (10.0, 0.0, 500000.0, 0.0, -10.0, 5500000.0)
        assert src.block_shapes[0] == (512, 512)
        sar = src.read()
        sar_mask = src.dataset_mask()
    with rasterio.open(opt_path) as src:
        assert src.count == 3 and src.dtypes[0] == "uint8"
        assert src.transform == rasterio.transform.Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5500000.0)
        opt = src.read()
        opt_mask = src.dataset_mask()
    valid = sar[0] > 0
    assert 0.4 < valid.mean() < 0.95  # a nodata collar around a rotated footprint
    assert not valid[0, 0] and not valid[-1, -1] and not valid[0, -1] and not valid[-1, 0]
    assert valid[150, 200]
    assert np.array_equal(sar[1] > 0, valid)
    assert np.array_equal(sar_mask > 0, valid)
    assert np.array_equal(opt_mask > 0, valid)
    assert (opt[:, ~valid] == 0).all()
    ref_sar, ref_opt, ref_valid = render_window(spec, 0, 0, 300, 400)
    assert np.array_equal(sar, ref_sar) and np.array_equal(opt, ref_opt) and np.array_equal(valid, ref_valid)


def test_no_footprint_all_valid():
    sar, opt, valid = render_window(SceneSpec(64, 48, footprint=False), 0, 0, 48, 64)
    assert valid.all() and (sar > 0).all()


def test_write_scene_renders_one_block_at_a_time(tmp_path, monkeypatch):
    calls = []
    real = synth.render_window

    def spy(spec, row0, col0, height, width):
        calls.append((height, width))
        return real(spec, row0, col0, height, width)

    monkeypatch.setattr(synth, "render_window", spy)
    write_scene(tmp_path, SceneSpec(250, 180, seed=2), block=64)
    assert len(calls) == 3 * 4
    assert max(h for h, _ in calls) <= 64 and max(w for _, w in calls) <= 64
    assert sum(h * w for h, w in calls) == 250 * 180


def test_write_scene_gcps(tmp_path):
    spec = SceneSpec(200, 150, ("VV",), seed=1)
    sar_path, opt_path = write_scene(tmp_path, spec, gcps=True)
    with rasterio.open(sar_path) as src:
        gcps, gcp_crs = src.gcps
        assert len(gcps) == 25
        assert gcp_crs == CRS.from_epsg(4326)
        assert src.crs is None or src.crs == gcp_crs
        assert src.transform == rasterio.transform.Affine.identity()
        corner = min(gcps, key=lambda p: p.row + p.col)
        assert (corner.row, corner.col) == (0.0, 0.0)
        assert corner.x == pytest.approx(15.0, abs=1e-6)  # UTM 33N central meridian, lon/lat like raw GRD
        assert corner.y == pytest.approx(49.6525, abs=1e-3)
        far = max(gcps, key=lambda p: p.row + p.col)
        assert (far.row, far.col) == (150.0, 200.0)
        assert far.x > corner.x and far.y < corner.y
    with rasterio.open(opt_path) as src:
        assert src.crs == CRS.from_epsg(32633) and not src.gcps[0]


def test_write_pairs_layout(tmp_path):
    pairs = write_pairs(tmp_path / "a", 5, seed=3, tile=64)
    assert len(pairs) == 5
    for i, (sp, op) in enumerate(pairs):
        assert sp.parent.name == "sar_256_oc_0.2" and op.parent.name == "opt_256_oc_0.2"
        assert sp.name == op.name == f"{i:05d}.png"
        sar, opt = read_png(sp), read_png(op)
        assert sar.shape == (1, 64, 64) and opt.shape == (3, 64, 64)
        assert sar.std() > 0 and opt.std() > 0
    again = write_pairs(tmp_path / "b", 5, seed=3, tile=64)
    assert all(
        a.read_bytes() == b.read_bytes()
        for pa, pb in zip(pairs, again, strict=True)
        for a, b in zip(pa, pb, strict=True)
    )
    other = write_pairs(tmp_path / "c", 2, seed=4, tile=64)
    assert other[0][0].read_bytes() != pairs[0][0].read_bytes()
    gf3 = write_pairs(tmp_path / "d", 2, domain="gf3", seed=3, tile=64)
    assert read_png(gf3[0][0]).shape == (1, 64, 64)


def test_pairs_with_a_speckle_correlation_range(tmp_path):
    """``speckle_corr=(lo, hi)``: the same windows and optical tiles, each scene's speckle correlation drawn
    from the range (so the SAR tiles differ), recorded in the pairs' stamp; a bad range is refused."""
    plain = list(synth.pair_windows(40, seed=3, tile=32))
    ranged = list(synth.pair_windows(40, seed=3, tile=32, speckle_corr=(0.4, 0.9)))
    assert [(s.seed, r, c) for s, r, c in ranged] == [(s.seed, r, c) for s, r, c in plain]
    corrs = sorted({s.speckle_corr for s, _, _ in ranged})
    assert len(corrs) == 3 and all(0.4 <= v <= 0.9 for v in corrs)  # 40 tiles = 3 scenes of 16
    a = write_pairs(tmp_path / "a", 2, seed=3, tile=32)
    b = write_pairs(tmp_path / "b", 2, seed=3, tile=32, speckle_corr=(0.8, 0.9))
    assert a[0][1].read_bytes() == b[0][1].read_bytes()  # optical unchanged
    assert a[0][0].read_bytes() != b[0][0].read_bytes()  # SAR speckle of another correlation
    assert json.loads((tmp_path / "b" / synth.PAIRS_STAMP).read_text())["speckle_corr"] == [0.8, 0.9]
    assert "speckle_corr" not in json.loads((tmp_path / "a" / synth.PAIRS_STAMP).read_text())
    with pytest.raises(UsageError, match="range must be"):
        list(synth.pair_windows(1, speckle_corr=(0.9, 0.4)))
    with pytest.raises(UsageError, match="speckle_corr must be within"):
        list(synth.pair_windows(1, speckle_corr=(0.4, 99.0)))


def test_cli_synth_pairs_speckle_corr(tmp_path, capsys):
    code, _, _ = run_cli(
        [
            "synth",
            "pairs",
            str(tmp_path / "a"),
            "--count",
            "2",
            "--tile-size",
            "32",
            "--speckle-corr",
            "0.7,0.8",
            "-q",
        ],
        capsys,
    )
    assert code == 0
    stamp = json.loads((tmp_path / "a" / synth.PAIRS_STAMP).read_text())
    assert stamp["speckle_corr"] == [0.7, 0.8] and stamp["count"] == 2
    for bad, msg in (
        ("0.7", "must be LO,HI"),
        ("a,b", "must be LO,HI"),
        ("0.4,5", "speckle_corr must be within"),
        ("0.9,0.4", "range must be"),
    ):
        code, _, err = run_cli(
            ["synth", "pairs", str(tmp_path / "b"), "--count", "2", "--speckle-corr", bad], capsys
        )
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "b").exists()  # nothing left at the output path


def test_sar_to_uint8_stretches():
    s = np.array([0.0, 10**-3.0, 10**-2.5, 10**-1.25, 1.0, 10.0], np.float32)
    assert synth.sar_to_uint8(s, "s1").tolist() == [0, 0, 0, 128, 255, 255]
    g = synth.sar_to_uint8(s, "gf3")
    assert g[0] == 0 and g[-1] == 255 and (np.diff(g.astype(int)) >= 0).all()
    assert not np.array_equal(g, synth.sar_to_uint8(s, "s1"))


@pytest.mark.parametrize(
    "spec",
    [
        SceneSpec(0, 10),
        SceneSpec(10, -1),
        SceneSpec(10, 10, bands=("HH",)),
        SceneSpec(10, 10, bands=()),
        SceneSpec(10, 10, domain="tsx"),
    ],
)
def test_invalid_specs(spec, tmp_path):
    with pytest.raises(UsageError):
        render_window(spec, 0, 0, 1, 1)
    with pytest.raises(UsageError):
        write_scene(tmp_path, spec)


def test_invalid_windows_and_arguments(tmp_path):
    spec = SceneSpec(10, 10)
    for window in [(0, 0, 0, 5), (0, 0, 11, 5), (-1, 0, 2, 2), (5, 5, 6, 1)]:
        with pytest.raises(UsageError):
            render_window(spec, *window)
    with pytest.raises(UsageError):
        write_pairs(tmp_path, 1, domain="gf2")
    with pytest.raises(UsageError):
        write_pairs(tmp_path, 1, tile=0)
    with pytest.raises(UsageError):
        write_scene(tmp_path, spec, block=0)
    with pytest.raises(UsageError):
        speckle_window(spec, 0, 0, 2, 2, band="HV")


@pytest.mark.parametrize(("corr", "lag1", "lag2"), [(0.6, 0.43, 0.06), (0.0, 0.0, 0.0)])
def test_speckle_spatial_correlation_like_grdh(corr, lag1, lag2):
    """GRDH-like speckle: neighbours correlate (20 x 22 m resolution at 10 m pixels), two pixels apart they
    hardly do; the marginal (mean 1, ENL 4.4) does not change; speckle_corr=0 gives independent pixels."""
    spec = SceneSpec(3000, 3000, ("VV",), seed=11, speckle_corr=corr)
    s = speckle_window(spec, 100, 200, 768, 768).astype(np.float64)

    def rho(a, b):
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]

    assert abs(rho(s[:, :-1], s[:, 1:]) - lag1) < 0.03  # along a row
    assert abs(rho(s[:-1], s[1:]) - lag1) < 0.03  # along a column
    assert abs(rho(s[:, :-2], s[:, 2:]) - lag2) < 0.03
    assert abs(s.mean() - 1.0) < 0.01 and abs(s.mean() ** 2 / s.var() - 4.4) < 0.3
    # window-consistent: any sub-window (here at odd offsets, touching the scene's first row) is the same
    top = speckle_window(spec, 0, 5, 40, 50)
    assert np.array_equal(top[7:20, 3:31], speckle_window(spec, 7, 8, 13, 28))


def test_speckle_corr_is_validated():
    with pytest.raises(UsageError, match="speckle_corr"):
        SceneSpec(10, 10, speckle_corr=-1).validate()
    with pytest.raises(UsageError, match="speckle_corr"):
        SceneSpec(10, 10, speckle_corr=5.0).validate()


def test_oracles_that_know_less_score_lower():
    """The partial-knowledge oracles behind the ceiling table: material colour only < + field latent < the
    texture-aware ceiling; each window-consistent; the material oracle takes as many colours as materials."""
    spec = SceneSpec(20000, 20000, ("VV",), seed=1, footprint=False)
    r, c, h, w = TOWN_WINDOW
    _, truth, _ = render_window(spec, r, c, h, w)
    scores = {}
    for knows in synth.ORACLE_KNOWLEDGE:
        est = synth.expected_optical_window(spec, r, c, h, w, knows=knows)
        scores[knows] = 10 * np.log10(255**2 / np.mean((truth.astype(np.float64) - est) ** 2))
        assert np.array_equal(
            est[:, 5:40, 7:30], synth.expected_optical_window(spec, r + 5, c + 7, 35, 23, knows)
        )
    assert scores["material"] + 1 < scores["field"] < scores["texture"]
    material = synth.expected_optical_window(spec, r, c, h, w, knows="material")
    colours = np.unique(material.reshape(3, -1), axis=1).shape[1]
    classes = np.unique(synth.landcover_window(spec, r, c, h, w)).size
    assert classes <= colours <= len(synth._MATERIALS)
    assert (
        np.unique(
            synth.expected_optical_window(spec, r, c, h, w, knows="field").reshape(3, -1), axis=1
        ).shape[1]
        > colours
    )
    with pytest.raises(UsageError, match="oracle knowledge"):
        synth.expected_optical_window(spec, r, c, h, w, knows="everything")


def test_expected_optical_is_the_truth_without_its_per_pixel_randomness(tmp_path):
    """The ceiling rendering: unbiased against the truth (the removed parts have mean zero), close to it
    (the per-pixel texture is a few DN), window-consistent, and the pairs' windows are write_pairs' own."""
    spec = SceneSpec(20000, 20000, ("VV",), seed=1, footprint=False)
    r, c, h, w = TOWN_WINDOW
    _, truth, _ = render_window(spec, r, c, h, w)
    best = synth.expected_optical_window(spec, r, c, h, w)
    diff = truth.astype(np.float64) - best
    assert np.abs(diff.reshape(3, -1).mean(1)).max() < 0.5
    psnr = 10 * np.log10(255**2 / np.mean(diff**2))
    assert 30 < psnr < 60
    assert np.array_equal(best[:, 5:40, 7:30], synth.expected_optical_window(spec, r + 5, c + 7, 35, 23))
    write_pairs(tmp_path, 2, seed=3, tile=32)
    for i, (spec_i, r_i, c_i) in enumerate(synth.pair_windows(2, seed=3, tile=32)):
        _, opt_i, _ = render_window(spec_i, r_i, c_i, 32, 32)
        assert np.array_equal(read_png(tmp_path / synth.OPT_DIR / f"{i:05d}.png"), opt_i)
    assert json.loads((tmp_path / "pairs.json").read_text())["simulator"] == synth.SIMULATOR_VERSION
