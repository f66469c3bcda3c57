"""Radiometric calibration LUTs of Sentinel-1 products, evaluated only where a window needs them.

The calibration annotation holds vectors of ``sigmaNought``, ``betaNought`` and ``gamma`` (A_σ, A_β, A_γ)
at a few lines, each sampled at pixel positions. Calibrated intensity is ``DN² / A²`` (ESA's "Radiometric
Calibration of Level-1 Products"); A at a pixel is the bilinear interpolation of the vector grid: along the
pixel axis inside each vector, then between the two vectors that bracket the line. Past the first/last
vector or pixel the nearest segment is extended linearly (IW grids end beyond the image, other products may
stop short of it).

Chunk invariance: A(line, pixel) is computed from the pixel's own coordinates by the same float64
operations whatever window asks for it, so any split of a scene into windows gives bit-identical values;
only the vectors bracketing the window's lines are evaluated (never a scene-sized LUT).

Written by hand: xarray-sentinel's ``calibrate_intensity`` interpolates a scene-sized LUT through xarray and
does not extrapolate; the tests check this module against it on real LUTs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sar2opt_geo.errors import InputError, UsageError
from sar2opt_geo.sentinel1.annotation import array, find, findall, local, number, parse_xml

#: ``--calibration`` choices and the calibration vector element each one uses.
CALIBRATIONS = {"sigma0": "sigmaNought", "beta0": "betaNought", "gamma0": "gamma"}
DEFAULT_CALIBRATION = "sigma0"


def segment_weights(x: np.ndarray, xp: np.ndarray, *, clamp: bool) -> tuple[np.ndarray, np.ndarray]:
    """Segment index ``j`` (into ``xp``, ``0 <= j <= len(xp) - 2``) and weight ``u`` with
    ``x = (1 - u) xp[j] + u xp[j+1]``. Outside ``xp`` the end segment is extended (``u`` < 0 or > 1) unless
    ``clamp`` holds it at the end value. A single node gives ``j = 0, u = 0``."""
    x = np.asarray(x, dtype=np.float64)
    xp = np.asarray(xp, dtype=np.float64)
    if xp.size == 1:
        return np.zeros(x.shape, dtype=np.intp), np.zeros(x.shape, dtype=np.float64)
    j = np.clip(np.searchsorted(xp, x, side="right") - 1, 0, xp.size - 2)
    lo, hi = xp[j], xp[j + 1]
    span = hi - lo
    u = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0)
    if clamp:
        u = np.clip(u, 0.0, 1.0)
    return j, u


def interp1(x: np.ndarray, xp: np.ndarray, fp: np.ndarray, *, clamp: bool) -> np.ndarray:
    """Piecewise-linear ``fp(x)`` (see :func:`segment_weights`); a single node is a constant."""
    if xp.size == 1:
        return np.full(np.shape(x), float(fp[0]))
    j, u = segment_weights(x, xp, clamp=clamp)
    return (1.0 - u) * fp[j] + u * fp[j + 1]


def grid_interp(
    lines: np.ndarray,
    pixels: tuple[np.ndarray, ...],
    values: tuple[np.ndarray, ...],
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    clamp: bool,
) -> np.ndarray:
    """Bilinear value on the (rows × cols) lattice of a vector grid whose vectors may have their own pixel
    positions: each needed vector is interpolated along the pixel axis first, then pairs of vectors are
    blended along the line axis. Only vectors bracketing ``rows`` are evaluated. float64 (h, w)."""
    rows = np.asarray(rows, dtype=np.float64)
    cols = np.asarray(cols, dtype=np.float64)
    if lines.size == 1:
        row_vec = interp1(cols, pixels[0], values[0], clamp=clamp)
        return np.broadcast_to(row_vec, (rows.size, cols.size)).copy()
    j, u = segment_weights(rows, lines, clamp=clamp)
    needed = np.unique(np.concatenate([j, j + 1]))
    along = np.stack([interp1(cols, pixels[k], values[k], clamp=clamp) for k in needed])
    lo = along[np.searchsorted(needed, j)]  # whole rows gathered: a copy each, no per-row Python
    hi = along[np.searchsorted(needed, j + 1)]
    lo *= (1.0 - u)[:, None]  # in place: the same products and sum as (1 - u)·lo + u·hi
    hi *= u[:, None]
    lo += hi
    return lo


@dataclass(frozen=True, eq=False)
class CalibrationLUT:
    """The calibration vector grid of one polarisation (small arrays: a few dozen vectors)."""

    lines: np.ndarray  # (n,) increasing
    pixels: tuple[np.ndarray, ...]  # n arrays of pixel positions
    luts: dict  # calibration name ("sigma0", "beta0", "gamma0") -> n arrays of A values
    absolute_constant: float

    def evaluate(self, calibration: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """A (float64 (len(rows), len(cols))) at integer image coordinates."""
        if calibration not in CALIBRATIONS:
            raise UsageError(f"unknown calibration {calibration!r}; allowed: {', '.join(CALIBRATIONS)}")
        return grid_interp(self.lines, self.pixels, self.luts[calibration], rows, cols, clamp=False)


def parse_calibration(data: bytes, name: str) -> CalibrationLUT:
    root = parse_xml(data, name)
    if local(root.tag) != "calibration":
        raise InputError(f"{name}: not a Sentinel-1 calibration annotation (root {local(root.tag)!r})")
    vectors = findall(root, "calibrationVectorList/calibrationVector")
    if not vectors:
        raise InputError(f"{name}: no calibrationVector elements")
    lines, pixels = [], []
    luts: dict[str, list[np.ndarray]] = {k: [] for k in CALIBRATIONS}
    for v in vectors:
        lines.append(number(v, "line", name))
        px = array(find(v, "pixel"), name, "calibrationVector/pixel")
        pixels.append(px)
        for key, tag in CALIBRATIONS.items():
            vals = array(find(v, tag), name, f"calibrationVector/{tag}")
            if vals.size != px.size:
                raise InputError(
                    f"{name}: calibrationVector/{tag} has {vals.size} values for {px.size} pixels"
                )
            if not np.all(np.isfinite(vals)) or np.any(vals <= 0):
                raise InputError(f"{name}: calibrationVector/{tag} holds values that are not positive")
            luts[key].append(vals)
        if np.any(np.diff(px) <= 0):
            raise InputError(f"{name}: calibrationVector/pixel positions are not increasing")
    line_arr = np.array(lines, dtype=np.float64)
    if np.any(np.diff(line_arr) <= 0):
        raise InputError(f"{name}: calibrationVector lines are not increasing")
    info = root.find("calibrationInformation")
    has_const = info is not None and info.find("absoluteCalibrationConstant") is not None
    const = number(info, "absoluteCalibrationConstant", name) if has_const else 1.0
    return CalibrationLUT(
        lines=line_arr,
        pixels=tuple(pixels),
        luts={k: tuple(v) for k, v in luts.items()},
        absolute_constant=const,
    )
