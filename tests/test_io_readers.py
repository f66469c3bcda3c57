"""Reading through one open dataset per worker thread (issue #15): the same pixels as opening the file for
every window, one handle per thread and file, bounded, reopened when the file changes, never shared with a
forked child, and all closed when a translate run ends."""

from __future__ import annotations

import multiprocessing
import os
import threading

import numpy as np
import pytest

from sar2opt_geo import io


@pytest.fixture
def opened(monkeypatch):
    """``[(path, dataset), ...]``: every kept-open dataset handed out by ``io._reader`` during the test."""
    seen = []
    real = io._reader

    def spy(path, *args):
        entry = real(path, *args)
        seen.append((path, entry[0]))
        return entry

    monkeypatch.setattr(io, "_reader", spy)
    return seen


@pytest.fixture(autouse=True)
def _no_readers_left():
    io.close_readers()
    yield
    io.close_readers()


def write_float_scene(path, values: np.ndarray, nodata=-9999.0) -> io.SceneInfo:
    h, w = values.shape
    geo = io.GeoProfile(w, h, io.crs_wkt("EPSG:32631"), (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0))
    with io.GeoTiffWriter(path, geo, 1, "float32", nodata=nodata, blocksize=256) as dst:
        dst.write(0, 0, values[None].astype(np.float32))
    return io.open_scene(path)


def scene_values(seed: int, h: int = 600, w: int = 700) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.gamma(4.0, 0.05, size=(h, w)).astype(np.float32)
    v[:, :40] = -9999.0  # a nodata collar
    v[h // 6, w // 3] = np.nan
    return v


def test_kept_open_reads_give_the_same_pixels(tmp_path):
    scene = write_float_scene(tmp_path / "s.tif", scene_values(1))
    windows = [(0, 300, 0, 300), (250, 600, 300, 700), (-64, 200, -64, 320), (500, 700, 600, 780)]
    for r0, r1, c0, c1 in windows:
        want = io.read_window(scene, r0, r1, c0, c1)
        got = io.read_window(scene, r0, r1, c0, c1, keep_open=True)
        assert np.array_equal(got[0], want[0], equal_nan=True) and np.array_equal(got[1], want[1])
    assert io.open_readers() == 1  # one thread, one file: one handle for all four windows


def test_one_handle_per_thread_all_closed_at_the_end(tmp_path):
    scene = write_float_scene(tmp_path / "s.tif", scene_values(2))
    barrier = threading.Barrier(3)

    def reader():
        io.read_window(scene, 0, 128, 0, 128, keep_open=True)
        io.read_window(scene, 128, 256, 0, 128, keep_open=True)
        barrier.wait()  # both threads hold their handle at the same time

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    barrier.wait()
    for t in threads:
        t.join()
    assert io.open_readers() == 2
    assert io.close_readers() == 2 and io.open_readers() == 0
    # a closed handle is not used again: the next read opens the file anew
    data, _ = io.read_window(scene, 0, 10, 50, 60, keep_open=True)
    assert io.open_readers() == 1 and np.isfinite(data).all()


def test_closing_waits_for_a_read_in_progress(tmp_path):
    """close_readers (the end of a run, or Ctrl-C while worker threads still read) never closes a dataset
    under a read: it waits for that read to finish."""
    scene = write_float_scene(tmp_path / "s.tif", scene_values(6))
    reading, release, got, closed = threading.Event(), threading.Event(), {}, threading.Event()

    def slow_read(src):
        reading.set()
        release.wait(30)  # GDAL busy in this window
        return src.read(1, window=((0, 16), (0, 16)))

    def reader():
        got["data"] = io._read_kept_open(scene.path, slow_read)

    t = threading.Thread(target=reader)
    t.start()
    assert reading.wait(30)
    closer = threading.Thread(target=lambda: (io.close_readers(), closed.set()))
    closer.start()
    assert not closed.wait(0.3)  # blocked behind the read
    release.set()
    t.join(30)
    closer.join(30)
    assert closed.is_set() and got["data"].shape == (16, 16) and io.open_readers() == 0


def test_a_file_rewritten_in_place_is_read_anew(tmp_path):
    path = tmp_path / "s.tif"
    first = write_float_scene(path, scene_values(3))
    a, _ = io.read_window(first, 0, 50, 100, 150, keep_open=True)
    second = write_float_scene(path, scene_values(4))
    b, _ = io.read_window(second, 0, 50, 100, 150, keep_open=True)
    assert np.array_equal(b, io.read_window(second, 0, 50, 100, 150)[0]) and not np.array_equal(a, b)


def test_handles_per_thread_are_bounded(tmp_path):
    scenes = [write_float_scene(tmp_path / f"s{k}.tif", scene_values(k, 64, 64)) for k in range(6)]
    for s in scenes:
        io.read_window(s, 0, 8, 0, 8, keep_open=True)
    assert io.open_readers() == io.READERS_PER_THREAD


def _child_read(scene, q):
    cache = io._READERS
    inherited = sum(1 for src, _ in cache.handles.values() if not src.closed)  # the parent's, open
    data, _ = io.read_window(scene, 0, 64, 100, 164, keep_open=True)
    q.put((inherited, cache.pid == os.getpid(), data))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_child_opens_its_own_handle(tmp_path):
    scene = write_float_scene(tmp_path / "s.tif", scene_values(5))
    want, _ = io.read_window(scene, 0, 64, 100, 164, keep_open=True)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_read, args=(scene, q))
    p.start()
    inherited, own, data = q.get(timeout=60)
    p.join(60)
    assert inherited == 1 and own and np.array_equal(data, want)
    # the parent's handle still reads
    assert np.array_equal(io.read_window(scene, 0, 64, 100, 164, keep_open=True)[0], want)


def test_a_translate_run_closes_its_readers(small_scene, tiny_model_path, tmp_path, monkeypatch, opened):
    """Finished or interrupted, a run leaves no input dataset open in this process."""
    from sar2opt_geo import run
    from sar2opt_geo.distributed import ThreadedExecutor
    from sar2opt_geo.errors import Interrupted
    from sar2opt_geo.plan import TranslateOptions

    opts = TranslateOptions(model=tiny_model_path, device="cpu", chunk_size=192, backend="torch")
    run.run_translate(small_scene, str(tmp_path / "a.tif"), opts, ThreadedExecutor(2))
    assert opened and all(src.closed for _, src in opened) and io.open_readers() == 0

    def interrupt(self, key):
        raise KeyboardInterrupt

    monkeypatch.setattr(run.OutputSink, "add", interrupt)
    opened.clear()
    with pytest.raises(Interrupted):
        run.run_translate(small_scene, str(tmp_path / "b.tif"), opts, ThreadedExecutor(2))
    assert opened and all(src.closed for _, src in opened) and io.open_readers() == 0


def test_a_cluster_run_closes_the_workers_readers(small_scene, tiny_model_path, tmp_path, monkeypatch):
    """On a local cluster the acc tasks keep their handles in the worker processes: the run closes them."""
    from sar2opt_geo import run
    from sar2opt_geo.distributed import make_executor
    from sar2opt_geo.plan import TranslateOptions

    opts = TranslateOptions(model=tiny_model_path, device="cpu", chunk_size=192, backend="torch")
    real, opened = run.close_readers, {}

    def count_then_close(executor):
        opened.update(executor.client.run(io.open_readers))
        real(executor)

    monkeypatch.setattr(run, "close_readers", count_then_close)
    with make_executor(workers=1, threads_per_worker=2) as ex:
        run.run_translate(small_scene, str(tmp_path / "a.tif"), opts, ex)
        after = ex.client.run(io.open_readers)
    assert opened and all(n >= 1 for n in opened.values())  # the workers did keep their input open
    assert all(n == 0 for n in after.values())


def test_a_products_measurement_is_read_kept_open_and_closed(tiny_model_path, tmp_path, opened):
    """A Sentinel-1 product's DN (here through /vsizip/) are read through the thread's kept-open handle
    during a translate — the same pixels as opening the TIFF for each window — and closed when it ends."""
    from sar2opt_geo import run, source
    from sar2opt_geo.distributed import ThreadedExecutor
    from sar2opt_geo.plan import TranslateOptions
    from sar2opt_geo.sentinel1.synth import ProductSpec, write_product

    paths = write_product(tmp_path / "p", ProductSpec(width=300, height=260, seed=4), zip_product=True)
    scene = source.open_source(str(paths.zip))
    product = scene.product
    for window in ((0, 260, 0, 300), (-5, 120, 40, 310)):
        fresh = product.read_window(None, *window)
        kept = product.read_window(None, *window, keep_open=True)
        assert np.array_equal(fresh[0], kept[0]) and np.array_equal(fresh[1], kept[1])
    assert io.open_readers() == len(product.bands)  # one handle per measurement TIFF in this thread
    io.close_readers()

    opts = TranslateOptions(model=tiny_model_path, device="cpu", chunk_size=192, backend="torch")
    run.run_translate(str(paths.zip), str(tmp_path / "a.tif"), opts, ThreadedExecutor(2))
    assert any(path.startswith("/vsizip/") and path.endswith(".tiff") for path, _ in opened)
    assert all(src.closed for _, src in opened) and io.open_readers() == 0


def test_calibrate_and_info_keep_their_reads_open_and_close_them(tmp_path, opened):
    """``calibrate`` (run_filter) reads a zipped product's measurement through kept-open handles — its
    sample windows and its blocks — and closes them at its end, as does ``info``'s scale sampling."""
    from sar2opt_geo import filter_run
    from sar2opt_geo.distributed import ThreadedExecutor
    from sar2opt_geo.info import scale_decision
    from sar2opt_geo.sentinel1.synth import ProductSpec, write_product

    paths = write_product(tmp_path / "p", ProductSpec(width=300, height=260, seed=5), zip_product=True)
    out, ex = str(tmp_path / "s.tif"), ThreadedExecutor(2)
    res = filter_run.run_filter(str(paths.zip), out, None, ex, chunk_size=128, require_product=True)
    assert res["blocks"] > 1
    assert any(path.startswith("/vsizip/") and path.endswith(".tiff") for path, _ in opened)
    assert all(src.closed for _, src in opened) and io.open_readers() == 0
    opened.clear()
    scale_decision(io.open_scene(str(paths.sar_map)), (1,), "auto")
    assert opened and all(src.closed for _, src in opened) and io.open_readers() == 0


@pytest.mark.parametrize("container", ["tiff", "zip-stored", "zip-deflated"])
def test_read_band_of_a_grd_layout_measurement_gives_its_samples(tmp_path, container):
    """A measurement TIFF in the real GRD layout (uncompressed uint16, one row per strip: read with GDAL's
    direct I/O) and inside a zip, stored or deflated: every window, opened per window or kept open, holds
    exactly the written samples."""
    import zipfile

    from rasterio.windows import Window

    from sar2opt_geo.sentinel1.synth import GRD_LAYOUT, create_measurement

    rng = np.random.default_rng(3)
    dn = rng.integers(0, 4000, (1, 230, 310), dtype=np.uint16)
    tif = tmp_path / "m.tiff"
    with create_measurement(
        tif, 310, 230, [(0, 0, 15.0, 50.0, 0.0), (229, 309, 15.1, 50.1, 0.0)], **GRD_LAYOUT
    ) as dst:
        assert dst.block_shapes == [(1, 310)] and dst.compression is None  # the real layout
        dst.write(dn)
    path = str(tif)
    if container != "tiff":
        method = zipfile.ZIP_STORED if container == "zip-stored" else zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(tmp_path / "p.zip", "w", method) as z:
            z.write(tif, "P.SAFE/measurement/m.tiff")
        path = f"/vsizip/{tmp_path / 'p.zip'}/P.SAFE/measurement/m.tiff"
    windows = ((0, 0, 310, 230), (17, 5, 100, 90), (250, 200, 60, 30), (120, 100, 1, 1), (40, 160, 90, 70))
    for c0, r0, w, h in windows:
        want = dn[0, r0 : r0 + h, c0 : c0 + w]
        for keep_open in (False, True):
            assert np.array_equal(io.read_band(path, Window(c0, r0, w, h), keep_open=keep_open), want)
    io.close_readers()


@pytest.mark.parametrize(
    "layout",
    [
        {"count": 1, "dtype": "float32", "nodata": 0.0},
        {"count": 2, "dtype": "uint16", "nodata": 0, "interleave": "pixel"},
        {"count": 2, "dtype": "float32", "nodata": 0.0, "interleave": "band", "blockysize": 16},
        {"count": 1, "dtype": "float32", "nodata": None, "mask": True},
    ],
    ids=["float32", "uint16-pixel-interleaved", "band-interleaved-16-row-strips", "internal-mask"],
)
def test_a_stripped_uncompressed_geotiff_is_read_with_direct_io_to_the_same_pixels(tmp_path, layout):
    """GeoTIFF inputs in GDAL's default layout (uncompressed strips) are flagged for GDAL's direct I/O and
    read, kept open or not, to exactly the values and validity of the block-cache reads; tiled or compressed
    files are not flagged."""
    import dataclasses

    import rasterio
    from conftest import write_geotiff

    layout = dict(layout)
    mask = layout.pop("mask", False)
    h, w = 230, 310
    rng = np.random.default_rng(4)
    values = (rng.gamma(2.0, 300.0, (layout.pop("count"), h, w)) + 1).astype(layout.pop("dtype"))
    values[:, :, :25] = 0  # a nodata collar (or masked-out, below)
    path = tmp_path / "s.tif"
    internal = np.where(values[0] > 0, 255, 0).astype(np.uint8) if mask else None
    write_geotiff(path, values, origin=(0, 0), mask=internal, **layout)
    scene = io.open_scene(str(path))
    assert scene.direct_io and not scene.tiled and scene.has_mask == mask
    cached = dataclasses.replace(scene, direct_io=False)
    whole = io.read_window(cached, 0, h, 0, w)[1]
    assert whole[:, 25:].all() and not whole[:, :25].any()  # the collar is invalid, by nodata or mask
    windows = [(0, h, 0, w), (17, 107, 5, 200), (-30, 60, 280, 340), (100, 101, 120, 121), (150, 250, -9, 40)]
    for r0, r1, c0, c1 in windows:
        want = io.read_window(cached, r0, r1, c0, c1)
        for keep_open in (False, True):
            got = io.read_window(scene, r0, r1, c0, c1, keep_open=keep_open)
            assert np.array_equal(got[0], want[0], equal_nan=True) and np.array_equal(got[1], want[1])
    io.close_readers()
    for opts in ({"tiled": True, "blockxsize": 128, "blockysize": 128}, {"compress": "deflate"}):
        other = tmp_path / f"o{len(opts)}.tif"
        with rasterio.open(other, "w", **{**rasterio.open(path).profile, **opts}) as dst:
            dst.write(values)
        assert not io.open_scene(str(other)).direct_io
