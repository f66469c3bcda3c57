"""End-to-end translate on synthetic scenes: georeferencing, nodata, COG validity, chunk invariance, AOI,
resume, and the absence of seams with the real (bundled) model.

The independent evidence for "every tile once" and "no seams" (models whose output is known, an evaluation
log kept at the torch module) is in ``test_translate_probe.py``."""

from __future__ import annotations

import numpy as np
import pytest

from sar2opt_geo import io, tasks
from sar2opt_geo.defaults import BUNDLED_MODEL as DEFAULT_MODEL
from sar2opt_geo.distributed import ThreadedExecutor
from sar2opt_geo.plan import TranslateOptions
from sar2opt_geo.run import run_translate
from sar2opt_geo.tiling import TileGrid


class CountingPredict:
    """Counts the tiles the pipeline hands to its predict call (a cross-check of its summary; the count kept
    at the model itself is in ``test_translate_probe.py``)."""

    def __init__(self, monkeypatch):
        self.tiles = 0
        real = tasks.predict_async

        def counting(ref, x, batch_size):
            self.tiles += len(x)
            return real(ref, x, batch_size)

        monkeypatch.setattr(tasks, "predict_async", counting)


def translate(scene, out, model, **kw):
    opts = TranslateOptions(model=model, device="cpu", **kw)
    return run_translate(scene, str(out), opts, ThreadedExecutor(2))


def seam_ratio(rgb: np.ndarray, valid: np.ndarray, lines: np.ndarray) -> float:
    """mean |pixel difference| across the given grid lines ÷ the same elsewhere (both axes)."""
    g = rgb.astype(np.float32).mean(axis=0)
    on, off = [], []
    for axis in (0, 1):
        d = np.abs(np.diff(g, axis=axis))
        ok = valid[1:, :] & valid[:-1, :] if axis == 0 else valid[:, 1:] & valid[:, :-1]
        idx = np.arange(1, g.shape[axis])  # difference k is between k-1 and k
        is_line = np.isin(idx, lines)
        sel = is_line[:, None] if axis == 0 else is_line[None, :]
        sel = np.broadcast_to(sel, d.shape)
        on.append(d[sel & ok])
        off.append(d[~sel & ok])
    return float(np.concatenate(on).mean() / np.concatenate(off).mean())


@pytest.fixture(scope="module")
def demo_out(demo_scene, tiny_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_out") / "optical.tif"
    summary = translate(demo_scene, out, tiny_model_path, chunk_size=2048)
    return out, summary


def test_georeferencing_and_cog(demo_scene, demo_out):
    out, summary = demo_out
    src, smeta = io.read_raster(demo_scene, masked=True)
    dst, dmeta = io.read_raster(out, masked=True)
    assert dmeta["count"] == 3 and dmeta["dtype"] == "uint8"
    assert (dmeta["width"], dmeta["height"]) == (3000, 2500)
    assert dmeta["crs"] == smeta["crs"]
    assert dmeta["transform"] == smeta["transform"]
    ok, errors, _ = io.validate_cog(out)
    assert ok, errors
    assert dmeta["overviews"], "COG has overviews"
    assert dmeta["tags"]["SAR2OPT_MODEL"] == "tiny-test-unet"
    # nodata preserved: output mask equals the input validity exactly
    in_valid = src[0] > 0
    assert in_valid.mean() < 0.95  # the scene has a collar
    assert ((dmeta["mask"] > 0) == in_valid).all()
    assert (dst[:, ~in_valid] == 0).all()
    # the output is not constant: the model paints structure
    assert dst[:, in_valid].std() > 3


def test_chunk_size_invariance(demo_scene, demo_out, tiny_model_path, tmp_path):
    out, _ = demo_out
    other = tmp_path / "chunk576.tif"
    s = translate(demo_scene, other, tiny_model_path, chunk_size=576)
    assert s.blocks > 4
    a, _ = io.read_raster(out)
    b, _ = io.read_raster(other)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="the bundled model is not installed")
def test_no_seams_and_naive_mosaic_shows_them(demo_scene, tmp_path):
    """The second check, with the real (bundled, trained) generator: blended output shows no seams on the
    tile-grid lines, while a naive non-overlapping mosaic (overlap 0, same model) does. (The blender itself is
    checked against known outputs in ``test_translate_probe.py``.)"""
    out = tmp_path / "blended.tif"
    translate(demo_scene, out, str(DEFAULT_MODEL))
    rgb, meta = io.read_raster(out, masked=True)
    valid = meta["mask"] > 0
    grid = TileGrid(2500, 3000, 256, 64)
    lines = np.unique(
        np.concatenate([np.arange(0, 3000, grid.stride), np.arange(grid.tile, 3000, grid.stride)])
    )
    blended = seam_ratio(rgb, valid, lines)
    controls = [seam_ratio(rgb, valid, lines + k) for k in (5, 11, 23, 37, 50, 71, 90, 101, 150, 170)]
    lo, hi = min(controls), max(controls)
    print(f"seam ratio at the tile-grid lines {blended:.3f}; at the same lines shifted {lo:.3f}-{hi:.3f}")
    naive_out = tmp_path / "naive.tif"
    translate(demo_scene, naive_out, str(DEFAULT_MODEL), overlap=0)
    nrgb, nmeta = io.read_raster(naive_out, masked=True)
    naive = seam_ratio(nrgb, nmeta["mask"] > 0, np.arange(256, 3000, 256))
    assert blended <= 1.05, blended
    assert naive >= 1.3, naive


def test_gcp_georeferencing_preserved(gcp_scene, tiny_model_path, tmp_path):
    out = tmp_path / "gcp.tif"
    translate(gcp_scene, out, tiny_model_path, warp="none")  # default since #11: warped to a map grid
    _, smeta = io.read_raster(gcp_scene)
    _, dmeta = io.read_raster(out)
    sg, scrs = smeta["gcps"]
    dg, dcrs = dmeta["gcps"]
    assert len(dg) == len(sg) > 0 and dcrs == scrs
    for a, b in zip(sg, dg, strict=True):
        assert (a.row, a.col, a.x, a.y) == pytest.approx((b.row, b.col, b.x, b.y))
    assert io.validate_cog(out)[0]


def test_scene_smaller_than_one_tile(tiny_model_path, tmp_path):
    from sar2opt_geo.synth import SceneSpec, write_scene

    sar, _ = write_scene(tmp_path / "tiny", SceneSpec(width=90, height=60, seed=1, footprint=False))
    out = tmp_path / "tiny.tif"
    s = translate(str(sar), out, tiny_model_path)
    rgb, meta = io.read_raster(out, masked=True)
    assert rgb.shape == (3, 60, 90) and s.evaluations == 1
    assert (meta["mask"] > 0).all()


def test_zarr_output_georeferenced(small_scene, tiny_model_path, tmp_path):
    import rioxarray  # noqa: F401
    import xarray as xr

    out = tmp_path / "out.zarr"
    translate(small_scene, out, tiny_model_path, fmt="zarr")
    ds = xr.open_zarr(out, decode_coords="all")
    _, smeta = io.read_raster(small_scene)
    assert ds.rio.crs == smeta["crs"]
    assert tuple(ds.rio.transform())[:6] == pytest.approx(tuple(smeta["transform"])[:6])
    cog = tmp_path / "out.tif"
    translate(small_scene, cog, tiny_model_path)
    rgb, _ = io.read_raster(cog)
    assert (ds["rgb"].values == rgb).all()


def test_aoi_limits_processing(small_scene, tiny_model_path, tmp_path, monkeypatch):
    import json

    _, smeta = io.read_raster(small_scene)
    t = smeta["transform"]
    # AOI: a box in the scene's CRS over pixel rows 100..200, cols 150..300
    x0, y0 = t * (150, 100)
    x1, y1 = t * (300, 200)
    aoi = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
    }
    doc = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": smeta["crs"].to_string()}},
        "features": [aoi],
    }
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps(doc))
    counter = CountingPredict(monkeypatch)
    out = tmp_path / "aoi.tif"
    s = translate(small_scene, out, tiny_model_path, aoi=str(path))
    assert counter.tiles == s.evaluations < TileGrid(530, 700).count
    _, meta = io.read_raster(out, masked=True)
    m = meta["mask"] > 0
    assert m[110:190, 160:290].all()
    assert not m[:95].any() and not m[:, :145].any() and not m[205:].any() and not m[:, 305:].any()


def test_local_cluster_runs_gpu_restricted_tasks_on_its_workers():
    """``--workers N`` on a machine with a GPU: the model's tasks ask for ``GPU=1``, which no worker of a
    local cluster advertises; they must run on its workers, not wait forever (they did: found by hand)."""
    import operator
    import threading

    from sar2opt_geo.distributed import make_executor

    with make_executor(workers=1, threads_per_worker=1) as ex:
        dsk = {("acc-t", 0): (operator.add, 1, 2), ("out-t", 0): (operator.mul, ("acc-t", 0), 10)}
        keys = [("acc-t", 0), ("out-t", 0)]
        got = {}
        t = threading.Thread(target=lambda: got.update(ex.run(dsk, keys, resources={keys[0]: {"GPU": 1}})))
        t.start()
        t.join(60)
        assert not t.is_alive(), "tasks restricted to a GPU resource never ran on the local cluster"
    assert got == {("acc-t", 0): 3, ("out-t", 0): 30}


def test_local_cluster_processes_match_threads(small_scene, tiny_model_path, tmp_path):
    from sar2opt_geo.distributed import make_executor

    a = tmp_path / "threads.tif"
    translate(small_scene, a, tiny_model_path, chunk_size=384)
    b = tmp_path / "procs.tif"
    with make_executor(workers=2) as ex:
        run_translate(
            small_scene, str(b), TranslateOptions(model=tiny_model_path, device="cpu", chunk_size=384), ex
        )
    ra, _ = io.read_raster(a)
    rb, _ = io.read_raster(b)
    assert np.abs(ra.astype(int) - rb.astype(int)).max() <= 1


class JoinedThreads(ThreadedExecutor):
    """Threads whose in-flight tasks have all ended when ``run`` returns or raises, as in a process stopped
    by Ctrl-C (with the shared pool, a task still running after the interrupt could land in the next run)."""

    def run(self, dsk, keys, on_result=None, resources=None):
        from concurrent.futures import ThreadPoolExecutor

        import dask.threaded
        from dask.callbacks import Callback

        wanted = set(keys)

        def posttask(key, result, dsk_, state, worker_id):
            if on_result is not None and key in wanted:
                on_result(key, result)

        with ThreadPoolExecutor(self.num_workers) as pool, Callback(posttask=posttask):
            values = dask.threaded.get(dsk, list(keys), pool=pool)
        return dict(zip(keys, values, strict=True))


@pytest.mark.parametrize("apart", [False, True], ids=["fused", "prepared-apart"])
def test_resume_recomputes_only_unfinished_blocks(small_scene, tiny_model_path, tmp_path, monkeypatch, apart):
    """A run that dies after some blocks resumes from its work state: finished blocks are not
    evaluated again and the output equals an uninterrupted run. Also with the blocks' inputs prepared by
    ``prep`` tasks, as for a model on a GPU (finished blocks get none: their acc tasks read spills back)."""
    from sar2opt_geo.workstate import WorkState

    monkeypatch.setattr(tasks, "prepares_apart", lambda job: apart)

    clean = tmp_path / "clean.tif"
    full = translate(small_scene, clean, tiny_model_path, chunk_size=192)
    out = tmp_path / "resumed.tif"
    real_finish = tasks.finish_block
    calls = {"n": 0}

    def dying_finish(*args):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt  # as Ctrl-C in the middle of the job
        return real_finish(*args)

    monkeypatch.setattr(tasks, "finish_block", dying_finish)
    with pytest.raises(KeyboardInterrupt):
        opts = TranslateOptions(model=tiny_model_path, device="cpu", chunk_size=192)
        run_translate(small_scene, str(out), opts, JoinedThreads(2))
    monkeypatch.setattr(tasks, "finish_block", real_finish)
    assert not out.exists()
    done = WorkState(out).done_records()
    assert len(done) >= 5
    counter = CountingPredict(monkeypatch)
    opts = TranslateOptions(model=tiny_model_path, device="cpu", chunk_size=192)
    resumed = run_translate(small_scene, str(out), opts, ThreadedExecutor(2), resume=True)
    assert counter.tiles == resumed.evaluations
    assert resumed.evaluations == full.evaluations - sum(r["n_eval"] for r in done.values())
    a, _ = io.read_raster(clean)
    b, _ = io.read_raster(out)
    assert (a == b).all()
    assert not WorkState(out).root.exists()
