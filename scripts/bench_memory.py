#!/usr/bin/env python
"""Peak memory of ``sar2opt-geo translate`` against scene size (issue #12 item 5): the whole process tree.

For each size a seeded Sentinel-1-like float32 scene (gamma speckle over a smooth σ⁰ field, 10 m, nodata
collar on the left) is written block by block, then translated by the CLI in a fresh process with the
bundled model and default options; the resident set size of that process and all its children (Dask
workers, if any) is sampled every ``--interval`` s with psutil and the maximum sum is the peak. The idle
baseline is a fresh process after the imports and the model load (what translate holds before reading a
pixel). Prints one JSON line per size, then a Markdown table with the ratios to the smallest size and the
part above the idle baseline, and the load average (other processes share the machine).

    python scripts/bench_memory.py --sizes 1536 3072 6144 10240 [--extra-args "--workers 2"]
    python scripts/bench_memory.py --sizes 1536 17000x26000    # a full-size GRD-like scene (rows x columns)
    python scripts/bench_memory.py --product --sizes 1024 3072 6144   # Sentinel-1 GRD products (radar lines
                                                                      # x samples), calibrated and warped

``--product``: each size is a synthetic IW GRDH product (SAFE folder, VV, random thermal noise) of that many
lines and samples, which ``translate`` calibrates and warps onto UTM window by window. The ``translate``
subprocess runs in the working directory, so ``cd <other checkout> && python .../bench_memory.py`` measures
that checkout's package (``python -m`` puts the working directory first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil


def make_scene(path: Path, height: int, width: int, seed: int = 0) -> None:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    collar = width // 12
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype="float32",
        nodata=0.0,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        crs="EPSG:32633",
        transform=from_origin(500000, 5500000, 10, 10),
        BIGTIFF="IF_SAFER",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.set_band_description(1, "VV")
        for r0 in range(0, height, 512):
            h = min(512, height - r0)
            rows = np.arange(r0, r0 + h)[:, None]
            cols = np.arange(width)[None, :]
            field = 0.03 + 0.05 * (1 + np.sin(rows / 700.0) * np.cos(cols / 900.0))
            block = (field * rng.gamma(4.4, 1 / 4.4, size=(h, width))).astype(np.float32)
            block[:, :collar] = 0.0
            dst.write(block[None], window=Window(0, r0, width, h))


def make_product(outdir: Path, height: int, width: int, seed: int = 0) -> Path:
    """A synthetic IW GRDH product (VV) of ``height`` lines and ``width`` samples: its SAFE folder."""
    from sar2opt_geo.sentinel1.synth import ProductSpec, write_product

    found = sorted(outdir.glob("*.SAFE"))
    if found:
        return found[0]
    spec = ProductSpec(width=width, height=height, polarisations=("VV",), seed=seed, thermal_noise="random")
    return write_product(outdir, spec).safe


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run_peak(cmd: list[str], interval: float) -> tuple[int, float, int, str]:
    """``(peak tree RSS bytes, seconds, exit code, stderr)`` of a command."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc, peak = psutil.Process(p.pid), 0
    while p.poll() is None:
        peak = max(peak, tree_rss(proc))
        time.sleep(interval)
    err = p.stderr.read().decode()
    if p.returncode != 0:
        print(err, file=sys.stderr)
    return peak, time.perf_counter() - t0, p.returncode, err


IDLE = """
import resource, sys, time, psutil
from sar2opt_geo.cli import main  # noqa: F401  (the CLI's imports)
from sar2opt_geo.defaults import BUNDLED_MODEL
from sar2opt_geo.models.cache import get_cached_generator
from sar2opt_geo.plan import TranslateOptions, prepare_translate
prepare_translate(sys.argv[1], TranslateOptions(model=str(BUNDLED_MODEL), device="cpu"))
get_cached_generator(str(BUNDLED_MODEL), "cpu")
print(psutil.Process().memory_info().rss)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes", nargs="+", default=["1536", "3072", "6144", "10240"], help="square sizes N or ROWSxCOLUMNS"
    )
    ap.add_argument("--extra-args", default="", help="extra translate options, e.g. '--workers 2'")
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--workdir", default=None, help="where scenes and outputs go (default: a temp dir)")
    ap.add_argument(
        "--product",
        action="store_true",
        help="translate synthetic Sentinel-1 GRD products (SAFE) of these radar sizes instead",
    )
    args = ap.parse_args()
    tmp = Path(args.workdir or tempfile.mkdtemp(prefix="bench_memory_"))
    tmp.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        h, _, w = size.partition("x")
        h, w = int(h), int(w or h)
        if args.product:
            scene = make_product(tmp / f"product_{size}", h, w)
        else:
            scene = tmp / f"scene_{size}.tif"
            if not scene.exists():
                make_scene(scene, h, w)
        if not rows:  # idle baseline on the first scene
            res = subprocess.run([sys.executable, "-c", IDLE, str(scene)], capture_output=True, text=True)
            idle = int(res.stdout.split()[-1])
        out = tmp / f"out_{size}.tif"
        cmd = [
            sys.executable,
            "-m",
            "sar2opt_geo",
            "translate",
            str(scene),
            str(out),
            "-q",
            "--overwrite",
            *shlex.split(args.extra_args),
        ]
        peak, secs, code, _ = run_peak(cmd, args.interval)
        row = {
            "size": size,
            "peak_mib": round(peak / 2**20),
            "seconds": round(secs, 1),
            "exit": code,
            "idle_mib": round(idle / 2**20),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        out.unlink(missing_ok=True)
    base, idle_mib = rows[0]["peak_mib"], rows[0]["idle_mib"]
    kind = "Sentinel-1 GRD products (radar sizes)" if args.product else "GeoTIFF scenes"
    print(
        f"\nidle baseline (imports + model load): {idle_mib} MiB; {kind}; options: defaults {args.extra_args}"
    )
    print("| scene | peak RSS (MiB, process tree) | ÷ smallest | above idle (MiB) | ÷ smallest | time (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        above = r["peak_mib"] - idle_mib
        above0 = max(1, base - idle_mib)
        ratio, ratio_above = r["peak_mib"] / base, above / above0
        name = f"{r['size']}²" if "x" not in str(r["size"]) else r["size"]
        cells = [name, r["peak_mib"], f"{ratio:.2f}", above, f"{ratio_above:.2f}", r["seconds"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
