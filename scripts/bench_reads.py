#!/usr/bin/env python
"""What reading an input window by window costs, layout by layout (issue #15): a Sentinel-1 GRD measurement
TIFF (plain, in a stored zip, in a deflated zip) and σ⁰ GeoTIFFs in strips (uncompressed, DEFLATE): the file
opened for every window through GDAL's block cache (as the product reader did before 2026-12-02), one
kept-open dataset through the block cache, and what the pipeline's tasks do now (one dataset per thread,
opened with ``GTIFF_DIRECT_IO`` when uncompressed; a compressed layout that has no random access is copied
once first: a deflated zip member inflated, DEFLATE strips tiled).

A real GRD measurement TIFF is uncompressed uint16 with one image row per strip: the real S1A IW GRDH product
in ``shared/s1-products`` declares 872 232 364 bytes for 26 144 × 16 676 samples (2 bytes each plus the strip
tables) in its manifest. This bench writes a TIFF of that layout (``--width`` × ``--height``, random DN), the
same inside a zip *stored* and *deflated* (a downloaded product read in place through GDAL's ``/vsizip/``),
and reads one row band of block windows (``--window`` square, stepping ``--step`` along the row, at
``--row``) from each, the three ways. Every strip a window touches is a whole image row, so a window of 1100
columns reads 26 144; opened per window, a deflated member is also decompressed from its start up to the
window's rows every time. A fourth way, what ``translate``/``calibrate`` do with a *deflated* member since
2026-12-02, inflates the member once (``Container.unpack``, timed on its own) and reads the unpacked file
the ``now`` way; and the same for two members at once (a dual-pol product: one thread each). The σ⁰
GeoTIFFs (``--geotiff-height`` lines of the same width) are read through :func:`sar2opt_geo.io.read_window`.

    python scripts/bench_reads.py [--width 26144] [--height 16676] [--row 8000] [--windows 9]

Prints a Markdown table (seconds a window, wall and CPU) and the command; the files go to a temporary
folder (``--workdir`` to keep them: ~0.9 GB each at the real size).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np


def write_measurement(path: Path, width: int, height: int, seed: int = 0) -> None:
    """Random uint16 DN (1..3999) in a real GRD measurement TIFF's layout (``synth.GRD_LAYOUT``)."""
    from rasterio.windows import Window

    from sar2opt_geo.sentinel1.synth import GRD_LAYOUT, create_measurement

    rng = np.random.default_rng(seed)
    gcps = [(0, 0, 15.0, 50.0, 0.0), (height - 1, width - 1, 15.3, 50.2, 0.0)]  # any: reads ignore them
    with create_measurement(path, width, height, gcps, **GRD_LAYOUT) as dst:
        for r in range(0, height, 1024):
            h = min(1024, height - r)
            dst.write(rng.integers(1, 4000, (1, h, width), dtype=np.uint16), window=Window(0, r, width, h))


def time_windows(path: str, windows: list, mode: str) -> tuple[float, float]:
    """Wall and CPU seconds to read ``windows``: ``before`` opens the file for every window under the
    pipeline's GDAL configuration (block cache, as the product reader did before 2026-12-02); ``kept`` keeps
    one dataset open, still through the block cache; ``now`` is :func:`sar2opt_geo.io.read_band` with
    ``keep_open`` (one dataset per thread, opened with ``GTIFF_DIRECT_IO``)."""
    import rasterio

    from sar2opt_geo import io

    io.close_readers()
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "now":
        for w in windows:
            io.read_band(path, w, keep_open=True)
    elif mode == "kept":
        with rasterio.Env(**io.GDAL_ENV), rasterio.open(path) as src:
            for w in windows:
                src.read(1, window=w)
    else:
        for w in windows:
            with rasterio.Env(**io.GDAL_ENV), rasterio.open(path) as src:
                src.read(1, window=w)
    t, c = time.perf_counter() - t0, time.process_time() - c0
    io.close_readers()
    return t, c


def time_unpack(zip_path: Path, members: list[str], folder: Path) -> tuple[list[str], float, float]:
    """Inflate ``members`` (``NAME.SAFE/rel``) of ``zip_path`` into ``folder`` as the product reader does
    with deflated measurements (one thread a member): the unpacked files' paths, wall and CPU seconds."""
    from sar2opt_geo.sentinel1.safe import Container

    prefix = members[0].split("/", 1)[0]
    container = Container(root=str(zip_path), prefix=prefix + "/", is_zip=True)
    t0, c0 = time.perf_counter(), time.process_time()
    paths = container.unpack([m.split("/", 1)[1] for m in members], folder)
    return paths, time.perf_counter() - t0, time.process_time() - c0


def time_geotiff(path: Path, width: int, height: int, windows: list, compress: str | None = None) -> dict:
    """The three ways for a float32 σ⁰ GeoTIFF input in strips (GDAL's default layout: ``gdalwarp`` and
    ``gdal_translate`` write strips without ``TILED=YES``), uncompressed or ``compress``-ed, read the way the
    pipeline reads GeoTIFF inputs (:func:`sar2opt_geo.io.read_window`): ``before`` opened per window and
    ``kept`` kept open, both through the block cache (kept open is what the pipeline did before 2026-12-02),
    and ``now``: uncompressed, kept open with direct I/O (``SceneInfo.direct_io``); compressed, kept open from
    the tiled copy the pipeline writes first (:func:`sar2opt_geo.io.tiled_copy`, timed on its own as
    ``copy``)."""
    import dataclasses

    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from sar2opt_geo import io

    if not path.exists():
        rng = np.random.default_rng(1)
        profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="float32", nodata=0.0)
        if compress:
            profile["compress"] = compress
        with rasterio.open(
            path, "w", crs="EPSG:32633", transform=from_origin(0, 0, 10, 10), **profile
        ) as dst:
            for r in range(0, height, 512):
                h = min(512, height - r)
                dst.write(
                    rng.gamma(1.0, 0.05, (1, h, width)).astype(np.float32), window=Window(0, r, width, h)
                )
    scene = io.open_scene(str(path))
    assert not scene.tiled and scene.block_shape[1] == width, scene.block_shape
    assert scene.direct_io == (not compress) and io.wants_tiled_copy(scene) == bool(compress)
    cached = dataclasses.replace(scene, direct_io=False)
    out = {}
    folder = path.with_name(path.stem + "-copies")
    if compress:
        t0, c0 = time.perf_counter(), time.process_time()
        now = io.tiled_copy(scene, folder)
        out["copy"] = (time.perf_counter() - t0, time.process_time() - c0)
    else:
        now = scene
    for mode, sc, keep_open in (("before", cached, False), ("kept", cached, True), ("now", now, True)):
        io.close_readers()
        t0, c0 = time.perf_counter(), time.process_time()
        for w in windows:
            io.read_window(
                sc, w.row_off, w.row_off + w.height, w.col_off, w.col_off + w.width, keep_open=keep_open
            )
        out[mode] = (time.perf_counter() - t0, time.process_time() - c0)
        io.close_readers()
    shutil.rmtree(folder, ignore_errors=True)
    return out


MODES = {
    "before": "opened per window, block cache (before)",
    "kept": "kept open, block cache",
    "now": "now: kept open, direct I/O or from a copy",
}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=26144, help="samples (a real IW GRDH: 26144)")
    ap.add_argument("--height", type=int, default=16676, help="lines (a real IW GRDH: 16676)")
    ap.add_argument("--row", type=int, default=None, help="first row of the band (default: the middle)")
    ap.add_argument("--window", type=int, default=1100, help="window side (a 960 block plus its halo)")
    ap.add_argument("--step", type=int, default=960, help="step between windows along the row")
    ap.add_argument("--windows", type=int, default=9, help="windows in the band")
    ap.add_argument("--geotiff-height", type=int, default=2400, help="lines of the σ⁰ GeoTIFF input")
    ap.add_argument("--workdir", default=None, help="keep the files here (default: a temporary folder)")
    args = ap.parse_args(argv)
    from rasterio.windows import Window

    row = args.height // 2 if args.row is None else args.row
    n = min(args.windows, max(1, (args.width - args.window) // args.step + 1))
    windows = [Window(k * args.step, row, args.window, min(args.window, args.height - row)) for k in range(n)]
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_reads_"))
    work.mkdir(parents=True, exist_ok=True)
    tif = work / f"measurement_{args.width}x{args.height}.tiff"
    if not tif.exists():
        write_measurement(tif, args.width, args.height)
    member = "P.SAFE/measurement/m.tiff"
    second = "P.SAFE/measurement/m-vh.tiff"  # the deflated zip holds the TIFF twice, as a dual-pol product
    inputs = {"TIFF (SAFE folder)": str(tif)}
    for name, method in (("stored", zipfile.ZIP_STORED), ("deflated", zipfile.ZIP_DEFLATED)):
        z = work / f"product_{name}_{args.width}x{args.height}.zip"
        if not z.exists():
            with zipfile.ZipFile(
                z, "w", method, compresslevel=1 if method == zipfile.ZIP_DEFLATED else None
            ) as f:
                f.write(tif, member)
                if method == zipfile.ZIP_DEFLATED:
                    f.write(tif, second)
        inputs[f"zip, member {name}"] = f"/vsizip/{z}/{member}"
    print(f"load average before: {os.getloadavg()}", flush=True)
    rows = []
    for label, path in inputs.items():
        times = {mode: time_windows(path, windows, mode) for mode in MODES}
        rows.append({"input": label, **times})
        print(f"  {label}: {times}", flush=True)
    deflated = rows[-1]
    gh = args.geotiff_height
    grow = max(0, (gh - args.window) // 2)
    gwindows = [Window(w.col_off, grow, w.width, min(args.window, gh - grow)) for w in windows]
    geotiffs = {"uncompressed strips": None, "DEFLATE strips": "deflate"}
    for name, compress in geotiffs.items():
        label = f"σ⁰ GeoTIFF input, float32, {name}"
        tif_path = work / f"sigma0_{compress or 'none'}_{args.width}x{gh}.tif"
        times = time_geotiff(tif_path, args.width, gh, gwindows, compress)
        rows.append({"input": label, **times})
        print(f"  {label}: {times}", flush=True)
    unpack_dir = work / "unpacked"
    zpath = work / f"product_deflated_{args.width}x{args.height}.zip"
    (unpacked,), *deflated["unpack"] = time_unpack(zpath, [member], unpack_dir)
    deflated["unpacked"] = time_windows(unpacked, windows, "now")
    shutil.rmtree(unpack_dir)
    _, *deflated["unpack2"] = time_unpack(zpath, [member, second], unpack_dir)
    shutil.rmtree(unpack_dir)
    print(f"  unpacked once: {deflated['unpack']} s, then {deflated['unpacked']}", flush=True)
    print(f"  two members unpacked together: {deflated['unpack2']} s", flush=True)
    print()
    print(
        f"| input {args.width} wide ({args.height} lines for the measurement, {gh} for the GeoTIFF), "
        f"{n} windows of {args.window}² mid-scene: s a window (wall / CPU) | "
        + " | ".join(MODES.values())
        + " | before ÷ now (CPU) |"
    )
    print("|---|" + "---:|" * (len(MODES) + 1))
    for r in rows:
        cells = [f"{r[m][0] / n:.4f} / {r[m][1] / n:.4f}" for m in MODES]
        ratio = r["before"][1] / max(r["now"][1], 1e-9)
        print(f"| {r['input']} | " + " | ".join(cells) + f" | {ratio:.0f}× |")
    print()
    plain, packed = rows[-2], rows[-1]
    ratio = plain["kept"][1] / max(plain["now"][1], 1e-9)
    print(f"GeoTIFF inputs were already kept open before direct I/O: kept ÷ now = {ratio:.1f}× (CPU)")
    w, c = packed["copy"]
    per_window = packed["kept"][1] / n - packed["now"][1] / n
    print(
        f"DEFLATE strips copied once into tiled form (what translate and filter do now): {w:.2f} s wall / "
        f"{c:.2f} s CPU for {args.width} × {gh}; the copy pays for itself after "
        f"{c / max(per_window, 1e-9):.1f} windows read in place (CPU); kept ÷ now = "
        f"{packed['kept'][1] / max(packed['now'][1], 1e-9):.0f}× a window (CPU)"
    )
    w, c = deflated["unpack"]
    per_window = deflated["now"][1] / n - deflated["unpacked"][1] / n
    print(
        "deflated member unpacked once (what translate and calibrate do now): "
        f"{w:.2f} s wall / {c:.2f} s CPU for {tif.stat().st_size / 1e9:.2f} GB, "
        f"then {deflated['unpacked'][0] / n:.4f} / "
        f"{deflated['unpacked'][1] / n:.4f} s a window; it pays for itself after "
        f"{c / max(per_window, 1e-9):.1f} windows read in place (CPU); two members (a dual-pol product) "
        f"unpacked together: {deflated['unpack2'][0]:.2f} s wall / {deflated['unpack2'][1]:.2f} s CPU"
    )
    print()
    print(f"load average after: {os.getloadavg()}")
    print("command: python scripts/bench_reads.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    return rows


if __name__ == "__main__":
    main()
