"""Raster input/output: the only module that opens rasters.

Reading goes through rasterio windows (a task reads only its own window plus halo; scene edges are
reflect-padded by index mapping, so any window of the *virtually padded* scene can be read exactly and
identically by whichever task asks for it). Writing goes to a tiled GeoTIFF (or Zarr store) under a
temporary name in the destination directory, which is converted to a Cloud-Optimized GeoTIFF by GDAL's COG
driver and renamed into place at the end: the final path never holds a partial file.

Written by hand here: only the reflect index mapping (numpy's ``np.pad`` semantics applied to windowed reads),
the atomic-rename bookkeeping and a small per-thread cache of open input datasets (:func:`read_window`
``keep_open``: rasterio has no dataset pool); everything else is rasterio/GDAL/rio-cogeo/zarr.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.transform import Affine
from rasterio.windows import Window

from sar2opt_geo.errors import GeoreferenceError, InputError, OutputError, ReadError

log = logging.getLogger(__name__)

#: GDAL's raster block cache in MiB. GDAL reads the size once per process, at its first use, so it is set
#: for the whole process when this module is imported (every process that reads or writes rasters imports
#: it first), not per call: the cache bounds what reads and the COG write keep, whatever the scene size.
GDAL_CACHE_MB = 32
os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))

#: GDAL configuration of every open, read and write (``info``, translate, filter, previews...): sidecar files
#: such as ``.msk`` masks and ``.ovr`` overviews are found by probing their names (``TRUE``), without listing
#: the directory (``EMPTY_DIR`` would hide them).
GDAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "TRUE", "GDAL_NUM_THREADS": "ALL_CPUS"}

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")


@dataclass(frozen=True)
class Georef:
    """Where a raster's pixels are on Earth: the one georeferencing type of the package.

    Used by reading (:class:`SceneInfo` is a ``Georef`` plus file facts), planning (AOI → pixels, bounds) and
    writing (:class:`GeoProfile` is a ``Georef`` plus output tags). Either a CRS and an affine transform, or
    ground control points in ``gcp_crs_wkt`` (raw GRD products), or nothing (pixel space). Plain strings and
    tuples, so it pickles small into every Dask task.

    A small frozen dataclass rather than odc-geo's ``GeoBox``/``GCPGeoBox``: the translate path only copies
    georeferencing from an input to an output on the same pixel grid (no resampling), GCPs must round-trip
    bit for bit through rasterio (``GroundControlPoint`` rows/cols/x/y/z), and rasterio — already the reader
    and writer — provides the CRS and transform arithmetic; odc-geo would add a second CRS type (pyproj) and
    conversions at both ends for no new capability here.
    """

    width: int
    height: int
    crs_wkt: str | None = None
    transform: tuple[float, ...] | None = None  # affine coefficients (a, b, c, d, e, f); None with GCPs only
    gcps: tuple[tuple[float, float, float, float, float], ...] = ()  # (row, col, x, y, z)
    gcp_crs_wkt: str | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def georeferenced(self) -> bool:
        return self.crs_wkt is not None and (self.transform is not None or bool(self.gcps))

    @property
    def affine(self) -> Affine | None:
        return Affine(*self.transform) if self.transform is not None else None

    @property
    def crs(self) -> CRS | None:
        return CRS.from_wkt(self.crs_wkt) if self.crs_wkt else None

    def gcp_objects(self) -> list[GroundControlPoint]:
        return [GroundControlPoint(row=r, col=c, x=x, y=y, z=z) for r, c, x, y, z in self.gcps]

    def georef(self) -> Georef:
        """Just the georeferencing (drops what a subclass adds: file facts, tags)."""
        return Georef(self.width, self.height, self.crs_wkt, self.transform, self.gcps, self.gcp_crs_wkt)

    def bounds(self, row0: int = 0, col0: int = 0, height: int | None = None, width: int | None = None):
        """``(xmin, ymin, xmax, ymax)`` of a pixel window (default: the whole grid) in the grid's CRS;
        needs an affine transform."""
        if self.transform is None:
            raise GeoreferenceError("bounds need a CRS and an affine transform (not GCPs)")
        h = self.height if height is None else height
        w = self.width if width is None else width
        a = Affine(*self.transform)
        corners = ((row0, col0), (row0 + h, col0 + w), (row0, col0 + w), (row0 + h, col0))
        xs, ys = zip(*(a @ (c, r) for r, c in corners), strict=True)
        return (min(xs), min(ys), max(xs), max(ys))


@dataclass(frozen=True, kw_only=True)
class SceneInfo(Georef):
    """What a task needs to know about an input raster, without holding its pixels (picklable): its
    georeferencing (:class:`Georef`) and the file's facts."""

    path: str
    count: int
    dtype: str
    nodata: float | None
    block_shape: tuple[int, int] = (256, 256)
    tiled: bool = False
    descriptions: tuple[str | None, ...] = ()
    has_mask: bool = False
    colorinterp: tuple[str, ...] = ()  # GDAL colour interpretation per band: gray, palette, red, ...
    # an uncompressed, stripped GeoTIFF (GDAL's default layout: gdalwarp's and gdal_translate's output):
    # read with :data:`DIRECT_IO_ENV`, see there
    direct_io: bool = False
    # a GeoTIFF of compressed strips: every window decodes whole image rows (see :func:`tiled_copy`)
    compressed_strips: bool = False
    # where the pixels are read from when not ``path``: a tiled copy of it (:func:`tiled_copy`)
    read_path: str | None = None

    def band_names(self) -> list[str]:
        names = []
        for i, d in enumerate(self.descriptions or (None,) * self.count):
            names.append(d if d else f"band{i + 1}")
        return names

    def bands_named(self, band: str) -> list[int]:
        """0-based indexes of the bands named ``band`` (any case): exactly, else as a word of the name (the
        VV of ``Sigma0_VV_db``)."""
        import re

        names = [n.upper() for n in self.band_names()]
        exact = [i for i, n in enumerate(names) if n == band.upper()]
        return exact or [i for i, n in enumerate(names) if band.upper() in re.split(r"[^A-Z0-9]+", n)]


# ------------------------------------------------------------------------------------ CRS arithmetic
# For modules that must not import rasterio themselves (synth, training pairs, AOIs).


def crs_wkt(user_input) -> str:
    """WKT of a CRS given as ``EPSG:n``, WKT, PROJ string or an EPSG integer (UsageError otherwise)."""
    from rasterio.errors import CRSError

    from sar2opt_geo.errors import UsageError

    try:
        return CRS.from_user_input(user_input).to_wkt()
    except CRSError as exc:
        raise UsageError(f"invalid CRS {user_input!r}: {exc}") from None


def same_crs(a_wkt: str | None, b_wkt: str | None) -> bool:
    return CRS.from_wkt(a_wkt) == CRS.from_wkt(b_wkt) if a_wkt and b_wkt else a_wkt == b_wkt


def transform_points(src_wkt: str, dst_wkt: str, xs, ys) -> tuple[list[float], list[float]]:
    """Coordinates reprojected from one CRS to another (PROJ via rasterio)."""
    from rasterio.warp import transform

    return transform(CRS.from_wkt(src_wkt), CRS.from_wkt(dst_wkt), list(xs), list(ys))


def transform_bounds(src_wkt: str, dst_wkt: str, bounds, densify_pts: int = 21):
    """Bounds reprojected with ``densify_pts`` points along each edge."""
    from rasterio.warp import transform_bounds as _tb

    return _tb(CRS.from_wkt(src_wkt), CRS.from_wkt(dst_wkt), *bounds, densify_pts=densify_pts)


def rasterize_window(geometry: dict, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
    """Boolean mask of the pixels of a window whose centres lie inside a GeoJSON-like ``geometry`` given in
    pixel coordinates (x = column, y = row) — GDAL's rasterizer (AOIs)."""
    from rasterio.features import geometry_mask

    shape = (row1 - row0, col1 - col0)
    return geometry_mask([geometry], out_shape=shape, transform=Affine.translation(col0, row0), invert=True)


def open_scene(path: str | os.PathLike, *, allow_ungeoreferenced: bool = False) -> SceneInfo:
    """Open ``path`` once to read its metadata, validating what the pipeline needs."""
    path = str(path)
    if not os.path.exists(path) and "://" not in path:
        raise InputError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.Env(**GDAL_ENV), rasterio.open(path) as src:
                return _scene_info(src, path, allow_ungeoreferenced)
    except RasterioIOError as exc:
        raise InputError(f"{path}: not a readable raster ({_first_line(exc)})") from None


def _scene_info(src, path: str, allow_ungeoreferenced: bool) -> SceneInfo:
    dtypes = set(src.dtypes)
    if len(dtypes) != 1:
        raise InputError(f"{path}: bands of mixed data types {sorted(dtypes)} are not supported")
    dtype = src.dtypes[0]
    if dtype.startswith("complex") or dtype.startswith("c"):
        raise InputError(
            f"{path}: complex data type {dtype} (SLC?) is not supported; use detected GRD intensity "
            "or amplitude"
        )
    if dtype not in SUPPORTED_DTYPES:
        raise InputError(
            f"{path}: data type {dtype} is not supported (supported: {', '.join(SUPPORTED_DTYPES)})"
        )
    gcps, gcp_crs = src.gcps
    has_transform = src.transform != Affine.identity() and src.crs is not None
    crs = src.crs if src.crs is not None else gcp_crs
    if not has_transform and not gcps and not allow_ungeoreferenced:
        raise GeoreferenceError(
            f"{path}: no georeferencing (neither CRS+transform nor GCPs); "
            "pass --allow-ungeoreferenced to process it in pixel space"
        )
    block_h, block_w = src.block_shapes[0]
    tiled = bool(src.profile.get("tiled", False)) or (block_h > 1 and block_w < src.width)
    has_mask = any(
        rasterio.enums.MaskFlags.per_dataset in flags and rasterio.enums.MaskFlags.nodata not in flags
        for flags in src.mask_flag_enums
    )
    return SceneInfo(
        path=path,
        width=src.width,
        height=src.height,
        count=src.count,
        dtype=dtype,
        nodata=src.nodata,
        crs_wkt=crs.to_wkt() if crs is not None else None,
        transform=tuple(src.transform)[:6] if has_transform else None,
        gcps=tuple((g.row, g.col, g.x, g.y, g.z or 0.0) for g in gcps)
        if (gcps and not has_transform)
        else (),
        gcp_crs_wkt=gcp_crs.to_wkt() if (gcps and gcp_crs is not None and not has_transform) else None,
        block_shape=(int(block_h), int(block_w)),
        tiled=tiled,
        descriptions=tuple(src.descriptions),
        has_mask=has_mask,
        colorinterp=tuple(ci.name for ci in src.colorinterp),
        direct_io=src.driver == "GTiff" and not tiled and src.compression is None,
        compressed_strips=src.driver == "GTiff" and not tiled and src.compression is not None,
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _gdal_cause(exc: BaseException) -> str:
    """The most specific GDAL message of a rasterio error chain (rasterio's own says "see previous
    exception"), on one line."""
    msgs = []
    while exc is not None:
        if str(exc).strip():
            msgs.append(_first_line(exc))
        exc = exc.__cause__ or exc.__context__
    specific = [m for m in msgs if "previous exception" not in m]
    return (specific or msgs or ["read failed"])[0]


def read_scale_tags(path: str | os.PathLike) -> dict[str, str]:
    """Dataset tags, per-band tags and band units of a raster (``units_N``): what input-scale detection
    reads (e.g. ``Sigma0_VV_db``, units ``dB``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.Env(**GDAL_ENV), rasterio.open(str(path)) as src:
                out = {k: str(v) for k, v in src.tags().items()}
                for i in range(1, src.count + 1):
                    out.update({f"{k}_{i}": str(v) for k, v in src.tags(i).items()})
                    if src.units and src.units[i - 1]:
                        out[f"units_{i}"] = src.units[i - 1]
                return out
    except RasterioIOError as exc:
        raise InputError(f"{path}: not a readable raster ({_first_line(exc)})") from None


def reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Map any integer indices into ``[0, n)`` the way ``np.pad(mode="reflect")`` extends an axis."""
    idx = np.asarray(idx, dtype=np.int64)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m < n, m, period - m)


#: How many rasters one thread keeps open for :func:`read_window` ``(keep_open=True)`` (least recently used
#: closed first): a worker thread of a long-lived Dask worker that reads many scenes holds a few handles.
READERS_PER_THREAD = 4


class _ThreadReaders(threading.local):
    """This thread's open datasets, by file identity (path, inode, size, mtime: a file rewritten in place is
    opened again), and the process they were opened in (a forked child never uses its parent's handles)."""

    def __init__(self):
        self.pid = os.getpid()
        self.handles: OrderedDict = OrderedDict()  # file key -> (dataset, lock held while it reads)


_READERS = _ThreadReaders()
# every handle open in this process, all threads, with its lock: what close_readers closes
_OPEN_READERS: dict[int, tuple] = {}
_OPEN_LOCK = threading.Lock()


def _file_key(path: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError:  # a URL or /vsi path: by name only
        return (path,)
    return (path, st.st_ino, st.st_size, st.st_mtime_ns)


def _reader(path: str, open_env: dict | None = None) -> tuple:
    """``(dataset, lock)``: this thread's open dataset of ``path`` (opened on first use, with ``open_env``
    added to :data:`GDAL_ENV`, and kept for the next window) and the lock its reads hold, so that
    :func:`close_readers` never closes it mid-read."""
    cache = _READERS
    if cache.pid != os.getpid():  # inherited through fork: the parent's handles are not ours to use
        cache.pid, cache.handles = os.getpid(), OrderedDict()
    key = _file_key(path)
    entry = cache.handles.get(key)
    if entry is not None and not entry[0].closed:
        cache.handles.move_to_end(key)
        return entry
    with rasterio.Env(**GDAL_ENV, **(open_env or {})):
        src = rasterio.open(path)
    entry = (src, threading.Lock())
    cache.handles[key] = entry
    with _OPEN_LOCK:
        _OPEN_READERS[id(src)] = entry
    while len(cache.handles) > READERS_PER_THREAD:
        _, old = cache.handles.popitem(last=False)
        _close_reader(old)
    return entry


def _close_reader(entry: tuple) -> None:
    src, lock = entry
    with _OPEN_LOCK:
        _OPEN_READERS.pop(id(src), None)
    with lock, contextlib.suppress(Exception):
        src.close()


def _read_kept_open(path: str, read, open_env: dict | None = None):
    """``read(dataset)`` through this thread's open dataset of ``path``, holding its lock."""
    while True:
        src, lock = _reader(path, open_env)
        with lock:
            if not src.closed:  # else close_readers got there between the lookup and the lock: open again
                return read(src)


def _forget_reader(path: str) -> None:
    """Close this thread's handle of ``path`` (after a read error: the next read opens the file again)."""
    for key in [k for k in _READERS.handles if k[0] == path]:
        _close_reader(_READERS.handles.pop(key))


def close_readers() -> int:
    """Close every dataset :func:`read_window` kept open in this process (all threads); the number closed.
    A read in progress finishes first (each handle's lock); a thread that reads again afterwards opens the
    file anew. A translate run calls it at its end, here and on every worker."""
    with _OPEN_LOCK:
        entries = list(_OPEN_READERS.values())
        _OPEN_READERS.clear()
    for src, lock in entries:
        with lock, contextlib.suppress(Exception):
            src.close()
    return len(entries)


def open_readers() -> int:
    """How many datasets :func:`read_window` keeps open in this process (tests)."""
    with _OPEN_LOCK:
        return sum(1 for src, _ in _OPEN_READERS.values() if not src.closed)


#: GDAL configuration of opening an uncompressed, stripped TIFF: a Sentinel-1 measurement TIFF
#: (:func:`read_band`) or a GeoTIFF input in GDAL's default layout (:attr:`SceneInfo.direct_io`). Real GRD
#: measurement TIFFs are uncompressed with one image row per strip (the S1A product in ``shared/s1-products``:
#: 872 232 364 bytes for 26 144 × 16 676 uint16 samples), and so is any wide GeoTIFF written without
#: ``TILED=YES`` (GDAL's strips are ~8 KB), so through the block cache every window reads whole rows: 26 144
#: samples a row for a 1100-column window, more than the 32 MiB cache holds for one block's rows.
#: ``GTIFF_DIRECT_IO`` (read at open time) reads only the window's samples of each row instead; GDAL ignores
#: it for compressed files, such as the synthetic products' tiled ones (``scripts/bench_reads.py``).
DIRECT_IO_ENV = {"GTIFF_DIRECT_IO": "YES"}


def read_band(path: str, window, band: int = 1, *, keep_open: bool = False) -> np.ndarray:
    """Raw values of ``band`` in ``window`` (a rasterio ``Window`` inside the raster) of the raster at
    ``path``: a Sentinel-1 product's measurement TIFF, which :mod:`sar2opt_geo.sentinel1` calibrates itself
    (opened with :data:`DIRECT_IO_ENV`). ``keep_open``: through this thread's open dataset of the file, as
    :func:`read_window` (the open is paid once per thread instead of once per window; inside a zip, a
    deflated member is then not decompressed from its start at every window). Raises rasterio's errors (the
    caller names the product)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        if not keep_open:
            with rasterio.Env(**GDAL_ENV, **DIRECT_IO_ENV), rasterio.open(path) as src:
                return src.read(band, window=window)

        def read(src):
            with rasterio.Env(**GDAL_ENV):
                return src.read(band, window=window)

        try:
            return _read_kept_open(path, read, DIRECT_IO_ENV)
        except rasterio.errors.RasterioError:
            _forget_reader(path)  # the next read opens the file again
            raise


def read_window(
    scene: SceneInfo,
    row0: int,
    row1: int,
    col0: int,
    col1: int,
    bands: tuple[int, ...] | None = None,
    *,
    keep_open: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Read rows ``[row0, row1)`` and columns ``[col0, col1)`` of the reflect-padded scene.

    Returns ``(data, valid)``: float32 ``(bands, h, w)`` and a boolean ``(h, w)`` mask that is False where
    any band is nodata, NaN/inf or masked by the dataset mask. Indices may lie outside the scene; they are
    reflected back inside (numpy ``reflect`` semantics), so the result does not depend on who reads it.

    ``keep_open``: read through this thread's open dataset of the file (see :func:`close_readers`) instead
    of opening and closing it for this window: the tiles of the source that neighbouring windows share stay
    decoded in GDAL's block cache, and the open itself is paid once per thread (issue #15: the reads of a
    3072² scene's blocks took about half the CPU time).
    """
    rows = reflect_index(np.arange(row0, row1), scene.height)
    cols = reflect_index(np.arange(col0, col1), scene.width)
    r_lo, r_hi = int(rows.min()), int(rows.max()) + 1
    c_lo, c_hi = int(cols.min()), int(cols.max()) + 1
    window = Window(c_lo, r_lo, c_hi - c_lo, r_hi - r_lo)
    indexes = list(bands) if bands else list(range(1, scene.count + 1))
    open_env = DIRECT_IO_ENV if scene.direct_io else {}
    path = scene.read_path or scene.path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            if keep_open:

                def read(src):
                    with rasterio.Env(**GDAL_ENV):
                        masks = src.read_masks(indexes[0], window=window) if scene.has_mask else None
                        return src.read(indexes, window=window), masks

                raw, mask = _read_kept_open(path, read, open_env)
            else:
                with rasterio.Env(**GDAL_ENV, **open_env), rasterio.open(path) as src:
                    raw = src.read(indexes, window=window)
                    mask = src.read_masks(indexes[0], window=window) if scene.has_mask else None
    except (RasterioIOError, rasterio.errors.RasterioError) as exc:
        if keep_open:
            _forget_reader(path)
        raise ReadError(
            f"{scene.path}: read failed in rows {r_lo}-{r_hi - 1}, columns {c_lo}-{c_hi - 1} "
            f"(truncated or corrupt file?): {_gdal_cause(exc)}"
        ) from None
    data = raw.astype(np.float32, copy=False)
    valid = np.all(np.isfinite(data), axis=0)
    if scene.nodata is not None and not (isinstance(scene.nodata, float) and math.isnan(scene.nodata)):
        valid &= np.all(raw != scene.nodata, axis=0)
    if mask is not None:
        valid &= mask > 0
    if row0 >= 0 and col0 >= 0 and row1 <= scene.height and col1 <= scene.width:
        return np.ascontiguousarray(data), valid  # inside the scene: nothing reflected, no gather (issue #15)
    sel = np.ix_(rows - r_lo, cols - c_lo)
    data = data[(slice(None),) + sel]
    valid = valid[sel]
    return np.ascontiguousarray(data), np.ascontiguousarray(valid)


# ----------------------------------------------------------------------------- copies of slow inputs

#: A GeoTIFF of compressed strips at least this wide is copied once into tiled form (:func:`tiled_copy`).
TILED_COPY_MIN_WIDTH = 2048
#: Tile side of that copy.
TILED_COPY_BLOCK = 512
#: Free bytes a copy beside the output leaves on its disk.
COPY_HEADROOM = 64 << 20


def human_bytes(nbytes: int) -> str:
    """``1.74 GB``, ``2.8 MB``: a size for messages."""
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def room_for(folder: str | os.PathLike, nbytes: int) -> tuple[bool, int]:
    """Whether ``nbytes`` fit on ``folder``'s disk (the folder, or its nearest existing parent), keeping
    :data:`COPY_HEADROOM` free; and the free bytes."""
    where = Path(folder)
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    return free >= nbytes + COPY_HEADROOM, free


def wants_tiled_copy(scene: SceneInfo) -> bool:
    """A GeoTIFF of compressed strips wider than :data:`TILED_COPY_MIN_WIDTH`: read window by window, each
    window decodes whole image rows again (a 26 144-column float32 σ⁰ in DEFLATE strips: ~0.4 s of CPU a
    1100² window, against ~5 ms from a tiled copy; ``scripts/bench_reads.py``)."""
    return scene.compressed_strips and scene.read_path is None and scene.width >= TILED_COPY_MIN_WIDTH


def tiled_copy_bytes(scene: SceneInfo) -> int:
    """The size of :func:`tiled_copy`'s file: every band uncompressed, and the mask."""
    itemsize = np.dtype(scene.dtype).itemsize
    return scene.width * scene.height * (scene.count * itemsize + (1 if scene.has_mask else 0))


def tiled_copy(scene: SceneInfo, folder: str | os.PathLike) -> SceneInfo:
    """``scene`` read from an uncompressed, tiled copy of its file written once into ``folder`` (created; the
    caller removes it), its metadata unchanged (``read_path``). GDAL's CreateCopy decodes each strip once and
    copies the per-dataset mask with the pixels. When ``folder``'s disk lacks room, ``scene`` itself, with a
    warning: it is read in place, more slowly."""
    need = tiled_copy_bytes(scene)
    ok, free = room_for(folder, need)
    if not ok:
        log.warning(
            "%s: %s free beside the output, %s needed for a tiled copy of its compressed strips: reading it "
            "in place, which decodes whole image rows again for every window (much slower)",
            scene.path,
            human_bytes(free),
            human_bytes(need),
        )
        return scene
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"tiled-{Path(scene.path).name}"
    if dest.suffix.lower() not in (".tif", ".tiff"):
        dest = dest.with_name(dest.name + ".tif")
    part = dest.with_name(dest.name + ".part")
    log.info(
        "%s: copying its compressed strips into tiled form beside the output (%s), once: read in place, "
        "every window would decode whole image rows again",
        scene.path,
        human_bytes(need),
        extra={"notice": True},
    )
    t0 = time.perf_counter()
    try:
        with rasterio.Env(**GDAL_ENV, GDAL_TIFF_INTERNAL_MASK=True):
            rasterio.shutil.copy(
                scene.path,
                str(part),
                driver="GTiff",
                tiled=True,
                blockxsize=TILED_COPY_BLOCK,
                blockysize=TILED_COPY_BLOCK,
                bigtiff="IF_SAFER",
            )
        os.replace(part, dest)
    except (RasterioIOError, rasterio.errors.RasterioError) as exc:
        raise ReadError(
            f"{scene.path}: could not be copied into tiled form at {dest}: {_gdal_cause(exc)}"
        ) from None
    except OSError as exc:
        raise OutputError(f"{dest}: could not be written ({exc})") from None
    finally:
        remove_path(part)
    log.info("%s: copied into tiled form (%s) in %.1f s", scene.path, dest, time.perf_counter() - t0)
    return replace(scene, read_path=str(dest))


# --------------------------------------------------------------------------------------------- writing


def check_output_path(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing output without ``overwrite`` and an unwritable directory, before any work."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists (pass --overwrite to replace it)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: directory {parent} is not writable")
    if path.exists() and path.is_dir() and path.suffix.lower() not in (".zarr",):
        raise OutputError(f"{path}: is a directory")
    return path


def temporary_sibling(path: str | os.PathLike, tag: str = "tmp") -> Path:
    """A unique hidden name beside ``path`` (same filesystem, so the final rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}")


def remove_path(path: str | os.PathLike) -> None:
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    aux = Path(str(path) + ".aux.xml")
    with contextlib.suppress(FileNotFoundError):
        aux.unlink()


def replace_path(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move ``tmp`` to ``final`` atomically (a directory store replaces an old one in two renames)."""
    tmp, final = Path(tmp), Path(final)
    if final.is_dir() and not final.is_symlink():
        old = temporary_sibling(final, "old")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


@dataclass(frozen=True)
class GeoProfile(Georef):
    """What an output is written with: the input's :class:`Georef` (same pixel grid) plus its tags."""

    tags: dict = field(default_factory=dict)

    @classmethod
    def from_scene(cls, scene: Georef, tags: dict | None = None) -> GeoProfile:
        g = scene.georef()
        return cls(g.width, g.height, g.crs_wkt, g.transform, g.gcps, g.gcp_crs_wkt, tags=dict(tags or {}))


class GeoTiffWriter:
    """A tiled GeoTIFF written window by window (the staging file for a COG, or a plain output).

    Use as a context manager; ``write(row0, col0, data, valid)`` stores a block and its mask. Not
    thread-safe: one process writes (the client, or a single writer task).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        geo: GeoProfile,
        count: int,
        dtype: str,
        *,
        nodata: float | None = None,
        internal_mask: bool = False,
        blocksize: int = 512,
        compress: str = "deflate",  # "none" for staging files
        band_descriptions: list[str] | None = None,
    ):
        self.path = str(path)
        self.geo = geo
        self.internal_mask = internal_mask
        profile = dict(
            driver="GTiff",
            width=geo.width,
            height=geo.height,
            count=count,
            dtype=dtype,
            tiled=True,
            blockxsize=blocksize,
            blockysize=blocksize,
            BIGTIFF="IF_SAFER",
        )
        if compress != "none":
            profile["compress"] = compress
        if nodata is not None:
            profile["nodata"] = nodata
        if dtype == "uint8" and count == 3:
            profile["photometric"] = "RGB"
        if geo.transform is not None:
            profile["crs"] = CRS.from_wkt(geo.crs_wkt) if geo.crs_wkt else None
            profile["transform"] = Affine(*geo.transform)
        self._profile = profile
        self._descriptions = band_descriptions
        self._env = None
        self._dst = None

    def __enter__(self) -> GeoTiffWriter:
        self._env = rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, **GDAL_ENV)
        self._env.__enter__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._dst = rasterio.open(self.path, "w", **self._profile)
        if self.geo.gcps:
            crs = CRS.from_wkt(self.geo.gcp_crs_wkt) if self.geo.gcp_crs_wkt else None
            gcps = [GroundControlPoint(row=r, col=c, x=x, y=y, z=z) for r, c, x, y, z in self.geo.gcps]
            self._dst.gcps = (gcps, crs)
        if self.geo.tags:
            self._dst.update_tags(**{k: _tag_value(v) for k, v in self.geo.tags.items()})
        if self._descriptions:
            for i, d in enumerate(self._descriptions, start=1):
                self._dst.set_band_description(i, d)
        return self

    def write(self, row0: int, col0: int, data: np.ndarray, valid: np.ndarray | None = None) -> None:
        _, h, w = data.shape
        window = Window(col0, row0, w, h)
        self._dst.write(data, window=window)
        if self.internal_mask and valid is not None:
            self._dst.write_mask(np.multiply(valid, np.uint8(255), dtype=np.uint8), window=window)

    def __exit__(self, *exc) -> None:
        if self._env is None:  # never entered (or already closed)
            return
        try:
            if self._dst is not None:
                self._dst.close()
                self._dst = None
        finally:
            env, self._env = self._env, None
            env.__exit__(*exc)


def _tag_value(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


#: GDAL COG creation options of the final outputs. DEFLATE (readable everywhere) at level 1 with the
#: horizontal predictor, compressed on every core: measured on a 3072² RGB output of the bundled model
#: (GDAL 3.10, 2 loaded cores, best of 2): DEFLATE level 6 (GDAL's default) 1.67 s / 13.5 MiB, level 1
#: 1.27 s / 13.4 MiB, level 6 on one thread 1.81 s, without predictor 1.33 s / 17.5 MiB, LZW 1.80 s /
#: 15.1 MiB, ZSTD level 1 1.03 s / 12.8 MiB (fastest, but not every reader decodes ZSTD TIFFs).
COG_OPTIONS = {
    "COMPRESS": "DEFLATE",
    "LEVEL": 1,
    "PREDICTOR": "YES",
    "OVERVIEWS": "IGNORE_EXISTING",
    "OVERVIEW_RESAMPLING": "AVERAGE",
    "RESAMPLING": "AVERAGE",
    "BIGTIFF": "IF_SAFER",
    "NUM_THREADS": "ALL_CPUS",
}

#: GDAL configuration of the COG step. The COG driver first writes the overviews of the mask and of the
#: imagery into temporary TIFFs, compressed with ZSTD (level 9) unless ``COG_TMP_COMPRESSION`` names another
#: codec (a configuration option of GDAL's COG driver, cogdriver.cpp), then copies them into the COG,
#: decompressing them again. PACKBITS (run-length) is almost free and GDAL builds the overviews the same
#: way, level from level: the COG is byte-identical. Measured on a 3072² RGB output with a nodata collar
#: (GDAL 3.10, 2 cores, quiet): CreateCopy 0.61 CPU-s with ZSTD, 0.37 with PACKBITS, 0.45 with LZW, 0.56
#: with DEFLATE; ``NONE`` (0.42) makes GDAL compute every level from full resolution instead, which
#: changes the overview pixels (issue #15).
COG_ENV = {**GDAL_ENV, "GDAL_TIFF_INTERNAL_MASK": True, "COG_TMP_COMPRESSION": "PACKBITS"}


def staging_to_cog(
    staging: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    blocksize: int = 512,
    overviews: list | None = None,
    gcps: tuple = (),
) -> None:
    """Convert a tiled staging GeoTIFF into a Cloud-Optimized GeoTIFF with overviews (GDAL COG driver,
    :data:`COG_OPTIONS`).

    ``overviews``: the overview levels already computed (:mod:`sar2opt_geo.pyramid`), one staging GeoTIFF
    each (half resolution first, with internal masks): GDAL copies them in instead of computing its own
    (the imagery's and the mask's, through a VRT of the staging file that lists them as explicit
    overviews). Without them GDAL builds the overviews (AVERAGE) from the staging file. ``gcps``: the
    staging file's GCPs as :class:`Georef` holds them, restored at full precision in that VRT (GDAL writes a
    VRT's GCPs rounded: lines and pixels to 4 decimals, coordinates to 13 digits).

    The internal mask is carried over (GDAL builds mask overviews too). The result validates with
    ``rio cogeo validate``.
    """
    src, options = str(staging), dict(COG_OPTIONS)
    vrt = Path(f"{staging}.vrt") if overviews else None
    try:
        if vrt is not None:
            _vrt_with_overviews(staging, vrt, [Path(o) for o in overviews], gcps)
            src, options["OVERVIEWS"] = str(vrt), "FORCE_USE_EXISTING"
        with rasterio.Env(**COG_ENV):
            rasterio.shutil.copy(src, str(dst), driver="COG", BLOCKSIZE=blocksize, **options)
    finally:
        if vrt is not None:
            remove_path(vrt)


def _vrt_with_overviews(staging: str | os.PathLike, vrt: Path, levels: list[Path], gcps: tuple = ()) -> None:
    """A VRT of ``staging`` (GDAL writes it: georeferencing, GCPs, tags, band descriptions, mask) whose
    bands and mask band list the files ``levels`` (same folder) as their overviews, and whose GCPs are
    ``gcps`` ``(row, col, x, y, z)`` written exactly (``repr`` of each double)."""
    import xml.etree.ElementTree as ET

    with rasterio.Env(**GDAL_ENV):
        rasterio.shutil.copy(str(staging), str(vrt), driver="VRT")
    tree = ET.parse(vrt)
    root = tree.getroot()
    bands = root.findall("VRTRasterBand")
    masks = root.findall("MaskBand/VRTRasterBand")
    if len(masks) != 1:
        raise OutputError(f"{staging}: the staging file has no per-dataset mask to give overviews to")
    written = root.findall("GCPList/GCP")
    if len(written) != len(gcps):
        raise OutputError(f"{staging}: {len(written)} GCPs in its VRT, {len(gcps)} expected")
    for el, (row, col, x, y, z) in zip(written, gcps, strict=True):
        el.attrib.update(Line=repr(float(row)), Pixel=repr(float(col)), X=repr(float(x)), Y=repr(float(y)))
        el.set("Z", repr(float(z)))
    for band, source_band in [(b, b.get("band")) for b in bands] + [(masks[0], "mask,1")]:
        for level in levels:
            ovr = ET.SubElement(band, "Overview")
            ET.SubElement(ovr, "SourceFilename", relativeToVRT="1").text = level.name
            ET.SubElement(ovr, "SourceBand").text = source_band
    tree.write(vrt)


def validate_cog(path: str | os.PathLike) -> tuple[bool, list[str], list[str]]:
    """``(is_valid, errors, warnings)`` as ``rio cogeo validate`` reports them."""
    from rio_cogeo.cogeo import cog_validate

    return cog_validate(str(path), quiet=True)


def read_raster(path: str | os.PathLike, masked: bool = False):
    """Read a whole (small) raster: ``(data, profile-dict)``; with ``masked`` also the dataset mask.

    For tests, previews and tile-sized files only: the pipeline never calls this on a scene.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.Env(**GDAL_ENV), rasterio.open(str(path)) as src:
                data = src.read()
                meta = {
                    "crs": src.crs,
                    "transform": src.transform,
                    "gcps": src.gcps,
                    "nodata": src.nodata,
                    "tags": src.tags(),
                    "width": src.width,
                    "height": src.height,
                    "count": src.count,
                    "dtype": src.dtypes[0],
                    "overviews": src.overviews(1),
                    "descriptions": src.descriptions,
                }
                if masked:
                    meta["mask"] = src.dataset_mask()
        except RasterioIOError as exc:
            raise InputError(f"{path}: not a readable raster ({_first_line(exc)})") from None
    return data, meta


def read_overview(path: str | os.PathLike, max_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """A decimated read of a raster (uses overviews when present) for previews: ``(data, mask)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.Env(**GDAL_ENV), rasterio.open(str(path)) as src:
            f = max(1, math.ceil(max(src.width, src.height) / max_size))
            shape = (src.count, max(1, src.height // f), max(1, src.width // f))
            data = src.read(out_shape=shape, resampling=rasterio.enums.Resampling.average)
            mask = src.dataset_mask(out_shape=shape[1:])
    return data, mask


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write a ``(3|1, h, w)`` or ``(h, w)`` uint8 array as PNG (previews, sample grids, synthetic pairs)."""
    from PIL import Image

    arr = np.asarray(rgb)
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    Image.fromarray(np.ascontiguousarray(arr.astype(np.uint8))).save(str(path))


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Read an 8-bit PNG/JPEG tile as ``(channels, h, w)`` uint8; raises InputError when corrupt."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(str(path)) as im:
            im.load()
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({_first_line(exc)})") from None
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = np.moveaxis(arr, -1, 0)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr


# ------------------------------------------------------------------------------ block store (Zarr)
# Output blocks of ``filter`` computed by Dask tasks (threads or worker processes, possibly on other machines
# sharing the filesystem) are written into a Zarr intermediate whose chunks are exactly the blocks: concurrent
# writes never touch the same chunk. The client then streams it into the final COG (:func:`store_to_cog`).
# ``translate`` keeps its finished blocks as plain array files in its work state instead (see
# sar2opt_geo.workstate: uint8 blocks, no codec — measured cheaper than this store).


def create_block_store(
    path: str | os.PathLike,
    height: int,
    width: int,
    chunk: int,
    attrs: dict,
    *,
    bands: int = 3,
    dtype: str = "uint8",
) -> None:
    """A block store for ``bands`` × height × width values (the array keeps the historical name ``rgb``)."""
    import zarr

    g = zarr.open_group(str(path), mode="w", attributes=attrs)
    g.create_array(
        "rgb", shape=(bands, height, width), chunks=(bands, chunk, chunk), dtype=dtype, fill_value=0
    )
    g.create_array("valid", shape=(height, width), chunks=(chunk, chunk), dtype="bool", fill_value=False)


def write_store_block(
    path: str | os.PathLike, row0: int, col0: int, rgb: np.ndarray, valid: np.ndarray
) -> None:
    import zarr

    g = zarr.open_group(str(path), mode="r+")
    h, w = valid.shape
    g["rgb"][:, row0 : row0 + h, col0 : col0 + w] = rgb
    g["valid"][row0 : row0 + h, col0 : col0 + w] = valid


def read_store_window(path: str | os.PathLike, row0: int, row1: int, col0: int, col1: int):
    import zarr

    g = zarr.open_group(str(path), mode="r")
    return np.asarray(g["rgb"][:, row0:row1, col0:col1]), np.asarray(g["valid"][row0:row1, col0:col1])


class CogAssembler:
    """Finished blocks → staging GeoTIFF (uncompressed, + internal mask) → COG.

    Blocks can be written while others are still being computed (the client writes each block as its task
    finishes), so writing the output overlaps the computation; :meth:`finish` then builds the COG with
    overviews. Not thread-safe: the client thread writes the blocks.

    ``overview_levels`` > 0: every block also brings its part of that many overview levels
    (:func:`sar2opt_geo.pyramid.block_pyramid`), written into one staging GeoTIFF per level, and GDAL copies
    them into the COG instead of computing them (:func:`staging_to_cog`). If a block comes without them
    (a work state written by an older version, resumed), GDAL computes the overviews as before.
    """

    def __init__(
        self,
        dst,
        geo: GeoProfile,
        count: int,
        dtype: str,
        *,
        band_descriptions=None,
        nodata=None,
        overview_levels: int = 0,
    ):
        if band_descriptions is None and count == 3 and dtype == "uint8":
            band_descriptions = ["red", "green", "blue"]
        self.dst, self.geo = dst, geo
        self.staging = temporary_sibling(dst, "staging")
        self._writer = GeoTiffWriter(
            self.staging,
            geo,
            count,
            dtype,
            internal_mask=True,
            band_descriptions=band_descriptions,
            nodata=nodata,
            compress="none",
        )
        self._levels: list[GeoTiffWriter] = []
        for k in range(1, overview_levels + 1):
            h, w = (math.ceil(n / 2**k) for n in (geo.height, geo.width))
            self._levels.append(
                GeoTiffWriter(
                    f"{self.staging}.ovr{k}",
                    GeoProfile(w, h),
                    count,
                    dtype,
                    internal_mask=True,
                    compress="none",
                )
            )
        self.overviews_complete = overview_levels > 0  # every block so far brought its overview levels
        self._closed = False

    def __enter__(self) -> CogAssembler:
        try:
            for w in [self._writer, *self._levels]:
                w.__enter__()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def write(self, row0: int, col0: int, data: np.ndarray, valid: np.ndarray, overviews=None) -> None:
        """Block ``data`` ``(count, h, w)`` and its validity at ``(row0, col0)``; ``overviews``: its levels
        ``[(data, valid), ...]`` (half resolution first), when the assembler was made with them."""
        self._writer.write(row0, col0, data, valid)
        if not self.overviews_complete:
            return
        if overviews is None or len(overviews) < len(self._levels):
            self.overviews_complete = False
            return
        for k, (w, (d, v)) in enumerate(zip(self._levels, overviews[: len(self._levels)], strict=True), 1):
            w.write(row0 >> k, col0 >> k, d, v)

    def finish(self) -> None:
        self._close()
        levels = [w.path for w in self._levels] if self.overviews_complete else None
        staging_to_cog(self.staging, self.dst, overviews=levels, gcps=self.geo.gcps)

    def _close(self, *exc) -> None:
        """Close every staging file (once), then raise the first failure."""
        if self._closed:
            return
        self._closed = True
        errors = []
        for w in reversed([self._writer, *self._levels]):  # each writer entered a rasterio.Env: nested
            try:
                w.__exit__(*(exc or (None, None, None)))
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def __exit__(self, *exc) -> None:
        try:
            self._close(*exc)
        finally:
            for path in [self.staging] + [w.path for w in self._levels]:
                remove_path(path)


def store_to_cog(
    store: str | os.PathLike,
    dst: str | os.PathLike,
    geo: GeoProfile,
    *,
    chunk: int,
    band_descriptions: list[str] | None = None,
    nodata: float | None = None,
) -> None:
    """Stream a whole Zarr block store (:func:`create_block_store`) into a COG at ``dst``."""
    import zarr

    arr = zarr.open_group(str(store), mode="r")["rgb"]
    count, dtype = arr.shape[0], str(arr.dtype)
    with CogAssembler(dst, geo, count, dtype, band_descriptions=band_descriptions, nodata=nodata) as cog:
        for r0 in range(0, geo.height, chunk):
            for c0 in range(0, geo.width, chunk):
                r1, c1 = min(r0 + chunk, geo.height), min(c0 + chunk, geo.width)
                data, valid = read_store_window(store, r0, r1, c0, c1)
                cog.write(r0, c0, data, valid)
        cog.finish()


def write_zarr(dst: str | os.PathLike, geo: GeoProfile, rgb, valid) -> None:
    """Write the final Zarr output from (Dask) arrays ``rgb`` ``(3, h, w)`` uint8 (0 at nodata) and
    ``valid`` ``(h, w)`` bool, chunked as they are: ``rgb`` (band, y, x), georeferenced by rioxarray
    (``spatial_ref`` with CRS WKT and GeoTransform, or GCPs), plus a ``valid`` mask variable."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    coords = {"band": [1, 2, 3]}
    if geo.transform is not None:
        t = Affine(*geo.transform)
        coords["x"] = t.c + t.a * (np.arange(geo.width) + 0.5)
        coords["y"] = t.f + t.e * (np.arange(geo.height) + 0.5)
    ds = xr.Dataset(
        {"rgb": (("band", "y", "x"), rgb), "valid": (("y", "x"), valid)},
        coords=coords,
        attrs={k: _tag_value(v) for k, v in geo.tags.items()},
    )
    if geo.transform is not None:
        ds = ds.rio.write_crs(CRS.from_wkt(geo.crs_wkt)).rio.write_transform(Affine(*geo.transform))
    elif geo.gcps:
        gcps = [GroundControlPoint(row=r, col=c, x=x, y=y, z=z) for r, c, x, y, z in geo.gcps]
        ds = ds.rio.write_gcps(gcps, CRS.from_wkt(geo.gcp_crs_wkt) if geo.gcp_crs_wkt else None)
    # no _FillValue on rgb: 0 is a legitimate colour; the ``valid`` variable is the nodata mask
    ds["rgb"].attrs["description"] = "RGB uint8; pixels where valid == False are nodata"
    if "spatial_ref" in ds.coords:
        # listed as a coordinate of each variable, so that plain ``xr.open_zarr(p).rio.crs`` finds it (xarray
        # leaves grid_mapping variables out of ``coordinates``: only decode_coords="all" would see it)
        for name in ("rgb", "valid"):
            ds[name].encoding["coordinates"] = "spatial_ref"
    # consolidated metadata: xarray readers open the store in one request and without a fallback warning;
    # zarr 3 says at write time that consolidation is not in the v3 spec yet (other readers ignore it)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        ds.to_zarr(str(dst), mode="w", consolidated=True, compute=True)


# ---------------------------------------------------------------- training helpers (sar2opt_geo.training)
# Added for the training subpackage: header probe of PNG tiles, and aligned reads of a co-registered
# SAR/optical raster pair (the optical raster warped onto the SAR grid when the grids differ).


def probe_image(path: str | os.PathLike) -> tuple[int, int, int]:
    """``(channels, height, width)`` of an 8-bit image tile from its header (PIL ``verify``: chunk CRCs),
    without decoding it; raises InputError when the file is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(str(path)) as im:
            w, h = im.size
            channels = len(im.getbands())
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({_first_line(exc)})") from None
    return channels, h, w


class AlignedWindow(NamedTuple):
    """A window of a SAR raster and the same ground area of an optical raster, with validity masks."""

    sar: np.ndarray
    sar_valid: np.ndarray
    optical: np.ndarray
    optical_valid: np.ndarray


def read_aligned_window(
    sar: SceneInfo,
    optical: SceneInfo,
    row0: int,
    col0: int,
    height: int,
    width: int,
    resampling: str = "bilinear",
) -> AlignedWindow:
    """Window ``[row0:row0+height, col0:col0+width]`` of the SAR grid, and the optical raster on that grid.

    Returns ``(sar, sar_valid, opt, opt_valid)``: float32 arrays ``(bands, h, w)`` and boolean masks. When
    the optical raster has the SAR raster's CRS and transform it is read directly; otherwise through a
    ``WarpedVRT`` onto the SAR grid (``resampling``), pixels outside the optical raster are invalid.
    The SAR scene must be georeferenced by CRS + transform.
    """
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    if sar.transform is None or sar.crs_wkt is None:
        raise GeoreferenceError(f"{sar.path}: needs a CRS and an affine transform to cut tile pairs")
    s, sv = read_window(sar, row0, row0 + height, col0, col0 + width)
    same = optical.transform is not None and optical.crs_wkt is not None
    same = same and tuple(optical.transform) == tuple(sar.transform)
    same = same and CRS.from_wkt(optical.crs_wkt) == CRS.from_wkt(sar.crs_wkt)
    same = same and optical.width >= col0 + width and optical.height >= row0 + height
    if same:
        o, ov = read_window(optical, row0, row0 + height, col0, col0 + width)
        return AlignedWindow(s, sv, o, ov)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.Env(**GDAL_ENV), rasterio.open(optical.path) as src:
            with WarpedVRT(
                src,
                crs=CRS.from_wkt(sar.crs_wkt),
                transform=Affine(*sar.transform),
                width=sar.width,
                height=sar.height,
                resampling=getattr(Resampling, resampling),
                src_nodata=src.nodata,
                nodata=src.nodata if src.nodata is not None else 0,
                add_alpha=False,
            ) as vrt:
                win = Window(col0, row0, width, height)
                o = vrt.read(window=win).astype(np.float32)
                m = vrt.dataset_mask(window=win) > 0
    ov = m & np.all(np.isfinite(o), axis=0)
    return AlignedWindow(s, sv, o, ov)
