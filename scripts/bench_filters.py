#!/usr/bin/env python
"""Benchmark the speckle filters: speed, speed-up over findpeaks, and speckle-reduction quality.

Usage::

    python scripts/bench_filters.py            # 4096 x 4096 scene, findpeaks on a 256 x 256 tile (~10 min)
    python scripts/bench_filters.py --quick    # 1024 x 1024 scene, 64 x 64 findpeaks tile (~1 min)

The synthetic scene is generated here with numpy: piecewise-constant backscatter (polygons from two rotated
grids of random σ⁰, log-uniform in [0.005, 0.5]) times Gamma(L = 4.4) speckle, with a nodata collar. The
noise-free backscatter is known, so the quality columns are measured against it:

* **ENL**: mean²/variance of filtered/noise-free in homogeneous areas (pixels farther than the window from any
  edge of the noise-free scene); the input has ENL ≈ 4.4. Higher = more speckle reduction.
* **edge**: mean |Sobel gradient| of the filtered image in dB over the noise-free edge pixels, divided by the
  same for the noise-free image: 1 = edges kept as sharp as the truth, < 1 = blurred; speckle adds gradient
  energy, so the unfiltered input is > 1.
* **bias %**: mean(filtered/noise-free) − 1 in homogeneous areas (radiometric bias of the mean).

Speed. Every contender is timed the same way: one untimed warm-up call, then the median of ``--repeat``
timed calls (default 3). ``Mpx/s`` is ``apply_filter`` on the whole scene (one band, float32, nodata-aware,
exact borders).

Baselines, each also checked for agreement with ours:

* **plain Lee**: the textbook vectorised Lee written here with ``scipy.ndimage.uniform_filter`` (running
  sums, same SNAP formula, unbiased variance, mirror borders; not nodata-aware, not chunk-exact). It is the
  fair speed baseline for ours; on pixels whose window holds no nodata the two must agree to float rounding
  (``|Δ|`` printed below the table, relative to the mean output intensity).
* **findpeaks** (``mean_filter``, ``median_filter``, ``lee_filter``, ``kuan_filter``,
  ``lee_enhanced_filter``, ``frost_filter``; pure-Python loops) and ours on the same tile, scaled so that its
  99th percentile is 200 (findpeaks rounds its outputs to integers, i.e. expects 0..255 images; the filters
  are scale-equivariant). Their semantics differ by design, so the ``|Δ|`` columns (DN of that tile, interior
  pixels only) measure how much, not a bug: findpeaks' window for ``win_size = w`` is
  ``img[i - w//2 : i + w//2]``, i.e. (w − 1)² pixels off-centre (6 × 6 for w = 7), its variance is the
  population one, its outputs are rounded to integers and its windows shrink at the borders. To show that
  these differences are all there is, findpeaks' ``lee_filter`` is also reproduced here by a vectorised
  emulation of exactly that window (:func:`findpeaks_lee_emulation`), whose |Δ| to findpeaks is printed.

findpeaks is NOT a dependency of sar2opt-geo; install it in a separate environment that sees this package's
dependencies, and run this script with that interpreter::

    python -m venv --system-site-packages /tmp/fp && /tmp/fp/bin/pip install findpeaks
    PYTHONPATH=/path/to/sar2opt-geo /tmp/fp/bin/python scripts/bench_filters.py

Without findpeaks its columns are skipped. ``sar2optical_*`` rows time the SAR2Optical profile's 8-bit filters
(:mod:`sar2opt_geo.sar2optical`) on the scene mapped to dB → 0..255 (speed only).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
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


def timed(fn, repeat: int):
    """``(median seconds of repeat calls, result)`` after one untimed warm-up call: the same for everyone."""
    result = fn()
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def plain_lee(x: np.ndarray, window: int, enl: float) -> np.ndarray:
    """The textbook vectorised Lee: running-sum window statistics from ``scipy.ndimage.uniform_filter``, the
    same SNAP formula as ours (R = μ where Ci ≤ Cu, else μ + (1 − Cu²/Ci²)(I − μ); unbiased variance; mirror
    borders), without nodata handling."""
    x = x.astype(np.float64)
    n = window * window
    mean = ndi.uniform_filter(x, window, mode="mirror")
    var = np.maximum(ndi.uniform_filter(x * x, window, mode="mirror") - mean * mean, 0) * n / (n - 1)
    sq = mean * mean  # may underflow to 0 for a tiny positive mean: no division there (no NaN, no warning)
    ci2 = np.divide(var, sq, out=np.zeros_like(var), where=sq > 0)
    cu2 = 1.0 / enl
    w = np.where(ci2 > cu2, 1.0 - cu2 / np.maximum(ci2, 1e-300), 0.0)
    return (mean + w * (x - mean)).astype(np.float32)


def findpeaks_lee_emulation(x: np.ndarray, window: int, enl: float) -> np.ndarray:
    """findpeaks' ``lee_filter`` semantics, vectorised (interior pixels): a (window − 1)² window covering
    offsets −window//2 … window//2 − 1 (scipy's even-size ``uniform_filter``), population variance, weight 0
    where Ci < Cu else 1 − Cu²/Ci², output rounded half to even (Python's ``round``)."""
    x = x.astype(np.float64)
    mean = ndi.uniform_filter(x, window - 1, mode="nearest")
    var = np.maximum(ndi.uniform_filter(x * x, window - 1, mode="nearest") - mean * mean, 0)
    ci = np.sqrt(var) / np.maximum(mean, 1e-300)
    cu = 1.0 / math.sqrt(enl)
    w = np.where(ci >= cu, 1.0 - cu * cu / np.maximum(ci, 1e-300) ** 2, 0.0)
    return np.round(x * w + mean * (1.0 - w))


def abs_diff(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> tuple[float, float]:
    """(max, mean) of |a − b| over ``where``."""
    d = np.abs(a[where].astype(np.float64) - b[where].astype(np.float64))
    return float(d.max()), float(d.mean())


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
    ap.add_argument("--repeat", type=int, default=3, help="timed calls after the warm-up (median reported)")
    args = ap.parse_args(argv)
    size = args.size or (1024 if args.quick else 4096)
    tile = args.tile or (64 if args.quick else 256)
    names = [n.strip() for n in args.filters.split(",") if n.strip()]

    print(
        f"# bench_filters: {size}x{size} scene, window {args.window}, ENL {args.enl:g}, damping "
        f"{args.damping:g}; median of {args.repeat} timed calls after a warm-up; "
        f"Python {platform.python_version()}, numpy {np.__version__}, "
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
    tile_img = speckled[r0 : r0 + tile, r0 : r0 + tile].astype(np.float64)
    tile_img = np.ascontiguousarray(tile_img * (200.0 / np.percentile(tile_img, 99)))  # 0..255-like DN
    tile_valid = np.ones(tile_img.shape, dtype=bool)
    inner = np.zeros(tile_img.shape, dtype=bool)  # away from the tile border (findpeaks shrinks windows)
    b = args.window // 2 + 1
    inner[b:-b, b:-b] = True
    # pixels whose window holds no nodata and does not cross the scene border
    k = 2 * (args.window // 2) + 1
    full_windows = ndi.minimum_filter(valid.astype(np.uint8), k, mode="constant").astype(bool)

    rows = []
    enl0, edge0, bias0 = quality(np.where(valid, speckled, 0), clean, homog, edge, clean_grad_edge)
    rows.append(("none (speckled input)", None, None, None, None, None, enl0, edge0, bias0))
    plain_row = emulation = None
    for name in names:
        spec = make_filter_spec(name, window=args.window, enl=args.enl, damping=args.damping)
        dt, out = timed(lambda spec=spec: apply_filter(speckled, valid, spec), args.repeat)
        mpxs = size * size / dt / 1e6
        enl, edge_ratio, bias = quality(out, clean, homog, edge, clean_grad_edge)
        fp_s = ours_ms = speedup = fp_diff = None
        if fp is not None and name in FINDPEAKS:
            fn_name, kw = FINDPEAKS[name]
            fn = getattr(fp, fn_name)
            kwargs = kw(args.window, args.enl, args.damping)
            fp_s, fp_out = timed(lambda fn=fn, kwargs=kwargs: fn(tile_img.copy(), **kwargs), args.repeat)
            ours, ours_out = timed(lambda spec=spec: apply_filter(tile_img, tile_valid, spec), args.repeat)
            ours_ms = ours * 1e3
            speedup = fp_s / ours
            fp_diff = abs_diff(np.asarray(fp_out), ours_out, inner)
            if name == "lee":
                emu = findpeaks_lee_emulation(tile_img, args.window, args.enl)
                emulation = abs_diff(np.asarray(fp_out), emu, inner)
        rows.append((name, mpxs, fp_s, ours_ms, speedup, fp_diff, enl, edge_ratio, bias))
        print(f"#   {name}: {mpxs:.2f} Mpx/s (halo {filter_halo(spec)})", flush=True)
        if name == "lee":
            pt, plain = timed(lambda: plain_lee(speckled, args.window, args.enl), args.repeat)
            scale = float(np.mean(out[full_windows]))
            dmax, dmean = abs_diff(plain, out, full_windows)
            plain_row = (size * size / pt / 1e6, dmax / scale, dmean / scale, 100 * full_windows.mean())

    u8 = to_u8(speckled)
    for name in ("lee", "frost", "median", "gaussian", "bilateral"):
        dt, _ = timed(lambda name=name: sar2optical_filter(u8, name, 5), args.repeat)
        rows.append((f"sar2optical_{name} (8-bit, w=5)", size * size / dt / 1e6, *([None] * 7)))

    def f(v, fmt):
        return "—" if v is None else format(v, fmt)

    print()
    print(
        f"| filter | Mpx/s ({size}²) | findpeaks {tile}² (s) | ours {tile}² (ms) | speed-up | "
        "\\|Δ\\| vs findpeaks max / mean (DN) | ENL homog. | edge ratio | bias % |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, mpxs, fp_s, ours_ms, speedup, fp_diff, enl, edge_ratio, bias in rows:
        diff = "—" if fp_diff is None else f"{fp_diff[0]:.1f} / {fp_diff[1]:.2f}"
        print(
            f"| {name} | {f(mpxs, '.2f')} | {f(fp_s, '.3f')} | {f(ours_ms, '.1f')} | "
            f"{f(speedup, '.0f')}{'×' if speedup else ''} | {diff} | {f(enl, '.1f')} | "
            f"{f(edge_ratio, '.2f')} | {f(bias, '+.1f')} |"
        )
    if plain_row is not None:
        mpxs, dmax, dmean, share = plain_row
        print(
            f"\nplain vectorised Lee (scipy uniform_filter, not nodata-aware): {mpxs:.2f} Mpx/s; "
            f"against ours on the {share:.0f} % of pixels whose window holds no nodata: "
            f"max |Δ| {dmax:.1e}, mean |Δ| {dmean:.1e} (relative to the mean output)"
        )
    if emulation is not None:
        print(
            f"findpeaks lee_filter against a vectorised emulation of its window, variance and rounding "
            f"(interior of the {tile}² tile): max |Δ| {emulation[0]:.1f} DN, mean |Δ| {emulation[1]:.3f} DN"
        )
    print(f"\n# total {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
