#!/usr/bin/env python
"""Benchmark the speckle filters: speed, speed-up over findpeaks, and speckle-reduction quality.

Usage::

    python scripts/bench_filters.py            # 4096 x 4096 scene, findpeaks on a 256 x 256 tile (~2-3 min)
    python scripts/bench_filters.py --quick    # 1024 x 1024 scene, 64 x 64 findpeaks tile (~20 s)

The synthetic scene is generated here with numpy: piecewise-constant backscatter (polygons from two rotated
grids of random σ⁰, log-uniform in [0.005, 0.5]) times Gamma(L = 4.4) speckle, with a nodata collar. The
noise-free backscatter is known, so the quality columns are measured against it:

* **ENL**: mean²/variance of filtered/noise-free in homogeneous areas (pixels farther than the window from any
  edge of the noise-free scene); the input has ENL ≈ 4.4. Higher = more speckle reduction.
* **edge**: mean |Sobel gradient| of the filtered image in dB over the noise-free edge pixels, divided by the
  same for the noise-free image: 1 = edges kept as sharp as the truth, < 1 = blurred; speckle adds gradient
  energy, so the unfiltered input is > 1.
* **bias %**: mean(filtered/noise-free) − 1 in homogeneous areas (radiometric bias of the mean).

Speed: ``Mpx/s`` of ``apply_filter`` on the whole scene (one band, float32, nodata-aware, exact borders). The
``findpeaks`` comparison times findpeaks' filters (``lee_filter``, ``kuan_filter``, ``lee_enhanced_filter``,
``frost_filter``, ``median_filter``, ``mean_filter``; their semantics differ in details, e.g. shrinking
windows at borders, so only the time is compared) and ours on the same tile. findpeaks is NOT a dependency of
sar2opt-geo; install it in a separate environment and run this script with that interpreter::

    python -m venv /tmp/fp && /tmp/fp/bin/pip install findpeaks numpy scipy
    PYTHONPATH=/path/to/sar2opt-geo /tmp/fp/bin/python scripts/bench_filters.py

Without findpeaks the comparison columns are skipped. ``sar2optical_*`` rows time the SAR2Optical profile's
8-bit filters (:mod:`sar2opt_geo.sar2optical`) on the scene mapped to dB → 0..255 (speed only).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import numpy as np
from scipy import ndimage as ndi

from sar2opt_geo.filters import FILTER_NAMES, apply_filter, estimate_enl, filter_halo, make_filter_spec
from sar2opt_geo.sar2optical import sar2optical_filter

LOOKS = 4.4
FINDPEAKS = {  # our name -> (findpeaks function, kwargs builder)
    "boxcar": ("mean_filter", lambda w, L, D: {"win_size": w}),
    "median": ("median_filter", lambda w, L, D: {"win_size": w}),
    "lee": ("lee_filter", lambda w, L, D: {"win_size": w, "cu": 1 / math.sqrt(L)}),
    "kuan": ("kuan_filter", lambda w, L, D: {"win_size": w, "cu": 1 / math.sqrt(L)}),
    "enhanced_lee": (
        "lee_enhanced_filter",
        lambda w, L, D: {"win_size": w, "k": D, "cu": 1 / math.sqrt(L), "cmax": math.sqrt(1 + 2 / L)},
    ),
    "frost": ("frost_filter", lambda w, L, D: {"win_size": w, "damping_factor": D}),
}


def make_scene(size: int, seed: int = 0, looks: float = LOOKS):
    """(speckled, clean, valid): piecewise-constant σ⁰ × Gamma(looks) speckle, nodata collar."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cell = max(16, size // 48)
    a = 10 ** rng.uniform(-2.3, -0.3, size=(size // cell + 2, size // cell + 2))
    clean = a[(yy // cell).astype(int), (xx // cell).astype(int)]
    ang = math.radians(30.0)
    u = (xx * math.cos(ang) + yy * math.sin(ang)) / (cell * 1.7)
    v = (-xx * math.sin(ang) + yy * math.cos(ang)) / (cell * 1.3)
    u -= u.min()
    v -= v.min()
    b = 10 ** rng.uniform(-0.5, 0.5, size=(int(u.max()) + 2, int(v.max()) + 2))
    clean = (clean * b[u.astype(int), v.astype(int)]).astype(np.float32)
    del yy, xx, u, v
    speckled = (clean * rng.gamma(looks, 1.0 / looks, size=clean.shape)).astype(np.float32)
    valid = np.ones(clean.shape, dtype=bool)
    collar = max(8, size // 40)
    valid[:collar, :] = False  # nodata collar on two sides, with a ragged edge
    valid[:, :collar] = False
    ragged = rng.integers(0, collar, size=size)
    valid[np.arange(size), collar + ragged] = False
    speckled[~valid] = 0
    return speckled, clean, valid


def quality_masks(clean: np.ndarray, valid: np.ndarray, window: int):
    """Homogeneous pixels (no noise-free edge within ``window``) and noise-free edge pixels, both valid and
    away from nodata."""
    k = 2 * window + 1
    flat = ndi.maximum_filter(clean, k) == ndi.minimum_filter(clean, k)
    away = ndi.minimum_filter(valid.astype(np.uint8), k).astype(bool)
    edge = (ndi.maximum_filter(clean, 3) != ndi.minimum_filter(clean, 3)) & away
    return flat & away, edge


def _grad_db(x: np.ndarray) -> np.ndarray:
    db = 10 * np.log10(np.maximum(x, 1e-6))
    return np.hypot(ndi.sobel(db, 0), ndi.sobel(db, 1))


def quality(out: np.ndarray, clean: np.ndarray, homog: np.ndarray, edge: np.ndarray, clean_grad_edge: float):
    r = out[homog].astype(np.float64) / clean[homog]
    enl = r.mean() ** 2 / r.var()
    bias = 100 * (r.mean() - 1)
    edge_ratio = float(_grad_db(out)[edge].mean() / clean_grad_edge)
    return enl, edge_ratio, bias


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def to_u8(linear: np.ndarray) -> np.ndarray:
    db = 10 * np.log10(np.maximum(linear, 1e-6))
    return np.clip((db + 25.0) / 25.0 * 255.0, 0, 255).astype(np.uint8)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1024² scene and 64² findpeaks tile (fast run)")
    ap.add_argument("--size", type=int, help="scene size in pixels (default 4096, quick 1024)")
    ap.add_argument("--tile", type=int, help="findpeaks comparison tile (default 256, quick 64)")
    ap.add_argument("--window", type=int, default=7)
    ap.add_argument("--enl", type=float, default=LOOKS, help="ENL given to the filters (default: the truth)")
    ap.add_argument("--damping", type=float, default=2.0)
    ap.add_argument("--filters", default=",".join(FILTER_NAMES))
    ap.add_argument("--no-findpeaks", action="store_true")
    args = ap.parse_args(argv)
    size = args.size or (1024 if args.quick else 4096)
    tile = args.tile or (64 if args.quick else 256)
    names = [n.strip() for n in args.filters.split(",") if n.strip()]

    print(
        f"# bench_filters: {size}x{size} scene, window {args.window}, ENL {args.enl:g}, damping "
        f"{args.damping:g}; Python {platform.python_version()}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})",
        flush=True,
    )
    t0 = time.perf_counter()
    speckled, clean, valid = make_scene(size)
    homog, edge = quality_masks(clean, valid, args.window)
    clean_grad_edge = float(_grad_db(clean)[edge].mean())
    print(
        f"# scene built in {time.perf_counter() - t0:.1f} s: {homog.mean() * 100:.0f} % homogeneous, "
        f"{edge.mean() * 100:.1f} % edge pixels, {100 * (1 - valid.mean()):.1f} % nodata",
        flush=True,
    )
    enl_est = estimate_enl(speckled, valid, window=args.window)
    print(f"# estimate_enl on the scene: {enl_est:.2f} (truth {LOOKS:g})", flush=True)

    fp = None
    if not args.no_findpeaks:
        try:
            from findpeaks import stats as fp  # optional, benchmark only
        except ImportError:
            print(
                "# findpeaks not installed: speed-up columns skipped (python -m venv /tmp/fp && "
                "/tmp/fp/bin/pip install findpeaks numpy scipy; run this script with /tmp/fp/bin/python)",
                flush=True,
            )
    r0 = size // 2 - tile // 2
    tile_img = np.ascontiguousarray(speckled[r0 : r0 + tile, r0 : r0 + tile])
    tile_valid = np.ones(tile_img.shape, dtype=bool)

    rows = []
    enl0, edge0, bias0 = quality(np.where(valid, speckled, 0), clean, homog, edge, clean_grad_edge)
    rows.append(("none (speckled input)", None, None, None, None, enl0, edge0, bias0))
    for name in names:
        spec = make_filter_spec(name, window=args.window, enl=args.enl, damping=args.damping)
        out = None

        def run(spec=spec):
            nonlocal out
            out = apply_filter(speckled, valid, spec)

        dt = timed(run)
        mpxs = size * size / dt / 1e6
        enl, edge_ratio, bias = quality(out, clean, homog, edge, clean_grad_edge)
        fp_s = ours_ms = speedup = None
        if fp is not None and name in FINDPEAKS:
            fn_name, kw = FINDPEAKS[name]
            fn = getattr(fp, fn_name)
            kwargs = kw(args.window, args.enl, args.damping)
            fp_s = timed(lambda fn=fn, kwargs=kwargs: fn(tile_img.astype(np.float64), **kwargs))
            ours = timed(lambda spec=spec: apply_filter(tile_img, tile_valid, spec), repeat=5)
            ours_ms = ours * 1e3
            speedup = fp_s / ours
        rows.append((name, mpxs, fp_s, ours_ms, speedup, enl, edge_ratio, bias))
        print(f"#   {name}: {mpxs:.2f} Mpx/s (halo {filter_halo(spec)})", flush=True)

    u8 = to_u8(speckled)
    for name in ("lee", "frost", "median", "gaussian", "bilateral"):
        dt = timed(lambda name=name: sar2optical_filter(u8, name, 5))
        rows.append(
            (f"sar2optical_{name} (8-bit, w=5)", size * size / dt / 1e6, None, None, None, None, None, None)
        )

    def f(v, fmt):
        return "—" if v is None else format(v, fmt)

    print()
    print(
        f"| filter | Mpx/s ({size}²) | findpeaks {tile}² (s) | ours {tile}² (ms) | speed-up | "
        "ENL homog. | edge ratio | bias % |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, mpxs, fp_s, ours_ms, speedup, enl, edge_ratio, bias in rows:
        print(
            f"| {name} | {f(mpxs, '.2f')} | {f(fp_s, '.2f')} | {f(ours_ms, '.1f')} | "
            f"{f(speedup, '.0f')}{'×' if speedup else ''} | {f(enl, '.1f')} | {f(edge_ratio, '.2f')} | "
            f"{f(bias, '+.1f')} |"
        )
    print(f"\n# total {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
