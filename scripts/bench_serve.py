"""Tile latency of ``sar2opt-geo serve``: p50 / p95 under concurrent requests, at a zoom served from COG
overviews and at full resolution, on a large synthetic scene.

    python scripts/bench_serve.py --size 10240 --requests 256 --concurrency 32

Steps: ``synth`` writes a SIZE² Sentinel-1-like scene (``sar.tif``, float32 linear σ⁰, tiled, no overviews,
as `translate` inputs usually are) and its optical truth; the truth is converted to a COG with overviews
(``io.staging_to_cog``, the converter ``translate`` uses) and stands in for the ``translated`` layer —
translating SIZE² on a shared CPU would take many minutes and the tile server does not care which model
painted the RGB pixels. The app is started as ``python -m sar2opt_geo serve DIR --port P`` in its own process;
REQUESTS tile requests per case, CONCURRENCY in flight at a time (httpx, one connection each), distinct tiles
drawn (seeded) from the tiles inside the scene's footprint, repeated only when the zoom has fewer tiles than
requests. Latency = request sent → last byte received, as the client sees it. Cases: the translated layer at
``maxzoom`` (full resolution) and ``maxzoom - 3`` (overview level 8×), and the SAR layer at the same zooms
(the app gives a SAR input without overviews a COG copy with overviews at start-up; the bench waits for it
and prints how long it took).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_scene(workdir: Path, size: int, seed: int) -> Path:
    from sar2opt_geo import io
    from sar2opt_geo.synth import SceneSpec, write_scene

    scene = workdir / "scene"
    if (scene / "translated.tif").exists():
        print(f"reusing {scene}", file=sys.stderr)
        return scene
    t0 = time.perf_counter()
    write_scene(scene, SceneSpec(width=size, height=size, seed=seed))
    t1 = time.perf_counter()
    io.staging_to_cog(scene / "optical.tif", scene / "translated.partial.tif")
    os.replace(scene / "translated.partial.tif", scene / "translated.tif")
    print(f"synth {t1 - t0:.0f} s, COG {time.perf_counter() - t1:.0f} s", file=sys.stderr)
    return scene


def start_server(scene: Path, port: int) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "sar2opt_geo", "serve", str(scene), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    t0 = time.time()
    while time.time() - t0 < 120:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/scenes", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("server did not start within 120 s")


def tiles_inside(layer: dict, z: int) -> list[tuple[int, int, int]]:
    """Tiles at zoom ``z`` whose centre is inside the middle 80 % of the layer's bounds (inside the
    footprint: no empty tiles)."""
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    w, s, e, n = layer["bounds"]
    dx, dy = (e - w) * 0.1, (n - s) * 0.1
    return [(t.z, t.x, t.y) for t in tms.tiles(w + dx, s + dy, e - dx, n - dy, [z])]


async def run_case(base: str, urls: list[str], concurrency: int) -> tuple[np.ndarray, float]:
    import httpx

    latencies = []
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:

        async def one(url):
            async with sem:
                t = time.perf_counter()
                r = await client.get(url)
                r.raise_for_status()
                latencies.append(time.perf_counter() - t)

        await asyncio.gather(*(one(u) for u in urls[: min(8, len(urls))]))  # warm-up: opens, caches
        latencies.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(u) for u in urls))
        wall = time.perf_counter() - t0
    return np.array(latencies), wall


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--overview-levels", type=int, default=3, help="coarse zoom = maxzoom - this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="/tmp/sar2opt_bench_serve")
    ap.add_argument("--keep", action="store_true", help="keep the scene for the next run")
    args = ap.parse_args(argv)

    import httpx

    workdir = Path(args.workdir)
    scene = make_scene(workdir, args.size, args.seed)
    port = _free_port()
    load_before = os.getloadavg()
    proc = start_server(scene, port)
    base = f"http://127.0.0.1:{port}"
    rows = []
    try:
        t0 = time.perf_counter()  # the app builds SAR overviews in the background: measure once they are in
        while True:
            (desc,) = httpx.get(base + "/api/scenes").json()
            states = {lay["name"]: lay["overviews"] for lay in desc["layers"]}
            if "building" not in states.values() or time.perf_counter() - t0 > 1200:
                break
            time.sleep(1)
        print(f"overviews: {states} (waited {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        layers = {lay["name"]: lay for lay in desc["layers"]}
        rng = random.Random(args.seed)
        for name in ("translated", "sar"):
            lay = layers[name]
            for label, z in (
                (f"overview zoom (maxzoom − {args.overview_levels})", lay["maxzoom"] - args.overview_levels),
                ("full resolution (maxzoom)", lay["maxzoom"]),
            ):
                tiles = tiles_inside(lay, z)
                rng.shuffle(tiles)
                picked = [tiles[i % len(tiles)] for i in range(args.requests)]
                urls = [f"/tiles/{desc['id']}/{name}/{tz}/{tx}/{ty}.png" for tz, tx, ty in picked]
                lat, wall = asyncio.run(run_case(base, urls, args.concurrency))
                rows.append(
                    (
                        name,
                        label,
                        z,
                        len(tiles),
                        len(lat),
                        np.percentile(lat, 50) * 1000,
                        np.percentile(lat, 95) * 1000,
                        len(lat) / wall,
                    )
                )
                print(f"{name} z{z}: p50 {rows[-1][5]:.0f} ms, p95 {rows[-1][6]:.0f} ms", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(30)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    print(
        f"\n`python scripts/bench_serve.py --size {args.size} --requests {args.requests} "
        f"--concurrency {args.concurrency}` — {platform.machine()}, {os.cpu_count()} cores; "
        f"scene {args.size}² px; {args.concurrency} concurrent requests\n"
    )
    print(f"Overviews of the layers while measured: {states}.\n")
    print("| layer | zoom | z | distinct tiles | requests | p50 (ms) | p95 (ms) | tiles/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, label, z, n_tiles, n, p50, p95, tps in rows:
        print(f"| {name} | {label} | {z} | {n_tiles} | {n} | {p50:.0f} | {p95:.0f} | {tps:.1f} |")
    fmt = ", ".join(f"{v:.2f}" for v in load_before), ", ".join(f"{v:.2f}" for v in load_after)
    print(f"\nLoad average (1, 5, 15 min): before {fmt[0]}; after {fmt[1]}.")


if __name__ == "__main__":
    main()
