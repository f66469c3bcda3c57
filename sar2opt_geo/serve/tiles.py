"""Web-Mercator XYZ tiles, point values and display statistics of the served rasters, by rio-tiler.

rio-tiler (a maintained tile library) opens the served COGs itself: that is the one accepted exception to
"only :mod:`sar2opt_geo.io` opens rasters" — it reads each tile from the best overview, reprojects to Web
Mercator, returns the dataset mask (so the nodata collar becomes transparent) and warps GCP-only inputs on the
fly (its ``Reader`` wraps them in a ``WarpedVRT``). Paths reach this module only from the start-up catalogue
(:mod:`sar2opt_geo.serve.catalog`), never from a request.

A SAR layer's values become linear σ⁰ by translate's own decision (:func:`scale_decision`, i.e.
:func:`sar2opt_geo.source.decide_input_scale` on the file's metadata and an overview sample): a uint8 raster
holds the 8-bit ``levels`` of the model's radiometry, an ASF HyP3 RTC file is read in the scale its name says,
a nodata value found in the data that the file does not declare is nodata. A bare integer raster, which
translate refuses (raw DN?), is refused at start-up for the map too (:func:`check_sar_layer`). The input of a
job spec that gives its ``input_scale`` (and ``calibration_constant``) is read in that scale
(:func:`declare_scale`), as the job's translate reads it.

Written by hand here: only the SAR display arithmetic (linear σ⁰ → dB, stretch, VV/VH false colour), which
is a few numpy lines over :mod:`sar2opt_geo.radiometry`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import warnings
from dataclasses import dataclass

import numpy as np

from sar2opt_geo import io
from sar2opt_geo.errors import InputError
from sar2opt_geo.radiometry import from_linear, to_linear
from sar2opt_geo.source import decide_input_scale

log = logging.getLogger(__name__)

#: Default SAR display stretch in dB (the SEN1-2 / bundled-model clip).
DB_STRETCH = (-25.0, 0.0)
#: "auto" stretch percentiles over an overview read of the scene.
AUTO_PERCENTILES = (2.0, 98.0)
#: Longest side of the overview read used for statistics.
STATS_MAX_SIZE = 1024
#: VV/VH false colour: blue channel is the VV − VH ratio in dB over this range.
RATIO_STRETCH = (0.0, 15.0)
#: Colormaps offered for single-band SAR display (rio-tiler colormap names; "gray" is plain grey).
COLORMAPS = ("gray", "viridis", "cividis", "magma", "inferno")
TILE_SIZE = 256

_EMPTY_PNG: bytes | None = None
_lock = threading.Lock()


class OutsideScene(Exception):
    """The requested tile or point does not touch the raster."""


def _reader(path: str):
    from rio_tiler.errors import NoOverviewWarning
    from rio_tiler.io import Reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoOverviewWarning)
        return Reader(path)


#: Open readers kept per thread (rasterio datasets are not shared between threads), per file version.
READERS_PER_THREAD = 16
_local = threading.local()
#: PNG compression of tiles: level 1 encodes 2–3× faster than the default 6 (the page is local).
PNG_OPTIONS = {"ZLEVEL": 1}


def _cached_reader(path: str):
    """This thread's open reader of ``path`` (reopened when the file changed, e.g. a re-run job output)."""
    import os
    from collections import OrderedDict

    cache = getattr(_local, "readers", None)
    if cache is None:
        cache = _local.readers = OrderedDict()
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size, st.st_ino)
    src = cache.get(key)
    if src is None:
        src = cache[key] = _reader(path)
        while len(cache) > READERS_PER_THREAD:
            cache.popitem(last=False)[1].close()
    else:
        cache.move_to_end(key)
    return src


@dataclass(frozen=True)
class RasterFacts:
    """What the catalogue and the page need to know about one raster (read once, at start-up)."""

    width: int
    height: int
    count: int
    dtype: str
    bounds_wgs84: tuple[float, float, float, float]  # west, south, east, north
    minzoom: int
    maxzoom: int
    band_names: tuple[str, ...]
    tags: dict
    gcps: bool
    overviews: tuple[int, ...]


def raster_facts(path: str) -> RasterFacts:
    """Size, bands, geographic bounds and useful zooms; raises ``ValueError`` for an unmappable raster."""
    from rasterio.errors import RasterioIOError

    try:
        src_ctx = _reader(path)
    except RasterioIOError as exc:
        raise ValueError(f"not a readable raster ({str(exc).splitlines()[0]})") from None
    with src_ctx as src:
        ds = src.dataset
        if src.crs is None:
            raise ValueError("no georeferencing (neither CRS+transform nor GCPs)")
        try:
            bounds = src.get_geographic_bounds(src.tms.rasterio_geographic_crs)
        except Exception as exc:  # a CRS the TMS cannot reach
            raise ValueError(f"cannot place it on a Web Mercator map ({exc})") from None
        names = tuple(d or f"band{i + 1}" for i, d in enumerate(ds.descriptions))
        return RasterFacts(
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtype=ds.dtypes[0],
            bounds_wgs84=tuple(float(v) for v in bounds),
            minzoom=int(src.minzoom),
            maxzoom=int(src.maxzoom),
            band_names=names,
            tags=dict(ds.tags()),
            gcps=_has_gcps(src),
            overviews=tuple(ds.overviews(1)) if hasattr(ds, "overviews") else (),
        )


def _has_gcps(src) -> bool:
    from rasterio.vrt import WarpedVRT

    return isinstance(src.dataset, WarpedVRT)


@dataclass(frozen=True)
class SarStyle:
    """How a SAR layer is drawn: a dB range per band, a colormap, which band(s)."""

    mode: str = "b1"  # "b1", "b2", ... one band; "false": VV/VH false colour (R=b1, G=b2, B=b1−b2 in dB)
    ranges: tuple[tuple[float, float], ...] = (DB_STRETCH,)
    colormap: str = "gray"


@dataclass(frozen=True)
class LayerScale:
    """How a SAR layer's values become linear σ⁰, and why."""

    scale: str  # linear | db | amplitude | levels | dn
    reason: str
    nodata: float | None = None  # a nodata value found in the data that the file does not declare
    constant: float | None = None  # dn: σ⁰ = DN²/A²


_declared: dict[str, LayerScale] = {}
_declared_lock = threading.Lock()


def declare_scale(path: str, scale: str, constant: float | None = None) -> None:
    """Read ``path`` in ``scale`` (a job spec's ``input_scale`` other than auto, with its
    ``calibration_constant``) instead of deciding it, as the job's translate does."""
    with _declared_lock:
        _declared[os.path.abspath(path)] = LayerScale(
            scale, "given by the job spec's input_scale", None, constant
        )
    scale_decision.cache_clear()


@functools.lru_cache(maxsize=64)
def scale_decision(path: str) -> LayerScale:
    """How the SAR raster's values become linear σ⁰, why, and any undeclared nodata value: the scale a job
    spec declared for it, else translate's decision (:func:`sar2opt_geo.source.decide_input_scale`), made
    once per raster from its metadata and an overview read. Raises :class:`~sar2opt_geo.errors.InputError`
    where translate refuses the raster."""
    with _declared_lock:
        declared = _declared.get(os.path.abspath(path))
    if declared is not None:
        return declared
    scene = io.open_scene(path, allow_ungeoreferenced=True)
    data, valid = _overview(path)
    sample = data[:, valid] if valid.any() else data.reshape(data.shape[0], -1)
    d = decide_input_scale(scene, None, sample)
    log.info("%s: input scale %s (%s)", path, d.scale, d.reason)
    if d.nodata is not None:
        log.warning("%s: value %g taken as nodata (not declared by the file)", path, d.nodata)
    return LayerScale(d.scale, d.reason, d.nodata)


def input_scale(path: str) -> str:
    """The SAR raster's scale (``linear``, ``db``, ``amplitude``, ``levels``; ``dn`` only as a job gives it),
    as translate decides it."""
    return scale_decision(path).scale


def check_sar_layer(path: str, facts: RasterFacts) -> None:
    """Refuse (``ValueError``, translate's reason) a SAR layer that translate refuses: a bare integer raster
    (raw DN?) that neither its name nor its metadata calibrates (nor a job spec's ``input_scale``). Whether
    translate refuses a raster does not depend on its values (only floats are decided by them), so this
    reads no pixels: start-up stays quick with large rasters; the full decision is made on first use."""
    if np.dtype(facts.dtype).kind not in "ui" or facts.dtype == "uint8":
        return
    with _declared_lock:
        if os.path.abspath(path) in _declared:
            return
    try:
        decide_input_scale(io.open_scene(path, allow_ungeoreferenced=True), None, np.empty((facts.count, 0)))
    except InputError as exc:
        msg = str(exc)
        raise ValueError(msg[len(path) + 2 :] if msg.startswith(f"{path}: ") else msg) from None


def _wild_nodata(data: np.ndarray, d: LayerScale) -> np.ndarray:
    """Pixels ``(h, w)`` where a band holds the undeclared nodata value of the decision (as translate)."""
    if d.nodata is None:
        return np.zeros(data.shape[1:], bool)
    return np.any(data == np.asarray(d.nodata, dtype=data.dtype), axis=0)


@functools.lru_cache(maxsize=64)
def _overview_cached(path: str):
    with _reader(path) as src:
        img = src.preview(max_size=STATS_MAX_SIZE)
    valid = ~np.logical_or.reduce(np.ma.getmaskarray(img.array), axis=0)
    return np.asarray(img.array.data), valid


_overview_lock = threading.Lock()


def _overview(path: str):
    # one overview read per raster, even when many tile requests ask for the "auto" stretch at once
    with _overview_lock:
        return _overview_cached(path)


def to_db(values: np.ndarray, scale: str, constant: float | None = None) -> np.ndarray:
    """Raster values in ``scale`` to dB (−100 dB floor for zeros); ``constant``: A of ``dn`` (DN²/A²)."""
    if scale == "db":
        return values.astype(np.float32)
    return from_linear(np.maximum(to_linear(values, scale, constant=constant), 0), "db")


@functools.lru_cache(maxsize=64)
def auto_ranges(path: str) -> tuple[tuple[float, float], ...]:
    """Per-band p2–p98 in dB from an overview read of the scene (valid pixels only)."""
    data, valid = _overview(path)
    d = scale_decision(path)
    valid = valid & ~_wild_nodata(data, d)
    db = to_db(data, d.scale, d.constant)
    out = []
    for b in range(db.shape[0]):
        v = db[b][valid & np.isfinite(db[b])]
        if v.size == 0:
            out.append(DB_STRETCH)
            continue
        lo, hi = np.percentile(v, AUTO_PERCENTILES)
        out.append((round(float(lo), 2), round(float(max(hi, lo + 0.1)), 2)))
    return tuple(out)


def _stretch(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((x - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def empty_png() -> bytes:
    """A fully transparent tile (a tile that touches the scene's bounds but holds only nodata)."""
    global _EMPTY_PNG
    with _lock:
        if _EMPTY_PNG is None:
            from rio_tiler.utils import render

            _EMPTY_PNG = render(
                np.zeros((1, TILE_SIZE, TILE_SIZE), np.uint8), mask=np.zeros((TILE_SIZE, TILE_SIZE), np.uint8)
            )
    return _EMPTY_PNG


def _read_tile(path: str, z: int, x: int, y: int, indexes=None):
    from rio_tiler.errors import TileOutsideBounds

    src = _cached_reader(path)
    try:
        img = src.tile(x, y, z, tilesize=TILE_SIZE, indexes=indexes)
    except TileOutsideBounds:
        raise OutsideScene(f"tile {z}/{x}/{y} is outside the raster") from None
    mask = np.logical_or.reduce(~np.ma.getmaskarray(img.array), axis=0)
    return np.asarray(img.array.data), mask


def render_sar(
    data: np.ndarray, valid: np.ndarray, scale: str, style: SarStyle, constant: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """SAR values ``(bands, h, w)`` → ``(uint8 (1|3, h, w), valid)`` for display (no colormap yet)."""
    db = to_db(data, scale, constant)
    finite = np.all(np.isfinite(db), axis=0)
    valid = valid & finite
    db = np.where(np.isfinite(db), db, -100.0)
    ranges = list(style.ranges) + [style.ranges[-1]] * max(0, db.shape[0] - len(style.ranges))
    if style.mode == "false" and db.shape[0] >= 2:
        r = _stretch(db[0], *ranges[0])
        g = _stretch(db[1], *ranges[1])
        b = _stretch(db[0] - db[1], *RATIO_STRETCH)
        return np.stack([r, g, b]), valid
    band = int(style.mode[1:]) - 1 if style.mode.startswith("b") and style.mode[1:].isdigit() else 0
    band = min(max(band, 0), db.shape[0] - 1)
    return _stretch(db[band], *ranges[band])[None], valid


def sar_tile(path: str, z: int, x: int, y: int, style: SarStyle, source: str | None = None) -> bytes:
    """PNG tile of a SAR layer: dB stretch, grey or a rio-tiler colormap, nodata transparent. ``source``: the
    raster whose scale decision applies when ``path`` is a copy of it (the overview COG of a large input)."""
    from rio_tiler.colormap import cmap
    from rio_tiler.utils import render

    data, valid = _read_tile(path, z, x, y)
    if not valid.any():
        return empty_png()
    d = scale_decision(source or path)
    valid = valid & ~_wild_nodata(data, d)
    if not valid.any():
        return empty_png()
    img, valid = render_sar(data, valid, d.scale, style, d.constant)
    mask = np.where(valid, 255, 0).astype(np.uint8)
    if img.shape[0] == 1 and style.colormap != "gray":
        return render(img, mask=mask, colormap=cmap.get(style.colormap), **PNG_OPTIONS)
    return render(img, mask=mask, **PNG_OPTIONS)


def rgb_tile(path: str, z: int, x: int, y: int) -> bytes:
    """PNG tile of an RGB layer (translated output, optical truth), mask → alpha."""
    from rio_tiler.utils import render

    count = _cached_reader(path).dataset.count
    data, valid = _read_tile(path, z, x, y, indexes=(1, 2, 3) if count >= 3 else (1,))
    if not valid.any():
        return empty_png()
    if data.dtype != np.uint8:
        data = np.clip(data, 0, 255).astype(np.uint8)
    return render(data, mask=np.where(valid, 255, 0).astype(np.uint8), **PNG_OPTIONS)


def tile_touches(bounds_wgs84, z: int, x: int, y: int) -> bool:
    """Whether Web-Mercator tile ``z/x/y`` overlaps a WGS84 box (as Leaflet's ``bounds`` option decides)."""
    import morecantile

    w, s, e, n = morecantile.tms.get("WebMercatorQuad").bounds(morecantile.Tile(x, y, z))
    bw, bs, be, bn = bounds_wgs84
    return w < be and e > bw and s < bn and n > bs


def point_values(path: str, lon: float, lat: float) -> list[float] | None:
    """Band values at a WGS84 point; ``None`` on nodata; raises :class:`OutsideScene` outside the raster."""
    from rio_tiler.errors import PointOutsideBounds

    try:
        pt = _cached_reader(path).point(lon, lat)
    except PointOutsideBounds:
        raise OutsideScene("point outside the raster") from None
    arr = pt.array
    if np.all(np.ma.getmaskarray(arr)):
        return None
    return [float(v) for v in np.asarray(arr.data).ravel()]


def sar_point_db(path: str, values: list[float]) -> list[float] | None:
    """A SAR layer's band values at a point (:func:`point_values`) in dB; ``None`` on the undeclared nodata
    value of its scale decision."""
    d = scale_decision(path)
    v = np.asarray(values, dtype=np.float32)[:, None]
    if d.nodata is not None and np.any(v == np.float32(d.nodata)):
        return None
    return [float(x) for x in to_db(v, d.scale, d.constant)[:, 0]]
