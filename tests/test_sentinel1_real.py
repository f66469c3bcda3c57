"""Sentinel-1 reader on the real IW GRDH metadata in ../shared/s1-products (skipped when absent):
discovery, calibration against xarray-sentinel and by hand, thermal noise LUTs, geolocation, and a
full-size measurement tiff of our own DN."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.windows import Window

from sar2opt_geo.errors import InputError
from sar2opt_geo.sentinel1 import NOISE_FLOOR_FRACTION, open_product
from sar2opt_geo.sentinel1.synth import create_measurement

SHARED = Path(__file__).resolve().parents[2] / "shared" / "s1-products"
S1B = SHARED / "S1B_IW_GRDH_1SDV_20211223T051122_20211223T051147_030148_039993_5371.SAFE"
S1A = SHARED / "S1A_IW_GRDH_1SDV_20210809T173953_20210809T174018_039156_049F13_6FF8.SAFE"

pytestmark = pytest.mark.skipif(
    not (S1A.is_dir() and S1B.is_dir()),
    reason=f"real Sentinel-1 metadata not found at {SHARED} (shared/s1-products beside the repository)",
)

CASES = [(S1B, "VV"), (S1A, "VV"), (S1A, "VH")]


def _xml(safe: Path, kind: str, pol: str) -> Path:
    folder = safe / "annotation" / "calibration"
    (path,) = list(folder.glob(f"{kind}-*-{pol.lower()}-*.xml"))
    return path


def _open(safe):
    return open_product(safe, metadata_only=(safe == S1A))


def test_product_properties():
    b = open_product(S1B)
    assert (b.mission, b.mode, b.product_type, b.resolution) == ("S1B", "IW", "GRD", "H")
    assert b.pass_direction == "DESCENDING" and b.polarisations == ("VV",)  # manifest lists VH; no files
    assert b.shape == (16705, 26102) and b.range_spacing == 10.0 and b.azimuth_spacing == 10.0
    assert b.first_line_time == "2021-12-23T05:11:22.594441"
    assert b.last_line_time == "2021-12-23T05:11:47.593146"
    assert b.ipf_version == "003.40"
    assert b.gcp_source == "annotation" and len(b.gcps) == 210  # the zero tiff has no GCPs
    g = b.gcp_objects()[0]
    assert isinstance(g, GroundControlPoint) and (g.row, g.col) == (0, 0)
    assert g.x == pytest.approx(15.32209672548896) and g.y == pytest.approx(42.37675280764677)
    assert b.gcp_crs == CRS.from_epsg(4326)
    a = open_product(S1A, metadata_only=True)
    assert a.pass_direction == "ASCENDING" and a.polarisations == ("VV", "VH") and a.ipf_version == "003.31"
    assert a.shape == (16676, 26144)


def test_zero_byte_measurement_is_a_one_line_error():
    with pytest.raises(InputError) as exc:
        open_product(S1A)
    msg = str(exc.value)
    assert "\n" not in msg and "not a readable raster" in msg and msg.split(":")[0].endswith(".tiff")


@pytest.mark.parametrize("safe,pol", CASES)
@pytest.mark.parametrize(
    "calibration,var", [("sigma0", "sigmaNought"), ("beta0", "betaNought"), ("gamma0", "gamma")]
)
def test_calibration_matches_xarray_sentinel(safe, pol, calibration, var):
    xr = pytest.importorskip("xarray")
    xs = pytest.importorskip("xarray_sentinel", reason="xarray-sentinel==0.9.6 (test-only) not installed")
    from xarray_sentinel.sentinel1 import open_calibration_dataset

    prod = _open(safe)
    rng = np.random.default_rng(0)
    rows = np.unique(np.concatenate([[0, prod.height - 1], rng.integers(0, prod.height, 40)]))
    cols = np.unique(np.concatenate([[0, prod.width - 1], rng.integers(0, prod.width, 60)]))
    dn_vals = rng.integers(1, 4000, size=(rows.size, cols.size)).astype(np.float64)
    dn = xr.DataArray(dn_vals, dims=("line", "pixel"), coords={"line": rows, "pixel": cols})
    lut = open_calibration_dataset(_xml(safe, "calibration", pol))[var]
    ref = xs.calibrate_intensity(dn, lut, as_db=False).values
    ours = prod.calibrate(dn_vals, pol, rows, cols, calibration, denoise=False)
    rel = np.abs(ours.astype(np.float64) - ref) / ref
    assert rel.max() <= 1e-6, rel.max()


def _vectors(path: Path, tag: str):
    root = ET.parse(path).getroot()
    out = []
    for v in root.iter("calibrationVector"):
        out.append((int(v.find("line").text), v.find("pixel").text.split(), v.find(tag).text.split()))
    return out


@pytest.mark.parametrize("safe,pol", CASES)
def test_calibration_corner_pixels_by_hand(safe, pol):
    prod = _open(safe)
    vecs = _vectors(_xml(safe, "calibration", pol), "sigmaNought")
    h, w = prod.height, prod.width
    # first pixel: the first value of the first vector, exactly
    a00 = prod.calibration_lut(pol, "sigma0", [0], [0])[0, 0]
    assert a00 == float(vecs[0][2][0])
    # last pixel: last pixel of every vector is w - 1 here; blend the two vectors bracketing line h - 1
    assert all(int(v[1][-1]) == w - 1 for v in vecs)
    (k,) = [i for i in range(len(vecs) - 1) if vecs[i][0] <= h - 1 < vecs[i + 1][0]]
    la, lb = vecs[k][0], vecs[k + 1][0]
    va, vb = float(vecs[k][2][-1]), float(vecs[k + 1][2][-1])
    hand = va + (h - 1 - la) / (lb - la) * (vb - va)
    got = prod.calibration_lut(pol, "sigma0", [h - 1], [w - 1])[0, 0]
    assert got == pytest.approx(hand, rel=1e-12)
    # past the last vector: the last segment extended linearly
    lp, ll = vecs[-2], vecs[-1]
    line = ll[0] + 300
    t = (line - lp[0]) / (ll[0] - lp[0])
    hand = (1 - t) * float(lp[2][0]) + t * float(ll[2][0])
    assert prod.calibration_lut(pol, "sigma0", [line], [0])[0, 0] == pytest.approx(hand, rel=1e-12)
    # corner DN by hand: sigma0 = DN^2 / A^2
    assert prod.calibrate(np.array([[1234]]), pol, [0], [0], denoise=False)[0, 0] == pytest.approx(
        1234.0**2 / float(vecs[0][2][0]) ** 2, rel=1e-7
    )


@pytest.mark.parametrize("safe,pol", CASES)
def test_noise_equivalent_sigma0_of_real_iw_products(safe, pol):
    prod = _open(safe)
    rows = np.arange(0, prod.height, 97)
    cols = np.arange(0, prod.width, 13)
    noise = prod.bands[prod.band_index(pol)].noise
    # the range LUT falls to 0 on the far-range no-data border (DN 0 in real images): keep the swath, i.e.
    # the columns up to the last non-zero sample of every range vector
    last = min(px[lut > 0].max() for px, lut in zip(noise.pixels, noise.range_luts, strict=True))
    assert last > 0.98 * prod.width
    cols = cols[cols <= last]
    nesz = prod.noise_equivalent(pol, rows, cols)
    assert np.all(nesz > 0)
    db = 10 * np.log10(nesz)
    # measured: -30.8 .. -21.5 dB, medians -25.1 .. -25.9 dB; swath edges about -22 dB, 15-20 % of the
    # swath (beam centres of IW2/IW3) below -28 dB, hence the wider lower bound
    assert db.max() <= -20.0 and db.min() >= -31.5
    assert -28.0 <= np.median(db) <= -20.0
    # near range (IW1 edge) is the noisiest part: within -20..-24 dB
    assert -24.0 <= 10 * np.log10(nesz[:, 0].mean()) <= -20.0


def test_noise_lut_by_hand_range_then_azimuth_blocks():
    prod = open_product(S1B)
    noise = prod.bands[0].noise
    root = ET.parse(_xml(S1B, "noise", "VV")).getroot()
    rvec = list(root.iter("noiseRangeVector"))
    blocks = list(root.iter("noiseAzimuthVector"))
    assert (
        len(rvec) == 27
        and len(blocks) == 3
        and {b.find("swath").text for b in blocks} == {"IW1", "IW2", "IW3"}
    )
    # a pixel halfway between range vectors 3 and 4, at a range sample of the vector grid, inside IW2
    v3, v4 = rvec[3], rvec[4]
    l3, l4 = int(v3.find("line").text), int(v4.find("line").text)
    px3 = [int(x) for x in v3.find("pixel").text.split()]
    j = next(i for i, p in enumerate(px3) if p > 12000)
    col = px3[j]
    line = (l3 + l4) // 2
    r3 = float(v3.find("noiseRangeLut").text.split()[j])
    px4 = [int(x) for x in v4.find("pixel").text.split()]
    r4 = float(v4.find("noiseRangeLut").text.split()[px4.index(col)])
    t = (line - l3) / (l4 - l3)
    eta_rg = (1 - t) * r3 + t * r4
    b2 = next(b for b in blocks if b.find("swath").text == "IW2")
    assert int(b2.find("firstRangeSample").text) <= col <= int(b2.find("lastRangeSample").text)
    bl = np.array(b2.find("line").text.split(), dtype=float)
    bv = np.array(b2.find("noiseAzimuthLut").text.split(), dtype=float)
    eta_az = float(np.interp(line, bl, bv))
    assert prod.noise_power("VV", [line], [col])[0, 0] == pytest.approx(eta_rg * eta_az, rel=1e-12)
    # lines after the last vector reuse it
    assert np.array_equal(
        noise.range_noise([prod.height + 500], [col]),
        noise.range_noise([int(rvec[-1].find("line").text)], [col]),
    )


def test_full_size_measurement_of_our_own_dn(tmp_path):
    """The real S1B metadata with a full-size tiled/deflate tiff holding our DN patches (sparse, small)."""
    safe = tmp_path / S1B.name
    for sub in ("annotation", "annotation/calibration"):
        (safe / sub).mkdir(parents=True)
        for f in (S1B / sub).glob("*.xml"):
            os.symlink(f, safe / sub / f.name)
    os.symlink(S1B / "manifest.safe", safe / "manifest.safe")
    (safe / "measurement").mkdir()
    (real,) = list((S1B / "measurement").glob("*.tiff"))
    prod0 = open_product(S1B)
    h, w = prod0.height, prod0.width
    rng = np.random.default_rng(1)
    patches = {(0, 0): None, (h - 64, w - 300): None, (8000, 13000): None}
    for key in patches:
        dn = rng.integers(20, 900, size=(64, 300)).astype(np.uint16)
        dn[:3, :5] = 0
        patches[key] = dn
    with create_measurement(safe / "measurement" / real.name, w, h, prod0.gcps, sparse_ok=True) as dst:
        for (r0, c0), dn in patches.items():
            dst.write(dn[None], window=Window(c0, r0, 300, 64))
    assert (safe / "measurement" / real.name).stat().st_size < 2_000_000
    prod = open_product(safe)
    assert prod.gcp_source == "tiff" and prod.shape == (h, w)
    for (r0, c0), dn in patches.items():
        rows, cols = np.arange(r0, r0 + 64), np.arange(c0, c0 + 300)
        data, valid = prod.read_window(("VV",), r0, r0 + 64, c0, c0 + 300)
        a = prod.calibration_lut("VV", "sigma0", rows, cols)
        eta = prod.noise_power("VV", rows, cols)
        p = dn.astype(np.float64) ** 2
        expect = np.maximum(p - eta, NOISE_FLOOR_FRACTION * eta) / a**2
        assert np.array_equal(valid, dn != 0)
        assert np.allclose(data[0][valid], expect[valid], rtol=1e-6, atol=0)
        assert np.all(data[0][~valid] == 0)
        raw, _ = prod.read_window(("VV",), r0, r0 + 64, c0, c0 + 300, denoise=False)
        assert np.allclose(raw[0][valid], (p / a**2)[valid], rtol=1e-6, atol=0)
    # the shipped all-zero tiff: every pixel is no data
    data, valid = open_product(S1B).read_window(("VV",), 100, 164, 100, 164)
    assert not valid.any() and not data.any()


def test_file_names_found_by_pattern_not_manifest():
    prod = open_product(S1B)
    manifest = (S1B / "manifest.safe").read_text()
    assert re.search(r"-vh-", manifest)  # the manifest names VH files that are not there
    assert prod.polarisations == ("VV",)
