"""Thermal noise LUTs of Sentinel-1 GRD products and noise removal per window.

Noise power in DN² at a pixel is ``η = η_rg · η_az``:

- **Range vectors** (``noiseRangeVector``, or ``noiseVector`` before IPF 2.9): each vector is interpolated
  along range at the window's pixels first (vectors may have different pixel positions and lengths), then
  the two vectors bracketing the line are blended linearly. Lines before the first / after the last vector
  reuse that vector, and pixels past a vector's ends hold its end value (as SNAP's thermal noise removal
  does): noise power is never extrapolated, so it cannot turn negative.
- **Azimuth vectors** (``noiseAzimuthVector``, IPF ≥ 2.9): one block per swath (IW 3, EW 5, possibly
  several blocks per swath) with its first/last line and range sample; inside a block η_az is the linear
  interpolation of its LUT over lines (held at the ends). Products without azimuth vectors (IPF < 2.9, SM
  and other products that carry none) and pixels outside every block use η_az = 1.

Denoised intensity: ``σ⁰ = max(DN² − η, f·η) / A²`` with ``f = NOISE_FLOOR_FRACTION`` (1 %). The documented
choice for pixels whose noise-subtracted power is ≤ 0 (or below 1 % of the local noise power): they are set
to 1 % of the noise-equivalent σ⁰ (η/A², i.e. 20 dB below the noise floor, about −42 dB for IW), stay
*valid* (a calm lake does not become a nodata hole) and the floor is continuous, so the result stays
monotone in DN. Only DN = 0 (no data) is invalid.

Written by hand: no maintained Python library removes GRD thermal noise (xarray-sentinel has no GRD noise
removal and fails on some real noise files; GDAL exposes GRD only uncalibrated).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sar2opt_geo.errors import InputError
from sar2opt_geo.sentinel1.annotation import array, find, findall, local, number, parse_xml, text
from sar2opt_geo.sentinel1.calibration import grid_interp, interp1

#: Denoised power is floored at this fraction of the local noise power (see the module docstring).
NOISE_FLOOR_FRACTION = 0.01


@dataclass(frozen=True, eq=False)
class AzimuthBlock:
    swath: str
    first_line: int
    last_line: int
    first_sample: int
    last_sample: int
    lines: np.ndarray
    lut: np.ndarray


@dataclass(frozen=True, eq=False)
class NoiseLUT:
    """Range vectors (line grid with per-vector pixel positions) and azimuth blocks of one polarisation."""

    lines: np.ndarray
    pixels: tuple[np.ndarray, ...]
    range_luts: tuple[np.ndarray, ...]
    azimuth: tuple[AzimuthBlock, ...]
    legacy: bool  # pre-IPF-2.9 ``noiseVector`` list (no azimuth vectors)

    def range_noise(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return grid_interp(self.lines, self.pixels, self.range_luts, rows, cols, clamp=True)

    def azimuth_noise(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        out = np.ones((rows.size, cols.size), dtype=np.float64)
        for b in self.azimuth:
            rsel = (rows >= b.first_line) & (rows <= b.last_line)
            csel = (cols >= b.first_sample) & (cols <= b.last_sample)
            if not rsel.any() or not csel.any():
                continue
            vals = interp1(rows[rsel], b.lines, b.lut, clamp=True)
            out[np.ix_(rsel, csel)] = vals[:, None]
        return out

    def evaluate(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """η = η_rg · η_az in DN² (float64 (len(rows), len(cols)))."""
        eta = self.range_noise(rows, cols)
        if self.azimuth:
            eta *= self.azimuth_noise(rows, cols)  # range_noise's array is this call's own
        return eta


def denoise_power(power: np.ndarray, eta: np.ndarray, *, in_place: bool = False) -> np.ndarray:
    """``max(DN² − η, f·η)`` (see the module docstring). ``in_place``: into ``power`` (the caller's scratch;
    the same values)."""
    floor = NOISE_FLOOR_FRACTION * eta
    if not in_place:
        return np.maximum(power - eta, floor)
    power -= eta
    return np.maximum(power, floor, out=power)


def parse_noise(data: bytes, name: str) -> NoiseLUT:
    root = parse_xml(data, name)
    if local(root.tag) != "noise":
        raise InputError(f"{name}: not a Sentinel-1 noise annotation (root {local(root.tag)!r})")
    vectors = findall(root, "noiseRangeVectorList/noiseRangeVector")
    lut_tag, legacy = "noiseRangeLut", False
    if not vectors:
        vectors = findall(root, "noiseVectorList/noiseVector")
        lut_tag, legacy = "noiseLut", True
    if not vectors:
        raise InputError(f"{name}: neither noiseRangeVector nor noiseVector elements")
    lines, pixels, luts = [], [], []
    for v in vectors:
        lines.append(number(v, "line", name))
        px = array(find(v, "pixel"), name, "noise vector pixel")
        vals = array(find(v, lut_tag), name, lut_tag)
        if vals.size != px.size:
            raise InputError(f"{name}: {lut_tag} has {vals.size} values for {px.size} pixels")
        if np.any(np.diff(px) <= 0):
            raise InputError(f"{name}: noise vector pixel positions are not increasing")
        if not np.all(np.isfinite(vals)) or np.any(vals < 0):
            raise InputError(f"{name}: {lut_tag} holds negative or non-finite values")
        pixels.append(px)
        luts.append(vals)
    line_arr = np.array(lines, dtype=np.float64)
    order = np.argsort(line_arr, kind="stable")
    if np.any(np.diff(line_arr[order]) <= 0):
        raise InputError(f"{name}: noise vectors share a line")
    blocks = []
    for v in findall(root, "noiseAzimuthVectorList/noiseAzimuthVector"):
        b_lines = array(find(v, "line"), name, "noiseAzimuthVector/line")
        b_lut = array(find(v, "noiseAzimuthLut"), name, "noiseAzimuthLut")
        if b_lines.size != b_lut.size:
            # single-valued LUTs (e.g. SM) repeat one value for the block
            if b_lut.size == 1:
                b_lut = np.full(b_lines.shape, b_lut[0])
            else:
                raise InputError(f"{name}: noiseAzimuthLut has {b_lut.size} values for {b_lines.size} lines")
        if np.any(np.diff(b_lines) < 0):
            raise InputError(f"{name}: noiseAzimuthVector lines are not increasing")
        blocks.append(
            AzimuthBlock(
                swath=text(v, "swath", name, required=False) or "",
                first_line=number(v, "firstAzimuthLine", name, int),
                last_line=number(v, "lastAzimuthLine", name, int),
                first_sample=number(v, "firstRangeSample", name, int),
                last_sample=number(v, "lastRangeSample", name, int),
                lines=b_lines,
                lut=b_lut,
            )
        )
    return NoiseLUT(
        lines=line_arr[order],
        pixels=tuple(pixels[i] for i in order),
        range_luts=tuple(luts[i] for i in order),
        azimuth=tuple(blocks),
        legacy=legacy,
    )
