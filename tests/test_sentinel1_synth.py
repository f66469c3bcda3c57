"""Sentinel-1 reader on synthetic SAFE products: σ⁰ round trip, chunk invariance, edges, input forms,
geometry of ascending/descending passes, thermal noise, legacy and EW noise files."""

from __future__ import annotations

import pickle
import shutil
import zipfile
from dataclasses import replace

import numpy as np
import pytest
from rasterio.warp import transform as warp_transform

from sar2opt_geo.sentinel1 import NOISE_FLOOR_FRACTION, open_product
from sar2opt_geo.sentinel1.synth import (
    ProductSpec,
    dn_window,
    radar_sigma0,
    radar_speckle_spec,
    write_product,
)
from sar2opt_geo.synth import speckle_window

SPEC = ProductSpec(width=480, height=360, seed=3)


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    out = tmp_path_factory.mktemp("s1synth")
    return write_product(out, SPEC, zip_product=True, truth=False)


def _quantisation_bound(prod, band, dn):
    """|σ⁰ error| of a DN rounded to the nearest integer: |Δ(DN²)| ≤ DN + 1/4, divided by A²."""
    rows, cols = np.arange(prod.height), np.arange(prod.width)
    a = prod.calibration_lut(band, "sigma0", rows, cols)
    return (dn.astype(np.float64) + 0.25) / (a * a)


def test_calibrated_denoised_sigma0_equals_simulator_within_quantisation(product):
    prod = open_product(product.safe)
    data, valid = prod.read_window(None, 0, prod.height, 0, prod.width)
    truth = radar_sigma0(SPEC, 0, prod.height, 0, prod.width)
    assert valid.mean() > 0.97 and not valid[:, :2].any()  # near-range DN-0 border is invalid
    for k, band in enumerate(prod.polarisations):
        dn = dn_window(SPEC, band, 0, prod.height, prod.bands[k].calibration, prod.bands[k].noise)
        bound = _quantisation_bound(prod, band, dn)
        err = np.abs(data[k].astype(np.float64) - truth[k])
        eta_eq = prod.noise_equivalent(band, np.arange(prod.height), np.arange(prod.width))
        floored = data[k] <= NOISE_FLOOR_FRACTION * eta_eq * (1 + 1e-5)
        ok = valid & ~floored
        assert ok.mean() > 0.9
        assert np.all(err[ok] <= bound[ok] * 1.001 + 1e-7), float((err[ok] / bound[ok]).max())
        # floored pixels are exactly those whose truth lies within the quantisation error of the floor
        assert np.all(
            truth[k][valid & floored]
            <= NOISE_FLOOR_FRACTION * eta_eq[valid & floored] + bound[valid & floored]
        )
        assert np.all(data[k][~valid] == 0)


def test_chunk_invariance_bit_identical(product):
    prod = open_product(product.safe)
    for calibration, denoise in (("sigma0", True), ("gamma0", False), ("beta0", True)):
        full, fvalid = prod.read_window(None, 0, prod.height, 0, prod.width, calibration, denoise)
        stitched = np.empty_like(full)
        svalid = np.empty_like(fvalid)
        rows = [0, 37, 100, 211, 250, prod.height]
        cols = [0, 91, 92, 300, 413, prod.width]
        for r0, r1 in zip(rows[:-1], rows[1:], strict=True):
            for c0, c1 in zip(cols[:-1], cols[1:], strict=True):
                d, v = prod.read_window(None, r0, r1, c0, c1, calibration, denoise)
                stitched[:, r0:r1, c0:c1] = d
                svalid[r0:r1, c0:c1] = v
        assert np.array_equal(full, stitched)
        assert np.array_equal(fvalid, svalid)


def test_windows_past_the_edges_reflect_like_numpy(product):
    prod = open_product(product.safe)
    full, valid = prod.read_window(("VH",), 0, prod.height, 0, prod.width)
    pad = 9
    padded = np.pad(full, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    vpad = np.pad(valid, pad, mode="reflect")
    r0, r1, c0, c1 = -pad, 40, prod.width - 30, prod.width + pad
    d, v = prod.read_window(("VH",), r0, r1, c0, c1)
    assert np.array_equal(d, padded[:, r0 + pad : r1 + pad, c0 + pad : c1 + pad])
    assert np.array_equal(v, vpad[r0 + pad : r1 + pad, c0 + pad : c1 + pad])
    by_number, _ = prod.read_window((2,), r0, r1, c0, c1)
    assert np.array_equal(by_number, d)
    single, _ = prod.read_window("VH", r0, r1, c0, c1)
    assert np.array_equal(single, d)


def _aws_layout(src, dst):
    """Rename a SAFE like the public cloud copies: measurement/iw-vv.tiff, annotation/iw-vv.xml, ..."""
    for pol in ("vv", "vh"):
        for sub, pattern, new in (
            ("measurement", f"*-{pol}-*.tiff", f"iw-{pol}.tiff"),
            ("annotation", f"s1*-{pol}-*.xml", f"iw-{pol}.xml"),
            ("annotation/calibration", f"calibration-*-{pol}-*.xml", f"calibration-iw-{pol}.xml"),
            ("annotation/calibration", f"noise-*-{pol}-*.xml", f"noise-iw-{pol}.xml"),
        ):
            (dst / sub).mkdir(parents=True, exist_ok=True)
            (found,) = list((src / sub).glob(pattern))
            shutil.copy(found, dst / sub / new)
    shutil.copy(src / "manifest.safe", dst / "manifest.safe")


def test_all_input_forms_read_the_same_pixels(product, tmp_path):
    safe = product.safe
    ref = open_product(safe)
    ref_data, ref_valid = ref.read_window(("VV",), 10, 90, 400, 480 + 5)
    aws = tmp_path / "aws" / "S1A_IW_GRDH_1SDV_cloud"
    _aws_layout(safe, aws)
    cog = tmp_path / safe.name
    shutil.copytree(safe, cog)
    for tif in (cog / "measurement").glob("*.tiff"):
        tif.rename(tif.with_name(tif.stem + "-cog.tiff"))
    (vv_tiff,) = list((safe / "measurement").glob("*-vv-*.tiff"))
    vsizip = f"/vsizip/{product.zip}"
    forms = [safe, safe / "manifest.safe", product.zip, vv_tiff, aws, cog, vsizip, f"{vsizip}/{safe.name}"]
    forms.append(f"{vsizip}/{safe.name}/measurement/{vv_tiff.name}")
    for form in forms:
        prod = open_product(form)
        assert "VV" in prod.polarisations
        d, v = prod.read_window(("VV",), 10, 90, 400, 485)
        assert np.array_equal(d, ref_data), form
        assert np.array_equal(v, ref_valid), form
        assert prod.shape == ref.shape and prod.gcps == ref.gcps
    assert open_product(vv_tiff).polarisations == ("VV",)
    assert open_product(forms[-1]).polarisations == ("VV",)
    assert open_product(product.zip).bands[0].measurement.startswith("/vsizip/")
    # the zip was read in place: nothing was unpacked beside it
    assert sorted(p.name for p in product.zip.parent.iterdir()) == sorted([safe.name, product.zip.name])
    with zipfile.ZipFile(product.zip) as zf:
        assert all(n.startswith(safe.name + "/") for n in zf.namelist())


def test_geometry_ascending_upside_down_descending_mirrored(tmp_path):
    for pass_dir in ("ASCENDING", "DESCENDING"):
        spec = replace(SPEC, width=200, height=150, pass_direction=pass_dir, polarisations=("VV",))
        paths = write_product(tmp_path / pass_dir, spec, truth=False)
        prod = open_product(paths.safe)
        assert prod.pass_direction == pass_dir and prod.gcp_source == "tiff"
        g = np.array(prod.gcps)
        first = g[g[:, 0] == 0]
        last = g[g[:, 0] == g[:, 0].max()]
        dlat = last[:, 3].mean() - first[:, 3].mean()
        near, far = g[g[:, 1] == 0], g[g[:, 1] == g[:, 1].max()]
        dlon = far[:, 2].mean() - near[:, 2].mean()
        if pass_dir == "ASCENDING":
            assert dlat > 0 and dlon > 0  # later lines further north: upside-down against north
        else:
            assert dlat < 0 and dlon < 0  # range runs west: mirrored
        # along-track direction: the platform heading, rotated 10-15 degrees from the meridian
        x0, y0 = warp_transform("EPSG:4326", spec.crs, [first[:, 2].mean()], [first[:, 3].mean()])
        x1, y1 = warp_transform("EPSG:4326", spec.crs, [last[:, 2].mean()], [last[:, 3].mean()])
        heading = np.degrees(np.arctan2(x1[0] - x0[0], y1[0] - y0[0]))
        assert abs((heading - spec.heading + 180) % 360 - 180) < 0.5
        rotation = abs(heading) if pass_dir == "ASCENDING" else 180 - abs(heading)
        assert 10 <= rotation <= 15.5
        # the tiff's GCPs are the annotation's geolocation grid
        meta = open_product(paths.safe, metadata_only=True)
        assert meta.gcp_source == "annotation"
        assert np.allclose(np.array(meta.gcps), g, atol=1e-9)
        assert prod.range_spacing == 10.0 and prod.width == 200 and prod.height == 150
        assert prod.first_line_time < prod.last_line_time


def test_random_thermal_noise_is_removed_without_bias(tmp_path):
    spec = replace(SPEC, thermal_noise="random", polarisations=("VH",))
    paths = write_product(tmp_path, spec, truth=False)
    prod = open_product(paths.safe)
    truth = radar_sigma0(spec, 0, prod.height, 0, prod.width)[0]
    den, valid = prod.read_window(None, 0, prod.height, 0, prod.width)
    raw, _ = prod.read_window(None, 0, prod.height, 0, prod.width, denoise=False)
    nesz = prod.noise_equivalent("VH", np.arange(prod.height), np.arange(prod.width))
    t, d, r = truth[valid].mean(), den[0][valid].mean(), raw[0][valid].mean()
    assert abs(d - t) / t < 0.01
    assert abs((r - t) - nesz[valid].mean()) / nesz[valid].mean() < 0.05  # raw is biased by the NESZ
    assert np.all(den[0][valid] > 0)


def test_floor_and_nodata_are_documented_values(product):
    prod = open_product(product.safe)
    rows, cols = np.arange(0, 4), np.arange(0, 12)
    dn = np.array([[0, 1, 5, 10, 20, 30, 40, 45, 60, 100, 200, 400]] * 4, dtype=np.uint16)
    out = prod.calibrate(dn, "VV", rows, cols)
    a = prod.calibration_lut("VV", "sigma0", rows, cols)
    eta = prod.noise_power("VV", rows, cols)
    p = dn.astype(np.float64) ** 2
    expect = np.where(p - eta > NOISE_FLOOR_FRACTION * eta, p - eta, NOISE_FLOOR_FRACTION * eta) / a**2
    expect[dn == 0] = 0
    assert np.allclose(out, expect, rtol=1e-6, atol=0)
    assert np.all(out[:, 1:] > 0) and np.all(out[:, 0] == 0)


@pytest.mark.parametrize("variant", ["legacy", "EW", "S1C"])
def test_legacy_noise_vectors_ew_swath_blocks_and_no_azimuth_vectors(tmp_path, variant):
    if variant == "legacy":
        spec = replace(SPEC, width=300, height=200, noise_format="legacy", ipf_version="002.72")
    elif variant == "S1C":
        spec = replace(SPEC, width=300, height=200, mission="S1C", noise_format="range_only")
    else:
        spec = replace(SPEC, width=300, height=200, mode="EW", pixel_spacing=40.0, polarisations=("VV",))
    paths = write_product(tmp_path, spec, truth=False)
    prod = open_product(paths.safe)
    noise = prod.bands[0].noise
    if variant == "legacy":
        assert noise.legacy and noise.azimuth == ()
        assert prod.ipf_version == "002.72"
    elif variant == "S1C":
        assert prod.mission == "S1C" and not noise.legacy and noise.azimuth == ()
        rows, cols = np.arange(0, 200, 7), np.arange(0, 300, 11)
        assert np.array_equal(noise.evaluate(rows, cols), noise.range_noise(rows, cols))  # eta_az = 1
    else:
        assert prod.mode == "EW" and prod.resolution == "M"
        assert len(noise.azimuth) == 10 and len({b.swath for b in noise.azimuth}) == 5
    data, valid = prod.read_window(("VV",), 0, prod.height, 0, prod.width)
    truth = radar_sigma0(spec, 0, prod.height, 0, prod.width)[0]
    dn = dn_window(spec, "VV", 0, prod.height, prod.bands[0].calibration, noise)
    bound = _quantisation_bound(prod, "VV", dn)
    eta_eq = prod.noise_equivalent("VV", np.arange(prod.height), np.arange(prod.width))
    ok = valid & (data[0] > NOISE_FLOOR_FRACTION * eta_eq * (1 + 1e-5))
    assert ok.mean() > 0.9
    assert np.all(np.abs(data[0] - truth)[ok] <= bound[ok] * 1.001 + 1e-7)


def test_product_is_small_and_picklable(product):
    prod = open_product(product.zip)
    blob = pickle.dumps(prod)
    assert len(blob) < 200_000
    back = pickle.loads(blob)
    a, _ = prod.read_window(None, 5, 50, 7, 90)
    b, _ = back.read_window(None, 5, 50, 7, 90)
    assert np.array_equal(a, b)


def test_synthetic_calibration_xml_parses_with_xarray_sentinel(product):
    xs = pytest.importorskip("xarray_sentinel.sentinel1", reason="xarray-sentinel (test-only) not installed")
    prod = open_product(product.safe)
    (cal_xml,) = list((product.safe / "annotation" / "calibration").glob("calibration-*-vv-*.xml"))
    ds = xs.open_calibration_dataset(cal_xml)
    lut = prod.bands[0].calibration
    assert np.allclose(ds["sigmaNought"].values, np.stack(lut.luts["sigma0"]), rtol=1e-7)
    assert np.array_equal(ds["line"].values, lut.lines.astype(int))


def test_processor_denoised_product_is_not_denoised_twice(product, tmp_path):
    p = tmp_path / product.safe.name
    shutil.copytree(product.safe, p)
    for ann in (p / "annotation").glob("*.xml"):
        text = ann.read_text()
        ann.write_text(
            text.replace("<thermalNoiseCorrectionPerformed>false<", "<thermalNoiseCorrectionPerformed>true<")
        )
    prod = open_product(p)
    assert all(b.noise_removed for b in prod.bands)
    den, _ = prod.read_window(None, 0, 50, 0, 60)
    raw, _ = prod.read_window(None, 0, 50, 0, 60, denoise=False)
    assert np.array_equal(den, raw)
    ref, _ = open_product(product.safe).read_window(None, 0, 50, 0, 60, denoise=False)
    assert np.array_equal(raw, ref)


def test_stripmap_file_names(product, tmp_path):
    """SM products name their files by beam (s1..s6): s1a-s3-grd-vv-...; found by the same patterns."""
    p = tmp_path / product.safe.name.replace("_IW_", "_S3_")
    shutil.copytree(product.safe, p)
    for f in list(p.rglob("*s1a-iw-grd-*")):
        f.rename(f.with_name(f.name.replace("s1a-iw-grd-", "s1a-s3-grd-")))
    prod = open_product(p)
    assert prod.polarisations == ("VV", "VH")
    a, _ = prod.read_window(None, 3, 40, 5, 70)
    b, _ = open_product(product.safe).read_window(None, 3, 40, 5, 70)
    assert np.array_equal(a, b)


def test_synthetic_luts_are_iw_like(product):
    prod = open_product(product.safe)
    rows, cols = np.arange(prod.height), np.arange(prod.width)
    a = prod.calibration_lut("VV", "sigma0", rows, cols)
    assert 555 < a.min() < 565 and 660 < a.max() < 670  # A_sigma across an IW swath
    assert np.allclose(prod.calibration_lut("VV", "beta0", rows[:3], cols[:3]), 474.0)
    for band in prod.polarisations:
        db = 10 * np.log10(prod.noise_equivalent(band, rows, cols))
        assert -29.0 < db.min() and db.max() < -20.0
        assert db.max() - db.min() > 5  # subswath edges noisier than their centres


@pytest.mark.parametrize("pass_dir", ["ASCENDING", "DESCENDING"])
def test_gcps_tie_radar_pixels_to_the_map_truth(tmp_path, pass_dir):
    """Through the product's GCPs (GDAL convention, pixel centres at +0.5) each radar pixel lands in the
    map pixel of sar.tif whose simulator σ⁰ it carries: the product is geometrically consistent with the
    map-projected truth written beside it."""
    import rasterio

    spec = replace(SPEC, width=200, height=150, pass_direction=pass_dir, polarisations=("VV",), seed=5)
    paths = write_product(tmp_path, spec)
    prod = open_product(paths.safe)
    g = np.array(prod.gcps)
    x, y = warp_transform("EPSG:4326", spec.crs, g[:, 2].tolist(), g[:, 3].tolist())
    design = np.column_stack([g[:, 0], g[:, 1], np.ones(len(g))])
    coef_x, res_x, *_ = np.linalg.lstsq(design, np.array(x), rcond=None)
    coef_y, res_y, *_ = np.linalg.lstsq(design, np.array(y), rcond=None)
    fit = design @ np.column_stack([coef_x, coef_y])
    assert np.abs(fit - np.column_stack([x, y])).max() < 0.01  # metres: the GCPs are one affine map in UTM
    with rasterio.open(paths.sar_map) as src:
        sar_map = src.read(1)
        inv = ~src.transform
    rows, cols = np.meshgrid(np.arange(150), np.arange(200), indexing="ij")
    centre = np.column_stack([rows.ravel() + 0.5, cols.ravel() + 0.5, np.ones(rows.size)])
    mx, my = centre @ coef_x, centre @ coef_y
    mc, mr = inv * (mx, my)
    ir, ic = np.floor(mr).astype(int), np.floor(mc).astype(int)
    # the noise-free σ⁰ of the map pixel each GCP-mapped radar pixel centre falls in is the product's
    map_speckle = speckle_window(spec.scene, 0, 0, sar_map.shape[0], sar_map.shape[1])
    sampled = (sar_map / map_speckle)[ir, ic].reshape(rows.shape)
    truth = radar_sigma0(spec, 0, 150, 0, 200)[0] / speckle_window(radar_speckle_spec(spec), 0, 0, 150, 200)
    valid = spec.valid_mask(np.arange(150), np.arange(200))
    assert np.mean(np.isclose(sampled[valid], truth[valid], rtol=1e-5)) > 0.995
