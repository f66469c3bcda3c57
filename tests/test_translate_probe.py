"""Evidence for "every tile is evaluated once" and "no seams" with models whose output is known.

The probe models of :mod:`probe_models` read a scene whose pixels encode their own position, so

* the evaluation count is kept at the torch module (one log line per tile the model actually ran, with the
  tile's origin decoded from its input), independently of the pipeline's counters, and compared with the
  tiles that need a model run computed here from the scene's mask (and AOI);
* the blended output of a model that paints a smooth field of absolute position must *be* that field
  (any seam or offset is a blending defect by construction), and a model that paints one constant per tile
  must blend into a continuous image; deliberately broken blends must fail the same checks.

The check with the real, trained model is ``test_translate.py::test_no_seams_and_naive_mosaic_shows_them``.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
from probe_models import (
    field,
    footprint,
    read_log,
    save_probe,
    tile_constant,
    write_position_scene,
)

from sar2opt_geo import blend, io
from sar2opt_geo.distributed import ThreadedExecutor
from sar2opt_geo.plan import TranslateOptions
from sar2opt_geo.run import run_translate

H, W = 1250, 1460  # 7 × 8 tiles of 256 at stride 192; the last row/column reach past the scene
TILE, OVERLAP = 256, 64
STRIDE = TILE - OVERLAP


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    valid = footprint(H, W)
    path = write_position_scene(tmp_path_factory.mktemp("pos") / "pos.tif", H, W, valid)
    return path, valid


@pytest.fixture(scope="module")
def full_scene(tmp_path_factory):
    """No nodata at all: valid pixels on every scene edge (where the last tiles are reflect-padded)."""
    valid = np.ones((610, 730), dtype=bool)
    path = write_position_scene(tmp_path_factory.mktemp("full") / "full.tif", 610, 730, valid)
    return path, valid


def translate(scene_path, out, model, **kw):
    # the probes tell nodata (and so a tile's origin) by the low end of the input range: constant fill
    opts = TranslateOptions(model=model, device="cpu", input_scale="linear", nodata_fill="constant", **kw)
    return run_translate(scene_path, str(out), opts, ThreadedExecutor(2))


def needed_tiles(valid: np.ndarray, aoi_px=None) -> set[tuple[int, int]]:
    """Tile origins that need a model run, from the mask alone: the tile's window (clipped to the scene) has a
    valid pixel, and its closed box touches the AOI rectangle ``(col0, row0, col1, row1)`` in pixels."""
    n_rows = 1 if H <= TILE else math.ceil((H - TILE) / STRIDE) + 1
    n_cols = 1 if W <= TILE else math.ceil((W - TILE) / STRIDE) + 1
    out = set()
    for i in range(n_rows):
        for j in range(n_cols):
            r0, c0 = i * STRIDE, j * STRIDE
            if not valid[r0 : r0 + TILE, c0 : c0 + TILE].any():
                continue
            if aoi_px is not None:
                x0, y0, x1, y1 = aoi_px
                if c0 > x1 or c0 + TILE < x0 or r0 > y1 or r0 + TILE < y0:
                    continue
            out.add((r0, c0))
    return out


def aoi_file(path, scene_path, box_px) -> str:
    """A GeoJSON polygon in the scene's CRS over the pixel box ``(col0, row0, col1, row1)``."""
    _, meta = io.read_raster(scene_path)
    t = meta["transform"]
    x0, y0 = t * box_px[:2]
    x1, y1 = t * box_px[2:]
    doc = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": meta["crs"].to_string()}},
        "features": [
            {
                "type": "Feature",
                "properties": {},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
                },
            }
        ],
    }
    path.write_text(json.dumps(doc))
    return str(path)


# -------------------------------------------------------------------------------- evaluation count


@pytest.mark.parametrize("chunk", [384, 576, 960, None], ids=["chunk384", "chunk576", "chunk960", "aoi"])
def test_every_needed_tile_evaluated_exactly_once(scene, chunk, tmp_path):
    scene_path, valid = scene
    log = tmp_path / "evals.log"
    model = save_probe(tmp_path / "probe.safetensors", "field", log=log, stride=STRIDE)
    aoi_px = None
    kw = {"chunk_size": chunk or 576}
    if chunk is None:  # an AOI box whose edges lie on no tile edge
        aoi_px = (310, 470, 905, 1010)
        kw["aoi"] = aoi_file(tmp_path / "aoi.geojson", scene_path, aoi_px)
    summary = translate(scene_path, tmp_path / "out.tif", model, **kw)

    needed = needed_tiles(valid, aoi_px)
    grid_count = len(needed_tiles(np.ones_like(valid)))
    # the scene has a big collar: a count bound of +2 % could not tell a tile evaluated twice
    assert len(needed_tiles(valid)) < 0.9 * grid_count
    evals = read_log(log)
    origins = Counter((r0, c0) for _, r0, c0, _ in evals)
    twice = sorted(o for o, n in origins.items() if n > 1)
    assert not twice, f"tiles evaluated more than once: {twice}"
    missing = sorted(needed - set(origins))
    assert not missing, f"needed tiles never evaluated: {missing}"
    extra = sorted(set(origins) - needed)
    assert not extra, f"tiles evaluated although not needed: {extra}"
    # each tile's input is its own window: one distinct input per origin
    assert len({h for *_, h in evals}) == len(evals)
    assert summary.evaluations == len(evals)
    if aoi_px is not None:
        assert len(needed) < len(needed_tiles(valid)) // 2


def test_tile_inputs_do_not_depend_on_chunking(scene, tmp_path):
    """The same tile gets the same input bytes whatever block reads it."""
    scene_path, _ = scene
    hashes = []
    for chunk in (384, 960):
        log = tmp_path / f"evals{chunk}.log"
        model = save_probe(tmp_path / f"probe{chunk}.safetensors", "field", log=log, stride=STRIDE)
        translate(scene_path, tmp_path / f"out{chunk}.tif", model, chunk_size=chunk)
        hashes.append({(r0, c0): h for _, r0, c0, h in read_log(log)})
    assert hashes[0] == hashes[1]


# ---------------------------------------------------------------------------------------- blending


def field_error(rgb: np.ndarray, mask: np.ndarray, valid: np.ndarray) -> float:
    """Largest |output − expected field| in DN over the valid pixels (inf if a valid pixel is not covered)."""
    if not (mask == valid).all():
        return math.inf
    r, c = np.indices(valid.shape, dtype=np.float64)
    expected = np.stack([np.rint((f + 1.0) / 2.0 * 255.0) for f in field(r, c)])
    return float(np.abs(rgb.astype(np.int64) - expected)[:, valid].max())


def max_jump(rgb: np.ndarray, valid: np.ndarray) -> int:
    """Largest difference between 4-neighbour valid pixels (DN)."""
    g = rgb.astype(np.int64)
    across = np.abs(np.diff(g, axis=2))[:, valid[:, 1:] & valid[:, :-1]]
    down = np.abs(np.diff(g, axis=1))[:, valid[1:, :] & valid[:-1, :]]
    return int(max(across.max(), down.max()))


def core_error(rgb: np.ndarray, valid: np.ndarray) -> int:
    """Largest deviation from the tile's constant where a single tile covers the pixel."""
    worst = 0
    dn = {v: int(np.rint((v + 1.0) / 2.0 * 255.0)) for v in (0.5, -0.5)}
    for r0 in range(0, H, STRIDE):
        for c0 in range(0, W, STRIDE):
            rows = slice(r0 + (OVERLAP if r0 else 0), min(r0 + STRIDE, H))
            cols = slice(c0 + (OVERLAP if c0 else 0), min(c0 + STRIDE, W))
            v = valid[rows, cols]
            if v.any():
                want = dn[tile_constant(r0 // STRIDE, c0 // STRIDE)]
                worst = max(worst, int(np.abs(rgb[:, rows, cols][:, v].astype(int) - want).max()))
    return worst


# Neighbouring tile constants differ by 1.0 (127.5 DN); a raised cosine over OVERLAP pixels has a largest
# slope of π/2 per overlap width, so a continuous blend moves by at most 127.5·π/(2·64) ≈ 3.1 DN per pixel
# (+1 for rounding). A seam is a step of tens of DN.
JUMP_LIMIT = math.ceil(127.5 * math.pi / (2 * OVERLAP)) + 1


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    d = tmp_path_factory.mktemp("probes")
    return {m: save_probe(d / f"{m}.safetensors", m, stride=STRIDE) for m in ("field", "tile_constant")}


@pytest.mark.parametrize(
    ("which", "chunk"),
    [("scene", 384), ("scene", 960), ("full_scene", 384)],
    ids=["collar384", "collar960", "full"],
)
def test_blend_reproduces_a_known_field(which, chunk, probes, tmp_path, request):
    """Tiles that agree where they overlap blend into exactly their common field, across tile and block
    boundaries and at the scene's edges (last row/column reflect-padded)."""
    scene_path, valid = request.getfixturevalue(which)
    out = tmp_path / "field.tif"
    translate(scene_path, out, probes["field"], chunk_size=chunk)
    rgb, meta = io.read_raster(out, masked=True)
    assert field_error(rgb, meta["mask"] > 0, valid) <= 1


@pytest.mark.parametrize("chunk", [384, 960])
def test_blend_of_tile_constants_is_continuous(scene, probes, chunk, tmp_path):
    scene_path, valid = scene
    out = tmp_path / "const.tif"
    translate(scene_path, out, probes["tile_constant"], chunk_size=chunk)
    rgb, meta = io.read_raster(out, masked=True)
    assert ((meta["mask"] > 0) == valid).all()
    assert max_jump(rgb, valid) <= JUMP_LIMIT
    assert core_error(rgb, valid) == 0


def _box_window(tile, overlap, first, last):
    return np.ones(tile, dtype=np.float32)


def _zero_edge_window(tile, overlap, first, last):
    """Ramps that start at weight 0, on every side (also the scene's outer edges)."""
    w = np.ones(tile, dtype=np.float32)
    ramp = (0.5 * (1.0 - np.cos(np.pi * np.arange(overlap) / overlap))).astype(np.float32)
    w[:overlap] = ramp
    w[tile - overlap :] = ramp[::-1]
    return w


def test_broken_blends_are_detected(scene, full_scene, probes, tmp_path, monkeypatch):
    """The checks above fail on a naive mosaic, on box weights and on weights that reach 0 at the edge."""
    scene_path, valid = scene

    def run(name, model, **kw):
        out = tmp_path / f"{name}.tif"
        # 2-D windows are cached per (tile, overlap, edges): rebuild from axis_window
        blend._window.cache_clear()
        translate(scene_path, out, model, chunk_size=576, **kw)
        rgb, meta = io.read_raster(out, masked=True)
        return rgb, meta["mask"] > 0

    rgb, _ = run("mosaic", probes["tile_constant"], overlap=0)
    assert max_jump(rgb, valid) >= 100
    monkeypatch.setattr(blend, "axis_window", _box_window)
    rgb, _ = run("box", probes["tile_constant"])
    assert max_jump(rgb, valid) > 5 * JUMP_LIMIT
    monkeypatch.setattr(blend, "axis_window", _zero_edge_window)
    scene_path, valid = full_scene
    rgb, mask = run("zero_edge", probes["field"])
    assert field_error(rgb, mask, valid) == math.inf  # valid pixels on the scene border left uncovered
    blend._window.cache_clear()  # no broken window may outlive this test
