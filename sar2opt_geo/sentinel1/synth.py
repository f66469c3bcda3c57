"""Synthetic Sentinel-1 GRD products (SAFE folder, optionally zipped) of a simulated scene.

The scene is the package simulator's (:mod:`sar2opt_geo.synth`): σ⁰ and optical truth on a north-up UTM
grid (``sar.tif`` / ``optical.tif`` written beside the product by :func:`sar2opt_geo.synth.write_scene`).
The product is in radar geometry: line ``l`` (azimuth time) and pixel ``p`` (ground range) map to UTM by

    (x, y) = C + (l − H/2)·Δaz·a + (p − W/2)·Δrg·r     (l, p continuous image coordinates)

with ``a`` the along-track unit vector (platform heading) and ``r`` the right-looking range direction.
Ascending passes head about 348° (first line south, so the image is upside-down against north), descending
ones about 192° (range runs west, so the image is mirrored); the rotation is 10–15° (from the seed). This
mapping is written as the annotation's geolocation grid and as the measurement tiff's GCPs (EPSG:4326;
GDAL's convention: GCP (row, col) is a point in continuous image coordinates, the pixel (l, p) centre is
(l + 0.5, p + 0.5)). Each radar pixel takes the simulator's noise-free σ⁰ of the map pixel its centre falls
in, times speckle drawn in radar geometry: Gamma(4.4) correlated by a Gaussian of
:data:`RADAR_SPECKLE_CORR` pixels (0.5: intensity correlation 0.25 between neighbouring pixels, as GRDH’s
20 × 22 m resolution cells sampled at 10 m give). The map scene's own speckle (``sar.tif``, 0.6 px: ≈ 0.43)
stands for an analysis-ready product, i.e. a GRD that was map-projected (resampled) once more, which is
what ``translate`` does to this product before the model.

Radiometry follows ESA's definitions with IW-like LUTs: ``A_β`` = 474 (constant), ``A_σ = A_β/√sin θ``
(≈ 560–665 across range), ``A_γ = A_β/√tan θ``, incidence θ from 30.3° to 46° across the image; noise
range vectors per subswath (IW 3, EW 5) of 520–3,100 DN² (noise-equivalent σ⁰ about −28.5 to −20.5 dB, as
real IW products) on line grids with differing pixel grids,
azimuth vectors per swath block (1.0–1.14, EW with two blocks per swath) unless left out
(``noise_format="range_only"``), or the pre-IPF-2.9 ``noiseVector`` list.
DN = round(√(A_σ²·σ⁰ + n·η)), n = 1 (``thermal_noise="mean"``: the reader's
denoised σ⁰ equals the simulator's within the DN quantisation) or a Gamma(4.4) factor of mean 1
(``"random"``: realistic noise). A few near/far-range columns per line are DN 0 (no data), as in real GRDs.

XML follows the real files' element structure (the subset the reader and common tools use).
Hand-written: no library writes Sentinel-1 SAFE products.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from sar2opt_geo.errors import UsageError
from sar2opt_geo.sentinel1.calibration import CalibrationLUT
from sar2opt_geo.sentinel1.noise import AzimuthBlock, NoiseLUT
from sar2opt_geo.synth import SceneSpec, render_window, speckle_window, write_scene

A_BETA = 474.0
A_DN = 401.6
THETA_NEAR, THETA_FAR = 30.3, 46.0
NOISE_LOOKS = 4.4
MODES = {"IW": 3, "EW": 5}
#: Gaussian (pixels) correlating the product's radar-geometry speckle (see the module docstring).
RADAR_SPECKLE_CORR = 0.5
#: Offset of the radar speckle's seed from the product seed (its own random stream, not the map scene's).
RADAR_SPECKLE_SEED = 1_000_003
PASSES = ("ASCENDING", "DESCENDING")
NOISE_FORMATS = ("ipf3", "range_only", "legacy")
THERMAL_NOISE = ("mean", "random")
_START = dt.datetime(2023, 5, 17, 5, 41, 2, 123456)
_LINE_TIME = 1.496569996245720e-03
_C = 299792458.0


@dataclass(frozen=True)
class ProductSpec:
    """Everything that determines a synthetic product."""

    width: int = 1200  # range samples
    height: int = 900  # lines
    polarisations: tuple[str, ...] = ("VV", "VH")
    pass_direction: str = "ASCENDING"
    seed: int = 0
    mission: str = "S1A"
    mode: str = "IW"  # "IW" (3 swaths, GRDH 10 m) or "EW" (5 swaths, GRDM 40 m)
    pixel_spacing: float = 10.0
    centre: tuple[float, float] = (510000.0, 5490000.0)  # UTM easting/northing of the image centre
    crs: str = "EPSG:32633"
    thermal_noise: str = "mean"
    # "ipf3": range and azimuth vectors; "range_only": noiseRangeVector list without azimuth vectors (as
    # products that carry none); "legacy": the pre-IPF-2.9 noiseVector list
    noise_format: str = "ipf3"
    ipf_version: str = "003.61"
    border: bool = True  # DN-0 columns at near and far range

    def validate(self) -> None:
        if (
            not (isinstance(self.width, int) and isinstance(self.height, int))
            or self.width < 64
            or self.height < 64
        ):
            raise UsageError(f"product size must be at least 64 x 64, got {self.width} x {self.height}")
        bad = [p for p in self.polarisations if p not in ("VV", "VH")]
        if bad or not self.polarisations:
            raise UsageError(f"synthetic products carry VV and/or VH, got {self.polarisations!r}")
        if self.pass_direction not in PASSES:
            raise UsageError(f"pass must be one of {PASSES}, got {self.pass_direction!r}")
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {tuple(MODES)}, got {self.mode!r}")
        if self.thermal_noise not in THERMAL_NOISE:
            raise UsageError(f"thermal_noise must be one of {THERMAL_NOISE}, got {self.thermal_noise!r}")
        if self.noise_format not in NOISE_FORMATS:
            raise UsageError(f"noise_format must be one of {NOISE_FORMATS}, got {self.noise_format!r}")

    # ------------------------------------------------------------------------------------ geometry
    @property
    def heading(self) -> float:
        """Platform heading in degrees clockwise from north."""
        rot = 10.0 + 5.0 * ((self.seed * 0.6180339887498949) % 1.0)
        return -rot if self.pass_direction == "ASCENDING" else 180.0 + rot

    def _axes(self) -> tuple[np.ndarray, np.ndarray]:
        h = math.radians(self.heading)
        along = np.array([math.sin(h), math.cos(h)])
        rng = np.array([math.cos(h), -math.sin(h)])  # right-looking
        return along, rng

    def to_map(self, line, pixel) -> tuple[np.ndarray, np.ndarray]:
        """UTM (x, y) of continuous image coordinates (GDAL convention: pixel centres at +0.5)."""
        along, rng = self._axes()
        dl = (np.asarray(line, dtype=np.float64) - self.height / 2.0) * self.pixel_spacing
        dp = (np.asarray(pixel, dtype=np.float64) - self.width / 2.0) * self.pixel_spacing
        x = self.centre[0] + dl * along[0] + dp * rng[0]
        y = self.centre[1] + dl * along[1] + dp * rng[1]
        return x, y

    @property
    def scene(self) -> SceneSpec:
        """The map-projected simulator scene covering the product footprint (plus a margin)."""
        corners = self.to_map(
            np.array([0, 0, self.height, self.height]), np.array([0, self.width, 0, self.width])
        )
        px = self.pixel_spacing
        margin = 4 * px
        x0 = math.floor((corners[0].min() - margin) / px) * px
        y1 = math.ceil((corners[1].max() + margin) / px) * px
        w = int(math.ceil((corners[0].max() + margin - x0) / px))
        h = int(math.ceil((y1 - (corners[1].min() - margin)) / px))
        return SceneSpec(
            width=w,
            height=h,
            bands=tuple(self.polarisations),
            seed=self.seed,
            crs=self.crs,
            pixel_size=px,
            origin=(float(x0), float(y1)),
            footprint=False,
        )

    @property
    def swaths(self) -> list[tuple[str, int, int]]:
        n = MODES[self.mode]
        edges = np.linspace(0, self.width, n + 1).round().astype(int)
        return [(f"{self.mode}{i + 1}", int(edges[i]), int(edges[i + 1]) - 1) for i in range(n)]

    @property
    def name(self) -> str:
        res = "H" if self.mode == "IW" else "M"
        pol = "DV" if len(self.polarisations) == 2 else ("SV" if self.polarisations[0] == "VV" else "SH")
        t0 = _START.strftime("%Y%m%dT%H%M%S")
        t1 = (_START + dt.timedelta(seconds=self.height * _LINE_TIME)).strftime("%Y%m%dT%H%M%S")
        uid = f"{self.seed % 65536:04X}"
        return f"{self.mission}_{self.mode}_GRD{res}_1S{pol}_{t0}_{t1}_048000_05C0DE_{uid}.SAFE"

    def file_stem(self, pol: str) -> str:
        t0 = _START.strftime("%Y%m%dt%H%M%S")
        t1 = (_START + dt.timedelta(seconds=self.height * _LINE_TIME)).strftime("%Y%m%dt%H%M%S")
        num = 1 + ("VV", "VH").index(pol)
        return (
            f"{self.mission.lower()}-{self.mode.lower()}-grd-{pol.lower()}-{t0}-{t1}-048000-05c0de-{num:03d}"
        )

    # --------------------------------------------------------------------------------- radiometry
    def incidence(self, line, pixel) -> np.ndarray:
        line = np.asarray(line, dtype=np.float64)
        pixel = np.asarray(pixel, dtype=np.float64)
        return THETA_NEAR + (THETA_FAR - THETA_NEAR) * pixel / (self.width - 1) + 0.05 * line / self.height

    def calibration_lut(self) -> CalibrationLUT:
        """The LUT exactly as written to the XML (values rounded to the text's 7 digits)."""
        step = int(math.ceil(self.height / 6))
        lines = np.arange(
            0, self.height + step, step, dtype=np.float64
        )  # the last vector lies past the image
        px = np.unique(np.concatenate([np.arange(0, self.width, 40), [self.width - 1]])).astype(np.float64)
        luts = {"sigma0": [], "beta0": [], "gamma0": [], "dn": []}
        for ln in lines:
            th = np.radians(self.incidence(ln, px))
            luts["sigma0"].append(_r7(A_BETA / np.sqrt(np.sin(th))))
            luts["beta0"].append(_r7(np.full(px.shape, A_BETA)))
            luts["gamma0"].append(_r7(A_BETA / np.sqrt(np.tan(th))))
            luts["dn"].append(_r7(np.full(px.shape, A_DN)))
        return CalibrationLUT(
            lines=lines,
            pixels=tuple(px for _ in lines),
            luts={k: tuple(v) for k, v in luts.items()},
            absolute_constant=1.0,
        )

    def noise_lut(self, pol: str) -> NoiseLUT:
        step = int(math.ceil(self.height / 5))
        lines = np.unique(np.concatenate([np.arange(0, self.height, step), [self.height - 1]])).astype(float)
        pixels, luts = [], []
        pol_gain = 1.0 if pol == "VV" else 1.12
        for k, ln in enumerate(lines):
            px_step = 40 if k % 2 == 0 else 37  # vectors of different lengths
            px = np.unique(np.concatenate([np.arange(0, self.width, px_step), [self.width - 1]])).astype(
                float
            )
            eta = np.zeros(px.shape)
            for i, (_, first, last) in enumerate(self.swaths):
                sel = (px >= first) & (px <= last)
                u = (px[sel] - first) / max(last - first, 1)
                base = (600.0 - 40.0 * i) * pol_gain * (1.0 + 0.08 * ln / self.height)
                eta[sel] = base * (1.0 + 2.8 * (2 * u - 1) ** 2)  # high at the subswath edges
            pixels.append(px)
            luts.append(_r7(eta))
        blocks = []
        if self.noise_format == "ipf3":
            per_swath = 1 if self.mode == "IW" else 2
            edges = np.linspace(0, self.height, per_swath + 1).round().astype(int)
            for i, (swath, first, last) in enumerate(self.swaths):
                for j in range(per_swath):
                    l0, l1 = int(edges[j]), int(edges[j + 1]) - 1
                    bl = np.unique(np.concatenate([np.arange(l0, l1 + 1, 10), [l1]])).astype(float)
                    period = self.height / (3.0 + i)
                    lut = 1.0 + 0.07 * (1.0 - np.cos(2 * np.pi * (bl / period + 0.1 * i)))
                    blocks.append(AzimuthBlock(swath, l0, l1, first, last, bl, _r7(lut)))
        return NoiseLUT(
            lines=lines,
            pixels=tuple(pixels),
            range_luts=tuple(luts),
            azimuth=tuple(blocks),
            legacy=self.noise_format == "legacy",
        )

    def valid_mask(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """False on the DN-0 near/far-range border columns (2–7 px, varying along lines)."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        if not self.border:
            return np.ones((rows.size, cols.size), dtype=bool)
        near = 2 + (rows * 7 + self.seed) % 6
        far = 2 + (rows * 5 + 3 * self.seed) % 6
        return (cols[None, :] >= near[:, None]) & (cols[None, :] < self.width - far[:, None])


def _r7(values: np.ndarray) -> np.ndarray:
    """Values as they come back from the XML's ``%.6e`` text."""
    return np.array([float(f"{v:.6e}") for v in np.asarray(values, dtype=np.float64)])


def radar_speckle_spec(spec: ProductSpec) -> SceneSpec:
    """The simulator spec whose :func:`~sar2opt_geo.synth.speckle_window` is the product's radar-geometry
    speckle (indexed by line and pixel)."""
    return SceneSpec(
        spec.width,
        spec.height,
        spec.scene.bands,
        seed=spec.seed + RADAR_SPECKLE_SEED,
        speckle_corr=RADAR_SPECKLE_CORR,
    )


def radar_sigma0(spec: ProductSpec, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
    """The product's σ⁰ (float32 (bands, h, w)) at the radar pixels of the window: the simulator's
    noise-free σ⁰ of the map pixel each radar pixel centre falls in, times radar-geometry speckle; 0 outside
    the valid mask."""
    rows = np.arange(row0, row1)
    cols = np.arange(col0, col1)
    x, y = spec.to_map(rows[:, None] + 0.5, cols[None, :] + 0.5)
    scene = spec.scene
    mc = np.floor((x - scene.origin[0]) / scene.pixel_size).astype(np.int64)
    mr = np.floor((scene.origin[1] - y) / scene.pixel_size).astype(np.int64)
    r_lo, r_hi, c_lo, c_hi = int(mr.min()), int(mr.max()) + 1, int(mc.min()), int(mc.max()) + 1
    sar, _, _ = render_window(scene, r_lo, c_lo, r_hi - r_lo, c_hi - c_lo, speckle=False)
    out = sar[:, mr - r_lo, mc - c_lo]
    radar = radar_speckle_spec(spec)
    for i, band in enumerate(scene.bands):
        out[i] *= speckle_window(radar, row0, col0, row1 - row0, col1 - col0, band=band)
    out *= spec.valid_mask(rows, cols)
    return out


def _thermal_factor(spec: ProductSpec, pol: str, row0: int, shape) -> np.ndarray:
    if spec.thermal_noise == "mean":
        return np.ones(shape)
    rng = np.random.default_rng([spec.seed, ("VV", "VH").index(pol), row0])
    return rng.gamma(NOISE_LOOKS, 1.0 / NOISE_LOOKS, size=shape)


def dn_window(spec: ProductSpec, pol: str, row0: int, row1: int, cal: CalibrationLUT, noise: NoiseLUT):
    rows = np.arange(row0, row1)
    cols = np.arange(spec.width)
    sigma = radar_sigma0(spec, row0, row1, 0, spec.width)[spec.polarisations.index(pol)].astype(np.float64)
    a = cal.evaluate("sigma0", rows, cols)
    eta = noise.evaluate(rows, cols)
    power = a * a * sigma + _thermal_factor(spec, pol, row0, sigma.shape) * eta
    dn = np.clip(np.rint(np.sqrt(power)), 1, 65535).astype(np.uint16)
    dn[~spec.valid_mask(rows, cols)] = 0
    return dn


# ------------------------------------------------------------------------------------------ writing


@dataclass(frozen=True)
class ProductPaths:
    safe: Path
    zip: Path | None
    sar_map: Path | None  # the simulator's map-projected σ⁰ (sar.tif)
    optical: Path | None  # the optical truth (optical.tif)


def write_product(
    outdir: str | os.PathLike,
    spec: ProductSpec | None = None,
    *,
    zip_product: bool = False,
    truth: bool = True,
    zip_measurements: str = "stored",
) -> ProductPaths:
    """Write OUTDIR/NAME.SAFE (and OUTDIR/NAME.zip with ``zip_product``) and, with ``truth``, the simulator's
    map-projected ``sar.tif`` and ``optical.tif`` beside it. ``zip_measurements``: how the zip holds the
    measurement tiffs, ``stored`` or ``deflated`` (the XML is always deflated)."""
    spec = spec or ProductSpec()
    spec.validate()
    if zip_measurements not in ("stored", "deflated"):
        raise ValueError(f"zip_measurements must be 'stored' or 'deflated', not {zip_measurements!r}")
    tiff_comp = zipfile.ZIP_STORED if zip_measurements == "stored" else zipfile.ZIP_DEFLATED
    outdir = Path(outdir)
    safe = outdir / spec.name
    if safe.exists():
        shutil.rmtree(safe)
    (safe / "measurement").mkdir(parents=True)
    (safe / "annotation" / "calibration").mkdir(parents=True)
    cal = spec.calibration_lut()
    files = {}
    grid = _geolocation_grid(spec)
    for pol in spec.polarisations:
        stem = spec.file_stem(pol)
        noise = spec.noise_lut(pol)
        ann = safe / "annotation" / f"{stem}.xml"
        ann.write_text(_annotation_xml(spec, pol, grid))
        (safe / "annotation" / "calibration" / f"calibration-{stem}.xml").write_text(
            _calibration_xml(spec, pol, cal)
        )
        (safe / "annotation" / "calibration" / f"noise-{stem}.xml").write_text(_noise_xml(spec, pol, noise))
        tif = safe / "measurement" / f"{stem}.tiff"
        _write_measurement(tif, spec, pol, cal, noise, grid)
        files[pol] = stem
    (safe / "manifest.safe").write_text(_manifest_xml(spec, files, grid))
    zpath = None
    if zip_product:
        zpath = outdir / (spec.name[: -len(".SAFE")] + ".zip")
        with zipfile.ZipFile(zpath, "w") as zf:
            zf.write(safe, f"{safe.name}/")
            for path in sorted(safe.rglob("*")):
                arc = f"{safe.name}/{path.relative_to(safe).as_posix()}"
                if path.is_dir():
                    zf.write(path, arc + "/")
                else:
                    comp = tiff_comp if path.suffix == ".tiff" else zipfile.ZIP_DEFLATED
                    zf.write(path, arc, compress_type=comp)
    sar_map = optical = None
    if truth:
        sar_map, optical = write_scene(outdir, spec.scene)
    return ProductPaths(safe=safe, zip=zpath, sar_map=sar_map, optical=optical)


def _geolocation_grid(spec: ProductSpec) -> np.ndarray:
    """(n, 6): line, pixel, lon, lat, height, incidence on a 10 × 11 grid including the last line/pixel."""
    lines = np.unique(np.linspace(0, spec.height - 1, 10).round())
    pixels = np.unique(np.linspace(0, spec.width - 1, 11).round())
    ll, pp = np.meshgrid(lines, pixels, indexing="ij")
    x, y = spec.to_map(ll.ravel(), pp.ravel())
    lon, lat = warp_transform(CRS.from_user_input(spec.crs), CRS.from_epsg(4326), x.tolist(), y.tolist())
    inc = spec.incidence(ll.ravel(), pp.ravel())
    return np.column_stack([ll.ravel(), pp.ravel(), lon, lat, np.zeros(ll.size), inc])


#: ``create_measurement`` options for the layout of a real GRD measurement TIFF: uncompressed, one image row
#: per strip (the real S1A product in ``shared/s1-products``: 872 232 364 bytes for 26 144 x 16 676 uint16).
#: The synthetic products keep their tiled, deflated default, which is far smaller on disk.
GRD_LAYOUT = dict(tiled=False, blockxsize=None, blockysize=1, compress=None)


def create_measurement(path, width: int, height: int, gcps, **creation_options):
    """Open a new measurement GeoTIFF for writing, as a GRD product's: one uint16 DN band, 256 x 256 tiles,
    deflate, georeferenced by ``gcps`` (rows of at least row, col, lon, lat, height; EPSG:4326).
    ``creation_options`` are added to (or override) that profile. The caller closes the returned dataset."""
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype="uint16",
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    profile.update(creation_options)
    points = [GroundControlPoint(row=r[0], col=r[1], x=r[2], y=r[3], z=r[4]) for r in gcps]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # GCPs are set right after opening
        dst = rasterio.open(path, "w", **profile)
    try:
        dst.gcps = (points, CRS.from_epsg(4326))
    except BaseException:
        dst.close()
        raise
    return dst


def _write_measurement(path, spec, pol, cal, noise, grid) -> None:
    with create_measurement(path, spec.width, spec.height, grid) as dst:
        for r0 in range(0, spec.height, 256):
            r1 = min(spec.height, r0 + 256)
            dst.write(
                dn_window(spec, pol, r0, r1, cal, noise)[None], window=Window(0, r0, spec.width, r1 - r0)
            )


# --------------------------------------------------------------------------------------------- XML


def _t(seconds: float) -> str:
    return (_START + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _nums(values, fmt="{:.6e}") -> str:
    return " ".join(fmt.format(v) for v in values)


def _ints(values) -> str:
    return " ".join(str(int(round(v))) for v in values)


def _header(spec: ProductSpec, pol: str) -> str:
    stop = _t((spec.height - 1) * _LINE_TIME)
    return f"""  <adsHeader>
    <missionId>{spec.mission}</missionId>
    <productType>GRD</productType>
    <polarisation>{pol}</polarisation>
    <mode>{spec.mode}</mode>
    <swath>{spec.mode}</swath>
    <startTime>{_t(0)}</startTime>
    <stopTime>{stop}</stopTime>
    <absoluteOrbitNumber>48000</absoluteOrbitNumber>
    <missionDataTakeId>376030</missionDataTakeId>
    <imageNumber>{1 + ("VV", "VH").index(pol):03d}</imageNumber>
  </adsHeader>
"""


def _annotation_xml(spec: ProductSpec, pol: str, grid: np.ndarray) -> str:
    pass_word = spec.pass_direction.capitalize()
    heading = spec.heading if spec.heading <= 180 else spec.heading - 360
    points = []
    for line, pixel, lon, lat, hgt, inc in grid:
        srt = 2 * (800000.0 + pixel * spec.pixel_spacing * math.sin(math.radians(inc))) / _C
        points.append(
            f"""      <geolocationGridPoint>
        <azimuthTime>{_t(line * _LINE_TIME)}</azimuthTime>
        <slantRangeTime>{srt:.15e}</slantRangeTime>
        <line>{int(line)}</line>
        <pixel>{int(pixel)}</pixel>
        <latitude>{lat:.15e}</latitude>
        <longitude>{lon:.15e}</longitude>
        <height>{hgt:.15e}</height>
        <incidenceAngle>{inc:.15e}</incidenceAngle>
        <elevationAngle>{inc - 3.3:.15e}</elevationAngle>
      </geolocationGridPoint>
"""
        )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<product>
{_header(spec, pol)}  <generalAnnotation>
    <productInformation>
      <pass>{pass_word}</pass>
      <timelinessCategory>Fast-24h</timelinessCategory>
      <platformHeading>{heading:.15e}</platformHeading>
      <projection>Ground Range</projection>
      <rangeSamplingRate>6.434523812571428e+07</rangeSamplingRate>
      <radarFrequency>5.405000454334350e+09</radarFrequency>
      <azimuthSteeringRate>1.590368784000000e+00</azimuthSteeringRate>
    </productInformation>
  </generalAnnotation>
  <imageAnnotation>
    <imageInformation>
      <productFirstLineUtcTime>{_t(0)}</productFirstLineUtcTime>
      <productLastLineUtcTime>{_t((spec.height - 1) * _LINE_TIME)}</productLastLineUtcTime>
      <ascendingNodeTime>{_t(-2300.0)}</ascendingNodeTime>
      <anchorTime>{_t(0)}</anchorTime>
      <productComposition>Slice</productComposition>
      <slantRangeTime>{2 * 800000.0 / _C:.15e}</slantRangeTime>
      <pixelValue>Detected</pixelValue>
      <outputPixels>16 bit Unsigned Integer</outputPixels>
      <rangePixelSpacing>{spec.pixel_spacing:.6e}</rangePixelSpacing>
      <azimuthPixelSpacing>{spec.pixel_spacing:.6e}</azimuthPixelSpacing>
      <azimuthTimeInterval>{_LINE_TIME:.15e}</azimuthTimeInterval>
      <azimuthFrequency>{1 / _LINE_TIME:.15e}</azimuthFrequency>
      <numberOfSamples>{spec.width}</numberOfSamples>
      <numberOfLines>{spec.height}</numberOfLines>
      <zeroDopMinusAcqTime>2.002251400000000e+02</zeroDopMinusAcqTime>
      <incidenceAngleMidSwath>{(THETA_NEAR + THETA_FAR) / 2:.15e}</incidenceAngleMidSwath>
    </imageInformation>
    <processingInformation>
      <thermalNoiseCorrectionPerformed>false</thermalNoiseCorrectionPerformed>
      <rfiMitigationPerformed>Never</rfiMitigationPerformed>
      <ellipsoidName>WGS84</ellipsoidName>
      <ellipsoidSemiMajorAxis>6.378137000000000e+06</ellipsoidSemiMajorAxis>
      <ellipsoidSemiMinorAxis>6.356752314245000e+06</ellipsoidSemiMinorAxis>
    </processingInformation>
  </imageAnnotation>
  <swathTiming>
    <linesPerBurst>0</linesPerBurst>
    <samplesPerBurst>0</samplesPerBurst>
    <burstList count="0"/>
  </swathTiming>
  <geolocationGrid>
    <geolocationGridPointList count="{len(points)}">
{"".join(points)}    </geolocationGridPointList>
  </geolocationGrid>
</product>
"""


def _calibration_xml(spec: ProductSpec, pol: str, cal: CalibrationLUT) -> str:
    vecs = []
    for k, line in enumerate(cal.lines):
        px = cal.pixels[k]
        n = px.size
        vecs.append(
            f"""    <calibrationVector>
      <azimuthTime>{_t(line * _LINE_TIME)}</azimuthTime>
      <line>{int(line)}</line>
      <pixel count="{n}">{_ints(px)}</pixel>
      <sigmaNought count="{n}">{_nums(cal.luts["sigma0"][k])}</sigmaNought>
      <betaNought count="{n}">{_nums(cal.luts["beta0"][k])}</betaNought>
      <gamma count="{n}">{_nums(cal.luts["gamma0"][k])}</gamma>
      <dn count="{n}">{_nums(cal.luts["dn"][k])}</dn>
    </calibrationVector>
"""
        )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<calibration>
{_header(spec, pol)}  <calibrationInformation>
    <absoluteCalibrationConstant>1.000000e+00</absoluteCalibrationConstant>
  </calibrationInformation>
  <calibrationVectorList count="{len(vecs)}">
{"".join(vecs)}  </calibrationVectorList>
</calibration>
"""


def _noise_xml(spec: ProductSpec, pol: str, noise: NoiseLUT) -> str:
    legacy = spec.noise_format == "legacy"
    vec_tag, lut_tag = ("noiseVector", "noiseLut") if legacy else ("noiseRangeVector", "noiseRangeLut")
    vecs = []
    for k, line in enumerate(noise.lines):
        px = noise.pixels[k]
        vecs.append(
            f"""    <{vec_tag}>
      <azimuthTime>{_t(line * _LINE_TIME)}</azimuthTime>
      <line>{int(line)}</line>
      <pixel count="{px.size}">{_ints(px)}</pixel>
      <{lut_tag} count="{px.size}">{_nums(noise.range_luts[k])}</{lut_tag}>
    </{vec_tag}>
"""
        )
    body = f"""  <{vec_tag}List count="{len(vecs)}">
{"".join(vecs)}  </{vec_tag}List>
"""
    if spec.noise_format == "ipf3":
        blocks = []
        for b in noise.azimuth:
            blocks.append(
                f"""    <noiseAzimuthVector>
      <swath>{b.swath}</swath>
      <firstAzimuthLine>{b.first_line}</firstAzimuthLine>
      <firstRangeSample>{b.first_sample}</firstRangeSample>
      <lastAzimuthLine>{b.last_line}</lastAzimuthLine>
      <lastRangeSample>{b.last_sample}</lastRangeSample>
      <line count="{b.lines.size}">{_ints(b.lines)}</line>
      <noiseAzimuthLut count="{b.lut.size}">{_nums(b.lut)}</noiseAzimuthLut>
    </noiseAzimuthVector>
"""
            )
        body += f"""  <noiseAzimuthVectorList count="{len(blocks)}">
{"".join(blocks)}  </noiseAzimuthVectorList>
"""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<noise>
{_header(spec, pol)}{body}</noise>
"""


def _manifest_xml(spec: ProductSpec, stems: dict, grid: np.ndarray) -> str:
    corners = []
    h, w = spec.height - 1, spec.width - 1
    for line, pixel in ((0, 0), (0, w), (h, w), (h, 0)):
        row = grid[(grid[:, 0] == line) & (grid[:, 1] == pixel)][0]
        corners.append(f"{row[3]:.6f},{row[2]:.6f}")
    objects = []

    def mime(href):
        return "application/octet-stream" if href.endswith("tiff") else "text/xml"

    for stem in stems.values():
        for rep, href in (
            ("s1Level1ProductSchema", f"./annotation/{stem}.xml"),
            ("s1Level1NoiseSchema", f"./annotation/calibration/noise-{stem}.xml"),
            ("s1Level1CalibrationSchema", f"./annotation/calibration/calibration-{stem}.xml"),
            ("s1Level1MeasurementSchema", f"./measurement/{stem}.tiff"),
        ):
            oid = escape(href.rsplit("/", 1)[-1].replace("-", "").replace(".", ""))
            objects.append(
                f"""    <dataObject ID="{oid}" repID="{rep}">
      <byteStream mimeType="{mime(href)}">
        <fileLocation locatorType="URL" href="{href}"/>
      </byteStream>
    </dataObject>
"""
            )
    pols = "".join(
        f"{' ' * 12}<s1sarl1:transmitterReceiverPolarisation>{p}</s1sarl1:transmitterReceiverPolarisation>\n"
        for p in spec.polarisations
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<xfdu:XFDU xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:gml="http://www.opengis.net/gml" \
xmlns:xfdu="urn:ccsds:schema:xfdu:1" xmlns:safe="http://www.esa.int/safe/sentinel-1.0" \
xmlns:s1="http://www.esa.int/safe/sentinel-1.0/sentinel-1" \
xmlns:s1sar="http://www.esa.int/safe/sentinel-1.0/sentinel-1/sar" \
xmlns:s1sarl1="http://www.esa.int/safe/sentinel-1.0/sentinel-1/sar/level-1" \
version="esa/safe/sentinel-1.0/sentinel-1/sar/level-1/standard/grd">
  <metadataSection>
    <metadataObject ID="processing" classification="PROVENANCE" category="PDI">
      <metadataWrap mimeType="text/xml" vocabularyName="SAFE" textInfo="Processing">
        <xmlData>
          <safe:processing name="GRD Post Processing" start="{_t(3600)}" stop="{_t(3700)}">
            <safe:facility country="Synthetic" name="sar2opt-geo synthetic products" site="tests">
              <safe:software name="Sentinel-1 IPF" version="{spec.ipf_version}"/>
            </safe:facility>
          </safe:processing>
        </xmlData>
      </metadataWrap>
    </metadataObject>
    <metadataObject ID="platform" classification="DESCRIPTION" category="DMD">
      <metadataWrap mimeType="text/xml" vocabularyName="SAFE" textInfo="Platform Description">
        <xmlData>
          <safe:platform>
            <safe:nssdcIdentifier>2014-016A</safe:nssdcIdentifier>
            <safe:familyName>SENTINEL-1</safe:familyName>
            <safe:number>{spec.mission[-1]}</safe:number>
            <safe:instrument>
              <safe:familyName abbreviation="SAR">Synthetic Aperture Radar</safe:familyName>
              <safe:extension>
                <s1sarl1:instrumentMode>
                  <s1sarl1:mode>{spec.mode}</s1sarl1:mode>
                  <s1sarl1:swath>{spec.mode}</s1sarl1:swath>
                </s1sarl1:instrumentMode>
              </safe:extension>
            </safe:instrument>
          </safe:platform>
        </xmlData>
      </metadataWrap>
    </metadataObject>
    <metadataObject ID="measurementOrbitReference" classification="DESCRIPTION" category="DMD">
      <metadataWrap mimeType="text/xml" vocabularyName="SAFE" textInfo="Orbit Reference">
        <xmlData>
          <safe:orbitReference>
            <safe:orbitNumber type="start">48000</safe:orbitNumber>
            <safe:orbitNumber type="stop">48000</safe:orbitNumber>
            <safe:extension>
              <s1:orbitProperties>
                <s1:pass>{spec.pass_direction}</s1:pass>
              </s1:orbitProperties>
            </safe:extension>
          </safe:orbitReference>
        </xmlData>
      </metadataWrap>
    </metadataObject>
    <metadataObject ID="generalProductInformation" classification="DESCRIPTION" category="DMD">
      <metadataWrap mimeType="text/xml" vocabularyName="SAFE" textInfo="General Product Information">
        <xmlData>
          <s1sarl1:standAloneProductInformation>
{pols}            <s1sarl1:productClass>S</s1sarl1:productClass>
            <s1sarl1:productClassDescription>SAR Standard L1 Product</s1sarl1:productClassDescription>
            <s1sarl1:productComposition>Slice</s1sarl1:productComposition>
            <s1sarl1:productType>GRD</s1sarl1:productType>
            <s1sarl1:productTimelinessCategory>Fast-24h</s1sarl1:productTimelinessCategory>
          </s1sarl1:standAloneProductInformation>
        </xmlData>
      </metadataWrap>
    </metadataObject>
    <metadataObject ID="acquisitionPeriod" classification="DESCRIPTION" category="DMD">
      <metadataWrap mimeType="text/xml" vocabularyName="SAFE" textInfo="Acquisition Period">
        <xmlData>
          <safe:acquisitionPeriod>
            <safe:startTime>{_t(0)}</safe:startTime>
            <safe:stopTime>{_t((spec.height - 1) * _LINE_TIME)}</safe:stopTime>
          </safe:acquisitionPeriod>
        </xmlData>
      </metadataWrap>
    </metadataObject>
    <metadataObject ID="measurementFrameSet" classification="DESCRIPTION" category="DMD">
      <metadataWrap mimeType="text/xml" vocabularyName="SAFE" textInfo="Frame Set">
        <xmlData>
          <safe:frameSet>
            <safe:frame>
              <safe:footPrint srsName="http://www.opengis.net/gml/srs/epsg.xml#4326">
                <gml:coordinates>{" ".join(corners)}</gml:coordinates>
              </safe:footPrint>
            </safe:frame>
          </safe:frameSet>
        </xmlData>
      </metadataWrap>
    </metadataObject>
  </metadataSection>
  <dataObjectSection>
{"".join(objects)}  </dataObjectSection>
</xfdu:XFDU>
"""
