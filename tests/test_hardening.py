"""Issue #12: the input is sacred, every failure is one line, quiet means quiet, names mean formats,
probably-not-SAR inputs, model/radiometry agreement, runs that cannot collide, honest edges and masks."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import run_cli
from rasterio.transform import from_origin


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_tif(path, data, *, nodata=None, dtype=None, descriptions=None, **extra):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    profile = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=dtype or data.dtype.name,
        crs="EPSG:32633",
        transform=from_origin(500000, 5500000, 10, 10),
        **extra,
    )
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(profile["dtype"]))
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
    return str(path)


def sar_tile(h=96, w=112, seed=0):
    rng = np.random.default_rng(seed)
    return (0.05 * rng.gamma(4.4, 1 / 4.4, size=(h, w))).astype(np.float32)


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: "), err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------------------ 1. the input is sacred


@pytest.fixture
def scene(tmp_path):
    return write_tif(tmp_path / "a.tif", sar_tile(), descriptions=["VV"])


@pytest.mark.parametrize("overwrite", [False, True])
def test_translate_onto_its_input_is_refused_and_the_input_is_intact(tmp_path, scene, capsys, overwrite):
    before = sha(scene)
    code, _, err = run_cli(["translate", scene, scene, *(["--overwrite"] if overwrite else []), "-q"], capsys)
    assert code == 1
    assert "would destroy the input" in one_error_line(err)
    assert sha(scene) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]  # no work state, no temporary files


def test_symlink_hard_link_and_relative_spelling_of_the_input_are_refused(tmp_path, scene, capsys, monkeypatch):
    before = sha(scene)
    os.symlink(scene, tmp_path / "link.tif")
    os.link(scene, tmp_path / "hard.tif")
    monkeypatch.chdir(tmp_path)
    for out, why in (("link.tif", "symbolic link"), ("hard.tif", "hard link"), ("./sub/../a.tif", "is the")):
        if out.startswith("./sub"):
            (tmp_path / "sub").mkdir(exist_ok=True)
        code, _, err = run_cli(["translate", scene, out, "--overwrite", "-q"], capsys)
        assert code == 1, out
        assert why in one_error_line(err), out
    assert sha(scene) == before and os.path.islink(tmp_path / "link.tif")


def test_output_inside_an_input_product_folder_is_refused(tmp_path, capsys):
    safe = tmp_path / "S1A_IW_GRDH_1SDV_X.SAFE" / "measurement"
    safe.mkdir(parents=True)
    tif = write_tif(safe / "s1a-iw-grd-vv.tiff", sar_tile(), descriptions=["VV"])
    code, _, err = run_cli(["translate", tif, safe.parent / "out.tif", "-q"], capsys)
    assert code == 1
    assert "product folder" in one_error_line(err)
    assert not (safe.parent / "out.tif").exists()


def test_output_in_another_runs_work_state_is_refused(tmp_path, scene, capsys):
    ws = tmp_path / ".other.tif.work"
    ws.mkdir()
    (ws / "state.json").write_text("{}")
    code, _, err = run_cli(["translate", scene, ws / "blocks.zarr", "--overwrite", "-q"], capsys)
    assert code == 1
    assert "work-state folder" in one_error_line(err)
    assert sorted(p.name for p in ws.iterdir()) == ["state.json"]


def test_zarr_output_holding_the_input_is_refused(tmp_path, capsys):
    store = tmp_path / "out.zarr"
    store.mkdir()
    scene = write_tif(store / "a.tif", sar_tile(), descriptions=["VV"])
    code, _, err = run_cli(["translate", scene, store, "--format", "zarr", "--overwrite", "-q"], capsys)
    assert code == 1
    assert "folder holding the input" in one_error_line(err)
    assert Path(scene).exists()


def test_filter_onto_its_input_is_refused(scene, capsys):
    before = sha(scene)
    code, _, err = run_cli(["filter", scene, scene, "--filter", "lee", "--overwrite", "-q"], capsys)
    assert code == 1 and "would destroy the input" in one_error_line(err)
    assert sha(scene) == before


def test_tile_pairs_onto_its_input_is_refused(tmp_path, capsys):
    store = tmp_path / "pairs.zarr"
    store.mkdir()
    sar = write_tif(store / "sar.tif", sar_tile(300, 300), descriptions=["VV"])
    opt = write_tif(tmp_path / "opt.tif", np.zeros((3, 300, 300), np.uint8))
    code, _, err = run_cli(["tile-pairs", sar, opt, store, "--overwrite"], capsys)
    assert code == 1 and "SAR raster" in one_error_line(err)
    assert Path(sar).exists()


@pytest.mark.parametrize("cmd", ["convert", "export-onnx", "merge-lora"])
def test_model_commands_onto_their_source_are_refused(tmp_path, tiny_model_path, capsys, cmd):
    src = tmp_path / "src.safetensors"
    shutil.copy(tiny_model_path, src)
    before = sha(src)
    if cmd == "convert":
        args = ["model", "convert", src, src, "--overwrite"]
    elif cmd == "export-onnx":
        onnx = tmp_path / "m.onnx"
        os.symlink(src, onnx)  # an .onnx name that is the checkpoint
        args = ["model", "export-onnx", src, onnx, "--overwrite"]
    else:
        args = ["model", "merge-lora", src, src, src, "--overwrite"]
    code, _, err = run_cli(args, capsys)
    assert code == 1 and "would destroy" in one_error_line(err)
    assert sha(src) == before


def test_collision_rules_unit(tmp_path):
    from sar2opt_geo.safety import collision

    a = tmp_path / "a.tif"
    a.write_bytes(b"x")
    (tmp_path / "d").mkdir()
    assert collision(a, a) == "is"
    assert collision(tmp_path / "b.tif", a) is None
    assert collision(tmp_path, a) == "is a folder holding"
    assert collision(tmp_path / "d" / "x.tif", tmp_path / "d") == "is inside the folder"
    assert collision(tmp_path / "d" / "x.tif", tmp_path / "d2") is None  # a prefix is not a parent
