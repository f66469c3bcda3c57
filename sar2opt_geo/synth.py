"""Synthetic paired SAR / optical scenes: demo input, test fixture and training data of the bundled model.

No real imagery can be downloaded, and no maintained library simulates *paired* SAR and optical views of
the same land cover, so this generator is hand-written. It models, in order:

**Land cover** as a pure function of the global pixel position. A cadastral frame (rotated by a per-seed
angle and gently warped by low-frequency value noise) carries a network of country roads (jittered lines,
some segments missing, a few wider main roads) and agricultural parcels (rows of cells of random width,
each split into 1-4 unequal strips, each strip one crop with its own row/tramline direction and period;
some parcels have hedgerows). Smooth fractal value noise places forests (their edges partly following the
parcels), towns (perimeter blocks of buildings with red/grey/dark roofs around gardens, on a street grid)
and lakes; meandering rivers (sine meanders plus 1-D noise, bordered by meadows) run across the scene.
Classes: :data:`WATER`, :data:`CROP`, :data:`GRASS`, :data:`FOREST`, :data:`BARE`, :data:`URBAN` (built-up
lots), :data:`ROAD` (roads and streets).

**Optical truth** (uint8 RGB, the same function of land cover for both domains): a colour per material
(crop type, soil, canopy, roof, asphalt, water) changed by the per-field latent, modest row and canopy
texture, mild low-frequency illumination and per-pixel grain.

**Per-field latent.** Each field strip (and town lot) has ONE uniform latent (biomass for vegetation,
moisture for soil) that drives both views with the physical sign: more biomass or moisture gives a darker
(vegetation: relatively greener) optical colour and a higher VV/VH backscatter. So the optical appearance
of a field is largely predictable from its SAR, as with real phenology-driven imagery.

**SAR** (linear sigma0 per band "VV"/"VH"): a mean backscatter per material in dB (water about -22 dB with
wind-roughness variation; crop types separated as in C-band crop-monitoring literature: smooth bare soil
-17.5, ripe cereal -15.5 with weak VH, rough ploughed soil -13.5 with strong furrow texture, meadow -12,
green cereal -11, root crops -10, maize -9, rapeseed -7 dB VV with strong VH; +-0.7..1 dB per field
from the latent; forest -10.5/-15.5 dB VV/VH with strong canopy texture; roofs -3..+5 dB, roads dark),
a class-dependent cross-pol ratio (vegetation volume scattering keeps VH
relatively strong, water and double bounce give weak VH), double-bounce lines on the sensor-facing (west,
near-range) edge of urban blocks, an incidence-angle trend across range (columns, 29-46 degrees over the
scene width, steeper for water), then multiplicative speckle.

**Speckle** is window-consistent: its random numbers come from a counter-based hash (the splitmix64 output
function applied to ``key(seed, band) + (row << 32 | col) * golden``, i.e. splitmix64 indexed by the pixel),
whose two 32-bit halves give two uniforms, two normals by Box-Muller, and a Gamma(L, 1/L) sample by the
Wilson-Hilferty cube ``(a + b z)^3`` with ``a = 1 - 1/(9L)``, ``b = 1/(3 sqrt L)``, divided by its exact mean
``a (a^2 + 3 b^2)`` so that the speckle mean is exactly 1 (variance 1/L to O(L^-2); valid for non-integer
L; the rare negative base is clipped). ENL of the speckle is therefore L = ``spec.enl``.
The speckle is spatially correlated as in Sentinel-1 GRDH products, whose 20 x 22 m resolution cell is
sampled at 10 m pixels (and map-projected σ⁰ is resampled once more): the normal ``z`` is the per-pixel
normals convolved with a separable Gaussian of ``spec.speckle_corr`` pixels (0.6 by default: correlation of
``z`` exp(-1/(4·0.6²)) = 0.50 between neighbouring pixels, 0.06 two pixels apart; measured on the intensity:
0.43, 0.06, and 0.19 diagonally) and rescaled to unit variance, so the marginal stays Gamma(L). The
convolution reads the normals of a margin of :data:`_SPECKLE_RADIUS` pixels around the window from the
same counter-based hash, so the speckle stays a pure function of the global position. ``speckle_corr=0``
gives independent pixels (the simulator before 2026-12: a texture real GRDH data does not have, and one
that bilinear map projection of a product visibly smooths).

**Domains.** ``"s1"``: Sentinel-1 IW GRDH-like. ``"gf3"``: Gaofen-3-like: the land cover is sampled at half
the ground distance per pixel (features appear twice as large), fewer looks (``0.64 * spec.enl``, 2.8 for
the default), K-distributed intensity (Gamma texture with order 8 times Gamma speckle), +3 dB calibration
offset and 1.25x class contrast around -12 dB; :func:`sar_to_uint8` uses an amplitude stretch instead of the
dB stretch of SEN1-2.

Every value is a pure function of (spec, global row, global column): the scene-level parameters come from
hashing the seed, lattice noise hashes global lattice indices, and only element-wise numpy arithmetic is
used, so any tiling of the scene gives identical arrays and a scene of any size is written block by block.
"""

from __future__ import annotations

import functools
import json
import math
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sar2opt_geo.errors import UsageError
from sar2opt_geo.io import GeoProfile, GeoTiffWriter, remove_path, replace_path, temporary_sibling, write_png
from sar2opt_geo.radiometry import DUAL_POL_COMPOSITE, Radiometry, composite_levels

__all__ = [
    "BANDS",
    "DOMAINS",
    "NODATA",
    "WATER",
    "CROP",
    "GRASS",
    "FOREST",
    "BARE",
    "URBAN",
    "ROAD",
    "CLASS_NAMES",
    "SAR_DIR",
    "OPT_DIR",
    "SceneSpec",
    "render_window",
    "landcover_window",
    "expected_optical_window",
    "ORACLE_KNOWLEDGE",
    "pair_windows",
    "SIMULATOR_VERSION",
    "speckle_window",
    "sar_to_uint8",
    "write_scene",
    "write_pairs",
]

#: Changes whenever the simulator renders different pixels for the same spec (written beside training pairs,
#: so that pairs of an older simulator are not taken for current ones).
SIMULATOR_VERSION = "2026-12-correlated-speckle"
#: The stamp :func:`write_pairs` leaves in its folder.
PAIRS_STAMP = "pairs.json"

BANDS = ("VV", "VH")
DOMAINS = ("s1", "gf3")

#: Land-cover class codes returned by :func:`landcover_window` (0 outside the footprint).
NODATA, WATER, CROP, GRASS, FOREST, BARE, URBAN, ROAD = range(8)
CLASS_NAMES = {
    NODATA: "nodata",
    WATER: "water",
    CROP: "crop",
    GRASS: "grass",
    FOREST: "forest",
    BARE: "bare soil",
    URBAN: "urban",
    ROAD: "road",
}

#: Directory names of the QXSLAB-SAROPT-like pair layout written by :func:`write_pairs`.
SAR_DIR = "sar_256_oc_0.2"
OPT_DIR = "opt_256_oc_0.2"

GF3_LOOKS_FACTOR = 0.64  # gf3 speckle looks = 0.64 * spec.enl (2.8 for the S1 default 4.4)
GF3_TEXTURE_ORDER = 8.0  # order of the Gamma texture of the K distribution
GF3_CAL_OFFSET_DB = 3.0
GF3_CONTRAST = 1.25
THETA_NEAR, THETA_FAR, THETA_REF = 29.1, 46.0, 37.5  # incidence angles (degrees) across the scene


@dataclass(frozen=True)
class SceneSpec:
    """Everything that determines a synthetic scene (a pure function of this and the pixel position)."""

    width: int
    height: int
    bands: tuple[str, ...] = ("VV",)
    seed: int = 0
    crs: str = "EPSG:32633"
    pixel_size: float = 10.0
    origin: tuple[float, float] = (500000.0, 5500000.0)  # upper-left corner (x, y) in ``crs``
    footprint: bool = True  # nodata (0) outside a rotated acquisition footprint, as real GRD scenes
    enl: float = 4.4  # Gamma speckle looks (Sentinel-1 IW GRDH)
    speckle_corr: float = 0.6  # std (pixels) of the Gaussian that correlates the speckle; 0 = independent
    domain: str = "s1"  # "s1" or "gf3"

    def validate(self) -> None:
        for name in ("width", "height"):
            v = getattr(self, name)
            if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
                raise UsageError(f"SceneSpec.{name} must be an integer >= 1, got {v!r}")
        if isinstance(self.bands, str) or len(self.bands) == 0:
            raise UsageError(f"SceneSpec.bands must be a non-empty tuple of {BANDS}, got {self.bands!r}")
        unknown = [b for b in self.bands if b not in BANDS]
        if unknown:
            raise UsageError(f"unknown band name(s) {unknown}; allowed: {', '.join(BANDS)}")
        if self.domain not in DOMAINS:
            raise UsageError(f"unknown domain {self.domain!r}; allowed: {', '.join(DOMAINS)}")
        if not (0 < self.pixel_size <= 100):  # the land cover is designed for 1-100 m pixels
            raise UsageError(f"SceneSpec.pixel_size must be in (0, 100] metres, got {self.pixel_size!r}")
        if not (self.enl > 0 and math.isfinite(self.enl)):
            raise UsageError(f"SceneSpec.enl must be > 0, got {self.enl!r}")
        if not (0 <= self.speckle_corr <= _SPECKLE_RADIUS / 3 and math.isfinite(self.speckle_corr)):
            raise UsageError(
                f"SceneSpec.speckle_corr must be within 0..{_SPECKLE_RADIUS / 3:g} pixels, "
                f"got {self.speckle_corr!r}"
            )

    @property
    def transform(self) -> tuple[float, float, float, float, float, float]:
        """Affine coefficients (a, b, c, d, e, f) of the north-up grid."""
        x0, y0 = self.origin
        return (float(self.pixel_size), 0.0, float(x0), 0.0, -float(self.pixel_size), float(y0))


# ------------------------------------------------------------------------------------------ hashing

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_K2 = 0xD1B54A32D192ED03
_U_GOLDEN = np.uint64(_GOLDEN)
_U_K2 = np.uint64(_K2)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32, _S40 = (np.uint64(s) for s in (30, 27, 31, 32, 40))


def _mix_int(z: int) -> int:
    """splitmix64 output function on a Python int."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _key(seed: int, *stream: str | int) -> int:
    """A 64-bit key for a named random stream of a seed (stable across runs and platforms)."""
    z = _mix_int((int(seed) & _MASK64) * _GOLDEN + 0x2545F4914F6CDD1D)
    for s in stream:
        v = zlib.crc32(s.encode()) if isinstance(s, str) else int(s)
        z = _mix_int(z + (v & _MASK64) * _GOLDEN + 1)
    return z


def _param(seed: int, name: str) -> float:
    """A scene-level uniform in [0, 1) for ``name``."""
    return (_key(seed, "param", name) >> 11) * 2.0**-53


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 output function on a uint64 array (modifies and returns ``z``)."""
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def _as_u64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.int64).view(np.uint64)


def _hash2(key: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hash of integer lattice points (broadcasting int64 arrays) -> uint64."""
    z = _mix(_as_u64(a) * _U_GOLDEN ^ np.uint64(key)) + _as_u64(b) * _U_K2
    return _mix(z)


def _unit(h: np.ndarray, shift: int = 40) -> np.ndarray:
    """24 hash bits (starting at bit ``shift``) as float32 uniforms in [0, 1)."""
    return ((h >> np.uint64(shift)) & np.uint64(0xFFFFFF)).astype(np.float32) * np.float32(2.0**-24)


# ------------------------------------------------------------------------------------ value noise


def _smooth(t: np.ndarray) -> np.ndarray:
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def _vnoise(key: int, x: np.ndarray, y: np.ndarray, scale: float) -> np.ndarray:
    """Separable smooth value noise in [0, 1) on a ``scale`` lattice: x (w,), y (h,) metres -> (h, w)."""
    fx = x / scale
    ix = np.floor(fx)
    tx = _smooth(fx - ix)
    ix = ix.astype(np.int64)
    fy = y / scale
    iy = np.floor(fy)
    ty = _smooth(fy - iy)[:, None]
    iy = iy.astype(np.int64)
    gy = np.arange(iy.min(), iy.max() + 2, dtype=np.int64)
    gx = np.arange(ix.min(), ix.max() + 2, dtype=np.int64)
    g = _unit(_hash2(key, gy[:, None], gx))
    jx = ix - gx[0]
    r = g[:, jx] * (np.float32(1) - tx) + g[:, jx + 1] * tx  # (ny, w)
    jy = iy - gy[0]
    return r[jy] * (np.float32(1) - ty) + r[jy + 1] * ty


def _fbm(seed: int, name: str, x, y, scales, weights) -> np.ndarray:
    out = None
    total = float(sum(weights))
    for i, (s, wgt) in enumerate(zip(scales, weights, strict=True)):
        k = _key(seed, name, i)
        ox, oy = (k & 0xFFFF) * s / 65536.0, ((k >> 16) & 0xFFFF) * s / 65536.0  # decorrelate lattices
        n = _vnoise(k, x + ox, y + oy, s) * np.float32(wgt / total)
        out = n if out is None else out + n
    return out


def _vnoise1(key: int, p: np.ndarray, scale: float) -> np.ndarray:
    """1-D smooth value noise in [0, 1) of an arbitrary coordinate array ``p`` (metres)."""
    fp = p / scale
    ip = np.floor(fp)
    t = _smooth(fp - ip)
    ip = ip.astype(np.int64)
    i0 = int(ip.min())
    g = _unit(_hash2(key, np.arange(i0, int(ip.max()) + 2, dtype=np.int64), np.zeros(1, dtype=np.int64)))
    j = ip - i0
    return g[j] * (np.float32(1) - t) + g[j + 1] * t


# -------------------------------------------------------------------------------------- materials

# name, class, RGB (at the mean of the field latent), VV dB (s1, at THETA_REF), VH - VV dB, incidence slope
# dB/deg, optical amplitudes of: per-field variation (relative brightness change between the extremes of the
# field latent, darker with more latent unless _FIELD_RGB gives the colour change), row texture, canopy
# texture; SAR dB amplitudes of the same (per-field: dB change from the mean at the latent's extremes).
#
# The per-field latent (biomass for vegetation, moisture for soil; one uniform per field strip) drives both
# views with the physical sign: more biomass / moisture -> darker (and, for vegetation, relatively greener)
# optical and higher VV/VH (volume scattering, dielectric constant). Crop backscatter levels follow C-band
# crop-monitoring literature at mid incidence: smooth bare soil lowest (-17.5 dB VV, very weak VH), ripe
# cereal low (-15.5 dB, weak VH), rough ploughed soil with strong furrow texture (-13.5 dB), meadow and green
# cereal -12/-11 dB, root crops -10 dB with rows, maize high (-9 dB VV), rapeseed highest (-7 dB) with
# strong VH (volume scattering of the branched canopy and pods).
_MATERIALS = [
    ("nodata", NODATA, (0, 0, 0), -30.0, -8.0, 0.0, 0, 0, 0, 0, 0, 0),
    ("lake", WATER, (30, 52, 66), -21.5, -8.5, -0.25, 0.04, 0, 0.04, 0, 0, 0),
    ("river", WATER, (48, 66, 60), -22.0, -8.5, -0.25, 0.04, 0, 0.04, 0, 0, 0),
    ("cereal_green", CROP, (96, 130, 56), -11.0, -6.0, -0.10, 0.22, 0.03, 0.04, 0.7, 0.4, 0.3),
    ("cereal_ripe", CROP, (196, 174, 110), -15.5, -8.0, -0.10, 0.18, 0.03, 0.03, 0.9, 0.4, 0.3),
    ("maize", CROP, (72, 112, 44), -9.0, -6.5, -0.10, 0.20, 0.05, 0.04, 0.8, 1.0, 0.4),
    ("rapeseed", CROP, (198, 188, 84), -7.0, -5.5, -0.10, 0.14, 0.02, 0.04, 0.8, 0.2, 0.3),
    ("root_crop", CROP, (60, 98, 48), -10.0, -5.5, -0.10, 0.20, 0.05, 0.04, 0.7, 0.8, 0.4),
    ("meadow", GRASS, (108, 142, 68), -12.0, -6.5, -0.10, 0.20, 0.0, 0.05, 0.7, 0.0, 0.5),
    ("bare_soil", BARE, (154, 126, 96), -17.5, -9.0, -0.12, 0.16, 0.02, 0.03, 1.0, 0.3, 0.3),
    ("ploughed", BARE, (112, 90, 70), -13.5, -8.5, -0.12, 0.18, 0.06, 0.04, 0.9, 1.5, 0.3),
    ("forest", FOREST, (40, 66, 36), -10.5, -5.0, -0.06, 0.10, 0.0, 0.30, 0.6, 0.0, 2.0),
    ("hedge", FOREST, (48, 76, 40), -9.5, -5.0, -0.06, 0.10, 0.0, 0.30, 0.6, 0.0, 2.0),
    ("roof_red", URBAN, (156, 84, 70), -5.0, -9.0, -0.05, 0.12, 0, 0.08, 3.0, 0, 2.0),
    ("roof_grey", URBAN, (146, 144, 142), -3.5, -9.0, -0.05, 0.12, 0, 0.08, 3.0, 0, 2.0),
    ("roof_dark", URBAN, (92, 92, 98), -6.0, -9.0, -0.05, 0.12, 0, 0.08, 3.0, 0, 2.0),
    ("garden", GRASS, (84, 114, 62), -10.5, -6.0, -0.08, 0.20, 0, 0.20, 1.5, 0, 1.5),
    ("street", ROAD, (150, 148, 144), -14.0, -8.0, -0.10, 0.10, 0, 0.04, 1.0, 0, 0.5),
    ("road", ROAD, (176, 174, 168), -17.0, -8.0, -0.12, 0.06, 0, 0.03, 0.5, 0, 0.3),
    ("main_road", ROAD, (128, 128, 126), -18.0, -8.0, -0.12, 0.04, 0, 0.03, 0.5, 0, 0.3),
]
# RGB change from the field's mean colour at the highest field latent (the lowest gets the opposite change):
# denser canopy darker and relatively greener, wetter soil darker.
_FIELD_RGB = {
    "cereal_green": (-20, -8, -13),
    "cereal_ripe": (-20, -17, -12),
    "maize": (-13, -5, -9),
    "rapeseed": (-12, -6, -13),
    "root_crop": (-11, -3, -9),
    "meadow": (-18, -8, -13),
    "bare_soil": (-22, -19, -15),
    "ploughed": (-17, -14, -10),
    "forest": (-4, -5, -4),
    "hedge": (-4, -6, -4),
    "garden": (-11, -6, -8),
}
_MAT = {m[0]: i for i, m in enumerate(_MATERIALS)}
_MAT_CLASS = np.array([m[1] for m in _MATERIALS], dtype=np.uint8)
_MAT_RGB = np.array([m[2] for m in _MATERIALS], dtype=np.float32).T.copy()  # (3, n)
_MAT_VV = np.array([m[3] for m in _MATERIALS], dtype=np.float32)
_MAT_XPOL = np.array([m[4] for m in _MATERIALS], dtype=np.float32)
_MAT_SLOPE = np.array([m[5] for m in _MATERIALS], dtype=np.float32)
_MAT_OPT_AMP = np.array([m[6:9] for m in _MATERIALS], dtype=np.float32).T.copy()  # (3, n)
_MAT_SAR_AMP = np.array([m[9:12] for m in _MATERIALS], dtype=np.float32).T.copy()
_MAT_FIELD_RGB = np.array(  # (3, n): RGB change at the highest field latent
    [_FIELD_RGB.get(m[0], tuple(-0.5 * m[6] * c for c in m[2])) for m in _MATERIALS], dtype=np.float32
).T.copy()
_MAT_WIND = np.where(_MAT_CLASS == WATER, 5.0, 0.0).astype(np.float32)  # dB per unit of the aux field

# Crop choice per strip: 256-entry lookup from 8 hash bits (probabilities in 1/256).
_CROP_SHARES = [
    ("cereal_green", 64),
    ("cereal_ripe", 42),
    ("maize", 40),
    ("rapeseed", 12),
    ("root_crop", 26),
    ("meadow", 32),
    ("bare_soil", 18),
    ("ploughed", 22),
]
_CROP_LUT = np.concatenate([np.full(n, _MAT[name], dtype=np.uint8) for name, n in _CROP_SHARES])
assert _CROP_LUT.size == 256
_ROOF_LUT = np.array([_MAT["roof_red"]] * 4 + [_MAT["roof_grey"]] * 3 + [_MAT["roof_dark"]], dtype=np.uint8)

# Thresholds of the fractal fields (calibrated on their distributions: about 17 % forest, 6 % towns,
# 2 % lakes before roads and rivers).
_T_FOREST = 0.64
_T_URBAN = 0.75
_T_LAKE = 0.19

_F32 = np.float32
_TWO_PI = _F32(2 * np.pi)


# --------------------------------------------------------------------------------------- the scene


@dataclass(frozen=True)
class _Params:
    """Scene-level constants derived from the spec (seed-hashed angles, spacings, offsets)."""

    g: float  # ground metres per pixel of content
    x0: float
    y0: float
    ca: float  # cadastral frame rotation
    sa: float
    pv: float  # parcel row height
    cr: float  # river frame rotation
    sr: float
    coarse: int  # coarse-grid step (pixels) of the smooth fields


@functools.lru_cache(maxsize=64)
def _params(spec: SceneSpec) -> _Params:
    seed = spec.seed
    g = spec.pixel_size * (0.5 if spec.domain == "gf3" else 1.0)
    alpha = math.radians(-25.0 + 50.0 * _param(seed, "alpha"))
    beta = math.radians(-35.0 + 70.0 * _param(seed, "beta")) + (
        math.pi / 2 if _param(seed, "rv") < 0.5 else 0
    )
    return _Params(
        g=g,
        x0=1.0e5 * _param(seed, "x0"),
        y0=1.0e5 * _param(seed, "y0"),
        ca=math.cos(alpha),
        sa=math.sin(alpha),
        pv=230.0 + 80.0 * _param(seed, "pv"),
        cr=math.cos(beta),
        sr=math.sin(beta),
        coarse=max(1, min(16, int(300.0 / g / 4.0))),
    )


# smooth fields: name, octave scales (m), weights
_SMOOTH = (
    ("warp_u", (2200.0, 700.0), (0.8, 0.2)),
    ("warp_v", (2200.0, 700.0), (0.8, 0.2)),
    ("forest", (3200.0, 1100.0, 380.0), (0.5, 0.32, 0.18)),
    ("town", (5200.0, 1500.0), (0.68, 0.32)),
    ("lake", (2600.0, 800.0), (0.72, 0.28)),
    ("aux", (1800.0, 500.0), (0.7, 0.3)),  # wind roughness (SAR) and illumination (optical)
)


def _cells(fa: np.ndarray, fb: np.ndarray):
    """Bounding grid of float-valued integer lattice indices: (a0, na, b0, nb, flat intp index)."""
    a0, a1 = float(fa.min()), float(fa.max())
    b0, b1 = float(fb.min()), float(fb.max())
    na, nb = int(a1 - a0) + 1, int(b1 - b0) + 1
    flat = ((fa - _F32(a0)) * _F32(nb) + (fb - _F32(b0))).astype(np.intp)
    return int(a0), na, int(b0), nb, flat


def _grid_hash(key: int, a0: int, na: int, b0: int, nb: int) -> np.ndarray:
    """Flat hash array of the lattice cells [a0, a0+na) x [b0, b0+nb)."""
    return _hash2(
        key, np.arange(a0, a0 + na, dtype=np.int64)[:, None], np.arange(b0, b0 + nb, dtype=np.int64)
    ).ravel()


def _floor_index(f: np.ndarray):
    """(i0, n, intp index) of a float array of integer values."""
    i0 = float(f.min())
    return int(i0), int(float(f.max()) - i0) + 1, (f - _F32(i0)).astype(np.intp)


class _Window:
    """Land cover and texture fields of one window (all arrays (h, w)); a pure function of the position."""

    def __init__(self, spec: SceneSpec, row0: int, col0: int, height: int, width: int):
        self.spec = spec
        self.rows = np.arange(row0, row0 + height, dtype=np.int64)
        self.cols = np.arange(col0, col0 + width, dtype=np.int64)
        self.valid = _footprint(spec, self.rows, self.cols)
        self._landcover()

    def _smooth_fields(self, pr: _Params) -> np.ndarray:
        """The _SMOOTH fields, evaluated on a coarse pixel grid and bilinearly interpolated: (k, h, w)."""
        c = pr.coarse
        rows, cols = self.rows, self.cols
        r0, c0 = int(rows[0]) // c, int(cols[0]) // c
        nr = np.arange(r0, int(rows[-1]) // c + 2, dtype=np.int64) * c
        nc = np.arange(c0, int(cols[-1]) // c + 2, dtype=np.int64) * c
        xn = (nc + 0.5) * pr.g + pr.x0
        yn = (nr + 0.5) * pr.g + pr.y0
        nodes = np.stack([_fbm(self.spec.seed, name, xn, yn, sc, wt) for name, sc, wt in _SMOOTH])
        jx = cols // c - c0
        tx = ((cols % c) / c).astype(np.float32)
        jy = rows // c - r0
        ty = ((rows % c) / c).astype(np.float32)[:, None]
        a = nodes[:, :, jx] * (_F32(1) - tx) + nodes[:, :, jx + 1] * tx  # (k, nyn, w)
        return a[:, jy] * (_F32(1) - ty) + a[:, jy + 1] * ty

    def _landcover(self) -> None:
        spec, seed = self.spec, self.spec.seed
        pr = _params(spec)
        g = pr.g
        x = (self.cols + 0.5) * pr.g + pr.x0  # float64 (w,)
        y = (self.rows + 0.5) * pr.g + pr.y0  # float64 (h,)
        self.x, self.y = x, y
        h, w = y.size, x.size
        sm = self._smooth_fields(pr)
        self.aux = sm[5]
        # cadastral frame: rotated, warped by smooth noise (float32: metres up to ~3e5, 0.03 m resolution)
        u = (x * pr.ca).astype(_F32) + (y * pr.sa).astype(_F32)[:, None]
        u += (sm[0] - _F32(0.5)) * _F32(260.0)
        v = (y * pr.ca).astype(_F32)[:, None] - (x * pr.sa).astype(_F32)
        v += (sm[1] - _F32(0.5)) * _F32(260.0)

        # ---- parcels: rows of height pv, cells of per-row width and offset, split into 1-4 strips
        pv = _F32(pr.pv)
        bq = v * (_F32(1) / pv)
        bf = np.floor(bq)
        fv = bq - bf
        b0, nb_, jb = _floor_index(bf)
        hrow = _grid_hash(_key(seed, "parcel_row"), b0, nb_, 0, 1)
        pu_t = _F32(170.0) + _F32(360.0) * _unit(hrow)
        pu = pu_t.take(jb)
        au = u / pu + _unit(hrow, 16).take(jb)
        af = np.floor(au)
        fu = au - af
        a0, na, b0c, nbc, cell = _cells(af, bf)
        hc = _grid_hash(_key(seed, "parcel"), a0, na, b0c, nbc)
        hc2 = _grid_hash(_key(seed, "parcel_crops"), a0, na, b0c, nbc)
        along_u_t = (hc & np.uint64(1)).astype(bool)
        along_u = along_u_t.take(cell)
        nstrip = (((hc >> np.uint64(1)) & np.uint64(3)).astype(np.float32) + _F32(1)).take(cell)
        bend = (_unit(hc, 8) * _F32(1.6) - _F32(0.8)).take(cell)
        t = np.where(along_u, fu, fv)
        t += bend * t * (_F32(1) - t)
        strip = np.minimum(np.floor(t * nstrip), nstrip - _F32(1)).astype(np.intp)
        sidx = cell * 4 + strip
        # per (cell, strip) tables: crop material, field variation, row direction, row period
        bits = (hc2[:, None] >> (np.arange(4, dtype=np.uint64) * np.uint64(16))).ravel()
        mat = _CROP_LUT.take((bits & np.uint64(0xFF)).astype(np.intp)).take(sidx)
        var_t = ((bits >> np.uint64(8)) & np.uint64(0xFF)).astype(np.float32) * _F32(1 / 255.0)
        self.fieldvar = var_t.take(sidx)
        rowdir_t = ((bits >> np.uint64(7)) & np.uint64(1)).astype(bool) ^ np.repeat(along_u_t, 4)
        inv_period_t = _F32(1.0) / (_F32(22.0) + _F32(40.0) * var_t)
        coord = np.where(rowdir_t.take(sidx), u, v)
        ph = coord * inv_period_t.take(sidx)
        ph -= np.floor(ph)
        self.rowtex = np.sin(_TWO_PI * ph)
        # hedgerows along the edges of some parcels
        hedge_t = _unit(hc, 32) < _F32(0.22)
        hedge = hedge_t.take(cell)
        if hedge.any():
            edge = np.minimum(np.minimum(fu, _F32(1) - fu) * pu, np.minimum(fv, _F32(1) - fv) * pv)
            hedge &= edge < _F32(max(4.0, 0.6 * g))
            mat[hedge] = _MAT["hedge"]

        # ---- forest: fractal field, edges partly snapped to the parcels
        f = sm[2]
        snap = (_unit(hc, 16) < _F32(0.5)).take(cell)
        forest = (f > _F32(_T_FOREST)) | ((f > _F32(_T_FOREST - 0.05)) & snap)

        # ---- towns: perimeter blocks of buildings around gardens, on a street grid
        tn = sm[3]
        dbl = None
        if (tn > _F32(_T_URBAN - 0.025)).any():
            town, townmat, lotvar, dbl = self._town(seed, g, u, v, tn)

        # ---- water: lakes and meandering rivers with meadow banks
        lake = sm[4] < _F32(_T_LAKE)
        river, bank = self._rivers(seed, g, pr, x, y)

        # ---- country roads: jittered lines of constant u and of constant v, some segments missing
        road = np.zeros((h, w), dtype=bool)
        main = np.zeros((h, w), dtype=bool)
        for name, ca_, cb_, spacing, seg in (
            ("road_u", u, v, 1500.0, 1250.0),
            ("road_v", v, u, 1250.0, 1500.0),
        ):
            fi = np.floor(ca_ * _F32(1.0 / spacing) + _F32(0.5))
            i0, ni, ji = _floor_index(fi)
            hi = _grid_hash(_key(seed, name), i0, ni, 0, 1)
            pos_t = (np.arange(i0, i0 + ni) * spacing).astype(np.float32) + (_unit(hi) - _F32(0.5)) * _F32(
                0.45 * spacing
            )
            main_t = _unit(hi, 16) < _F32(0.22)
            hw_t = np.where(main_t, _F32(max(6.0, 0.6 * g)), _F32(max(3.5, 0.55 * g)))
            d = np.abs(ca_ - pos_t.take(ji))
            r = d < hw_t.take(ji)
            if r.any():
                fs = np.floor(cb_ * _F32(1.0 / seg))
                _, _, s0, ns, sidx2 = _cells(fi, fs)
                hs = _grid_hash(_key(seed, name, "seg"), i0, ni, s0, ns)
                on_t = (_unit(hs) < _F32(0.62)) | np.repeat(main_t, ns)
                r &= on_t.take(sidx2)
                road |= r
                main |= r & main_t.take(ji)

        # ---- compose (later layers win)
        if bank is not None:
            mat = np.where(bank & (mat != _MAT["hedge"]), np.uint8(_MAT["meadow"]), mat)
        mat = np.where(forest, np.uint8(_MAT["forest"]), mat)
        if dbl is not None:
            mat = np.where(town, townmat, mat)
            self.fieldvar = np.where(town, lotvar, self.fieldvar)
        if river is not None:
            mat = np.where(river, np.uint8(_MAT["river"]), mat)
        mat = np.where(road, np.where(main, np.uint8(_MAT["main_road"]), np.uint8(_MAT["road"])), mat)
        mat = np.where(lake, np.uint8(_MAT["lake"]), mat)
        if spec.footprint:
            mat = np.where(self.valid, mat, np.uint8(_MAT["nodata"]))
        self.mat = mat.astype(np.uint8, copy=False)
        self.dbl = (
            dbl & (self.mat >= _MAT["roof_red"]) & (self.mat <= _MAT["roof_dark"])
            if dbl is not None
            else None
        )
        # pixel-scale texture (canopy, grain) from one counter-based hash
        hp = _pixel_hash(_key(seed, "texture"), self.rows, self.cols)
        self.canopy_pixel = _unit(hp) * _F32(0.6)  # per-pixel part of the canopy texture (mean 0.3)
        self.canopy = self.canopy_pixel + _F32(0.4) * _vnoise(_key(seed, "canopy_n"), x, y, 32.0)
        self.grain = _unit(hp, 8) - _F32(0.5)

    def _town(self, seed, g, u, v, tn):
        """(town, material, lot variation, double-bounce) of the towns: blocks on a street grid, snapped
        to whole blocks at the town edge; perimeter buildings around gardens, some industrial halls."""
        bu_size, bv_size = _F32(126.0), _F32(96.0)
        sw = _F32(max(9.0, 1.05 * g))
        ub = u * (_F32(1) / bu_size)
        bi = np.floor(ub)
        ub = (ub - bi) * bu_size
        vb = v * (_F32(1) / bv_size)
        bj = np.floor(vb)
        vb = (vb - bj) * bv_size
        a0, na, b0, nb, blk = _cells(bi, bj)
        hb = _grid_hash(_key(seed, "block"), a0, na, b0, nb)
        town = tn + (_unit(hb) - _F32(0.5)).take(blk) * _F32(0.05) > _F32(_T_URBAN)
        density = np.clip((tn - _F32(_T_URBAN)) * _F32(1 / 0.05), _F32(0), _F32(1))
        street = (ub < sw) | (vb < sw)
        dblock = np.minimum(np.minimum(ub - sw, bu_size - ub), np.minimum(vb - sw, bv_size - vb))
        la = np.floor(u * _F32(1 / 21.0))
        lb = np.floor(v * _F32(1 / 24.0))
        a0, na, b0, nb, lot = _cells(la, lb)
        hl = _grid_hash(_key(seed, "lot"), a0, na, b0, nb)
        depth = _F32(18.0) + _F32(30.0) * density
        hall = (_unit(hb, 16) < _F32(0.15)).take(blk) & (dblock > _F32(6.0))  # industrial / commercial
        built = ((dblock < depth) & (_unit(hl).take(lot) < _F32(0.5) + _F32(0.45) * density)) | hall
        roof = _ROOF_LUT.take(((hl >> np.uint64(8)) & np.uint64(7)).astype(np.intp)).take(lot)
        hall_roof = np.where(
            _unit(hb, 32) < _F32(0.6), np.uint8(_MAT["roof_grey"]), np.uint8(_MAT["roof_dark"])
        )
        roof = np.where(hall, hall_roof.take(blk), roof)
        townmat = np.where(street, np.uint8(_MAT["street"]), np.where(built, roof, np.uint8(_MAT["garden"])))
        lotvar = np.where(hall, _unit(hb, 8).take(blk), _unit(hl, 16).take(lot))
        # double bounce: the first built column after the street on the sensor (west, low-u) side of a block
        dbl = town & built & ~street & (ub - sw < _F32(1.05 * g))
        return town, townmat, lotvar, dbl

    def _rivers(self, seed, g, pr: _Params, x, y):
        """(river, bank) masks, or (None, None) when no river comes near the window."""
        rsp = 8000.0
        # river frame coordinates of the window corners bound q; rivers lie at q = k * rsp + meander
        qc = [yy * pr.cr - xx * pr.sr for yy in (y[0], y[-1]) for xx in (x[0], x[-1])]
        k_lo = math.floor((min(qc) - 1500.0) / rsp + 0.5)
        k_hi = math.floor((max(qc) + 1500.0) / rsp + 0.5)
        ks = np.arange(k_lo, k_hi + 1, dtype=np.int64)
        hr_all = _hash2(_key(seed, "river"), ks, np.zeros(1, dtype=np.int64))
        if not ((hr_all & np.uint64(0xF)) < np.uint64(11)).any():
            return None, None
        p = (x * pr.cr).astype(_F32) + (y * pr.sr).astype(_F32)[:, None]
        q = (y * pr.cr).astype(_F32)[:, None] - (x * pr.sr).astype(_F32)
        fk = np.floor(q * _F32(1 / rsp) + _F32(0.5))
        k0, nk, jk = _floor_index(fk)
        hr = _grid_hash(_key(seed, "river"), k0, nk, 0, 1)
        present_t = (hr & np.uint64(0xF)) < np.uint64(11)
        amp_t = _F32(150.0) + _F32(300.0) * _unit(hr)
        inv_lam_t = _F32(1) / (_F32(3000.0) + _F32(3500.0) * _unit(hr, 16))
        half_t = _F32(25.0) + _F32(50.0) * _unit(hr, 0)
        half_t = np.maximum(half_t, _F32(0.75 * g))
        ph = p * inv_lam_t.take(jk) + _unit(hr, 24).take(jk)
        ph -= np.floor(ph)
        meander = amp_t.take(jk) * np.sin(_TWO_PI * ph)
        meander += (_vnoise1(_key(seed, "river_n"), p + fk * _F32(7919.0), 2600.0) - _F32(0.5)) * _F32(900.0)
        dq = np.abs(q - fk * _F32(rsp) - meander)
        present = present_t.take(jk)
        half = half_t.take(jk)
        return present & (dq < half), present & (dq < half + _F32(70.0))

    @property
    def landcover(self) -> np.ndarray:
        return _MAT_CLASS.take(self.mat)

    # ------------------------------------------------------------------------------- rendering

    def optical(self, expected: bool = False, knows: str = "texture") -> np.ndarray:
        """The optical truth; ``expected``: as an oracle that ``knows`` the scene renders it (see
        :func:`expected_optical_window`): ``"texture"`` — the per-pixel random parts (the canopy texture's
        pixel hash and the grain) at their means, i.e. all a model could know short of those; ``"field"`` —
        the material colour changed by the per-field latent, no texture or illumination; ``"material"`` —
        the material's mean colour only."""
        mat = self.mat
        # per-field latent (shared with the SAR): a colour change; texture and illumination: brightness
        lat = (self.fieldvar - _F32(0.5)) * _F32(2)
        if expected and knows == "material":
            lat = np.zeros_like(lat)
        if expected and knows in ("field", "material"):
            fac = _F32(1.0)
        else:
            canopy = self.canopy - self.canopy_pixel + _F32(0.3) if expected else self.canopy
            fac = (
                _F32(1.0)
                + _MAT_OPT_AMP[1].take(mat) * self.rowtex
                + _MAT_OPT_AMP[2].take(mat) * (canopy - _F32(0.5)) * _F32(2)
                + _F32(0.05) * (self.aux - _F32(0.5))
            )
        out = np.empty((3,) + mat.shape, dtype=np.uint8)
        noise = _F32(0.5) if expected else self.grain * _F32(5.0) + _F32(0.5)
        for c in range(3):
            val = (_MAT_RGB[c].take(mat) + _MAT_FIELD_RGB[c].take(mat) * lat) * fac + noise
            np.clip(val, 0, 255, out=val)
            out[c] = val
        if self.spec.footprint:
            out *= self.valid
        return out

    def sigma0_db(self, band: str) -> np.ndarray:
        """Noise-free backscatter in dB (before speckle)."""
        spec, mat = self.spec, self.mat
        db = _MAT_VV.take(mat)
        if band == "VH":
            db += _MAT_XPOL.take(mat)
        db += _MAT_SAR_AMP[0].take(mat) * (self.fieldvar - _F32(0.5)) * _F32(2)
        db += _MAT_SAR_AMP[1].take(mat) * self.rowtex
        db += _MAT_SAR_AMP[2].take(mat) * (self.canopy - _F32(0.5)) * _F32(2)
        db += _MAT_WIND.take(mat) * (self.aux - _F32(0.5))
        if self.dbl is not None:
            db += self.dbl * _F32(10.0 if band == "VV" else 3.0)
        theta = THETA_NEAR + (THETA_FAR - THETA_NEAR) * (self.cols + 0.5) / spec.width
        db += _MAT_SLOPE.take(mat) * (theta - THETA_REF).astype(np.float32)
        if spec.domain == "gf3":
            db = db + _F32(GF3_CAL_OFFSET_DB) + _F32(GF3_CONTRAST - 1.0) * (db + _F32(12))
        return db

    def sar(self, bands, speckle: bool = True) -> np.ndarray:
        spec = self.spec
        out = np.empty((len(bands),) + self.mat.shape, dtype=np.float32)
        for i, band in enumerate(bands):
            lin = np.exp(self.sigma0_db(band) * _F32(math.log(10) / 10))
            if speckle:
                lin *= _speckle(spec, band, self.rows, self.cols)
            np.maximum(lin, _F32(1e-7), out=lin)
            if spec.footprint:
                lin *= self.valid
            out[i] = lin
        return out


def _pixel_hash(key: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """splitmix64 indexed by the pixel counter ``row << 32 | col`` (window-independent)."""
    z = (_as_u64(rows)[:, None] << _S32) | _as_u64(cols)
    z *= _U_GOLDEN
    z += np.uint64(key)
    return _mix(z)


def _wilson_hilferty(z: np.ndarray, looks: float) -> np.ndarray:
    """Gamma(looks, 1/looks) from standard normals (mean exactly 1, variance ~1/looks)."""
    a = 1.0 - 1.0 / (9.0 * looks)
    bb = 1.0 / (3.0 * math.sqrt(looks))
    base = np.maximum(np.float32(a) + np.float32(bb) * z, np.float32(0))
    return base * base * base * np.float32(1.0 / (a * (a * a + 3.0 * bb * bb)))


_SPECKLE_RADIUS = 3  # half-width (pixels) of the speckle correlation kernel


@functools.lru_cache(maxsize=8)
def _speckle_kernel(sigma: float) -> np.ndarray:
    """Separable Gaussian taps (float32, 2·_SPECKLE_RADIUS + 1), outer product of unit sum of squares."""
    t = np.arange(-_SPECKLE_RADIUS, _SPECKLE_RADIUS + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return (k / np.sqrt((k * k).sum())).astype(np.float32)


def _normals(key: int, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two independent standard normals per pixel (Box-Muller on the pixel hash's two 24-bit halves)."""
    hsh = _pixel_hash(key, rows, cols)
    u1 = ((hsh >> _S40).astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-24)
    u2 = ((hsh & np.uint64(0xFFFFFF)).astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-24)
    r = np.sqrt(np.float32(-2) * np.log(u1))
    th = np.float32(2 * np.pi) * u2
    return r * np.cos(th), r * np.sin(th)


def _correlated(z: np.ndarray, sigma: float) -> np.ndarray:
    """``z`` (padded by _SPECKLE_RADIUS on each side) convolved with the unit-energy Gaussian, cropped.

    Fixed tap order, so every output pixel is the same float32 sum whatever window it is computed in."""
    k = _speckle_kernel(sigma)
    n = k.size
    h, w = z.shape[0] - n + 1, z.shape[1] - n + 1
    rowsum = k[0] * z[:, 0:w]
    for t in range(1, n):
        rowsum += k[t] * z[:, t : t + w]
    out = k[0] * rowsum[0:h]
    for t in range(1, n):
        out += k[t] * rowsum[t : t + h]
    return out


def _speckle(spec: SceneSpec, band: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    key = _key(spec.seed, "speckle", band)
    if spec.speckle_corr > 0:
        rows_p = np.arange(rows[0] - _SPECKLE_RADIUS, rows[-1] + _SPECKLE_RADIUS + 1, dtype=np.int64)
        cols_p = np.arange(cols[0] - _SPECKLE_RADIUS, cols[-1] + _SPECKLE_RADIUS + 1, dtype=np.int64)
        z1, z2 = _normals(key, rows_p, cols_p)
        z1 = _correlated(z1, spec.speckle_corr)
        z2 = z2[_SPECKLE_RADIUS:-_SPECKLE_RADIUS, _SPECKLE_RADIUS:-_SPECKLE_RADIUS]
    else:
        z1, z2 = _normals(key, rows, cols)
    if spec.domain == "gf3":  # correlated speckle times a per-pixel texture
        return _wilson_hilferty(z1, GF3_LOOKS_FACTOR * spec.enl) * _wilson_hilferty(z2, GF3_TEXTURE_ORDER)
    return _wilson_hilferty(z1, spec.enl)


def _footprint_geometry(spec: SceneSpec) -> tuple[float, float, float]:
    """(angle rad, half-length along u, half-length along v) of the rotated footprint rectangle."""
    wdt, hgt = float(spec.width), float(spec.height)
    inset = max(1.0, 0.035 * min(wdt, hgt))
    bw, bh = wdt - 2 * inset, hgt - 2 * inset
    if bw <= 0 or bh <= 0:
        bw, bh = wdt, hgt
    ang = math.radians(10.0 + 3.0 * _param(spec.seed, "fp_angle"))
    ang = min(ang, 0.5 * math.atan2(min(bw, bh), max(bw, bh)))
    c, s = math.cos(ang), math.sin(ang)
    det = c * c - s * s
    ww = (c * bw - s * bh) / det
    hh = (c * bh - s * bw) / det
    sign = 1.0 if _param(spec.seed, "fp_sign") < 0.5 else -1.0
    return sign * ang, ww / 2, hh / 2


def _footprint(spec: SceneSpec, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    if not spec.footprint:
        return np.ones((rows.size, cols.size), dtype=bool)
    ang, hu, hv = _footprint_geometry(spec)
    c, s = math.cos(ang), math.sin(ang)
    dx = (cols + 0.5) - spec.width / 2.0
    dy = (rows + 0.5) - spec.height / 2.0
    fu = dx * c + dy[:, None] * s
    fv = dy[:, None] * c - dx * s
    return (np.abs(fu) <= hu) & (np.abs(fv) <= hv)


# ---------------------------------------------------------------------------------------- the API


def _check_window(spec: SceneSpec, row0: int, col0: int, height: int, width: int) -> None:
    spec.validate()
    if height < 1 or width < 1:
        raise UsageError(f"window size must be >= 1, got {height}x{width}")
    if row0 < 0 or col0 < 0 or row0 + height > spec.height or col0 + width > spec.width:
        raise UsageError(
            f"window rows [{row0}, {row0 + height}) x cols [{col0}, {col0 + width}) is outside the "
            f"{spec.height}x{spec.width} scene"
        )


def _tiles(row0: int, col0: int, height: int, width: int):
    """Sub-windows of about 64k pixels: every array of a sub-window stays in the CPU caches."""
    tw = min(width, 1024)
    th = max(1, min(height, _TILE_PIXELS // tw))
    for r in range(row0, row0 + height, th):
        for c in range(col0, col0 + width, tw):
            yield r, c, min(th, row0 + height - r), min(tw, col0 + width - c)


_TILE_PIXELS = 1 << 16


def render_window(
    spec: SceneSpec, row0: int, col0: int, height: int, width: int, *, speckle: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sar float32 (bands,h,w) linear sigma0 with 0 at nodata, optical uint8 (3,h,w), valid bool (h,w)).
    ``speckle=False``: the noise-free σ⁰ (what synthetic products multiply by their own radar speckle).

    Every value is a function of (spec, global row, global column) only, so any tiling of a scene into
    windows gives the same pixels.
    """
    _check_window(spec, row0, col0, height, width)
    row0, col0, height, width = int(row0), int(col0), int(height), int(width)
    sar = np.empty((len(spec.bands), height, width), dtype=np.float32)
    opt = np.empty((3, height, width), dtype=np.uint8)
    valid = np.empty((height, width), dtype=bool)
    for r, c, h, w in _tiles(row0, col0, height, width):
        win = _Window(spec, r, c, h, w)
        sl = (slice(r - row0, r - row0 + h), slice(c - col0, c - col0 + w))
        sar[(slice(None),) + sl] = win.sar(spec.bands, speckle)
        opt[(slice(None),) + sl] = win.optical()
        valid[sl] = win.valid
    return sar, opt, valid


#: What the oracles of :func:`expected_optical_window` know, from least to most.
ORACLE_KNOWLEDGE = ("material", "field", "texture")


def expected_optical_window(
    spec: SceneSpec, row0: int, col0: int, height: int, width: int, knows: str = "texture"
) -> np.ndarray:
    """The optical truth as rendered by an oracle that knows part of the scene (uint8 (3,h,w)).

    ``knows="texture"`` (default): the truth without its unpredictable texture — the per-pixel random parts
    (the pixel hash of the canopy texture, the grain) at their means; everything else — land cover, per-field
    latent, row texture, smooth canopy and illumination — as rendered. Scored against the truth, it is the
    simulator's ceiling: the PSNR of a model that recovered everything from the SAR but per-pixel noise
    (an upper bound in practice: the SAR carries the canopy's pixel hash only under ENL-4.4 speckle).
    ``"field"``: each pixel's material colour changed by its field's latent, without texture or illumination
    (a model that recognised every field's material and latent); ``"material"``: the material's mean colour
    only (a model that recognised every pixel's material and nothing else)."""
    if knows not in ORACLE_KNOWLEDGE:
        raise UsageError(f"unknown oracle knowledge {knows!r}; allowed: {', '.join(ORACLE_KNOWLEDGE)}")
    _check_window(spec, row0, col0, height, width)
    row0, col0, height, width = int(row0), int(col0), int(height), int(width)
    out = np.empty((3, height, width), dtype=np.uint8)
    for r, c, h, w in _tiles(row0, col0, height, width):
        win = _Window(spec, r, c, h, w)
        out[:, r - row0 : r - row0 + h, c - col0 : c - col0 + w] = win.optical(True, knows)
    return out


def landcover_window(spec: SceneSpec, row0: int, col0: int, height: int, width: int) -> np.ndarray:
    """Land-cover class codes (uint8 (h,w), see :data:`CLASS_NAMES`; 0 outside the footprint)."""
    _check_window(spec, row0, col0, height, width)
    row0, col0, height, width = int(row0), int(col0), int(height), int(width)
    out = np.empty((height, width), dtype=np.uint8)
    for r, c, h, w in _tiles(row0, col0, height, width):
        out[r - row0 : r - row0 + h, c - col0 : c - col0 + w] = _Window(spec, r, c, h, w).landcover
    return out


def speckle_window(
    spec: SceneSpec, row0: int, col0: int, height: int, width: int, band: str = "VV"
) -> np.ndarray:
    """The multiplicative speckle (times K texture for gf3) that :func:`render_window` applies (float32)."""
    _check_window(spec, row0, col0, height, width)
    if band not in BANDS:
        raise UsageError(f"unknown band name {band!r}; allowed: {', '.join(BANDS)}")
    rows = np.arange(row0, row0 + height, dtype=np.int64)
    cols = np.arange(col0, col0 + width, dtype=np.int64)
    return _speckle(spec, band, rows, cols)


def sar_to_uint8(sigma0: np.ndarray, domain: str = "s1") -> np.ndarray:
    """8-bit quantisation of linear sigma0 as in the training pairs.

    ``s1``: dB, clipped to [-25, 0], linearly to 0..255 (SEN1-2 preparation). ``gf3``: amplitude
    sqrt(sigma0) linearly from 0 to 1.5 (+3.5 dB) to 0..255 (a quick-look-like amplitude stretch).
    Nodata (0) maps to 0.
    """
    s = np.asarray(sigma0, dtype=np.float32)
    if domain == "s1":
        db = np.float32(10) * np.log10(np.maximum(s, np.float32(1e-10)))
        val = (np.clip(db, -25.0, 0.0) + np.float32(25.0)) * np.float32(255.0 / 25.0)
    elif domain == "gf3":
        val = np.clip(np.sqrt(np.maximum(s, 0)) * np.float32(255.0 / 1.5), 0.0, 255.0)
    else:
        raise UsageError(f"unknown domain {domain!r}; allowed: {', '.join(DOMAINS)}")
    return (val + np.float32(0.5)).astype(np.uint8)


def _geo_profiles(spec: SceneSpec, gcps: bool) -> tuple[GeoProfile, GeoProfile]:
    from sar2opt_geo.io import crs_wkt, transform_points

    wkt = crs_wkt(spec.crs)  # UsageError for an invalid CRS
    tags = {"SAR2OPT_SYNTH_SPEC": json.dumps(asdict(spec), sort_keys=True)}
    grid = GeoProfile(spec.width, spec.height, crs_wkt=wkt, transform=spec.transform, tags=tags)
    if not gcps:
        return grid, grid
    rr, cc = np.meshgrid(np.linspace(0, spec.height, 5), np.linspace(0, spec.width, 5), indexing="ij")
    a, _, c, _, e, f = spec.transform
    xs = c + a * cc.ravel()
    ys = f + e * rr.ravel()
    wgs84 = crs_wkt("EPSG:4326")
    lon, lat = transform_points(wkt, wgs84, xs.tolist(), ys.tolist())
    points = tuple(
        (float(r), float(col), float(x), float(y), 0.0)
        for r, col, x, y in zip(rr.ravel(), cc.ravel(), lon, lat, strict=True)
    )
    sar_geo = GeoProfile(spec.width, spec.height, gcps=points, gcp_crs_wkt=wgs84, tags=dict(tags))
    return sar_geo, grid


def write_scene(
    outdir,
    spec: SceneSpec,
    *,
    gcps: bool = False,
    block: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, Path]:
    """Write OUTDIR/sar.tif (float32 linear sigma0, nodata 0) and OUTDIR/optical.tif (RGB, masked).

    Written block by block (``block`` x ``block`` windows of :func:`render_window`), so memory is bounded
    by the block size whatever the scene size. With ``gcps`` sar.tif is georeferenced by a 5x5 grid of
    EPSG:4326 GCPs (like raw Sentinel-1 GRD) instead of CRS+transform; optical.tif keeps the map grid.
    """
    spec.validate()
    if not isinstance(block, int) or block < 1:
        raise UsageError(f"block must be an integer >= 1, got {block!r}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    sar_path, opt_path = outdir / "sar.tif", outdir / "optical.tif"
    sar_geo, opt_geo = _geo_profiles(spec, gcps)
    windows = [
        (r, c, min(block, spec.height - r), min(block, spec.width - c))
        for r in range(0, spec.height, block)
        for c in range(0, spec.width, block)
    ]
    sar_tmp, opt_tmp = temporary_sibling(sar_path), temporary_sibling(opt_path)
    try:
        with (
            GeoTiffWriter(
                sar_tmp, sar_geo, len(spec.bands), "float32", nodata=0.0, band_descriptions=list(spec.bands)
            ) as wsar,
            GeoTiffWriter(
                opt_tmp, opt_geo, 3, "uint8", internal_mask=True, band_descriptions=["red", "green", "blue"]
            ) as wopt,
        ):
            for n, (r, c, h, w) in enumerate(windows, start=1):
                sar, opt, valid = render_window(spec, r, c, h, w)
                wsar.write(r, c, sar)
                wopt.write(r, c, opt, valid)
                if progress is not None:
                    progress(n, len(windows))
        replace_path(sar_tmp, sar_path)
        replace_path(opt_tmp, opt_path)
    finally:
        remove_path(sar_tmp)
        remove_path(opt_tmp)
    return sar_path, opt_path


def _speckle_corr_range(speckle_corr) -> tuple[float, float]:
    """``(lo, hi)`` checked: both valid :attr:`SceneSpec.speckle_corr` values, ``lo <= hi``."""
    lo, hi = (float(v) for v in speckle_corr)
    for v in (lo, hi):
        SceneSpec(1, 1, speckle_corr=v).validate()
    if lo > hi:
        raise UsageError(f"speckle_corr range must be (low, high), got {tuple(speckle_corr)!r}")
    return lo, hi


def pair_windows(
    count: int,
    *,
    domain: str = "s1",
    seed: int = 0,
    tile: int = 256,
    speckle_corr: tuple[float, float] | None = None,
    bands: tuple[str, ...] = ("VV",),
):
    """The (scene spec, row0, col0) of each of :func:`write_pairs`' ``count`` tiles, in order.

    ``speckle_corr=(lo, hi)`` draws each scene's :attr:`SceneSpec.speckle_corr` uniformly from that range
    (from a stream of its own: the windows and scene seeds are those of the default); None keeps the default.
    ``bands``: the scenes' bands (VV is the same whether VH is rendered beside it or not).
    """
    base = [int(seed) & _MASK64, zlib.crc32(domain.encode())]
    rng = np.random.default_rng(np.random.SeedSequence(base))
    corr_rng = None
    if speckle_corr is not None:
        lo, hi = _speckle_corr_range(speckle_corr)
        corr_rng = np.random.default_rng(np.random.SeedSequence([*base, 1]))
    size = max(20000, tile)
    spec = None
    for i in range(count):
        if i % 16 == 0:
            scene_seed = int(rng.integers(0, 2**31))
            extra = {} if corr_rng is None else {"speckle_corr": float(corr_rng.uniform(lo, hi))}
            spec = SceneSpec(
                size, size, tuple(bands), seed=scene_seed, footprint=False, domain=domain, **extra
            )
        r0, c0 = (int(v) for v in rng.integers(0, size - tile + 1, size=2))
        yield spec, r0, c0


def write_pairs(
    outdir,
    count: int,
    *,
    domain: str = "s1",
    seed: int = 0,
    tile: int = 256,
    speckle_corr: tuple[float, float] | None = None,
    dual_pol: bool = False,
) -> list[tuple[Path, Path]]:
    """Write ``count`` co-registered tile pairs in the QXSLAB-SAROPT layout.

    OUTDIR/sar_256_oc_0.2/NNNNN.png (8-bit grayscale VV, :func:`sar_to_uint8` of the domain; with
    ``dual_pol``, RGB: the Sentinel-1 dual-pol composite VV, VH, VV/VH of
    :data:`sar2opt_geo.radiometry.DUAL_POL_COMPOSITE`, s1 only) and
    OUTDIR/opt_256_oc_0.2/NNNNN.png (RGB), paired by identical stem (the directory names are fixed
    whatever ``tile``). Tiles are random windows (16 per scene) of 20,000 x 20,000 scenes with seed-derived
    seeds and no footprint (:func:`pair_windows`), so every tile is fully valid; the result is deterministic
    per (seed, domain). ``speckle_corr=(lo, hi)``: each scene's speckle correlation drawn from that range
    (:func:`pair_windows`; training data for a model that must not depend on one speckle texture).
    OUTDIR/pairs.json records what was written, with :data:`SIMULATOR_VERSION`.
    """
    if domain not in DOMAINS:
        raise UsageError(f"unknown domain {domain!r}; allowed: {', '.join(DOMAINS)}")
    if not isinstance(count, int) or count < 0:
        raise UsageError(f"count must be an integer >= 0, got {count!r}")
    if not isinstance(tile, int) or tile < 1:
        raise UsageError(f"tile must be an integer >= 1, got {tile!r}")
    if speckle_corr is not None:
        _speckle_corr_range(speckle_corr)
    if dual_pol and domain != "s1":
        raise UsageError("dual-pol pairs are Sentinel-1 (domain s1)")
    composite = Radiometry.from_dict(DUAL_POL_COMPOSITE) if dual_pol else None
    outdir = Path(outdir)
    sar_dir, opt_dir = outdir / SAR_DIR, outdir / OPT_DIR
    sar_dir.mkdir(parents=True, exist_ok=True)
    opt_dir.mkdir(parents=True, exist_ok=True)
    pairs = []
    bands = ("VV", "VH") if dual_pol else ("VV",)
    windows = pair_windows(count, domain=domain, seed=seed, tile=tile, speckle_corr=speckle_corr, bands=bands)
    for i, (spec, r0, c0) in enumerate(windows):
        sar, opt, _ = render_window(spec, r0, c0, tile, tile)
        sp, op = sar_dir / f"{i:05d}.png", opt_dir / f"{i:05d}.png"
        write_png(sp, composite_levels(sar, composite) if dual_pol else sar_to_uint8(sar[0], domain))
        write_png(op, opt)
        pairs.append((sp, op))
    stamp = {"count": count, "domain": domain, "seed": int(seed), "tile": tile}
    if speckle_corr is not None:
        stamp["speckle_corr"] = [float(v) for v in speckle_corr]
    if dual_pol:
        stamp["sar"] = "VV,VH,VV/VH composite"
    stamp["simulator"] = SIMULATOR_VERSION
    (outdir / PAIRS_STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
    return pairs
