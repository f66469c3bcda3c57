#!/usr/bin/env python
"""Picture quality from a synthetic GRD product vs from its map-projected σ⁰ (issue #11's equivalence check).

    python scripts/product_equivalence.py --seed 12                 # bundled model, bilinear and nearest
    python scripts/product_equivalence.py --model runs/x/generator.safetensors --seed 12 --resampling bilinear
    python scripts/product_equivalence.py --seed 12 --speckle-stats    # the warped product's speckle texture

Writes a synthetic ascending IW GRDH product (``sar2opt_geo.sentinel1.synth``, 640 × 520 radar pixels, random
thermal noise, speckle drawn in radar geometry) and translates it end to end (calibration, noise removal,
map projection with ``--resampling``); then translates the simulator's map-projected σ⁰ on the same grid and
footprint (the analysis-ready equivalent) with the same model, and prints both PSNRs against the optical
truth over the pixels valid in both outputs. Goal (#11): the two within 0.5 dB. ``--speckle-stats`` prints
instead the texture the model sees: ENL and neighbour correlation (along rows / columns) of the warped
product's speckle (its σ⁰ over the simulator's noise-free σ⁰ on the same grid) and of the map scene's.

Seeds: ``tests/test_s1_pipeline.py`` checks the product of seed 11 (the test product); choices (e.g. a
training recipe) are made on other seeds (12 here), never on 11.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sar2opt_geo import io, source  # noqa: E402
from sar2opt_geo.defaults import BUNDLED_MODEL  # noqa: E402
from sar2opt_geo.distributed import ThreadedExecutor  # noqa: E402
from sar2opt_geo.plan import TranslateOptions  # noqa: E402
from sar2opt_geo.run import run_translate  # noqa: E402
from sar2opt_geo.sentinel1.synth import ProductSpec, write_product  # noqa: E402
from sar2opt_geo.synth import speckle_window  # noqa: E402

#: The test product's seed (tests/test_s1_pipeline.py); not for choices.
TEST_PRODUCT_SEED = 11


def product_spec(seed: int) -> ProductSpec:
    """The checked product: 640 × 520 radar pixels, ascending, random thermal noise."""
    return ProductSpec(width=640, height=520, seed=seed, thermal_noise="random")


def _grid_offset(scene, path) -> tuple[int, int]:
    """(row, column) of ``scene``'s top-left pixel in the map raster ``path`` (the same 10 m lattice)."""
    other = io.open_scene(path)
    a, t = scene.affine, other.affine
    dc, dr = (a.c - t.c) / t.a, (t.f - a.f) / -t.e
    if abs(dc - round(dc)) > 1e-6 or abs(dr - round(dr)) > 1e-6:
        raise ValueError(f"{path} is not on the warped scene's lattice")
    return int(round(dr)), int(round(dc))


def _on_grid(scene, path):
    """``path`` (a map raster on the same 10 m lattice as ``scene``) read on ``scene``'s grid."""
    dr, dc = _grid_offset(scene, path)
    data, _ = io.read_window(io.open_scene(path), dr, dr + scene.height, dc, dc + scene.width)
    return data


def speckle_stats(paths, spec: ProductSpec, resampling: str) -> dict:
    """ENL and neighbour correlations (rows, columns) of the speckle of the warped product and of the map
    scene: each σ⁰ divided by the simulator's noise-free σ⁰ on the warped grid, over the product's
    footprint."""
    scene = source.open_source(paths.safe, resampling=resampling)
    data, valid = source.read_window(scene, 0, scene.height, 0, scene.width)
    dr, dc = _grid_offset(scene, paths.sar_map)
    map_speckle = speckle_window(spec.scene, dr, dc, scene.height, scene.width, band="VV")
    noise_free = _on_grid(scene, paths.sar_map)[0] / map_speckle

    def stats(sp):
        ok = valid & np.isfinite(sp) & (sp > 0)
        v = sp[ok]
        out = {"enl": float(v.mean() ** 2 / v.var())}
        for name, (x, y, m) in {
            "corr_rows": (sp[:, :-1], sp[:, 1:], ok[:, :-1] & ok[:, 1:]),
            "corr_cols": (sp[:-1], sp[1:], ok[:-1] & ok[1:]),
        }.items():
            out[name] = float(np.corrcoef(x[m], y[m])[0, 1])
        return out

    return {"product": stats(data[0] / noise_free), "map": stats(map_speckle)}


def measure(
    seed: int, resamplings, model: str | None = None, texture: bool = False, bands: str | None = None
):
    """``{resampling: figures}`` for the product of ``seed``: :func:`product_vs_map`'s PSNRs, or with
    ``texture`` :func:`speckle_stats`."""
    spec = product_spec(seed)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_product(Path(tmp), spec)
        if texture:
            return {r: speckle_stats(paths, spec, r) for r in resamplings}
        return {r: product_vs_map(paths, tmp, r, model, bands) for r in resamplings}


def product_vs_map(
    paths, workdir, resampling: str = "bilinear", model: str | None = None, bands: str | None = None
) -> dict:
    """PSNR (dB, vs the optical truth) of translating the product ``paths`` (:func:`write_product`'s result)
    and of translating its map-projected σ⁰ on the same grid and footprint, with ``model`` (default: the
    bundled model, which is the dual-pol one for these VV + VH scenes unless ``bands`` is "VV")."""
    workdir = Path(workdir)
    opts = TranslateOptions(
        model=str(model or BUNDLED_MODEL), device="cpu", resampling=resampling, bands=bands
    )
    prod_out = workdir / f"prod_{resampling}.tif"
    run_translate(str(paths.safe), str(prod_out), opts, ThreadedExecutor(2))
    scene = source.open_source(paths.safe, resampling=resampling)
    _, valid = source.read_window(scene, 0, scene.height, 0, scene.width)
    truth_sar = _on_grid(scene, paths.sar_map).astype(np.float32)
    truth_sar[:, ~valid] = np.nan  # the same footprint
    eq = workdir / f"map_{resampling}_in.tif"
    profile = dict(driver="GTiff", width=scene.width, height=scene.height, count=truth_sar.shape[0])
    profile.update(dtype="float32", crs=scene.crs, transform=scene.affine, nodata=float("nan"))
    with rasterio.open(eq, "w", **profile) as dst:
        dst.write(truth_sar)
        dst.descriptions = ("VV", "VH")[: truth_sar.shape[0]]
    map_out = workdir / f"map_{resampling}.tif"
    run_translate(str(eq), str(map_out), opts, ThreadedExecutor(2))
    a, am = io.read_raster(prod_out, masked=True)
    b, bm = io.read_raster(map_out, masked=True)
    opt = _on_grid(scene, paths.optical).astype(float)
    m = (am["mask"] > 0) & (bm["mask"] > 0)

    def psnr(x):
        return float(10 * np.log10(255.0**2 / np.mean((x[:, m].astype(float) - opt[:, m]) ** 2)))

    return {"product": psnr(a), "map": psnr(b), "pixels": int(m.sum())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--seed", type=int, action="append", help="product seed(s) (default 12)")
    ap.add_argument("--resampling", action="append", choices=["bilinear", "nearest"])
    ap.add_argument("--speckle-stats", action="store_true", help="print the speckle texture, not PSNRs")
    ap.add_argument("--bands", default=None, help="translate's --bands (VV: the single-pol bundled model)")
    args = ap.parse_args(argv)
    for seed in args.seed or [12]:
        res = measure(
            seed, args.resampling or ["bilinear", "nearest"], args.model, args.speckle_stats, args.bands
        )
        for resampling, r in res.items():
            if args.speckle_stats:
                for name, s in r.items():
                    print(
                        f"seed {seed} {resampling} {name} speckle: ENL {s['enl']:.2f}, neighbour correlation "
                        f"{s['corr_rows']:.2f} (rows) / {s['corr_cols']:.2f} (columns)",
                        flush=True,
                    )
                continue
            print(
                f"seed {seed} {resampling}: product {r['product']:.2f} dB, map-projected σ⁰ "
                f"{r['map']:.2f} dB, difference {r['product'] - r['map']:+.2f} dB ({r['pixels']} px)",
                flush=True,
            )


if __name__ == "__main__":
    main()
