"""Golden outputs: ``translate`` and ``filter`` reproduce, bit for bit, the pixels, masks and georeferencing
recorded before the translate path was restructured (issue #10: no behaviour change).

The digests below were measured with the pre-split ``pipeline.py`` (commit f81a5db) on small seeded
synthetic scenes with the bundled model and default options. A change here means the output changed.
Translate pixels re-recorded for issue #12 (nodata filled from nearby valid pixels for the model instead of
a constant; the scenes have a nodata collar), as the test suite runs them (``--backend auto`` resolves to
torch here); masks and georeferencing unchanged. Translate pixels re-recorded once more for the bundled model
retrained in 2026-12 on the simulator's spatially correlated speckle (the test scenes keep the independent
speckle they were recorded with, ``speckle_corr=0``); masks, georeferencing and filter digests unchanged.
Translate pixels re-recorded for the bundled model retrained with speckle-texture augmentation (2026-12-01);
masks, georeferencing and filter digests unchanged.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import run_cli

from sar2opt_geo import io
from sar2opt_geo.defaults import BUNDLED_MODEL

pytestmark = pytest.mark.skipif(not BUNDLED_MODEL.exists(), reason="the bundled model is not installed")

GOLDEN = {
    "default": {
        "pixels": "e3d90a4d5bbbce3de8ca78563924290631a42ec77d7f4d37c1fec20ea6505824",
        "mask": "350adf3b1e2505fbc492d105d142c2db30e703999ef7deff2adf4e7a696db41f",
        "geo": "74b9e17c0938cf15bbce14cc4fb3c1260a4ea5c88904dfe353e3696ebd0f530e",
    },
    "gcps": {
        "pixels": "8cff0139cc0a4e8c2e22b195cfff0d288ae94d0033bd13041e539563586a80b2",
        "mask": "08c4a74cf4514937cb880fbcb614a030117e3df6dddb09fdab7aa691c28e2080",
        "geo": "a0647d7c9bfd30d9345366645472fc404bce4c88c0f59377e8e9b7d4249b0909",
    },
    "lee_sar2optical": {
        "pixels": "f0bc4fbfa37cbb163d3366a784b57d20d2a0fc6a22f7db64d5b9f850b09db7f8",
        "mask": "350adf3b1e2505fbc492d105d142c2db30e703999ef7deff2adf4e7a696db41f",
        "geo": "74b9e17c0938cf15bbce14cc4fb3c1260a4ea5c88904dfe353e3696ebd0f530e",
    },
    # same pixels as "default": the chunking does not change the output
    "chunked_zarr": {
        "pixels": "e3d90a4d5bbbce3de8ca78563924290631a42ec77d7f4d37c1fec20ea6505824",
        "mask": "48d2081abd0c0a919e6e43ae2e602ea34f5fb174ef78391d321a7e74967f8424",
        "geo": "45f6710dd4f2665c7f68b7dc5907155072ddcbd3041a78b5b98575eb08bd2346",
    },
    "filter_lee": {
        "pixels": "3e73d497c8e4c0a88c88cb9c2b7ca133da9b1575edeebf451c629df719f870f5",
        "mask": "350adf3b1e2505fbc492d105d142c2db30e703999ef7deff2adf4e7a696db41f",
        "geo": "66a6ec1d0695d368aa58e06a81b3b6cbabd15459ee2f189a948874a6d4478dce",
    },
}


def digest_raster(path) -> dict[str, str]:
    """sha256 of the pixel array, of the dataset mask and of the georeferencing of a raster."""
    data, meta = io.read_raster(path, masked=True)
    geo = repr(
        (
            meta["crs"].to_wkt() if meta["crs"] else None,
            tuple(meta["transform"]) if meta["transform"] else None,
            [(g.row, g.col, g.x, g.y, g.z) for g in meta["gcps"][0]],
            meta["gcps"][1].to_wkt() if meta["gcps"][1] else None,
            meta["width"],
            meta["height"],
            meta["dtype"],
        )
    )
    return {
        "pixels": hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest(),
        "mask": hashlib.sha256(np.ascontiguousarray(meta["mask"]).tobytes()).hexdigest(),
        "geo": hashlib.sha256(geo.encode()).hexdigest(),
    }


def digest_zarr(path) -> dict[str, str]:
    import xarray as xr

    ds = xr.open_zarr(str(path))
    ref = ds["spatial_ref"].attrs
    coords = (ds["x"].values.tolist(), ds["y"].values.tolist())
    geo = repr((ref.get("crs_wkt"), ref.get("GeoTransform"), *coords))
    return {
        "pixels": hashlib.sha256(np.ascontiguousarray(ds["rgb"].values).tobytes()).hexdigest(),
        "mask": hashlib.sha256(np.ascontiguousarray(ds["valid"].values).tobytes()).hexdigest(),
        "geo": hashlib.sha256(geo.encode()).hexdigest(),
    }


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from sar2opt_geo.synth import SceneSpec, write_scene

    root = tmp_path_factory.mktemp("golden")
    # the scenes of the recordings: independent speckle (speckle_corr=0), as the simulator had until 2026-12
    plain, _ = write_scene(root / "plain", SceneSpec(width=700, height=530, seed=3, speckle_corr=0.0))
    gcp, _ = write_scene(root / "gcp", SceneSpec(width=600, height=450, seed=5, speckle_corr=0.0), gcps=True)
    return {"plain": str(plain), "gcp": str(gcp)}


CASES = {
    "default": ("plain", ["translate"], []),
    # GCP-only inputs are warped to a map grid by default since issue #11; --warp none keeps the radar
    # geometry and GCPs that these digests recorded
    "gcps": ("gcp", ["translate"], ["--warp", "none"]),
    "lee_sar2optical": ("plain", ["translate"], ["--filter", "lee", "--preprocess", "sar2optical"]),
    "chunked_zarr": ("plain", ["translate"], ["--chunk-size", "384", "--format", "zarr"]),
    "filter_lee": ("plain", ["filter"], ["--filter", "lee", "--chunk-size", "256"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_outputs_match_golden(case, scenes, tmp_path, capsys):
    scene, cmd, extra = CASES[case]
    out = tmp_path / ("out.zarr" if "zarr" in extra else "out.tif")
    # the digests were recorded with torch; `--backend auto` (the default since issue #15) runs ONNX Runtime
    # on CPU, whose pixels match torch within 1 DN (tests/test_backend_auto.py), not bit for bit
    engine = ["--backend", "torch"] if cmd == ["translate"] else []
    code, _, err = run_cli([*cmd, scenes[scene], out, "-q", *engine, *extra], capsys)
    assert code == 0, err
    got = digest_zarr(out) if "zarr" in extra else digest_raster(out)
    assert got == GOLDEN[case]
