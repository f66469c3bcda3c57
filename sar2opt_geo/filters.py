"""Classical speckle filters on linear intensity (σ⁰ or DN²), nodata-aware and chunk-exact.

Every filter works on linear intensity ``(bands, h, w)`` or ``(h, w)`` float32 with a ``valid`` mask
``(h, w)`` and returns float32 of the same shape; bands are filtered independently.

Conventions shared by all filters
---------------------------------
* **Borders.** Array borders are extended with scipy.ndimage mode ``"mirror"`` (``np.pad(mode="reflect")``,
  edge pixel not repeated), the same extension the pipeline uses when it reads a block's halo outside the
  scene. Hence, for every filter, ``apply_filter(block_with_halo)[halo:-halo, halo:-halo]`` equals
  ``apply_filter(whole)[block]`` with ``halo = filter_halo(spec)`` (``window // 2`` for all filters).
  Window sums are *direct* sums (``correlate1d``/``correlate``/offset loops, never running sums such as
  ``uniform_filter``), so each output pixel is computed by the same arithmetic whatever the chunking: the
  results are bit-identical, and data-dependent decisions (Ci ≤ Cu, refined Lee's edge direction) cannot
  flip between chunkings.
* **Nodata.** Windows count only valid pixels (``valid`` and finite): mean = Σ(I·v)/Σ(v), etc. Output at
  nodata pixels is 0 (and the caller keeps them nodata). A valid centre pixel always belongs to its own
  window, so every window used for a valid pixel holds at least one valid pixel; with a single valid pixel
  the variance is 0 and every filter returns the pixel's own value.
* **Statistics.** μ and σ² are the window mean and the *unbiased* variance (divisor n − 1, as SNAP) of the
  valid pixels; Ci = σ/μ (0 where μ ≤ 0: such windows return μ), Cu = 1/√L with L the ENL (``spec.enl``).
  Inputs are not clamped: linear intensities are expected to be ≥ 0.
* Filters compute in float64 and return float32.

Filters (``FILTER_NAMES``)
--------------------------
* ``boxcar``: mean of valid pixels in the window.
* ``median``: median of the valid pixels in the window (mean of the two middle values for an even count).
  Fully valid windows use ``scipy.ndimage.median_filter``; windows holding nodata are recomputed exactly by a
  vectorised sort of the stacked window values (NaN for nodata, sorted last).
* ``gaussian``: Gaussian weights over the ``window × window`` square, normalised over valid pixels, with
  OpenCV's default σ for a kernel size: σ = 0.3·((window − 1)/2 − 1) + 0.8 (window 7 → σ = 1.4).
* ``bilateral``: spatial Gaussian weights (same σ as ``gaussian``) times a range weight
  exp(−(I_q − I_p)²/(2σ_r²)) with a range σ *relative to the local intensity*: σ_r(p) = μ_p·√(2/L), i.e. the
  standard deviation of the difference of two independent L-look speckle samples of mean μ_p (μ_p: window
  mean of valid pixels). Where μ_p ≤ 0 all weights are spatial only.
* ``lee``: SNAP form: R = μ if Ci ≤ Cu, else μ + (1 − Cu²/Ci²)(I − μ).
* ``kuan``: W = (1 − Cu²/Ci²)/(1 + Cu²) clipped to [0, 1] (W = 0 where Ci ≤ Cu), R = μ + W(I − μ).
* ``enhanced_lee`` (Lopes 1990): Cmax = √(1 + 2/L); R = μ if Ci ≤ Cu; R = I if Ci ≥ Cmax; else
  W = exp(−K(Ci − Cu)/(Cmax − Ci)) with K = ``spec.damping``, R = μ·W + I·(1 − W).
* ``frost``: weighted mean over valid pixels with kernel exp(−D·Ci²·|t|), |t| the Euclidean distance (pixels)
  from the centre, D = ``spec.damping``, Ci from the window around the centre (as SNAP).
* ``gamma_map`` (Lopes et al. 1990, as SNAP): R = μ if Ci ≤ Cu; R = I if Ci ≥ Cmax; else
  α = (1 + Cu²)/(Ci² − Cu²), b = α − L − 1, d = μ²b² + 4αLμI, R = (bμ + √d)/(2α).
* ``refined_lee`` (Lee 1981 as SNAP's single-band ``RefinedLee``): see :func:`_refined_lee`. Supported
  windows 5, 7, 9, 11, 13, 15, 17 (SNAP's sub-window table); others raise :class:`UsageError`.

ENL: ``spec.enl`` may be ``"auto"`` in a spec; the caller resolves it with :func:`estimate_enl` (on scene
samples) before calling :func:`apply_filter`, which rejects an unresolved ``"auto"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sar2opt_geo.errors import InputError, UsageError


class _Ndimage:
    """``scipy.ndimage``, imported on first use: the CLI imports :data:`FILTER_NAMES` for its option
    choices, and importing scipy.ndimage up front made ``sar2opt-geo --help`` take ~0.5 s more (issue #15)."""

    def __getattr__(self, name):
        from scipy import ndimage

        return getattr(ndimage, name)


ndi = _Ndimage()

__all__ = [
    "FILTER_NAMES",
    "REFINED_LEE_WINDOWS",
    "FilterSpec",
    "apply_filter",
    "enl_from_ci2_samples",
    "estimate_enl",
    "filter_halo",
    "gaussian_sigma",
    "local_ci2_samples",
    "make_filter_spec",
]

FILTER_NAMES = (
    "boxcar",
    "median",
    "gaussian",
    "bilateral",
    "lee",
    "kuan",
    "enhanced_lee",
    "frost",
    "gamma_map",
    "refined_lee",
)

# SNAP's refined Lee sub-window layout: window -> (sub-window size, stride); 3 x 3 sub-windows of
# ``size`` pixels whose centres are ``stride`` apart cover the window exactly (size + 2·stride = window).
REFINED_LEE_WINDOWS = {5: (3, 1), 7: (3, 2), 9: (5, 2), 11: (5, 3), 13: (5, 4), 15: (7, 4), 17: (7, 5)}

_MODE = "mirror"  # == np.pad(mode="reflect"): edge pixel not repeated
_MEDIAN_BATCH = 1 << 17  # pixels per batch in the nodata-aware median (× window² float32 values)
_STRIP_PIXELS = 1 << 20  # apply_filter works on row strips of about this many pixels (bounds memory)


# --------------------------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class FilterSpec:
    """A classical speckle filter and its options (validated on construction).

    - ``name``: one of :data:`FILTER_NAMES`;
    - ``window``: odd window size ≥ 3 (refined Lee: one of :data:`REFINED_LEE_WINDOWS`);
    - ``enl``: equivalent number of looks L > 0, or ``"auto"`` (resolved by the caller with
      :func:`estimate_enl` before :func:`apply_filter`); used by lee, kuan, enhanced_lee, gamma_map,
      refined_lee and bilateral (range σ);
    - ``damping``: Frost's D and enhanced Lee's K (≥ 0).
    """

    name: str
    window: int = 7
    enl: float | str = 4.4
    damping: float = 2.0

    def __post_init__(self):
        if self.name not in FILTER_NAMES:
            raise UsageError(f"unknown speckle filter {self.name!r} (valid: {', '.join(FILTER_NAMES)})")
        w = self.window
        if isinstance(w, bool) or not isinstance(w, int | np.integer):
            raise UsageError(f"filter window must be an odd integer >= 3, got {w!r}")
        if w < 3 or w % 2 == 0:
            raise UsageError(f"filter window must be an odd integer >= 3, got {w}")
        object.__setattr__(self, "window", int(w))
        if self.name == "refined_lee" and w not in REFINED_LEE_WINDOWS:
            raise UsageError(
                f"refined_lee supports windows {', '.join(map(str, REFINED_LEE_WINDOWS))}, got {w}"
            )
        enl = self.enl
        if isinstance(enl, str):
            if enl != "auto":
                raise UsageError(f"enl must be a positive number or 'auto', got {enl!r}")
        else:
            if isinstance(enl, bool):
                raise UsageError(f"enl must be a positive number or 'auto', got {enl!r}")
            try:
                enl_f = float(enl)
            except (TypeError, ValueError):
                raise UsageError(f"enl must be a positive number or 'auto', got {enl!r}") from None
            if not math.isfinite(enl_f) or enl_f <= 0:
                raise UsageError(f"enl must be a positive number or 'auto', got {enl!r}")
            object.__setattr__(self, "enl", enl_f)
        try:
            damping = float(self.damping)
        except (TypeError, ValueError):
            raise UsageError(f"damping must be a number >= 0, got {self.damping!r}") from None
        if not math.isfinite(damping) or damping < 0:
            raise UsageError(f"damping must be a number >= 0, got {self.damping!r}")
        object.__setattr__(self, "damping", damping)

    def to_dict(self) -> dict:
        return {"name": self.name, "window": self.window, "enl": self.enl, "damping": self.damping}

    @classmethod
    def from_dict(cls, d: dict) -> FilterSpec:
        if not isinstance(d, dict) or "name" not in d:
            raise UsageError(f"a filter spec needs at least a 'name', got {d!r}")
        unknown = sorted(set(d) - {"name", "window", "enl", "damping"})
        if unknown:
            raise UsageError(
                f"unknown filter spec keys: {', '.join(unknown)} (valid: name, window, enl, damping)"
            )
        return make_filter_spec(**d)


def make_filter_spec(name: str, window: int = 7, enl: float | str = 4.4, damping: float = 2.0) -> FilterSpec:
    """Validated :class:`FilterSpec` (:class:`UsageError` on an unknown name, an even window or one < 3,
    enl ≤ 0, damping < 0, or a refined Lee window not in :data:`REFINED_LEE_WINDOWS`)."""
    return FilterSpec(name=name, window=window, enl=enl, damping=damping)


def filter_halo(spec: FilterSpec) -> int:
    """Context pixels needed on each side of a block for an exact result.

    Every filter reads only its ``window × window`` neighbourhood (refined Lee's sub-windows, directional
    windows and nodata test, Frost's Ci and kernel, the bilateral local mean all stay inside it), so the halo
    is ``window // 2`` (3 for the default 7 × 7).
    """
    return spec.window // 2


def gaussian_sigma(window: int) -> float:
    """OpenCV's default σ for a Gaussian kernel of ``window`` taps: 0.3·((window − 1)/2 − 1) + 0.8."""
    return 0.3 * ((window - 1) * 0.5 - 1.0) + 0.8


# ------------------------------------------------------------------------------------------ helpers


def _box_sum(x: np.ndarray, size: int) -> np.ndarray:
    """Direct (non-running) sum over a ``size × size`` window, mirror borders: bit-identical per pixel
    whatever the array it is computed in."""
    ones = np.ones(size)
    return ndi.correlate1d(ndi.correlate1d(x, ones, axis=0, mode=_MODE), ones, axis=1, mode=_MODE)


def _window_stats(x: np.ndarray, v: np.ndarray, size: int):
    """Count n, mean μ and unbiased variance σ² of the valid pixels in each window (x is 0 at nodata)."""
    n = np.rint(_box_sum(v, size))
    s1 = _box_sum(x, size)
    s2 = _box_sum(x * x, size)
    mean = s1 / np.maximum(n, 1.0)
    var = (s2 - s1 * mean) / np.maximum(n - 1.0, 1.0)
    var = np.where(n > 1, np.maximum(var, 0.0), 0.0)
    return n, mean, var


def _ci2(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Ci² = σ²/μ² (0 where μ ≤ 0, so those windows return μ)."""
    pos = mean > 0
    return np.where(pos, var / np.where(pos, mean * mean, 1.0), 0.0)


def _offsets(window: int):
    h = window // 2
    return [(dy, dx) for dy in range(-h, h + 1) for dx in range(-h, h + 1)]


def _shifted(padded: np.ndarray, h: int, dy: int, dx: int, shape) -> np.ndarray:
    """View of the mirror-padded array shifted by (dy, dx): element [i, j] is x[i + dy, j + dx]."""
    return padded[h + dy : h + dy + shape[0], h + dx : h + dx + shape[1]]


def _pad(x: np.ndarray, h: int) -> np.ndarray:
    return np.pad(x, h, mode="reflect")  # == scipy "mirror", also for pads larger than the array


def _enl(spec: FilterSpec) -> float:
    if isinstance(spec.enl, str):
        raise UsageError("enl='auto' must be resolved with estimate_enl() before apply_filter()")
    return float(spec.enl)


# ------------------------------------------------------------------------------------------ filters


def _boxcar(x, v, spec):
    n, mean, _ = _window_stats(x, v, spec.window)
    return mean


def _lee(x, v, spec):
    L = _enl(spec)
    cu2 = 1.0 / L
    _, mean, var = _window_stats(x, v, spec.window)
    ci2 = _ci2(mean, var)
    edge = ci2 > cu2
    w = np.where(edge, 1.0 - cu2 / np.where(edge, ci2, 1.0), 0.0)
    return mean + w * (x - mean)


def _kuan(x, v, spec):
    L = _enl(spec)
    cu2 = 1.0 / L
    _, mean, var = _window_stats(x, v, spec.window)
    ci2 = _ci2(mean, var)
    edge = ci2 > cu2
    w = np.where(edge, (1.0 - cu2 / np.where(edge, ci2, 1.0)) / (1.0 + cu2), 0.0)
    w = np.clip(w, 0.0, 1.0)
    return mean + w * (x - mean)


def _enhanced_lee(x, v, spec):
    L = _enl(spec)
    cu = 1.0 / math.sqrt(L)
    cmax = math.sqrt(1.0 + 2.0 / L)
    _, mean, var = _window_stats(x, v, spec.window)
    ci = np.sqrt(_ci2(mean, var))
    mid = (ci > cu) & (ci < cmax)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        w = np.exp(-spec.damping * (ci - cu) / np.where(mid, cmax - ci, 1.0))
    out = np.where(ci <= cu, mean, x)
    return np.where(mid, mean * w + x * (1.0 - w), out)


def _gamma_map(x, v, spec):
    L = _enl(spec)
    cu2 = 1.0 / L
    cmax2 = 1.0 + 2.0 / L
    _, mean, var = _window_stats(x, v, spec.window)
    ci2 = _ci2(mean, var)
    mid = (ci2 > cu2) & (ci2 < cmax2)
    alpha = (1.0 + cu2) / np.where(mid, ci2 - cu2, 1.0)
    b = alpha - L - 1.0
    d = mean * mean * b * b + 4.0 * alpha * L * mean * x
    r = (b * mean + np.sqrt(np.maximum(d, 0.0))) / (2.0 * alpha)
    out = np.where(ci2 <= cu2, mean, x)
    return np.where(mid, r, out)


def _frost(x, v, spec):
    h = spec.window // 2
    _, mean, var = _window_stats(x, v, spec.window)
    a = spec.damping * _ci2(mean, var)
    num = np.zeros_like(x)
    den = np.zeros_like(x)
    # Group the kernel offsets by distance: one ring kernel per distinct |t| (10 rings for 7 × 7).
    rings: dict[int, list[tuple[int, int]]] = {}
    for dy, dx in _offsets(spec.window):
        rings.setdefault(dy * dy + dx * dx, []).append((dy, dx))
    for d2, offs in sorted(rings.items()):
        k = np.zeros((spec.window, spec.window))
        for dy, dx in offs:
            k[dy + h, dx + h] = 1.0
        wgt = np.exp(-a * math.sqrt(d2))
        num += wgt * ndi.correlate(x, k, mode=_MODE)
        den += wgt * ndi.correlate(v, k, mode=_MODE)
    return num / np.where(den > 0, den, 1.0)


def _gaussian_kernel1d(window: int) -> np.ndarray:
    h = window // 2
    s = gaussian_sigma(window)
    t = np.arange(-h, h + 1, dtype=np.float64)
    k = np.exp(-(t * t) / (2.0 * s * s))
    return k / k.sum()


def _gaussian(x, v, spec):
    k = _gaussian_kernel1d(spec.window)

    def g(a):
        return ndi.correlate1d(ndi.correlate1d(a, k, axis=0, mode=_MODE), k, axis=1, mode=_MODE)

    num = g(x)
    den = g(v)
    return num / np.where(den > 0, den, 1.0)


def _bilateral(x, v, spec):
    L = _enl(spec)
    h = spec.window // 2
    s = gaussian_sigma(spec.window)
    _, mean, _ = _window_stats(x, v, spec.window)
    pos = mean > 0
    # exp(-(Iq - Ip)² / (2 σr²)) with σr = μ √(2/L)  ->  coefficient L / (4 μ²)
    coef = np.where(pos, L / (4.0 * np.where(pos, mean * mean, 1.0)), 0.0)
    xp = _pad(x, h)
    vp = _pad(v, h)
    num = np.zeros_like(x)
    den = np.zeros_like(x)
    neg_coef = -coef
    wgt = np.empty_like(x)
    for dy, dx in _offsets(spec.window):
        ws = math.exp(-(dy * dy + dx * dx) / (2.0 * s * s))
        xq = _shifted(xp, h, dy, dx, x.shape)
        vq = _shifted(vp, h, dy, dx, x.shape)
        np.subtract(xq, x, out=wgt)
        np.multiply(wgt, wgt, out=wgt)
        np.multiply(wgt, neg_coef, out=wgt)
        np.exp(wgt, out=wgt)
        np.multiply(wgt, vq, out=wgt)
        if ws != 1.0:
            np.multiply(wgt, ws, out=wgt)
        den += wgt
        np.multiply(wgt, xq, out=wgt)
        num += wgt
    return num / np.where(den > 0, den, 1.0)


def _median(x, v, spec):
    window = spec.window
    h = window // 2
    vb = v > 0
    # Fast path: exact wherever the whole window is valid (nodata filled with 0 is irrelevant there).
    out = ndi.median_filter(x, size=window, mode=_MODE)
    n = np.rint(_box_sum(v, window))
    fix = vb & (n < window * window)
    if not fix.any():
        return out
    xp = _pad(np.where(vb, x, np.nan), h)
    ys, xs = np.nonzero(fix)
    offs = np.array(_offsets(window))
    for start in range(0, ys.size, _MEDIAN_BATCH):
        yy = ys[start : start + _MEDIAN_BATCH]
        xx = xs[start : start + _MEDIAN_BATCH]
        vals = xp[yy[:, None] + h + offs[None, :, 0], xx[:, None] + h + offs[None, :, 1]]
        vals.sort(axis=1)  # NaN (nodata) sorts last
        cnt = np.sum(~np.isnan(vals), axis=1)
        lo = np.take_along_axis(vals, ((cnt - 1) // 2)[:, None], axis=1)[:, 0]
        hi = np.take_along_axis(vals, (cnt // 2)[:, None], axis=1)[:, 0]
        out[yy, xx] = 0.5 * (lo + hi)
    return out


def _refined_lee_masks(window: int) -> list[np.ndarray]:
    """SNAP's 8 directional (non-edge) windows, indexed as SNAP's ``d``; each holds window·(window+1)/2
    pixels including the centre row/column or diagonal."""
    h = window // 2
    y, x = np.mgrid[0:window, 0:window]
    last = window - 1
    return [
        (x >= h),  # 0: right half
        (x >= y),  # 1: upper-right triangle
        (y <= h),  # 2: upper half
        (x <= last - y),  # 3: upper-left triangle
        (x <= h),  # 4: left half
        (x <= y),  # 5: lower-left triangle
        (y >= h),  # 6: lower half
        (x >= last - y),  # 7: lower-right triangle
    ]


def _refined_lee(x, v, spec):
    """Refined Lee (Lee 1981) as SNAP's single-band ``RefinedLee``, generalised to SNAP's window table.

    1. 3 × 3 sub-windows of ``sub`` pixels, centres ``stride`` apart (7 × 7: 3 × 3 means of 3 × 3 pixels,
       stride 2); gradients |M10 − M12|, |M02 − M20|, |M01 − M21|, |M00 − M22| (Mji: row j, column i); the
       largest (first on ties) gives the edge orientation, and the side whose sub-window mean is closer to
       the centre one (strict ``<``, as SNAP) picks one of 8 directional windows (half windows and
       triangles including the centre line, window·(window+1)/2 pixels: 28 for 7 × 7).
    2. In the chosen window: mean μ, unbiased variance σ²_y; Lee MMSE weight
       b = max((σ²_y − μ²Cu²)/(1 + Cu²), 0)/σ²_y, R = μ + b(I − μ); σ²_y = 0 gives μ.
    Differences from SNAP: the speckle variance Cu² = 1/L comes from ``spec.enl`` (SNAP estimates it per
    pixel from the 5 least heterogeneous 3 × 3 sub-areas), and σ²_y = 0 returns μ (SNAP returns 0 there).
    Windows holding nodata use the same MMSE estimator with the valid pixels of the full window (as SNAP,
    which falls back to local statistics when a window is incomplete).
    """
    L = _enl(spec)
    cu2 = 1.0 / L
    window = spec.window
    sub, stride = REFINED_LEE_WINDOWS[window]

    def mmse(mean, var):
        varx = np.maximum((var - mean * mean * cu2) / (1.0 + cu2), 0.0)
        b = np.where(var > 0, varx / np.where(var > 0, var, 1.0), 0.0)
        return mean + b * (x - mean)

    n, mean_full, var_full = _window_stats(x, v, window)
    out = mmse(mean_full, var_full)  # used where the window holds nodata
    full = n >= window * window
    if not full.any():
        return out

    a = _box_sum(x, sub) / float(sub * sub)
    ap = _pad(a, stride)
    m = [
        [_shifted(ap, stride, (j - 1) * stride, (i - 1) * stride, x.shape) for i in range(3)]
        for j in range(3)
    ]
    # argmax over the 4 gradients, first maximum on ties (as SNAP's strict '<' scan)
    best = np.abs(m[1][0] - m[1][2])
    direction = np.zeros(x.shape, dtype=np.int8)
    for k, (p, q) in enumerate(((m[0][2], m[2][0]), (m[0][1], m[2][1]), (m[0][0], m[2][2])), start=1):
        g = np.abs(p - q)
        larger = g > best
        direction[larger] = k
        np.copyto(best, g, where=larger)
    del best
    c = m[1][1]
    d = np.where(np.abs(m[1][0] - c) < np.abs(c - m[1][2]), 4, 0).astype(np.int8)
    for k, (p, q, near, far) in enumerate(
        ((m[0][2], m[2][0], 1, 5), (m[0][1], m[2][1], 2, 6), (m[0][0], m[2][2], 3, 7)), start=1
    ):
        sel = direction == k
        np.copyto(d, np.where(np.abs(p - c) < np.abs(c - q), near, far).astype(np.int8), where=sel)
    del m, ap, a

    n_dir = window * (window + 1) // 2
    s1 = np.zeros_like(x)
    s2 = np.zeros_like(x)
    x2 = x * x
    for k, mask in enumerate(_refined_lee_masks(window)):
        sel = full & (d == k)
        if not sel.any():
            continue
        w = mask.astype(np.float64)
        np.copyto(s1, ndi.correlate(x, w, mode=_MODE), where=sel)
        np.copyto(s2, ndi.correlate(x2, w, mode=_MODE), where=sel)
    mean = s1 / n_dir
    var = np.maximum((s2 - s1 * mean) / (n_dir - 1), 0.0)
    return np.where(full, mmse(mean, var), out)


_FILTERS = {
    "boxcar": _boxcar,
    "median": _median,
    "gaussian": _gaussian,
    "bilateral": _bilateral,
    "lee": _lee,
    "kuan": _kuan,
    "enhanced_lee": _enhanced_lee,
    "frost": _frost,
    "gamma_map": _gamma_map,
    "refined_lee": _refined_lee,
}


def _check_inputs(linear: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    linear = np.asarray(linear)
    valid = np.asarray(valid)
    if linear.ndim not in (2, 3):
        raise InputError(f"expected linear intensity (bands, h, w) or (h, w), got shape {linear.shape}")
    if valid.shape != linear.shape[-2:]:
        raise InputError(f"valid mask shape {valid.shape} does not match the image {linear.shape[-2:]}")
    if valid.dtype != bool:
        valid = valid.astype(bool)
    return linear, valid


def apply_filter(linear: np.ndarray, valid: np.ndarray, spec: FilterSpec) -> np.ndarray:
    """Filter linear intensity ``(bands, h, w)`` or ``(h, w)`` with ``spec``; returns float32, same shape.

    ``valid`` (h, w) marks data pixels; non-finite values count as nodata too. Output is 0 at nodata pixels.
    Mirror borders and ``filter_halo(spec)`` make block-wise processing exact (see module docstring).
    """
    linear, valid = _check_inputs(linear, valid)
    if spec.name not in _FILTERS:  # a FilterSpec cannot hold one, but be explicit
        raise UsageError(f"unknown speckle filter {spec.name!r} (valid: {', '.join(FILTER_NAMES)})")
    fn = _FILTERS[spec.name]
    bands = linear[None] if linear.ndim == 2 else linear
    out = np.zeros(bands.shape, dtype=np.float32)
    if bands.size == 0:
        return out.reshape(linear.shape)
    for b in range(bands.shape[0]):
        band = bands[b].astype(np.float64)
        vb = valid & np.isfinite(band)
        if not vb.any():
            continue
        x = np.where(vb, band, 0.0)
        v = vb.astype(np.float64)
        out[b] = np.where(vb, _run_strips(fn, x, v, spec), 0.0).astype(np.float32)
    return out.reshape(linear.shape)


def _run_strips(fn, x: np.ndarray, v: np.ndarray, spec: FilterSpec) -> np.ndarray:
    """Run ``fn`` on row strips (with a mirror-padded halo of ``filter_halo`` rows) to bound memory on large
    arrays; exact by construction (the same block + halo scheme the pipeline uses)."""
    h = filter_halo(spec)
    rows = max(32, _STRIP_PIXELS // max(x.shape[1], 1))
    if x.shape[0] <= rows + 2 * h:
        return fn(x, v, spec)
    xp = np.pad(x, ((h, h), (0, 0)), mode="reflect")
    vp = np.pad(v, ((h, h), (0, 0)), mode="reflect")
    out = np.empty_like(x)
    for r0 in range(0, x.shape[0], rows):
        r1 = min(x.shape[0], r0 + rows)
        out[r0:r1] = fn(xp[r0 : r1 + 2 * h], vp[r0 : r1 + 2 * h], spec)[h : h + r1 - r0]
    return out


# ---------------------------------------------------------------------------------------------- ENL


def estimate_enl(linear: np.ndarray, valid: np.ndarray, window: int = 7) -> float:
    """Equivalent number of looks from the homogeneous areas of linear intensity.

    Method: local Ci² = σ²/μ² (unbiased variance) on ``window × window`` windows that are fully valid and
    have μ > 0, sampled on a grid of step ``window // 2 + 1`` (all bands pooled; see
    :func:`local_ci2_samples`). Homogeneous windows form the lowest mode of the distribution of log Ci²
    (texture and edges only raise Ci). The mode is located on a smoothed histogram of log Ci²; the windows
    within ±δ of the mode, δ = mode − (0.5th percentile), form the homogeneous population (its lower half is
    unaffected by texture, its upper half is mirrored), and ENL = 1/median(Ci²) of that population
    (:func:`enl_from_ci2_samples`). For pure Gamma(L) speckle this is within a few % of L (median vs mean of
    the skewed sample Ci² distribution: about +2 % at L = 4.4, +6 % at L = 1).

    For a scene read as several sample windows, pool ``local_ci2_samples`` of each window and call
    :func:`enl_from_ci2_samples` once. Raises :class:`InputError` with fewer than 16 usable windows.
    """
    return enl_from_ci2_samples(local_ci2_samples(linear, valid, window))


def local_ci2_samples(linear: np.ndarray, valid: np.ndarray, window: int = 7) -> np.ndarray:
    """Ci² = σ²/μ² of the fully valid, non-constant ``window × window`` windows lying inside the array,
    on a grid of step ``window // 2 + 1``, all bands pooled (1-D float64)."""
    linear, valid = _check_inputs(linear, valid)
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 3 or window % 2 == 0:
        raise UsageError(f"ENL window must be an odd integer >= 3, got {window!r}")
    bands = linear[None] if linear.ndim == 2 else linear
    h = window // 2
    step = h + 1
    samples = [np.empty(0)]
    for b in range(bands.shape[0]):
        band = bands[b].astype(np.float64)
        vb = valid & np.isfinite(band)
        x = np.where(vb, band, 0.0)
        v = vb.astype(np.float64)
        n, mean, var = _window_stats(x, v, window)
        sl = (slice(h, -h or None, step), slice(h, -h or None, step))  # windows inside the array only
        n, mean, var = n[sl], mean[sl], var[sl]
        ok = (n >= window * window) & (mean > 0) & (var > 0)
        samples.append(var[ok] / (mean[ok] ** 2))
    return np.concatenate(samples)


def enl_from_ci2_samples(ci2: np.ndarray) -> float:
    """ENL = 1/median(Ci²) of the homogeneous mode of pooled local Ci² samples (see :func:`estimate_enl`)."""
    ci2 = np.asarray(ci2, dtype=np.float64).ravel()
    ci2 = ci2[np.isfinite(ci2) & (ci2 > 0)]
    if ci2.size < 16:
        raise InputError(f"cannot estimate the ENL: only {ci2.size} fully valid, non-constant windows")
    lc = np.log(ci2)
    lo, hi = np.percentile(lc, [0.5, 99.5])
    if not hi > lo:
        return float(1.0 / np.median(ci2))
    nbins = int(np.clip(np.sqrt(lc.size), 16, 200))
    hist, edges = np.histogram(lc, bins=nbins, range=(lo, hi))
    hist = ndi.gaussian_filter1d(hist.astype(np.float64), sigma=max(1.0, nbins / 50.0), mode="constant")
    # lowest significant mode: first local maximum reaching half the global maximum
    peak = int(np.argmax(hist))
    for i in range(nbins):
        left = hist[i - 1] if i > 0 else -np.inf
        right = hist[i + 1] if i < nbins - 1 else -np.inf
        if hist[i] >= 0.5 * hist[peak] and hist[i] >= left and hist[i] >= right:
            peak = i
            break
    mode = 0.5 * (edges[peak] + edges[peak + 1])
    delta = max(mode - lo, edges[1] - edges[0])
    sel = ci2[(lc >= mode - delta) & (lc <= mode + delta)]
    return float(1.0 / np.median(sel))
