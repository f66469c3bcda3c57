"""``tile-pairs``: cut co-registered georeferenced SAR and optical rasters into aligned tile pairs in Zarr.

The SAR grid is the reference: tiles are ``tile_size`` windows every ``stride`` pixels of the SAR raster.
The optical raster is read on the same grid — directly when CRS and transform match, otherwise warped onto
it (bilinear, ``rasterio.vrt.WarpedVRT`` in :func:`sar2opt_geo.io.read_aligned_window`). Rasters whose
footprints do not overlap are refused; tiles whose invalid fraction (SAR nodata or optical outside/masked)
exceeds ``max_nodata`` are skipped. Windows are processed as Dask tasks (threaded scheduler) in batches,
appended to the store as they come, so memory stays bounded.

Store layout (Zarr v3 group, format ``sar2opt-geo-tile-pairs/1``):

* ``sar``: uint8 ``(N, 1, T, T)`` — the first SAR band **after radiometry**: linear σ⁰ → dB clipped to
  [−25, 0] → 0..255 (round half up), exactly the 8-bit preparation of SEN1-2/QXSLAB tiles and of
  ``synth.write_pairs`` s1 tiles, so the bundled model's radiometry applies unchanged; invalid pixels are 0.
  The SAR raster's input scale is *given* (``input_scale``): the ``tile-pairs`` command decides it with
  translate's own :func:`sar2opt_geo.source.decide_input_scale` (this package sits below ``source`` in the
  import layers) and passes it down. An 8-bit ``levels`` image already holds this encoding (level L is the
  centre of its dB interval, which translate feeds the model as L): its levels are stored as they are —
  round-half-up of the centre would put ~40 % of them one level up.
  With ``dual_pol`` (``tile-pairs --dual-pol``) it is instead uint8 ``(N, 3, T, T)``: the Sentinel-1
  dual-pol composite of the SAR bands named VV and VH (band descriptions, exactly or as a word of them such
  as the VV of ``Sigma0_VV_db``) — R = VV, G = VH, B = the VV − VH dB ratio, the exact 8-bit levels of
  :data:`sar2opt_geo.radiometry.DUAL_POL_COMPOSITE` (:func:`sar2opt_geo.radiometry.composite_levels`),
  what a dual-pol model (``input_bands: [VV, VH]``) is fed at inference; invalid pixels are 0. ``levels``
  inputs (8-bit single-band chips) cannot give it;
* ``optical``: uint8 ``(N, 3, T, T)`` — the first three optical bands clipped to 0..255;
* ``bounds``: float64 ``(N, 4)`` — (left, bottom, right, top) of each tile in the SAR CRS;
* ``window``: int64 ``(N, 4)`` — (row, col, height, width) in the SAR raster;
* attributes: format, crs_wkt, transform, tile_size, stride, max_nodata, sources, the SAR input scale,
  sar_encoding, radiometry (:data:`RADIOMETRY`, or ``DUAL_POL_COMPOSITE`` for a dual-pol store),
  input_bands (``["VV"]``, or ``["VV", "VH"]`` for a dual-pol store), resampled, count.

:class:`sar2opt_geo.training.datasets.PairedTileDataset` reads such a store as a dataset.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sar2opt_geo import defaults
from sar2opt_geo.errors import DatasetError, GeoreferenceError, InputError, UsageError

log = logging.getLogger(__name__)

FORMAT = "sar2opt-geo-tile-pairs/1"
RADIOMETRY = {
    "scale": "db",
    "clip": [-25.0, 0.0],
    "out_range": [-1.0, 1.0],
    "quantize": True,
    "replicate_to": 3,
}


def sar_to_db_uint8(linear: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear σ⁰ → dB clipped to [−25, 0] → uint8 0..255 (round half up); invalid pixels 0."""
    s = np.asarray(linear, dtype=np.float32)
    db = np.float32(10) * np.log10(np.maximum(s, np.float32(1e-10)))
    val = (np.clip(db, -25.0, 0.0) + np.float32(25.0)) * np.float32(255.0 / 25.0)
    out = (val + np.float32(0.5)).astype(np.uint8)
    out[~valid] = 0
    return out


def levels_to_uint8(levels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """8-bit ``levels`` of the training radiometry (dB [−25, 0] → 0..255) → the stored levels: the nearest
    level, as translate's quantisation of a level's centre gives it (integer levels unchanged); invalid 0."""
    x = np.clip(np.asarray(levels, dtype=np.float32), np.float32(0.0), np.float32(255.0))
    out = np.floor(x + np.float32(0.5)).astype(np.uint8)
    out[~valid] = 0
    return out


def scale_sample(sar, n: int = 4, size: int = defaults.SAMPLE_WINDOW) -> np.ndarray:
    """Values ``(1, k)`` of the SAR raster's first band for its input-scale decision: the valid pixels of an
    ``n`` × ``n`` lattice of ``size``-pixel windows over the raster (all their pixels when none is valid)."""
    from sar2opt_geo.io import read_window

    def axis(extent: int) -> list[int]:
        return sorted({int(round(v)) for v in np.linspace(0, max(extent - size, 0), n)})

    vals, alls = [], []
    for r in axis(sar.height):
        for c in axis(sar.width):
            data, valid = read_window(
                sar, r, min(r + size, sar.height), c, min(c + size, sar.width), bands=(1,)
            )
            vals.append(data[0][valid])
            alls.append(data[0].ravel())
    sample = np.concatenate(vals)
    return (sample if sample.size else np.concatenate(alls))[None]


DUAL_POL_BANDS = ("VV", "VH")


def dual_pol_bands(scene) -> tuple[int, int]:
    """0-based indexes of the scene's VV and VH bands, named by the band descriptions exactly (any case) or
    as a word of them (the VV of ``Sigma0_VV_db``); a one-line InputError naming its bands otherwise.
    (``SceneInfo.bands_named``, the rule translate matches a model's bands by.)"""
    picked = []
    for band in DUAL_POL_BANDS:
        hits = scene.bands_named(band)
        if len(hits) != 1:
            how = "no band is" if not hits else f"{len(hits)} bands are"
            raise InputError(
                f"{Path(scene.path).name}: --dual-pol needs SAR bands named VV and VH, but {how} named "
                f"{band} (the raster has {scene.count} band(s): {', '.join(scene.band_names())})"
            )
        picked.append(hits[0])
    return picked[0], picked[1]


def _sar_encoding(dual_pol: bool) -> str:
    if not dual_pol:
        return "uint8: dB clipped to [-25, 0] -> 0..255"
    from sar2opt_geo.radiometry import DUAL_POL_COMPOSITE as C

    (vlo, vhi), (hlo, hhi) = C["clip"]
    rlo, rhi = C["ratio_clip"]
    return (
        f"uint8 x 3, the dual-pol composite levels (radiometry.composite_levels): R = VV dB clipped to "
        f"[{vlo:g}, {vhi:g}], G = VH dB clipped to [{hlo:g}, {hhi:g}], B = VV - VH dB clipped to "
        f"[{rlo:g}, {rhi:g}], each -> 0..255"
    )


def _check_overlap(sar, opt) -> bool:
    """True when the grids are identical; InputError when the footprints do not overlap."""
    from sar2opt_geo.io import same_crs, transform_bounds

    if opt.transform is None or opt.crs_wkt is None:
        raise GeoreferenceError(f"{opt.path}: the optical raster needs a CRS and an affine transform")
    sb, ob = sar.bounds(), opt.bounds()
    identical_crs = same_crs(sar.crs_wkt, opt.crs_wkt)
    if not identical_crs:
        ob = transform_bounds(opt.crs_wkt, sar.crs_wkt, ob, densify_pts=21)
    ix = min(sb[2], ob[2]) - max(sb[0], ob[0])
    iy = min(sb[3], ob[3]) - max(sb[1], ob[1])
    if ix <= 0 or iy <= 0:
        raise InputError(
            f"{Path(sar.path).name} and {Path(opt.path).name} do not overlap "
            f"(SAR bounds {tuple(round(v, 1) for v in sb)}, optical {tuple(round(v, 1) for v in ob)} "
            "in the SAR CRS)"
        )
    return identical_crs and tuple(sar.transform) == tuple(opt.transform)


def _cut(sar, opt, scale, constant, row, col, tile, max_nodata, dual=None):
    """One window's ``(row, col, sar uint8, optical uint8)``, or None when too much of it is invalid.
    ``dual``: ``(vv, vh)`` 0-based SAR band indexes and the composite :class:`Radiometry` (dual-pol)."""
    from sar2opt_geo.io import read_aligned_window
    from sar2opt_geo.radiometry import composite_levels, to_linear

    s, sv, o, ov = read_aligned_window(sar, opt, row, col, tile, tile)
    valid = sv & ov
    if 1.0 - float(valid.mean()) > max_nodata:
        return None
    if dual is not None:
        (vv, vh), composite = dual
        linear = to_linear(s[[vv, vh]], scale, constant=constant)
        sar_u8 = composite_levels(np.where(valid, linear, np.float32(0)), composite, valid)
        sar_u8[:, ~valid] = 0
    elif scale == "levels":
        sar_u8 = levels_to_uint8(s[0], valid)[None]
    else:
        sar_u8 = sar_to_db_uint8(to_linear(s[0], scale, constant=constant), valid)[None]
    if o.shape[0] >= 3:
        o = o[:3]
    else:
        o = np.repeat(o[:1], 3, axis=0)
    opt_u8 = np.clip(np.nan_to_num(o), 0, 255).round().astype(np.uint8)
    opt_u8[:, ~valid] = 0
    return row, col, sar_u8, opt_u8


def tile_pairs(
    sar_path: str | os.PathLike,
    optical_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    input_scale: str,
    scale_reason: str = "",
    calibration_constant: float | None = None,
    sar_nodata: float | None = None,
    tile_size: int = 256,
    stride: int = 256,
    max_nodata: float = 0.0,
    dual_pol: bool = False,
    overwrite: bool = False,
    batch: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write the aligned tile pairs of two co-registered rasters to the Zarr store ``out``.

    ``input_scale`` (one of ``radiometry.INPUT_SCALES``, with ``calibration_constant`` for ``dn``): how the
    SAR raster's values become linear σ⁰, decided by the caller (``tile-pairs``: as translate decides it);
    ``sar_nodata``: a nodata value the SAR file does not declare (found by that decision).
    ``dual_pol``: store the VV, VH, VV/VH composite of the SAR bands named VV and VH (see the module doc).
    Returns a summary dict (pairs written, windows, skipped, resampled)."""
    from dataclasses import replace

    import dask
    import zarr

    from sar2opt_geo.io import check_output_path, open_scene, remove_path, replace_path, temporary_sibling
    from sar2opt_geo.radiometry import DUAL_POL_COMPOSITE, INPUT_SCALES, Radiometry

    if input_scale not in INPUT_SCALES:
        raise UsageError(f"input scale must be one of {', '.join(INPUT_SCALES)} (got {input_scale!r})")
    if dual_pol and input_scale == "levels":
        raise UsageError(
            "--dual-pol needs VV and VH σ⁰ bands; an 8-bit levels image (input scale levels) is single-band"
        )
    if tile_size < 1 or stride < 1:
        raise UsageError("--tile-size and --stride must be >= 1")
    if not 0.0 <= max_nodata <= 1.0:
        raise UsageError("--max-nodata must be a fraction in [0, 1]")
    from sar2opt_geo.safety import refuse_collisions

    refuse_collisions(out, [("SAR raster", sar_path), ("optical raster", optical_path)])
    out = check_output_path(out, overwrite)
    sar = open_scene(sar_path)
    if sar_nodata is not None:
        sar = replace(sar, nodata=float(sar_nodata))
    opt = open_scene(optical_path)
    if sar.transform is None:
        raise GeoreferenceError(
            f"{sar_path}: tile-pairs needs a SAR raster with CRS + affine transform (GCP-only products: "
            "terrain-correct or warp them first)"
        )
    dual = (dual_pol_bands(sar), Radiometry.from_dict(DUAL_POL_COMPOSITE)) if dual_pol else None
    same_grid = _check_overlap(sar, opt)
    if sar.height < tile_size or sar.width < tile_size:
        raise InputError(f"{sar_path}: {sar.width}x{sar.height} is smaller than one {tile_size}px tile")
    scale, constant = input_scale, calibration_constant
    windows = [
        (r, c)
        for r in range(0, sar.height - tile_size + 1, stride)
        for c in range(0, sar.width - tile_size + 1, stride)
    ]
    tmp = temporary_sibling(out)
    n = 0
    try:
        g = zarr.open_group(str(tmp), mode="w")
        t = tile_size
        ch = 3 if dual_pol else 1
        a_sar = g.create_array("sar", shape=(0, ch, t, t), chunks=(1, ch, t, t), dtype="uint8")
        a_opt = g.create_array("optical", shape=(0, 3, t, t), chunks=(1, 3, t, t), dtype="uint8")
        a_b = g.create_array("bounds", shape=(0, 4), chunks=(4096, 4), dtype="float64")
        a_w = g.create_array("window", shape=(0, 4), chunks=(4096, 4), dtype="int64")
        for i in range(0, len(windows), batch):
            tasks = [
                dask.delayed(_cut)(sar, opt, scale, constant, r, c, t, max_nodata, dual)
                for r, c in windows[i : i + batch]
            ]
            results = [x for x in dask.compute(*tasks, scheduler="threads") if x is not None]
            if results:
                a_sar.append(np.stack([x[2] for x in results]), axis=0)
                a_opt.append(np.stack([x[3] for x in results]), axis=0)
                a_b.append(np.array([sar.bounds(x[0], x[1], t, t) for x in results]), axis=0)
                a_w.append(np.array([(x[0], x[1], t, t) for x in results], dtype=np.int64), axis=0)
                n += len(results)
            if progress is not None:
                progress(min(i + batch, len(windows)), len(windows))
        g.attrs.update(
            {
                "format": FORMAT,
                "crs_wkt": sar.crs_wkt,
                "transform": list(sar.transform),
                "tile_size": t,
                "stride": stride,
                "max_nodata": max_nodata,
                "sar": str(sar_path),
                "optical": str(optical_path),
                "sar_input_scale": scale,
                "sar_input_scale_reason": scale_reason,
                "sar_calibration_constant": constant,
                "sar_encoding": _sar_encoding(dual_pol),
                "radiometry": dict(DUAL_POL_COMPOSITE) if dual_pol else RADIOMETRY,
                "input_bands": list(DUAL_POL_BANDS) if dual_pol else ["VV"],
                "resampled": not same_grid,
                "count": n,
            }
        )
        if out.exists():
            remove_path(out)
        replace_path(tmp, out)
    finally:
        remove_path(tmp)
    return {
        "out": str(out),
        "pairs": n,
        "windows": len(windows),
        "skipped": len(windows) - n,
        "resampled": not same_grid,
    }


# --------------------------------------------------------------------------------------- reading


def open_pairs_store(root: str | os.PathLike):
    import zarr

    try:
        g = zarr.open_group(str(root), mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises several types for a bad store
        raise DatasetError(f"{root}: not a readable tile-pairs Zarr store ({exc})") from None
    if g.attrs.get("format") != FORMAT or "sar" not in g or "optical" not in g:
        raise DatasetError(f"{root}: not a tile-pairs store (expected format {FORMAT})")
    return g


def zarr_count(root) -> int:
    return int(open_pairs_store(root)["sar"].shape[0])


def zarr_tile_shape(root) -> tuple[int, int]:
    s = open_pairs_store(root)["sar"].shape
    return int(s[2]), int(s[3])
