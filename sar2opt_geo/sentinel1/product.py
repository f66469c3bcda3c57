"""The Sentinel-1 GRD product reader: :func:`open_product` → :class:`S1Product` → ``read_window``.

An :class:`S1Product` is frozen and picklable: paths (GDAL paths, ``/vsizip/`` for a zip) plus the parsed
calibration and noise vector grids as small arrays, so a Dask task can receive it and read ONE window:
:meth:`S1Product.read_window` opens the measurement tiff, reads the window's DN, evaluates the calibration
and noise LUTs at that window only and returns float32 linear intensity ``(bands, h, w)`` and a validity
mask (DN = 0 is no data). Windows past the image edges are reflected back inside exactly like
:func:`sar2opt_geo.io.read_window` (numpy ``reflect``), and every value is a function of its pixel's
coordinates only, so any split of the scene into windows gives bit-identical pixels.

Geolocation: the measurement tiff's GCPs when it has them, else the annotation's ``geolocationGrid``
(EPSG:4326, line/pixel as GCP row/col).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from sar2opt_geo.errors import InputError, UsageError
from sar2opt_geo.io import GDAL_ENV, human_bytes, read_band, reflect_index, room_for
from sar2opt_geo.sentinel1.annotation import (
    SAFE_NAME,
    ImageAnnotation,
    check_product_type,
    parse_annotation,
    parse_manifest,
)
from sar2opt_geo.sentinel1.calibration import (
    CALIBRATIONS,
    DEFAULT_CALIBRATION,
    CalibrationLUT,
    parse_calibration,
)
from sar2opt_geo.sentinel1.noise import NoiseLUT, denoise_power, parse_noise
from sar2opt_geo.sentinel1.safe import discover

log = logging.getLogger(__name__)

# Measurement reads use io.GDAL_ENV, the one GDAL configuration of every open (the block cache is bounded once
# per process by io; a per-open cache setting would replace it with whatever the first reader asked for).
GCP_CRS = "EPSG:4326"


@dataclass(frozen=True, eq=False)
class S1Band:
    """One polarisation: its measurement (GDAL path) and its LUTs."""

    polarisation: str
    measurement: str | None
    calibration: CalibrationLUT
    noise: NoiseLUT | None
    noise_removed: bool  # the processor already removed thermal noise


@dataclass(frozen=True, eq=False)
class S1Product:
    path: str  # what the user gave
    name: str  # SAFE name (or folder name)
    mission: str
    mode: str
    product_type: str
    resolution: str | None  # "H", "M", "F" from the SAFE name when it tells
    pass_direction: str  # "ASCENDING" / "DESCENDING"
    width: int
    height: int
    range_spacing: float
    azimuth_spacing: float
    first_line_time: str
    last_line_time: str
    ipf_version: str | None
    bands: tuple[S1Band, ...]
    gcps: tuple[tuple[float, float, float, float, float], ...]  # (row, col, lon, lat, height)
    gcp_source: str  # "tiff" or "annotation"
    incidence: np.ndarray = field(repr=False)  # geolocation grid (line, pixel, incidence angle)

    # ----------------------------------------------------------------------------------- properties
    @property
    def polarisations(self) -> tuple[str, ...]:
        return tuple(b.polarisation for b in self.bands)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def count(self) -> int:
        return len(self.bands)

    @property
    def gcp_crs(self) -> CRS:
        return CRS.from_user_input(GCP_CRS)

    def band_names(self) -> list[str]:
        return list(self.polarisations)

    def gcp_objects(self) -> list[GroundControlPoint]:
        return [GroundControlPoint(row=r, col=c, x=x, y=y, z=z) for r, c, x, y, z in self.gcps]

    def __dask_tokenize__(self):
        return (
            "S1Product",
            self.path,
            self.name,
            self.polarisations,
            tuple(b.measurement for b in self.bands),
        )

    # --------------------------------------------------------------------------------- band lookup
    def band_index(self, band: str | int) -> int:
        """0-based index of a band given by polarisation name or 1-based number (as rasterio)."""
        if isinstance(band, str):
            key = band.strip().upper()
            for i, b in enumerate(self.bands):
                if b.polarisation == key:
                    return i
            raise UsageError(
                f"{self.name}: no {band!r} band (the product has {', '.join(self.polarisations) or 'none'})"
            )
        if isinstance(band, int | np.integer) and not isinstance(band, bool) and 1 <= band <= len(self.bands):
            return int(band) - 1
        raise UsageError(f"{self.name}: band {band!r} out of range 1..{len(self.bands)}")

    # ---------------------------------------------------------------------------------- radiometry
    def calibration_lut(self, band: str | int, calibration: str, rows, cols) -> np.ndarray:
        """A (float64 (len(rows), len(cols))) of ``calibration`` at integer image coordinates."""
        return self.bands[self.band_index(band)].calibration.evaluate(calibration, rows, cols)

    def noise_power(self, band: str | int, rows, cols) -> np.ndarray:
        """Thermal noise η = η_rg·η_az (DN², float64 (len(rows), len(cols)))."""
        b = self.bands[self.band_index(band)]
        if b.noise is None:
            raise InputError(
                f"{self.name}: no noise annotation for {b.polarisation}; read it without denoising"
            )
        return b.noise.evaluate(rows, cols)

    def noise_equivalent(self, band: str | int, rows, cols, calibration: str = DEFAULT_CALIBRATION):
        """Noise-equivalent intensity η / A² (linear, float64)."""
        a = self.calibration_lut(band, calibration, rows, cols)
        return self.noise_power(band, rows, cols) / (a * a)

    def calibrate(
        self,
        dn: np.ndarray,
        band: str | int,
        rows,
        cols,
        calibration: str = DEFAULT_CALIBRATION,
        denoise: bool = True,
    ) -> np.ndarray:
        """Calibrated (and denoised) linear intensity of a DN array (h, w) at ``rows`` × ``cols``;
        float32, 0 where DN = 0."""
        if calibration not in CALIBRATIONS:
            raise UsageError(f"unknown calibration {calibration!r}; allowed: {', '.join(CALIBRATIONS)}")
        b = self.bands[self.band_index(band)]
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        dn = np.asarray(dn)
        power = dn.astype(np.float64)
        power *= power  # float64 scratch from here on: the same operations as DN²/A², fewer passes
        if denoise and not b.noise_removed:
            if b.noise is None:
                raise InputError(
                    f"{self.name}: no noise annotation for {b.polarisation}; read it without denoising "
                    "(--no-denoise)"
                )
            power = denoise_power(power, b.noise.evaluate(rows, cols), in_place=True)
        a = b.calibration.evaluate(calibration, rows, cols)
        a *= a
        power /= a
        out = power.astype(np.float32)
        np.copyto(out, np.float32(0.0), where=dn == 0)
        return out

    # ------------------------------------------------------------------------------------- reading
    def read_window(
        self,
        bands=None,
        row0: int = 0,
        row1: int | None = None,
        col0: int = 0,
        col1: int | None = None,
        calibration: str = DEFAULT_CALIBRATION,
        denoise: bool = True,
        *,
        keep_open: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated linear intensity of rows ``[row0, row1)`` × columns ``[col0, col1)`` of the
        reflect-padded image: float32 ``(bands, h, w)`` and a boolean ``(h, w)`` mask, False where any band
        has DN = 0. ``bands``: polarisation names or 1-based numbers (default: all). ``keep_open``: the
        measurement TIFFs are read through this thread's open datasets (:func:`sar2opt_geo.io.read_band`)."""
        row1 = self.height if row1 is None else row1
        col1 = self.width if col1 is None else col1
        if row1 <= row0 or col1 <= col0:
            raise UsageError(f"empty window rows [{row0}, {row1}) x cols [{col0}, {col1})")
        if calibration not in CALIBRATIONS:
            raise UsageError(f"unknown calibration {calibration!r}; allowed: {', '.join(CALIBRATIONS)}")
        if isinstance(bands, str | int):
            bands = (bands,)
        idx = [self.band_index(b) for b in (bands if bands else range(1, len(self.bands) + 1))]
        rows = reflect_index(np.arange(row0, row1), self.height)
        cols = reflect_index(np.arange(col0, col1), self.width)
        r_lo, r_hi = int(rows.min()), int(rows.max()) + 1
        c_lo, c_hi = int(cols.min()), int(cols.max()) + 1
        r_rng = np.arange(r_lo, r_hi)
        c_rng = np.arange(c_lo, c_hi)
        inside = row0 >= 0 and col0 >= 0 and row1 <= self.height and col1 <= self.width
        sel = (slice(None), slice(None)) if inside else np.ix_(rows - r_lo, cols - c_lo)  # no gather inside
        data = np.empty((len(idx), rows.size, cols.size), dtype=np.float32)
        valid = np.ones((rows.size, cols.size), dtype=bool)
        for k, i in enumerate(idx):
            dn = self._read_dn(i, Window(c_lo, r_lo, c_hi - c_lo, r_hi - r_lo), keep_open)
            sigma = self.calibrate(dn, i + 1, r_rng, c_rng, calibration, denoise)
            data[k] = sigma[sel]
            valid &= (dn != 0)[sel]
        return data, valid

    def _read_dn(self, i: int, window: Window, keep_open: bool = False) -> np.ndarray:
        b = self.bands[i]
        if b.measurement is None:
            raise InputError(f"{self.name}: no measurement tiff for {b.polarisation}")
        try:
            return read_band(b.measurement, window, keep_open=keep_open)
        except RasterioIOError as exc:
            raise InputError(f"{b.measurement}: not a readable raster ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# ----------------------------------------------------------------------------------------- opening


def open_product(
    path: str | os.PathLike, *, metadata_only: bool = False, unpack_dir: str | os.PathLike | None = None
) -> S1Product:
    """Open a Sentinel-1 GRD product in any of the forms :mod:`sar2opt_geo.sentinel1.safe` accepts.

    Reads the manifest (product type check), each polarisation's annotation, calibration and noise XML and
    the measurement tiff's header (size, data type, GCPs). ``metadata_only`` skips the measurement tiffs
    (for products whose images are absent); such a product cannot ``read_window``. ``unpack_dir``: a folder
    the caller removes when done, where measurement tiffs *deflated* inside a product zip are inflated once
    and read from (without it they are read in place through ``/vsizip/``, which decompresses whole image
    rows again for every window: fine for a few sample windows, not for a whole scene).
    """
    files = discover(path)
    c = files.container
    where = c.display()
    manifest = parse_manifest(c.read(files.manifest), c.display(files.manifest)) if files.manifest else None
    name_match = SAFE_NAME.match(c.name)
    if manifest is not None:
        check_product_type(manifest.product_type, manifest.mode, where)
    if name_match:
        check_product_type(name_match.group("type"), name_match.group("mode").upper(), where)
    if not files.bands:
        raise InputError(f"{where}: no Sentinel-1 measurement or annotation files found")
    bands, annotations, tiff_gcps, unpacked = [], [], None, {}
    if unpack_dir is not None and not metadata_only:
        deflated = [bf.measurement for bf in files.bands if bf.measurement and c.is_deflated(bf.measurement)]
        need = c.member_bytes(deflated)
        ok, free = room_for(unpack_dir, need) if deflated else (False, 0)
        if deflated and ok:
            unpacked = dict(zip(deflated, c.unpack(deflated, unpack_dir), strict=True))
        elif deflated:
            log.warning(
                "%s: %s free beside the output, %s needed to unpack its deflated measurement tiffs: "
                "reading them in place, which decompresses whole image rows again for every window (much "
                "slower; unzip the product on a disk with room and pass its SAFE folder)",
                c.root,
                human_bytes(free),
                human_bytes(need),
            )
    for bf in files.bands:
        if bf.annotation is None:
            raise InputError(
                f"{where}: no product annotation for {bf.polarisation} "
                f"(annotation/*-{bf.polarisation.lower()}*.xml)"
            )
        if bf.calibration is None:
            raise InputError(
                f"{where}: no calibration annotation for {bf.polarisation} "
                "(annotation/calibration/calibration-*.xml)"
            )
        ann = parse_annotation(c.read(bf.annotation), c.display(bf.annotation))
        if ann.polarisation != bf.polarisation:
            raise InputError(
                f"{c.display(bf.annotation)}: annotation of {ann.polarisation} "
                f"under a {bf.polarisation} file name"
            )
        cal = parse_calibration(c.read(bf.calibration), c.display(bf.calibration))
        noise = parse_noise(c.read(bf.noise), c.display(bf.noise)) if bf.noise else None
        measurement = c.gdal_path(bf.measurement) if bf.measurement else None
        measurement = unpacked.get(bf.measurement, measurement)
        if not metadata_only:
            if measurement is None:
                raise InputError(f"{where}: no measurement tiff for {bf.polarisation} (measurement/*.tiff)")
            gcps = _probe_measurement(measurement, ann)
            if tiff_gcps is None and gcps:
                tiff_gcps = gcps
        annotations.append(ann)
        bands.append(
            S1Band(
                polarisation=bf.polarisation,
                measurement=measurement,
                calibration=cal,
                noise=noise,
                noise_removed=ann.noise_removed,
            )
        )
    first = annotations[0]
    for ann in annotations[1:]:
        if (ann.width, ann.height) != (first.width, first.height):
            raise InputError(f"{where}: polarisations of different image sizes")
    grid = first.geolocation
    if tiff_gcps:
        gcps, source = tiff_gcps, "tiff"
    else:
        gcps = tuple((float(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4])) for r in grid)
        source = "annotation"
    resolution = name_match.group("res").upper() if name_match else None
    return S1Product(
        path=str(path),
        name=c.name,
        mission=first.mission,
        mode=first.mode,
        product_type=first.product_type,
        resolution=resolution if resolution in ("H", "M", "F") else None,
        pass_direction=first.pass_direction,
        width=first.width,
        height=first.height,
        range_spacing=first.range_spacing,
        azimuth_spacing=first.azimuth_spacing,
        first_line_time=first.first_line_time,
        last_line_time=first.last_line_time,
        ipf_version=manifest.ipf_version if manifest else None,
        bands=tuple(bands),
        gcps=gcps,
        gcp_source=source,
        incidence=grid[:, [0, 1, 5]].copy(),
    )


def _probe_measurement(path: str, ann: ImageAnnotation):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.Env(**GDAL_ENV), rasterio.open(path) as src:
                width, height, dtype, count = src.width, src.height, src.dtypes[0], src.count
                gcps, _ = src.gcps
    except RasterioIOError as exc:
        raise InputError(f"{path}: not a readable raster ({_first_line(exc)})") from None
    if (width, height) != (ann.width, ann.height):
        raise InputError(
            f"{path}: image is {width} x {height} but its annotation says {ann.width} x {ann.height}"
        )
    if dtype.startswith("complex") or dtype.startswith("c"):
        raise InputError(f"{path}: complex data type {dtype} (SLC) is not supported; use a GRD product")
    if count != 1 or dtype not in ("uint16", "uint8", "int16", "uint32"):
        raise InputError(f"{path}: expected one band of unsigned DN, got {count} band(s) of {dtype}")
    return tuple((g.row, g.col, g.x, g.y, g.z or 0.0) for g in gcps)
