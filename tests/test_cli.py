"""CLI behaviour: every bad input gives a one-line error, exit code 1 (2 for usage), no traceback and
nothing at the output path."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import rasterio
from conftest import run_cli
from rasterio.transform import from_origin


def write_tif(path, data, *, crs="EPSG:32633", transform=True, nodata=0, dtype=None):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    profile = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=dtype or data.dtype.name,
    )
    if nodata is not None:
        profile["nodata"] = nodata
    if transform:
        profile.update(crs=crs, transform=from_origin(500000, 5500000, 10, 10))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return str(path)


def speckled(h=300, w=320, seed=0):
    rng = np.random.default_rng(seed)
    return (0.05 * rng.gamma(4.4, 1 / 4.4, size=(h, w))).astype(np.float32)


def assert_clean_error(code, err, out_path, expected_code=1, contains=""):
    assert code == expected_code, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert contains.lower() in err.lower(), err
    assert not os.path.exists(out_path)
    base = os.path.basename(out_path)
    parent = os.path.dirname(out_path) or "."
    names = os.listdir(parent) if os.path.isdir(parent) else []
    leftovers = [p for p in names if p == base or p.startswith("." + base)]
    assert not leftovers, leftovers


@pytest.fixture
def good_tif(tmp_path):
    return write_tif(tmp_path / "in.tif", speckled())


def test_translate_cli_happy_path(good_tif, tiny_model_path, tmp_path, capsys):
    out = tmp_path / "out.tif"
    code, _, err = run_cli(
        ["translate", good_tif, out, "--model", tiny_model_path, "--device", "cpu", "-q"], capsys
    )
    assert code == 0, err
    assert out.exists() and err == ""


def test_missing_file(tmp_path, tiny_model_path, capsys):
    out = tmp_path / "o.tif"
    code, _, err = run_cli(["translate", tmp_path / "nope.tif", out, "--model", tiny_model_path], capsys)
    assert_clean_error(code, err, str(out), contains="no such file")


def test_not_a_raster(tmp_path, tiny_model_path, capsys):
    bad = tmp_path / "bad.tif"
    bad.write_text("hello, I am not a GeoTIFF")
    out = tmp_path / "o.tif"
    code, _, err = run_cli(["translate", bad, out, "--model", tiny_model_path], capsys)
    assert_clean_error(code, err, str(out), contains="not a readable raster")


def test_ungeoreferenced_needs_flag(tmp_path, tiny_model_path, capsys):
    src = write_tif(tmp_path / "nogeo.tif", speckled(), transform=False)
    out = tmp_path / "o.tif"
    code, _, err = run_cli(["translate", src, out, "--model", tiny_model_path, "--device", "cpu"], capsys)
    assert_clean_error(code, err, str(out), contains="--allow-ungeoreferenced")
    code, _, err = run_cli(
        [
            "translate",
            src,
            out,
            "--model",
            tiny_model_path,
            "--device",
            "cpu",
            "-q",
            "--allow-ungeoreferenced",
        ],
        capsys,
    )
    assert code == 0 and out.exists()


def test_complex_slc_refused(tmp_path, tiny_model_path, capsys):
    src = write_tif(
        tmp_path / "slc.tif", (speckled() + 1j * speckled(seed=1)).astype(np.complex64), nodata=None
    )
    out = tmp_path / "o.tif"
    code, _, err = run_cli(["translate", src, out, "--model", tiny_model_path], capsys)
    assert_clean_error(code, err, str(out), contains="complex")


def test_band_count_model_cannot_take(tmp_path, tiny_model_path, capsys):
    src = write_tif(tmp_path / "b.tif", speckled())
    out = tmp_path / "o.tif"
    code, _, err = run_cli(["translate", src, out, "--model", tiny_model_path, "--bands", "1,1"], capsys)
    assert_clean_error(code, err, str(out), contains="takes 1 band")


def test_all_nodata_scene(tmp_path, tiny_model_path, capsys):
    src = write_tif(tmp_path / "empty.tif", np.zeros((300, 300), np.float32))
    out = tmp_path / "o.tif"
    code, _, err = run_cli(["translate", src, out, "--model", tiny_model_path, "--device", "cpu"], capsys)
    assert_clean_error(code, err, str(out), contains="nodata")


def test_existing_output_needs_overwrite(good_tif, tiny_model_path, tmp_path, capsys):
    out = tmp_path / "exists.tif"
    out.write_bytes(b"old")
    code, _, err = run_cli(["translate", good_tif, out, "--model", tiny_model_path], capsys)
    assert code == 1 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"old"
    code, _, err = run_cli(
        ["translate", good_tif, out, "--model", tiny_model_path, "--device", "cpu", "-q", "--overwrite"],
        capsys,
    )
    assert code == 0 and out.read_bytes()[:2] in (b"II", b"MM")


def test_unwritable_output_directory(good_tif, tiny_model_path, tmp_path, capsys):
    out = tmp_path / "missing-dir" / "o.tif"
    code, _, err = run_cli(["translate", good_tif, out, "--model", tiny_model_path], capsys)
    assert_clean_error(code, err, str(out), contains="does not exist")


def test_unwritable_directory_as_root_is_detected(good_tif, tiny_model_path, tmp_path, capsys):
    # a path whose parent is a file can never be written, whoever runs the test
    parent = tmp_path / "afile"
    parent.write_text("x")
    out = parent / "o.tif"
    code, _, err = run_cli(["translate", good_tif, out, "--model", tiny_model_path], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_checkpoint_that_does_not_fit_lists_keys(good_tif, tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    from sar2opt_geo.models.checkpoint import CheckpointMeta, read_state_dict

    meta = CheckpointMeta(name="broken", arch_args={"in_channels": 3, "out_channels": 3, "ngf": 8})
    from conftest import make_small_generator

    sd = {k: v.contiguous() for k, v in make_small_generator().state_dict().items()}
    sd.pop("head.0.weight")
    sd["extra.weight"] = torch.zeros(3)
    bad = tmp_path / "broken.safetensors"
    save_file(sd, str(bad), metadata={"sar2opt_geo": meta.to_json()})
    assert "extra.weight" in read_state_dict(bad)
    out = tmp_path / "o.tif"
    code, _, err = run_cli(["translate", good_tif, out, "--model", bad, "--device", "cpu"], capsys)
    assert_clean_error(code, err, str(out), contains="head.0.weight")
    assert "extra.weight" in err


def test_aoi_outside_scene(good_tif, tiny_model_path, tmp_path, capsys):
    aoi = tmp_path / "far.geojson"
    aoi.write_text(
        json.dumps(
            {"type": "Polygon", "coordinates": [[[100, 10], [101, 10], [101, 11], [100, 11], [100, 10]]]}
        )
    )
    out = tmp_path / "o.tif"
    code, _, err = run_cli(["translate", good_tif, out, "--model", tiny_model_path, "--aoi", aoi], capsys)
    assert_clean_error(code, err, str(out), contains="does not intersect")


def test_usage_errors_exit_2(good_tif, tiny_model_path, tmp_path, capsys):
    out = tmp_path / "o.tif"
    code, _, err = run_cli(
        ["translate", good_tif, out, "--model", tiny_model_path, "--overlap", "300"], capsys
    )
    assert_clean_error(code, err, str(out), expected_code=2, contains="--overlap")
    code, _, err = run_cli(
        ["translate", good_tif, out, "--model", tiny_model_path, "--format", "png"], capsys
    )
    assert code == 2 and not out.exists()


def test_info(good_tif, capsys):
    code, out, err = run_cli(["info", good_tif, "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["size"] == "320 x 300" and d["tiles"] == 4 and d["estimated_model_evaluations"] == 4
    assert "EPSG:32633" in d["crs"]


def test_demo_writes_scene_translation_and_preview(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "demo"
    code, _, err = run_cli(
        [
            "demo",
            out,
            "--width",
            "400",
            "--height",
            "300",
            "--model",
            tiny_model_path,
            "--device",
            "cpu",
            "-q",
        ],
        capsys,
    )
    assert code == 0, err
    for name in ("sar.tif", "optical.tif", "translated.tif", "preview.png"):
        assert (out / name).exists()
    from sar2opt_geo import io

    png = io.read_png(out / "preview.png")
    assert png.shape[0] == 3 and png.shape[2] > 2 * png.shape[1]  # three panels side by side
    code, _, err = run_cli(["demo", out, "--model", tiny_model_path], capsys)
    assert code == 1 and "--overwrite" in err
