"""Scene sources: what the pipeline reads a window from — a GeoTIFF (:func:`sar2opt_geo.io.read_window`) or a
Sentinel-1 GRD product (calibrated, denoised linear σ⁰/β⁰/γ⁰ from :mod:`sar2opt_geo.sentinel1`) — either on
its own grid or warped window by window onto a north-up map grid (:mod:`sar2opt_geo.warp`).

:func:`open_source` decides from the input path (a SAFE folder, its ``manifest.safe``, the product ``.zip``, a
``/vsizip/`` path or a measurement tiff inside a SAFE is a product; anything else is a raster) and returns an
:class:`io.SceneInfo`: a plain one for a GeoTIFF read as it is, or a :class:`SourceScene` (a ``SceneInfo``
whose georeferencing is the grid the pipeline works on, plus the product / raster it reads and the warp).
Both are small, frozen and picklable, so the plan carries them into every Dask task, and the planning grid
(tiles, blocks, AOI, output georeferencing) is the target grid.

:func:`read_window` (values as stored: calibrated linear intensity for a product, raw values for a raster) and
:func:`read_linear` (linear intensity; rasters are converted *before* warping, so resampling is bilinear on
linear intensity) read the rows ``[row0, row1)`` × columns ``[col0, col1)`` of the reflect-padded scene, like
:func:`sar2opt_geo.io.read_window`, and every pixel depends only on its coordinates (chunk invariance).

:func:`decide_input_scale` says how stored values become linear intensity, and why (``--input-scale auto``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sar2opt_geo import io
from sar2opt_geo.errors import InputError, UsageError
from sar2opt_geo.sentinel1 import CALIBRATIONS, DEFAULT_CALIBRATION, S1Product, open_product
from sar2opt_geo.sentinel1.product import GCP_CRS
from sar2opt_geo.sentinel1.safe import MEASUREMENT_RE
from sar2opt_geo.warp import WarpGrid, plan_grid, warp_window

log = logging.getLogger(__name__)

Convert = Callable[[np.ndarray], np.ndarray]

#: ASF HyP3 RTC names: ``S1A_IW_20180128T161201_DVP_RTC30_G_gpuned_FD6A_VV.tif`` — the first letter of the
#: 6-letter code is the radiometry (g γ⁰, s σ⁰), the second the scale (p power, d dB, a amplitude).
HYP3_RTC = re.compile(r"_RTC\d+_[A-Z]_(?P<rad>[gs])(?P<scale>[pda])[a-z]{4}_", re.IGNORECASE)
_HYP3_SCALES = {"p": "linear", "d": "db", "a": "amplitude"}
#: Nodata values seen in the wild in files that do not declare them.
WILD_NODATA = (-32768.0, float(np.finfo(np.float32).min), -9999.0)


@dataclass(frozen=True, kw_only=True)
class SourceScene(io.SceneInfo):
    """A scene read through a product reader and/or warped onto a map grid. Its :class:`io.Georef` fields
    are the grid the pipeline works on (the target grid when warped); ``raster`` or ``product`` is what the
    pixels come from."""

    raster: io.SceneInfo | None = None
    product: S1Product | None = None
    calibration: str = DEFAULT_CALIBRATION
    denoise: bool = True
    warp: WarpGrid | None = None

    def __dask_tokenize__(self):
        return ("SourceScene", self.path, self.calibration, self.denoise, self.warp, self.raster)

    @property
    def source_count(self) -> int:
        return self.product.count if self.product is not None else self.raster.count

    def fingerprint(self) -> dict:
        """What besides the input file decides the pixels read (for ``--resume``): calibration, noise
        removal and the warp grid."""
        w = self.warp
        return {
            "calibration": self.calibration if self.product is not None else None,
            "denoise": self.denoise if self.product is not None else None,
            "warp": None if w is None else [w.crs_wkt, list(w.transform), w.width, w.height, w.resampling],
        }

    def describe_source(self) -> str:
        if self.product is not None:
            p = self.product
            return f"Sentinel-1 {p.mission} {p.mode} {p.product_type}{p.resolution or ''} product {p.name}"
        return f"raster {self.raster.path}"


# -------------------------------------------------------------------------------------------- opening


def is_product_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a Sentinel-1 product (folder, manifest, zip, /vsizip/, measurement tiff)."""
    s = str(path)
    if s.startswith("/vsizip/"):
        return True
    p = Path(s)
    if p.is_dir():
        return True
    low = p.name.lower()
    if low == "manifest.safe" or low.endswith(".zip"):
        return True
    if MEASUREMENT_RE.match(p.name) and p.parent.name.lower() == "measurement":
        return (p.parent.parent / "annotation").is_dir()
    return False


def open_source(
    path: str | os.PathLike,
    *,
    calibration: str = DEFAULT_CALIBRATION,
    denoise: bool = True,
    warp: str = "auto",
    resolution: float | None = None,
    allow_ungeoreferenced: bool = False,
    resampling: str = "bilinear",
    metadata_only: bool = False,
    copy_dir: str | os.PathLike | None = None,
) -> io.SceneInfo:
    """The scene the pipeline reads for ``path`` (see the module docstring). ``metadata_only``: a product
    whose measurement tiffs are absent (it describes, it cannot be read). ``copy_dir``: a folder the caller
    removes when done, where inputs that cannot be read window by window at any speed are copied once: a
    product zip's deflated measurement tiffs, inflated (:func:`~sar2opt_geo.sentinel1.product.open_product`),
    and a GeoTIFF of compressed strips, tiled (:func:`sar2opt_geo.io.tiled_copy`). Without it they are read
    in place."""
    if calibration not in CALIBRATIONS:
        raise UsageError(f"--calibration must be one of {', '.join(CALIBRATIONS)} (got {calibration!r})")
    if is_product_path(path):
        return _product_scene(
            path, calibration, denoise, warp, resolution, resampling, metadata_only, copy_dir
        )
    scene = io.open_scene(path, allow_ungeoreferenced=allow_ungeoreferenced)
    if copy_dir is not None and io.wants_tiled_copy(scene):
        scene = io.tiled_copy(scene, copy_dir)
    grid = plan_grid(scene, warp, resolution, resampling=resampling)
    if grid is None:
        return scene
    return SourceScene(
        path=scene.path,
        width=grid.width,
        height=grid.height,
        crs_wkt=grid.crs_wkt,
        transform=grid.transform,
        count=scene.count,
        dtype=scene.dtype,
        nodata=scene.nodata,
        descriptions=scene.descriptions,
        raster=scene,
        warp=grid,
    )


def _product_scene(
    path,
    calibration: str,
    denoise: bool,
    warp: str,
    resolution: float | None,
    resampling: str,
    metadata_only: bool = False,
    copy_dir: str | os.PathLike | None = None,
) -> SourceScene:
    product = open_product(path, metadata_only=metadata_only, unpack_dir=copy_dir)
    gcp_wkt = io.crs_wkt(GCP_CRS)
    radar = io.Georef(
        width=product.width, height=product.height, crs_wkt=gcp_wkt, gcps=product.gcps, gcp_crs_wkt=gcp_wkt
    )
    spacing = max(product.range_spacing, product.azimuth_spacing)
    grid = plan_grid(radar, warp, resolution, default_resolution=spacing, resampling=resampling)
    geo = radar if grid is None else io.Georef(grid.width, grid.height, grid.crs_wkt, grid.transform)
    shown = str(path)
    m = re.match(r"^/vsizip/(.+?\.zip)(?:/|$)", shown, re.IGNORECASE)
    return SourceScene(
        path=m.group(1) if m else shown,
        width=geo.width,
        height=geo.height,
        crs_wkt=geo.crs_wkt,
        transform=geo.transform,
        gcps=geo.gcps,
        gcp_crs_wkt=geo.gcp_crs_wkt,
        count=product.count,
        dtype="float32",
        nodata=None,
        descriptions=product.polarisations,
        product=product,
        calibration=calibration,
        denoise=denoise,
        warp=grid,
    )


# -------------------------------------------------------------------------------------------- reading


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _source_reader(scene: SourceScene, bands, convert: Convert, keep_open: bool = False):
    """``read(r0, r1, c0, c1) -> (values (bands, h, w), valid)`` on the source image's own grid."""
    if scene.product is not None:
        product, cal, den = scene.product, scene.calibration, scene.denoise

        def read(r0, r1, c0, c1):
            return product.read_window(tuple(bands), r0, r1, c0, c1, cal, den, keep_open=keep_open)

    else:
        raster = scene.raster

        def read(r0, r1, c0, c1):
            data, valid = io.read_window(raster, r0, r1, c0, c1, tuple(bands), keep_open=keep_open)
            linear = convert(data)
            return np.where(valid[None], linear, np.float32(0.0)).astype(np.float32), valid

    return read


def _read(scene: io.SceneInfo, row0, row1, col0, col1, bands, convert: Convert | None, keep_open=False):
    bands = tuple(bands) if bands else tuple(range(1, scene.count + 1))
    if not isinstance(scene, SourceScene):
        data, valid = io.read_window(scene, row0, row1, col0, col1, bands, keep_open=keep_open)
        return (data if convert is None else convert(data)), valid
    read = _source_reader(scene, bands, convert or _identity, keep_open)
    if scene.warp is None:  # a product on its own (radar) grid: the reader reflect-pads itself
        return read(row0, row1, col0, col1)
    rows = io.reflect_index(np.arange(row0, row1), scene.height)
    cols = io.reflect_index(np.arange(col0, col1), scene.width)
    r_lo, r_hi = int(rows.min()), int(rows.max()) + 1
    c_lo, c_hi = int(cols.min()), int(cols.max()) + 1
    data, valid = warp_window(scene.warp, read, len(bands), r_lo, r_hi, c_lo, c_hi)
    if row0 >= 0 and col0 >= 0 and row1 <= scene.height and col1 <= scene.width:
        return data, valid  # inside the grid: nothing reflected, no gather
    sel = np.ix_(rows - r_lo, cols - c_lo)
    return np.ascontiguousarray(data[(slice(None),) + sel]), np.ascontiguousarray(valid[sel])


def read_window(
    scene: io.SceneInfo, row0: int, row1: int, col0: int, col1: int, bands=None, *, keep_open: bool = False
):
    """Stored values (a product: calibrated linear intensity; a raster: its raw values, resampled when
    warped) and validity of a window of the reflect-padded scene. ``keep_open``: as :func:`read_linear`."""
    return _read(scene, row0, row1, col0, col1, bands, None, keep_open)


def read_linear(
    scene: io.SceneInfo,
    row0: int,
    row1: int,
    col0: int,
    col1: int,
    bands,
    convert: Convert,
    *,
    keep_open: bool = False,
):
    """Linear intensity (``convert``: raw values → linear, applied before any warping) and validity.
    ``keep_open``: rasters are read through this thread's open dataset (:func:`sar2opt_geo.io.read_window`;
    the caller closes them with :func:`sar2opt_geo.io.close_readers`)."""
    data, valid = _read(scene, row0, row1, col0, col1, bands, convert, keep_open)
    if isinstance(scene, SourceScene) and scene.product is not None:
        data = convert(data)  # the identity for calibrated products (their input scale is linear)
    return data, valid


# ------------------------------------------------------------------------------------- the input scale


@dataclass(frozen=True)
class ScaleDecision:
    scale: str
    reason: str
    nodata: float | None = None  # a nodata value found in the data that the file does not declare


def _raster_of(scene: io.SceneInfo) -> io.SceneInfo:
    return scene.raster if isinstance(scene, SourceScene) and scene.raster is not None else scene


def decide_input_scale(scene: io.SceneInfo, bands, raw: np.ndarray) -> ScaleDecision:
    """How the stored values of ``scene`` become linear intensity (``--input-scale auto``) and why.

    In order: a Sentinel-1 product is calibrated by its LUTs (linear); an ASF HyP3 RTC file name; band
    descriptions / tags / units naming dB, amplitude or power; a uint8 image holds the 8-bit levels of the
    model's radiometry (``levels``); other integer images without calibration are refused (raw GRD DN);
    floats with negative values are dB, other floats linear. ``raw``: sample values ``(bands, n)``.
    """
    if isinstance(scene, SourceScene) and scene.product is not None:
        p = scene.product
        if not scene.denoise:
            noise = "no thermal noise removal"
        elif all(b.noise_removed for b in p.bands):
            noise = "thermal noise already removed by the processor"
        else:
            noise = "thermal noise removed"
        why = f"Sentinel-1 {p.product_type} product: DN calibrated to {scene.calibration} with its LUTs"
        return ScaleDecision("linear", f"{why}, {noise}")
    raster = _raster_of(scene)
    name = os.path.basename(raster.path)
    m = HYP3_RTC.search(name)
    if m:
        rad = "γ⁰" if m.group("rad").lower() == "g" else "σ⁰"
        scale = _HYP3_SCALES[m.group("scale").lower()]
        return ScaleDecision(scale, f"ASF HyP3 RTC file name ({rad}, {scale})")
    meta = _metadata_scale(raster, bands)
    sample = np.asarray(raw, dtype=np.float64)
    sample = sample[np.isfinite(sample)]
    wild = None
    if raster.nodata is None and sample.size:
        for v in WILD_NODATA:
            if np.any(sample == v):
                wild = v
                sample = sample[sample != v]
                break
    if meta is not None:
        return ScaleDecision(meta[0], meta[1], wild)
    kind = np.dtype(raster.dtype).kind
    if raster.dtype == "uint8":
        return ScaleDecision(
            "levels", "8-bit image: its levels are the model's 8-bit radiometry levels (SEN1-2 chips)", wild
        )
    if kind in "ui":
        raise InputError(
            f"{raster.path}: {raster.dtype} values without calibration (raw Sentinel-1 DN?): pass the SAFE "
            "product (folder, manifest.safe or .zip) to calibrate it, or --input-scale dn "
            "--calibration-constant A to take σ⁰ = DN²/A²"
        )
    if sample.size and float(sample.min()) < 0:
        return ScaleDecision("db", "floating-point values below 0: dB", wild)
    return ScaleDecision("linear", "floating-point values ≥ 0: linear intensity", wild)


_DB = re.compile(r"(?:^|[^a-z])db(?:$|[^a-z])", re.IGNORECASE)


def _metadata_scale(raster: io.SceneInfo, bands) -> tuple[str, str] | None:
    """A scale named by band descriptions, tags or units (e.g. ``Sigma0_VV_db``, units ``dB``)."""
    try:
        tags = io.read_scale_tags(raster.path)
    except InputError:
        tags = {}
    idx = [b - 1 for b in (bands or range(1, raster.count + 1))]
    texts = [raster.descriptions[i] for i in idx if i < len(raster.descriptions) and raster.descriptions[i]]
    texts += [v for v in tags.values() if isinstance(v, str)]
    for t in texts:
        low = t.strip().lower()
        if _DB.search(low) or low in ("decibel", "decibels"):
            return "db", f"band metadata says dB ({t.strip()!r})"
    for t in texts:
        low = t.strip().lower()
        if "amplitude" in low or re.search(r"(?:^|[^a-z])amp(?:$|[^a-z])", low):
            return "amplitude", f"band metadata says amplitude ({t.strip()!r})"
    for t in texts:
        low = t.strip().lower()
        if low in ("linear", "power", "intensity") or "linear" in low:
            return "linear", f"band metadata says linear power ({t.strip()!r})"
    return None


def with_nodata(scene: io.SceneInfo, value: float) -> io.SceneInfo:
    """``scene`` with ``value`` as the nodata value of the raster it reads."""
    if isinstance(scene, SourceScene) and scene.raster is not None:
        return replace(scene, raster=replace(scene.raster, nodata=value), nodata=value)
    return replace(scene, nodata=value)


def check_explicit_scale(scene: io.SceneInfo, requested: str) -> None:
    if isinstance(scene, SourceScene) and scene.product is not None and requested != "linear":
        raise UsageError(
            f"--input-scale {requested}: a Sentinel-1 product is calibrated with its own LUTs "
            "(use --calibration sigma0|beta0|gamma0 and --no-denoise instead)"
        )
