"""Shared fixtures: a small calibrated generator checkpoint and synthetic scenes (all seeded, in tmp dirs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sar2opt_geo.models.checkpoint import CheckpointMeta, save_checkpoint
from sar2opt_geo.models.registry import create_model

SEN12_RADIOMETRY = {"scale": "db", "clip": [-25.0, 0.0], "out_range": [-1.0, 1.0], "replicate_to": 3}


def make_small_generator(ngf: int = 8, seed: int = 0, in_channels: int = 3):
    """A real UnetGenerator with seeded random weights whose BatchNorm statistics are calibrated on
    SAR-like inputs (so the eval-mode output has spatial structure, as a trained model's does)."""
    torch.manual_seed(seed)
    model = create_model("unet_sar2optical", in_channels=in_channels, out_channels=3, ngf=ngf)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    gen = np.random.default_rng(seed)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            base = gen.uniform(-1, 0.5, size=(4, 1, 16, 16)).repeat(16, axis=2).repeat(16, axis=3)
            x = np.clip(base + gen.normal(0, 0.25, size=(4, 1, 256, 256)), -1, 1).astype(np.float32)
            model(torch.from_numpy(np.repeat(x, in_channels, axis=1)))
    model.eval()
    return model


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache_dir(tmp_path_factory):
    """`--backend auto` exports models into a user cache directory: keep the tests' exports in a temporary
    one (shared by the session, as a user's cache is shared by runs)."""
    import os

    old = os.environ.get("SAR2OPT_GEO_CACHE_DIR")
    os.environ["SAR2OPT_GEO_CACHE_DIR"] = str(tmp_path_factory.mktemp("sar2opt-cache"))
    yield
    if old is None:
        os.environ.pop("SAR2OPT_GEO_CACHE_DIR", None)
    else:
        os.environ["SAR2OPT_GEO_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    model = make_small_generator()
    meta = CheckpointMeta(
        name="tiny-test-unet",
        architecture="unet_sar2optical",
        arch_args={"in_channels": 3, "out_channels": 3, "ngf": 8},
        input_bands=["VV"],
        radiometry=SEN12_RADIOMETRY,
        provenance={"source": "tests/conftest.py: seeded random weights, calibrated BatchNorm"},
    )
    save_checkpoint(path, model, meta)
    return str(path)


@pytest.fixture(scope="session")
def demo_scene(tmp_path_factory):
    """The issue's acceptance scene: 3000 × 2500 px, VV, nodata collar, CRS + transform."""
    from sar2opt_geo.synth import SceneSpec, write_scene

    out = tmp_path_factory.mktemp("scene")
    sar, opt = write_scene(out, SceneSpec(width=3000, height=2500, seed=7))
    return str(sar)


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory):
    from sar2opt_geo.synth import SceneSpec, write_scene

    out = tmp_path_factory.mktemp("small")
    sar, opt = write_scene(out, SceneSpec(width=700, height=530, seed=3))
    return str(sar)


@pytest.fixture(scope="session")
def gcp_scene(tmp_path_factory):
    from sar2opt_geo.synth import SceneSpec, write_scene

    out = tmp_path_factory.mktemp("gcp")
    sar, opt = write_scene(out, SceneSpec(width=600, height=450, seed=5), gcps=True)
    return str(sar)


def translate_torch(scene, out, model, capsys, *extra):
    """``translate`` through the CLI in-process, torch engine on CPU, quiet: ``(rgb, meta)`` of the output
    read back with its mask (for runs whose pixels a test compares)."""
    from sar2opt_geo import io

    args = ["translate", scene, out, "--model", model, "--device", "cpu", "--backend", "torch", "-q"]
    code, _, err = run_cli([*args, *extra], capsys)
    assert code == 0, err
    return io.read_raster(out, masked=True)


def run_cli(args, capsys):
    """Run the CLI in-process: ``(exit_code, stdout, stderr)``."""
    from sar2opt_geo.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def write_geotiff(path, values, *, origin=(500000, 4000000), mask=None, **profile):
    """A GeoTIFF of ``values`` ``(bands, h, w)`` on a 10 m UTM 33N grid, with rasterio creation options
    ``profile`` (layout, compression, nodata) and, with ``mask``, an internal per-dataset mask; opened back
    with :func:`sar2opt_geo.io.open_scene`."""
    import rasterio
    from rasterio.transform import from_origin

    from sar2opt_geo import io

    count, h, w = values.shape
    with (
        rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
        rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=w,
            height=h,
            count=count,
            dtype=values.dtype.name,
            crs="EPSG:32633",
            transform=from_origin(*origin, 10, 10),
            **profile,
        ) as dst,
    ):
        dst.write(values)
        if mask is not None:
            dst.write_mask(mask)
    return io.open_scene(str(path))


def interrupt_after_blocks(monkeypatch, n: int):
    """Make ``translate`` raise KeyboardInterrupt (Ctrl-C) once its ``n``-th block is in the output; returns
    a function that undoes it (for the ``--resume`` run that follows)."""
    from sar2opt_geo import run

    real_add, calls = run.OutputSink.add, {"n": 0}

    def add_then_interrupt(self, key):
        real_add(self, key)
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(run.OutputSink, "add", add_then_interrupt)
    return lambda: monkeypatch.setattr(run.OutputSink, "add", real_add)
