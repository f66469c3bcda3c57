#!/usr/bin/env python
"""A whole Sentinel-1 IW GRDH product, at its real size and in the real measurement layout, translated on this
machine (issue #15): what a user's first `sar2opt-geo translate PRODUCT out.tif` costs.

The product is the real S1B product of ``shared/s1-products`` (its manifest, annotation, calibration and noise
XML: 26 102 × 16 705 samples, 210 geolocation-grid points, IPF 3.40) with a measurement TIFF written here in
the layout of real ones (uncompressed uint16, one row per strip, ``synth.GRD_LAYOUT``; the shipped one is an
all-zero placeholder). Its DN are physically consistent with the product's own LUTs: a σ⁰ field from the scene
simulator (land cover, fields, ENL-4.4 speckle; ``synth.render_window`` indexed by line and sample) through
DN = √(A²·σ⁰ + η), with A the product's sigmaNought LUT and η its thermal noise: backscatter over the whole
image (no simulator footprint) but DN = 0 along its borders, as in real products. Then the CLI translates it
in a fresh process (default options: the bundled model's dual-pol member where the product has VH, as the
real S1A product of ``shared/s1-products`` does: ``--safe`` it; else its VV member), and the bench prints wall
time, CPU time (all threads and child processes), peak resident memory of the process tree (psutil, sampled
every ``--interval`` s), tiles evaluated and throughput.

    python scripts/bench_full_product.py [--safe ../shared/s1-products/S1B_...SAFE] [--workdir W]
                                         [--command translate|calibrate] [--identity-model]
                                         [--extra-args "--workers 2"]

The product (~0.9 GB) is written once into ``--workdir`` (a temporary folder without it) and reused.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import run_peak  # noqa: E402  (a sibling script)

DEFAULT_SAFE = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "s1-products"
    / "S1B_IW_GRDH_1SDV_20211223T051122_20211223T051147_030148_039993_5371.SAFE"
)
BORDER = (20, 80)  # lines, samples of DN = 0 along the image edges (real GRD products have such borders)
BAND_ROWS = 512


def build_product(source: Path, workdir: Path, seed: int = 3, progress=print) -> tuple[Path, float]:
    """``workdir/NAME.SAFE``: ``source``'s metadata (copied) with a measurement TIFF of real size and layout
    per polarisation and DN from the simulator's σ⁰ through the product's LUTs; and the seconds it took.
    Reused when it exists."""
    from rasterio.windows import Window

    from sar2opt_geo.sentinel1.product import open_product
    from sar2opt_geo.sentinel1.safe import discover
    from sar2opt_geo.sentinel1.synth import GRD_LAYOUT, create_measurement
    from sar2opt_geo.synth import SceneSpec, render_window

    safe = workdir / source.name
    done = safe / ".complete"
    recipe = f"seed {seed}, no simulator footprint, border {BORDER}, {BAND_ROWS}-line bands"
    if done.exists() and done.read_text() == recipe:
        return safe, 0.0
    t0 = time.perf_counter()
    if safe.exists():
        shutil.rmtree(safe)
    files = discover(source)
    for rel in [files.manifest] + [
        r for bf in files.bands for r in (bf.annotation, bf.calibration, bf.noise)
    ]:
        if rel:
            (safe / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, safe / rel)
    (safe / "measurement").mkdir(exist_ok=True)
    prod = open_product(source, metadata_only=True)
    h, w = prod.height, prod.width
    # backscatter everywhere (no simulator footprint): a product is valid but for its borders
    scene = SceneSpec(width=w, height=h, bands=("VV", "VH"), seed=seed, footprint=False)
    cols = np.arange(w)
    with contextlib.ExitStack() as stack:
        outs = {}
        for bf in files.bands:
            name = Path(bf.measurement).name if bf.measurement else Path(bf.annotation).stem + ".tiff"
            path = safe / "measurement" / name
            outs[bf.polarisation] = stack.enter_context(
                create_measurement(path, w, h, prod.gcps, **GRD_LAYOUT)
            )
        for r0 in range(0, h, BAND_ROWS):  # the simulator renders every polarisation of a band at once
            r1 = min(h, r0 + BAND_ROWS)
            rows = np.arange(r0, r1)
            sigma0 = render_window(scene, r0, 0, r1 - r0, w)[0]
            for pol, dst in outs.items():
                a = prod.calibration_lut(pol, "sigma0", rows, cols)
                power = a * a * sigma0[scene.bands.index(pol)].astype(np.float64) + prod.noise_power(
                    pol, rows, cols
                )
                dn = np.clip(np.rint(np.sqrt(power)), 1, 65535).astype(np.uint16)
                dn[(rows < BORDER[0]) | (rows >= h - BORDER[0])] = 0
                dn[:, : BORDER[1]] = 0
                dn[:, w - BORDER[1] :] = 0
                dst.write(dn[None], window=Window(0, r0, w, r1 - r0))
            progress(f"  {', '.join(outs)}: lines {r1} of {h}")
    done.write_text(recipe)
    return safe, time.perf_counter() - t0


def run_command(command: str, safe: Path, out: Path, extra: list[str], interval: float) -> dict:
    """A fresh ``sar2opt-geo COMMAND PRODUCT OUT`` process: wall and CPU seconds, peak tree RSS, its summary
    line."""
    cmd = [sys.executable, "-m", "sar2opt_geo", command, str(safe), str(out), "--overwrite", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak, wall, code, err = run_peak(cmd, interval)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise SystemExit(f"{command} failed ({code})")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = [line for line in err.splitlines() if line.startswith("wrote ")]
    return {"cmd": cmd, "wall": wall, "cpu": cpu, "peak": peak, "summary": summary[-1] if summary else err}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--safe", type=Path, default=DEFAULT_SAFE, help="the real product whose metadata to use")
    ap.add_argument(
        "--workdir", type=Path, default=None, help="keep the product here (default: a temp folder)"
    )
    ap.add_argument("--extra-args", default="", help="more translate options, one string")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument(
        "--identity-model",
        action="store_true",
        help="translate with bench_speed.py's identity ONNX model: the pipeline alone (feeding a GPU)",
    )
    ap.add_argument(
        "--command",
        choices=("translate", "calibrate"),
        default="translate",
        help="what to time: translate (default) or calibrate (σ⁰ only: no model)",
    )
    args = ap.parse_args(argv)
    if not args.safe.is_dir():
        ap.error(f"{args.safe}: no such SAFE folder (the real products are in shared/s1-products)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_full_product_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()}", flush=True)
    safe, built = build_product(args.safe, work, args.seed, progress=lambda m: print(m, flush=True))
    if built:
        print(f"product written in {built:.0f} s: {safe}", flush=True)
    from sar2opt_geo.io import CRS, open_scene
    from sar2opt_geo.source import open_source

    scene = open_source(str(safe))
    output = work / ("translated.tif" if args.command == "translate" else "sigma0.tif")
    extra = shlex.split(args.extra_args)
    if args.identity_model:
        from bench_speed import identity_onnx  # a sibling script

        extra = ["--model", identity_onnx(work / "identity.onnx"), *extra]
    res = run_command(args.command, safe, output, extra, args.interval)
    out = open_scene(str(output))
    p = scene.product
    said = res["summary"]
    tiles = int(said.split(": ", 1)[1].split(" of ")[0]) if " tiles evaluated" in said else None
    mib = res["peak"] / 2**20
    print()
    print(
        f"| {p.name} ({p.width} × {p.height} radar samples, {', '.join(p.polarisations)}): {args.command} | |"
    )
    print("|---|---:|")
    crs = CRS.from_wkt(out.crs_wkt).to_string()
    size = output.stat().st_size / 2**20
    grid = f"map grid {out.width} × {out.height}, {crs}, {out.count} × {out.dtype}"
    print(f"| output ({grid}) | {size:.0f} MiB COG |")
    if tiles is not None:
        print(f"| tiles evaluated | {tiles} |")
    print(f"| wall time | {res['wall']:.0f} s ({res['wall'] / 60:.1f} min) |")
    print(f"| CPU time (all threads and child processes) | {res['cpu']:.0f} s |")
    mpx = out.width * out.height / res["wall"] / 1e6
    rate = f"{tiles / res['wall']:.1f} tiles/s, " if tiles is not None else ""
    print(f"| throughput | {rate}{mpx:.2f} Mpx/s of output |")
    print(f"| peak memory (process tree RSS) | {mib:.0f} MiB |")
    if tiles:
        ms = 1000 * res["cpu"] / tiles
        print(f"| CPU a tile | {ms:.1f} ms: {ms:.0f} cores per 1000 tiles/s |")
    print()
    print(f"{args.command} said: {said}")
    print(f"load average after: {os.getloadavg()}")
    given = argv if argv is not None else sys.argv[1:]
    print("command: python scripts/bench_full_product.py " + " ".join(given))
    return {**res, "tiles": tiles, "output": str(output), "safe": str(safe)}


if __name__ == "__main__":
    main()
