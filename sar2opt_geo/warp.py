"""Map projection window by window: a north-up target grid for a GCP (or differently projected) input and
the bilinear resampling of one target window from the source pixels it needs.

``--warp auto`` puts a scene georeferenced by GCPs only (Sentinel-1 GRD products, GeoTIFFs with GCPs and no
transform) on the UTM zone of its centre at its pixel spacing (10 m for GRDH); ``--warp EPSG:xxxx`` on any
CRS (inputs with a transform in another CRS too); ``--resolution`` sets the pixel size. The grid's origin is
a multiple of the pixel size (GDAL's ``-tap``), so 10 m products land on the usual 10 m UTM lattice.

Geometry: target pixel centre → target CRS → source CRS (PROJ) → source image coordinates by GDAL's
thin-plate-spline GCP transformer (``SRC_METHOD=GCP_TPS``: exact at the GCPs; GDAL's default polynomial fit
is off by up to ~1.8 km on a real GRD) or the inverse affine transform. The transformation is evaluated
exactly on a lattice of target nodes every :data:`NODE_STEP` pixels anchored at the grid origin and
interpolated bilinearly between nodes (as GDAL's approximate transformer does, < 0.01 px here), so every
target pixel's source position is a function of its own coordinates only.

Resampling: bilinear on linear intensity from the source window that the target window needs (plus one
pixel), read by the caller (:mod:`sar2opt_geo.source`); a target pixel is valid when its four source
neighbours are inside the image and valid. Never a warped scene in memory or on disk: each Dask task warps
its own window. Any split of the target grid into windows gives bit-identical pixels (tested).

Written by hand: only the node lattice and the 4-neighbour gather. rasterio's ``reproject``/``WarpedVRT``
would do the same per window, but GDAL's warper chooses its source window and approximation per call, so
pixels would depend on the window; the transformer and PROJ are GDAL's. ``scipy.ndimage.map_coordinates``
(order 1) interpolates but has no notion of invalid source pixels, and its arithmetic is not this formula's.
The gather runs a strip of :data:`WARP_STRIP` rows at a time with flat indices (issue #15: the warp was the
largest cost of translating a GRD product; ``bench_speed.py --profile --input product``).
"""

from __future__ import annotations

import atexit
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.transform import Affine, GCPTransformer
from rasterio.warp import transform as crs_transform

from sar2opt_geo import defaults, io
from sar2opt_geo.errors import GeoreferenceError, UsageError

#: Target nodes at which the exact transformation is evaluated (pixels between nodes interpolate).
NODE_STEP = 16
#: Rows of target pixels resampled together by :func:`warp_window` (a strip's temporaries fit in cache).
WARP_STRIP = 32
#: Resampling of the source intensity: bilinear (default, as SNAP's terrain correction that made SEN1-2)
#: or nearest (keeps per-pixel speckle statistics, e.g. for models trained on unresampled σ⁰).
RESAMPLINGS = defaults.RESAMPLINGS
WARP_CHOICES_HELP = "auto (UTM for GCP inputs), none (keep the input grid), or a CRS such as EPSG:32633"


@dataclass(frozen=True)
class WarpGrid:
    """A north-up target grid and how its pixels map into the source image (small, picklable)."""

    crs_wkt: str
    transform: tuple[float, ...]
    width: int
    height: int
    src: io.Georef  # the source image's georeferencing (GCPs, or CRS + transform)
    resampling: str = "bilinear"  # or "nearest"

    @property
    def resolution(self) -> float:
        return float(self.transform[0])

    @property
    def epsg(self) -> int | None:
        return CRS.from_wkt(self.crs_wkt).to_epsg()

    def describe(self) -> str:
        crs = CRS.from_wkt(self.crs_wkt)
        name = f"EPSG:{crs.to_epsg()}" if crs.to_epsg() else crs.to_string()
        how = "thin-plate spline from the GCPs" if self.src.gcps else "CRS transform"
        unit = " m" if crs.is_projected else "°"
        return f"{name} at {self.resolution:g}{unit} ({how}, {self.resampling} on linear intensity)"


# ------------------------------------------------------------------------------------ the target grid


def utm_epsg(lon: float, lat: float) -> int:
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def _src_crs(src: io.Georef) -> CRS:
    wkt = src.gcp_crs_wkt if src.gcps else src.crs_wkt
    if not wkt:
        raise GeoreferenceError("warping needs a CRS (GCP CRS or raster CRS)")
    return CRS.from_wkt(wkt)


@functools.lru_cache(maxsize=8)
def _gcp_transformer(gcps: tuple) -> GCPTransformer:
    """GDAL's TPS transformer for a GCP set, built once per process (closed before interpreter exit: GDAL
    objects must not outlive the modules their destructors use)."""
    return GCPTransformer(
        [GroundControlPoint(row=r, col=c, x=x, y=y, z=z) for r, c, x, y, z in gcps], tps=True
    )


atexit.register(_gcp_transformer.cache_clear)


def src_to_crs(src: io.Georef, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source CRS coordinates of continuous source image coordinates (GDAL convention)."""
    rows = np.asarray(rows, dtype=np.float64).ravel()
    cols = np.asarray(cols, dtype=np.float64).ravel()
    if src.gcps:
        x, y = _gcp_transformer(src.gcps).xy(rows, cols, offset="ul")
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a = Affine(*src.transform)
    return a.c + a.a * cols + a.b * rows, a.f + a.d * cols + a.e * rows


def crs_to_src(src: io.Georef, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Continuous source image coordinates ``(rows, cols)`` of source CRS coordinates."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if src.gcps:
        # np.positive: the identity as a ufunc, which rasterio applies in place (any other callable it maps
        # over the points one Python call at a time)
        r, c = _gcp_transformer(src.gcps).rowcol(x, y, op=np.positive)
        return np.asarray(r, dtype=np.float64), np.asarray(c, dtype=np.float64)
    inv = ~Affine(*src.transform)
    return inv.f + inv.d * x + inv.e * y, inv.c + inv.a * x + inv.b * y


def _reproject(src_crs: CRS, dst_crs: CRS, x, y) -> tuple[np.ndarray, np.ndarray]:
    if src_crs == dst_crs:
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    xs, ys = crs_transform(src_crs, dst_crs, np.asarray(x).tolist(), np.asarray(y).tolist())
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def _border(height: int, width: int, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 1.0, n)
    rows = np.concatenate([np.zeros(n), t * height, np.full(n, float(height)), t * height])
    cols = np.concatenate([t * width, np.zeros(n), t * width, np.full(n, float(width))])
    return rows, cols


def parse_warp(value: str | None) -> str:
    """``auto``, ``none`` or a CRS string (checked); UsageError naming the option otherwise."""
    v = (value or "auto").strip()
    if v.lower() in ("auto", "none"):
        return v.lower()
    try:
        CRS.from_user_input(v)
    except Exception:  # rasterio raises CRSError; anything else is just as bad an input
        raise UsageError(f"--warp: {value!r} is not auto, none or a CRS ({WARP_CHOICES_HELP})") from None
    return v


def plan_grid(
    src: io.Georef,
    warp: str = "auto",
    resolution: float | None = None,
    default_resolution: float | None = None,
    resampling: str = "bilinear",
) -> WarpGrid | None:
    """The target grid for ``--warp`` (``None``: no warping). ``auto`` warps GCP-only inputs to their UTM
    zone; inputs with a transform stay as they are unless a CRS is given."""
    warp = parse_warp(warp)
    if resampling not in RESAMPLINGS:
        raise UsageError(f"--resampling must be one of {', '.join(RESAMPLINGS)} (got {resampling!r})")
    if resolution is not None and (not math.isfinite(resolution) or resolution <= 0):
        raise UsageError(f"--resolution must be a positive number of metres (got {resolution})")
    if warp == "none" or not src.georeferenced:
        return None
    if warp == "auto" and not src.gcps:
        if resolution is not None and src.transform is not None:
            warp = src.crs_wkt  # a new pixel size on the input's own CRS
        else:
            return None
    src_crs = _src_crs(src)
    br, bc = _border(src.height, src.width)
    bx, by = src_to_crs(src, br, bc)
    if warp == "auto":
        cx, cy = src_to_crs(src, np.array([src.height / 2.0]), np.array([src.width / 2.0]))
        lon, lat = _reproject(src_crs, CRS.from_epsg(4326), cx, cy)
        dst_crs = CRS.from_epsg(utm_epsg(float(lon[0]), float(lat[0])))
    else:
        dst_crs = CRS.from_user_input(warp)
    tx, ty = _reproject(src_crs, dst_crs, bx, by)
    if not (np.all(np.isfinite(tx)) and np.all(np.isfinite(ty))):
        raise GeoreferenceError(f"the input's footprint cannot be projected to {dst_crs.to_string()}")
    if resolution is None and default_resolution and not dst_crs.is_projected:
        default_resolution = None  # a spacing in metres means nothing in degrees: measure it
    res = resolution or default_resolution or _native_resolution(src, dst_crs)
    x0, x1 = math.floor(tx.min() / res) * res, math.ceil(tx.max() / res) * res
    y0, y1 = math.floor(ty.min() / res) * res, math.ceil(ty.max() / res) * res
    width, height = int(round((x1 - x0) / res)), int(round((y1 - y0) / res))
    if width * height > 4 * max(1, src.width * src.height) + 10_000_000:
        raise UsageError(
            f"--resolution {res:g} gives a {width} x {height} grid, far larger than the input; "
            "give a coarser --resolution"
        )
    return WarpGrid(
        crs_wkt=dst_crs.to_wkt(),
        transform=(float(res), 0.0, float(x0), 0.0, -float(res), float(y1)),
        width=max(1, width),
        height=max(1, height),
        src=src.georef(),
        resampling=resampling,
    )


def _native_resolution(src: io.Georef, dst_crs: CRS) -> float:
    """The input's pixel spacing in the target CRS (from the centre pixel's neighbours), rounded to 3
    significant digits."""
    r0, c0 = src.height / 2.0, src.width / 2.0
    rr = np.array([r0, r0, r0 + 1.0])
    cc = np.array([c0, c0 + 1.0, c0])
    x, y = _reproject(_src_crs(src), dst_crs, *src_to_crs(src, rr, cc))
    step = math.sqrt(abs((x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0])))
    if not math.isfinite(step) or step <= 0:
        raise GeoreferenceError("cannot tell the input's pixel spacing; pass --resolution")
    digits = 2 - int(math.floor(math.log10(step)))
    return float(round(step, digits))


# --------------------------------------------------------------------------------- source positions


def _nodes(grid: WarpGrid, nr: np.ndarray, nc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact source coordinates (continuous rows, cols) of the target nodes ``nr × nc`` (pixel centres)."""
    rr, cc = np.meshgrid(nr.astype(np.float64) + 0.5, nc.astype(np.float64) + 0.5, indexing="ij")
    a = Affine(*grid.transform)
    x = a.c + a.a * cc + a.b * rr
    y = a.f + a.d * cc + a.e * rr
    sx, sy = _reproject(CRS.from_wkt(grid.crs_wkt), _src_crs(grid.src), x.ravel(), y.ravel())
    r, c = crs_to_src(grid.src, sx, sy)
    return r.reshape(rr.shape), c.reshape(rr.shape)


def _lerp_axis(v: np.ndarray, k: np.ndarray, t: np.ndarray, axis: int, out: np.ndarray | None = None):
    """``(1 - t)·v[k] + t·v[k + 1]`` along ``axis`` (into ``out`` when given: the same operations)."""
    lo = np.take(v, k, axis=axis)
    hi = np.take(v, k + 1, axis=axis)
    shape = [1, 1]
    shape[axis] = -1
    t = t.reshape(shape)
    hi *= t
    out = np.multiply(1.0 - t, lo, out=out)
    out += hi
    return out


def _along_rows(grid: WarpGrid, row0: int, row1: int, col0: int, col1: int):
    """The first half of :func:`source_coords`: the exact node lattice interpolated along rows —
    ``(rows at every target row (h, nodes), cols likewise)`` — and the column interpolation's node index and
    weight of every target column."""
    S = NODE_STEP
    k0, k1 = row0 // S, (row1 - 1) // S + 1
    m0, m1 = col0 // S, (col1 - 1) // S + 1
    nr = np.arange(k0, k1 + 1) * S
    nc = np.arange(m0, m1 + 1) * S
    node_r, node_c = _nodes(grid, nr, nc)
    rows, cols = np.arange(row0, row1), np.arange(col0, col1)
    kr, tr = rows // S - k0, (rows % S) / S
    kc, tc = cols // S - m0, (cols % S) / S
    return (_lerp_axis(node_r, kr, tr, 0), _lerp_axis(node_c, kr, tr, 0)), kc, tc


def source_coords(
    grid: WarpGrid, row0: int, row1: int, col0: int, col1: int
) -> tuple[np.ndarray, np.ndarray]:
    """Continuous source coordinates ``(rows, cols)``, float64 ``(h, w)``, of the centres of target pixels
    ``[row0, row1) × [col0, col1)``; each value depends only on its pixel's coordinates."""
    along, kc, tc = _along_rows(grid, row0, row1, col0, col1)
    return _lerp_axis(along[0], kc, tc, 1), _lerp_axis(along[1], kc, tc, 1)


# ---------------------------------------------------------------------------------------- resampling

Reader = Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]]


def warp_window(
    grid: WarpGrid, read_source: Reader, count: int, row0: int, row1: int, col0: int, col1: int
) -> tuple[np.ndarray, np.ndarray]:
    """Target pixels ``[row0, row1) × [col0, col1)`` (inside the grid): float32 ``(count, h, w)`` and the
    validity mask, by bilinear interpolation of the source window ``read_source(r0, r1, c0, c1)`` returns
    (linear intensity ``(count, h, w)`` and its mask; only rows/cols inside the source image are asked).

    A target pixel's four source neighbours are gathered by flat index (``np.take`` on the raveled window,
    a fraction of the cost of 2-D fancy indexing) and the pixels are resampled a strip of
    :data:`WARP_STRIP` rows at a time, so the dozen per-pixel temporaries stay in cache. The float64
    arithmetic is the textbook formula's, operation for operation (``tests/test_s1_pipeline.py`` compares
    the two bit for bit)."""
    h, w = row1 - row0, col1 - col0
    H, W = grid.src.height, grid.src.width
    # source_coords strip by strip, shifted to array index coordinates (pixel centres at +0.5)
    along, kc, tc = _along_rows(grid, row0, row1, col0, col1)
    fr, fc = np.empty((h, w)), np.empty((h, w))
    inside = np.empty((h, w), dtype=bool)
    for a in range(0, h, WARP_STRIP):
        b = min(h, a + WARP_STRIP)
        r = _lerp_axis(along[0][a:b], kc, tc, 1, out=fr[a:b])
        c = _lerp_axis(along[1][a:b], kc, tc, 1, out=fc[a:b])
        r -= 0.5
        c -= 0.5
        if grid.resampling != "nearest":
            np.greater_equal(r, 0, out=inside[a:b])
            inside[a:b] &= r <= H - 1
            inside[a:b] &= c >= 0
            inside[a:b] &= c <= W - 1
    if grid.resampling == "nearest":
        return _nearest(grid, read_source, count, fr, fc)
    data = np.zeros((count, h, w), dtype=np.float32)
    if not inside.any():
        return data, np.zeros((h, w), dtype=bool)
    # the source window: floor and clip are monotone, so the extreme cells come from the extreme coordinates
    r_lo, r_hi = _cell_range(fr, inside, H)
    c_lo, c_hi = _cell_range(fc, inside, W)
    src, svalid = read_source(r_lo, r_hi, c_lo, c_hi)
    sh, sw = r_hi - r_lo, c_hi - c_lo
    flat_src = [np.ascontiguousarray(src[k]).ravel() for k in range(count)]
    # a cell is valid when its four corners are (the last row and column are their own lower/right neighbours,
    # as the clipped corner indices make them): one gather a target pixel instead of four
    pairs = np.array(svalid, dtype=bool)
    pairs[:, :-1] &= svalid[:, 1:]
    cells = pairs.copy()
    cells[:-1] &= pairs[1:]
    flat_cells = cells.ravel()
    valid = np.zeros((h, w), dtype=bool)
    for a in range(0, h, WARP_STRIP):
        b = min(h, a + WARP_STRIP)
        # only the columns between the strip's first and last pixel inside the image: outside them every
        # pixel is invalid and 0 (what the formula gives there), so the footprint's collar costs nothing
        cols = np.flatnonzero(inside[a:b].any(axis=0))
        if not cols.size:
            continue
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        _bilinear_strip(
            fr[a:b, c0:c1],
            fc[a:b, c0:c1],
            inside[a:b, c0:c1],
            (H, W),
            (r_lo, c_lo, sh, sw),
            flat_src,
            flat_cells,
            data[:, a:b, c0:c1],
            valid[a:b, c0:c1],
        )
    return data, valid


def _cell_range(f: np.ndarray, inside: np.ndarray, n: int) -> tuple[int, int]:
    """``[lo, hi)``: the source rows (or columns) that the bilinear cells of the ``inside`` coordinates
    ``f`` use."""
    top = max(n - 2, 0)
    lo = int(np.clip(np.floor(np.min(f, where=inside, initial=np.inf)), 0, top))
    hi = int(np.clip(np.floor(np.max(f, where=inside, initial=-np.inf)), 0, top))
    return lo, min(n, hi + 2)


def _bilinear_strip(fr, fc, inside, size, window, flat_src, flat_cells, out, valid) -> None:
    """Resample one strip of target pixels into ``out`` ``(count, rows, w)`` and ``valid``: the cell of every
    pixel (clipped to the image, then to the source window), its validity (``flat_cells``: the source
    window's cells whose four corners are valid), its four corners' flat indices and weights, then
    ``w00·s00 + w01·s01 + w10·s10 + w11·s11`` in float64 per band."""
    H, W = size
    r_lo, c_lo, sh, sw = window
    i0 = np.floor(fr)
    np.clip(i0, 0, max(H - 2, 0), out=i0)
    i0 = i0.astype(np.intp)
    j0 = np.floor(fc)
    np.clip(j0, 0, max(W - 2, 0), out=j0)
    j0 = j0.astype(np.intp)
    np.clip(i0, r_lo, r_lo + sh - 1, out=i0)
    np.clip(j0, c_lo, c_lo + sw - 1, out=j0)
    u = fr - i0  # i0 + r_lo of the window's frame: the same integer
    np.clip(u, 0.0, 1.0, out=u)
    v = fc - j0
    np.clip(v, 0.0, 1.0, out=v)
    i0 -= r_lo
    j0 -= c_lo
    di = (i0 < sh - 1).astype(np.intp)  # the lower row exists (else it is the same row, as the formula clips)
    dj = (j0 < sw - 1).astype(np.intp)
    k00 = i0 * sw
    k00 += j0
    k01 = k00 + dj
    di *= sw
    k10 = k00 + di
    k11 = k01 + di
    valid[...] = np.take(flat_cells, k00, mode="clip")  # indices are in range: "clip" skips numpy's checks
    valid &= inside
    u1, v1 = 1 - u, 1 - v
    w00, w01, w10, w11 = u1 * v1, u1 * v, u * v1, u * v
    for band, s in enumerate(flat_src):
        val = w00 * np.take(s, k00, mode="clip")
        val += w01 * np.take(s, k01, mode="clip")
        val += w10 * np.take(s, k10, mode="clip")
        val += w11 * np.take(s, k11, mode="clip")
        out[band] = val
        out[band][~valid] = 0.0


def _nearest(grid: WarpGrid, read_source: Reader, count: int, fr: np.ndarray, fc: np.ndarray):
    """Nearest-neighbour variant of :func:`warp_window`: each target pixel takes the source pixel its centre
    falls in (gathered by flat index)."""
    H, W = grid.src.height, grid.src.width
    inside = (fr >= -0.5) & (fr < H - 0.5) & (fc >= -0.5) & (fc < W - 0.5)
    data = np.zeros((count,) + fr.shape, dtype=np.float32)
    if not inside.any():
        return data, np.zeros(fr.shape, dtype=bool)
    i = np.clip(np.floor(fr + 0.5), 0, H - 1).astype(np.intp)
    j = np.clip(np.floor(fc + 0.5), 0, W - 1).astype(np.intp)
    r_lo, r_hi = int(np.min(i, where=inside, initial=H)), int(np.max(i, where=inside, initial=0)) + 1
    c_lo, c_hi = int(np.min(j, where=inside, initial=W)), int(np.max(j, where=inside, initial=0)) + 1
    src, svalid = read_source(r_lo, r_hi, c_lo, c_hi)
    np.clip(i, r_lo, r_hi - 1, out=i)
    np.clip(j, c_lo, c_hi - 1, out=j)
    i -= r_lo
    j -= c_lo
    i *= c_hi - c_lo
    i += j  # flat index into the source window
    valid = inside & np.take(np.ascontiguousarray(svalid).ravel(), i, mode="clip")
    for k in range(count):
        np.take(np.ascontiguousarray(src[k]).ravel(), i, out=data[k], mode="clip")
        data[k][~valid] = 0.0
    return data, valid


def footprint_mask(grid: WarpGrid, max_size: int = 1024) -> np.ndarray:
    """A decimated mask of the target grid's pixels that fall inside the source image (for ``info``)."""
    f = max(1, math.ceil(max(grid.width, grid.height) / max_size))
    rows = np.arange(0, grid.height, f)
    cols = np.arange(0, grid.width, f)
    r, c = _nodes(grid, rows, cols)
    return (r >= 0.5) & (r <= grid.src.height - 0.5) & (c >= 0.5) & (c <= grid.src.width - 0.5)
