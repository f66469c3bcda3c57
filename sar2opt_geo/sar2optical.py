"""The SAR2Optical project's 8-bit preprocessing profile, reproduced exactly.

The SAR2Optical pix2pix models were run on SAR images prepared by that project's ``SARPreprocessor``
(QXSLAB_SAROPT → "Sentinel-1-like"): on each 8-bit channel separately, a speckle filter, a 2–98 percentile
stretch to 0..255 and an optional gamma. This module reproduces that chain bit for bit (OpenCV parts within
±1 DN, without depending on OpenCV) so that models see the inputs they were used with.

.. warning::
   **Its ``lee`` and ``frost`` are NOT the classical speckle filters** of :mod:`sar2opt_geo.filters`:

   * its ``lee`` weights the centre pixel by k = σ²/(σ² + Var_global + 1e-10), where Var_global is the
     variance of the *whole 8-bit image*, instead of using the speckle coefficient of variation
     Cu = 1/√ENL: it is an additive-noise Wiener-style smoother on 8-bit display values (usually dB-scaled),
     not Lee's multiplicative-speckle MMSE filter;
   * its ``frost`` is a *pointwise* blend out = W·I + (1 − W)·μ with W = exp(−σ/μ), not Frost's exponentially
     weighted kernel average: no distance weighting at all, and a *larger* local variation gives a *smaller*
     W, i.e. more smoothing near edges.

   Use them only to feed models trained/used with this profile; use :mod:`sar2opt_geo.filters` for speckle
   filtering proper.

Project semantics (per 8-bit channel ``I``; uint8 in, uint8 out):

* ``lee``: μ = uniform_filter(I, w), σ² = max(uniform_filter(I², w) − μ², 0) (float64, scipy's default border
  mode ``"reflect"``, i.e. edge pixel repeated), k = σ²/(σ² + Var_global + 1e-10), out = μ + k(I − μ);
* ``frost``: same μ, σ²; Cv = σ/(μ + 1e-10), W = exp(−Cv), out = W·I + (1 − W)·μ;
* ``median``: ``scipy.ndimage.median_filter(I, size=w)`` (border ``"reflect"``);
* ``gaussian``: ``cv2.GaussianBlur(I, (w, w), 0)``: σ = 0.3·((w − 1)/2 − 1) + 0.8, OpenCV's fixed kernels for
  w ≤ 7, and for larger w OpenCV's fixed-point (1/256) rounding of the sampled Gaussian; OpenCV's 8-bit
  path is exact integer arithmetic rounded half up, reproduced exactly here; border reflect-101
  (scipy ``"mirror"``);
* ``bilateral``: ``cv2.bilateralFilter(I, w, 75, 75)``: disc of radius w//2, weights
  exp(−d²/(2·75²))·exp(−ΔI²/(2·75²)), border reflect-101, rounded to nearest (truncated for w ≤ 5 as the
  IPP path of OpenCV's x86 wheels does); within ±1 DN of OpenCV;
* ``none``: identity;
* each filter result is clipped to 0..255 and truncated to uint8;
* stretch: p_lo, p_hi = np.percentile(filtered, (2, 98)); if p_hi > p_lo,
  out = trunc((clip(I, p_lo, p_hi) − p_lo)/(p_hi − p_lo)·255), else trunc(clip(I, p_lo, p_hi));
* gamma γ ≠ 1: out = trunc((I/255)^γ·255).

Borders and tiling. Whole-image results use the project's border modes: ``"reflect"`` (edge
repeated, ``np.pad(mode="symmetric")``) for lee/frost/median and reflect-101 (``np.pad(mode="reflect")``)
for gaussian/bilateral. A block processed with a halo of :func:`sar2optical_halo` pixels reproduces the
whole-image result when the halo outside the scene is padded with :func:`sar2optical_pad_mode`. The
pipeline's default ``np.pad(mode="reflect")`` halo is right for gaussian/bilateral only; with it,
lee/frost/median differ in the outermost ``window // 2`` pixels of the scene. Interior pixels never depend
on the padding. lee/frost use scipy's *running-sum* ``uniform_filter`` as the project does, whose last-bit
rounding depends on the position in the processed array: where the exact result is an integer (e.g. flat
areas), truncation can give ±1 DN between a tiled and a whole-image run (the project has this property too).

Statistics. The project computes Var_global and p2/p98 per image (per channel). For whole scenes processed in
tiles the pipeline must pass scene-level values (``global_variance=``, ``stretch_bounds=``) computed once by
:func:`sar2optical_scene_stats`, so tiles never use per-tile statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sar2opt_geo.errors import InputError, UsageError


class _Ndimage:
    """``scipy.ndimage``, imported on first use: the CLI imports :data:`SAR2OPTICAL_FILTERS` for its option
    choices, and importing scipy.ndimage up front made ``sar2opt-geo --help`` ~0.3 s slower (issue #15)."""

    def __getattr__(self, name):
        from scipy import ndimage

        return getattr(ndimage, name)


ndi = _Ndimage()

__all__ = [
    "OPENCV_FIXED_GAUSSIAN_KERNELS",
    "SAR2OPTICAL_FILTERS",
    "Sar2OpticalProfile",
    "sar2optical_filter",
    "sar2optical_halo",
    "sar2optical_pad_mode",
    "sar2optical_preprocess",
    "sar2optical_scene_stats",
]

SAR2OPTICAL_FILTERS = ("lee", "frost", "median", "gaussian", "bilateral", "none")

# OpenCV's getGaussianKernel: fixed kernels used for ksize <= 7 when sigma <= 0 (all multiples of 1/256).
OPENCV_FIXED_GAUSSIAN_KERNELS = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}
_BILATERAL_SIGMA_COLOR = 75.0
_BILATERAL_SIGMA_SPACE = 75.0
_PAD_MODES = {
    "lee": "symmetric",
    "frost": "symmetric",
    "median": "symmetric",
    "gaussian": "reflect",
    "bilateral": "reflect",
    "none": "reflect",
}


@dataclass(frozen=True)
class Sar2OpticalProfile:
    """The SAR2Optical preprocessing options (the project's ``SARPreprocessor`` defaults).

    - ``filter``: one of :data:`SAR2OPTICAL_FILTERS` (its ``lee``/``frost`` are NOT the classical filters);
    - ``window``: odd filter window ≥ 3 (default 5);
    - ``gamma``: power applied after the stretch (1 = none);
    - ``stretch``: (low, high) percentiles of the stretch to 0..255, or ``None`` for the project's
      ``--no-normalize``.
    """

    filter: str = "lee"
    window: int = 5
    gamma: float = 1.0
    stretch: tuple[float, float] | None = (2.0, 98.0)

    def __post_init__(self):
        if self.filter not in SAR2OPTICAL_FILTERS:
            raise UsageError(
                f"unknown SAR2Optical filter {self.filter!r} (valid: {', '.join(SAR2OPTICAL_FILTERS)})"
            )
        w = self.window
        if isinstance(w, bool) or not isinstance(w, int | np.integer) or w < 3 or w % 2 == 0:
            raise UsageError(f"SAR2Optical filter window must be an odd integer >= 3, got {w!r}")
        object.__setattr__(self, "window", int(w))
        try:
            gamma = float(self.gamma)
        except (TypeError, ValueError):
            raise UsageError(f"SAR2Optical gamma must be a positive number, got {self.gamma!r}") from None
        if not math.isfinite(gamma) or gamma <= 0:
            raise UsageError(f"SAR2Optical gamma must be a positive number, got {self.gamma!r}")
        object.__setattr__(self, "gamma", gamma)
        if self.stretch is not None:
            try:
                lo, hi = (float(v) for v in self.stretch)
            except (TypeError, ValueError):
                raise UsageError(
                    f"SAR2Optical stretch must be (low, high) percentiles, got {self.stretch!r}"
                ) from None
            if not 0 <= lo < hi <= 100:
                raise UsageError(
                    f"SAR2Optical stretch percentiles {self.stretch} are not 0 <= low < high <= 100"
                )
            object.__setattr__(self, "stretch", (lo, hi))

    def to_dict(self) -> dict:
        return {
            "filter": self.filter,
            "window": self.window,
            "gamma": self.gamma,
            "stretch": list(self.stretch) if self.stretch is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict | None) -> Sar2OpticalProfile:
        if not d:
            return cls()
        unknown = sorted(set(d) - {"filter", "window", "gamma", "stretch"})
        if unknown:
            raise UsageError(
                f"unknown SAR2Optical profile keys: {', '.join(unknown)} "
                "(valid: filter, window, gamma, stretch)"
            )
        kw = dict(d)
        if kw.get("stretch") is not None:
            kw["stretch"] = tuple(kw["stretch"])
        return cls(**kw)


def sar2optical_halo(profile: Sar2OpticalProfile) -> int:
    """Context pixels needed on each side of a block: ``window // 2`` (0 for ``none``); the stretch and
    gamma are pointwise once scene-level statistics are given."""
    return 0 if profile.filter == "none" else profile.window // 2


def sar2optical_pad_mode(profile: Sar2OpticalProfile) -> str:
    """``np.pad`` mode that reproduces the project's border handling at scene edges: ``"symmetric"`` (edge
    pixel repeated, scipy ``"reflect"``) for lee/frost/median, ``"reflect"`` (reflect-101) for
    gaussian/bilateral/none."""
    return _PAD_MODES[profile.filter]


# ------------------------------------------------------------------------------------------ filters


def _channels(img: np.ndarray, what: str) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise InputError(f"{what} expects uint8 images, got {img.dtype}")
    if img.ndim not in (2, 3):
        raise InputError(f"{what} expects (h, w) or (channels, h, w), got shape {img.shape}")
    return img[None] if img.ndim == 2 else img


def _per_channel(value, n: int, what: str) -> list:
    """A scalar/pair for all channels or one per channel."""
    if value is None:
        return [None] * n
    arr = np.asarray(value, dtype=np.float64)
    if what == "global_variance":
        if arr.ndim == 0:
            return [float(arr)] * n
        if arr.shape == (n,):
            return [float(v) for v in arr]
    else:
        if arr.shape == (2,):
            return [(float(arr[0]), float(arr[1]))] * n
        if arr.shape == (n, 2):
            return [(float(a), float(b)) for a, b in arr]
    raise UsageError(f"{what} must be given once or once per channel ({n}), got shape {arr.shape}")


def _local_stats(img: np.ndarray, window: int):
    """The project's local mean and clamped variance (scipy uniform_filter, default mode "reflect")."""
    x = img.astype(np.float64)
    mean = ndi.uniform_filter(x, size=window)
    sqr_mean = ndi.uniform_filter(x**2, size=window)
    return x, mean, np.maximum(sqr_mean - mean**2, 0)


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 255).astype(np.uint8)


def _lee(ch: np.ndarray, window: int, global_variance: float | None) -> np.ndarray:
    x, mean, var = _local_stats(ch, window)
    gv = float(np.var(x)) if global_variance is None else float(global_variance)
    k = var / (var + gv + 1e-10)
    return _to_u8(mean + k * (x - mean))


def _frost(ch: np.ndarray, window: int) -> np.ndarray:
    x, mean, var = _local_stats(ch, window)
    cv = np.sqrt(var) / (mean + 1e-10)
    w = np.exp(-1.0 * cv)  # the project's damping = 1.0
    return _to_u8(w * x + (1 - w) * mean)


def _opencv_gaussian_kernel_fixed(window: int) -> np.ndarray:
    """OpenCV's 8-bit Gaussian kernel in units of 1/256 (``getGaussianKernelFixedPoint_ED``): the fixed
    kernels for window ≤ 7, else the sampled Gaussian with σ = 0.15·window + 0.35
    (= 0.3·((w − 1)/2 − 1) + 0.8) rounded from the outside in with error diffusion, the centre tap
    taking the remainder (sum = 256)."""
    if window in OPENCV_FIXED_GAUSSIAN_KERNELS:
        return np.rint(np.asarray(OPENCV_FIXED_GAUSSIAN_KERNELS[window]) * 256.0)
    sigma = window * 0.15 + 0.35
    half = window // 2
    x = np.arange(1 - window, 0, 2, dtype=np.float64)  # doubled offsets of the outer taps, outside in
    vals = np.exp(x * x * (-0.125 / (sigma * sigma)))
    mul = 1.0 / (2.0 * vals.sum() + 1.0)
    k = np.zeros(window)
    err = 0.0
    for i in range(half):
        adj = vals[i] * mul * 256.0 + err
        v0 = float(np.rint(adj))  # cvRound: half to even
        err = adj - v0
        k[i] = k[window - 1 - i] = v0
    k[half] = 256.0 - 2.0 * k[:half].sum()
    return k


def _gaussian(ch: np.ndarray, window: int) -> np.ndarray:
    # OpenCV's 8-bit path is fixed point: uint8 × (k/256) summed exactly per pass, then rounded half up
    # from 16 fractional bits. Integer arithmetic reproduces it (sums < 2**24: exact in float64).
    k = _opencv_gaussian_kernel_fixed(window)
    x = ch.astype(np.float64)
    s = ndi.correlate1d(ndi.correlate1d(x, k, axis=1, mode="mirror"), k, axis=0, mode="mirror")
    return np.floor((s + 32768.0) / 65536.0).astype(np.uint8)


def _bilateral(ch: np.ndarray, window: int) -> np.ndarray:
    r = window // 2
    x = ch.astype(np.float64)
    xp = np.pad(x, r, mode="reflect")  # reflect-101
    gs = -0.5 / (_BILATERAL_SIGMA_SPACE**2)
    gc = -0.5 / (_BILATERAL_SIGMA_COLOR**2)
    num = np.zeros_like(x)
    den = np.zeros_like(x)
    h, w = x.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            d2 = dy * dy + dx * dx
            if math.sqrt(d2) > r:  # OpenCV uses a disc of radius window // 2
                continue
            q = xp[r + dy : r + dy + h, r + dx : r + dx + w]
            wgt = math.exp(d2 * gs) * np.exp((q - x) ** 2 * gc)
            num += wgt * q
            den += wgt
    # OpenCV rounds to nearest, except x86 builds with IPP (the pip wheels), whose bilateral path for
    # d <= 5 truncates; both are followed here (within ±1 DN of either build).
    res = num / den
    return _to_u8(np.floor(res) if window <= 5 else np.rint(res))


def sar2optical_filter(img_u8: np.ndarray, name: str, window: int, global_variance=None) -> np.ndarray:
    """The SAR2Optical project's speckle filter ``name`` on uint8 ``(h, w)`` or ``(c, h, w)``, per channel.

    ``global_variance`` (``lee`` only): Var_global of the project's k = σ²/(σ² + Var_global + 1e-10), once or
    per channel; ``None`` uses each channel's own ``np.var`` (the project's per-image behaviour). Remember
    that ``lee`` and ``frost`` here are NOT the classical filters (see the module docstring).
    """
    if name not in SAR2OPTICAL_FILTERS:
        raise UsageError(f"unknown SAR2Optical filter {name!r} (valid: {', '.join(SAR2OPTICAL_FILTERS)})")
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 3 or window % 2 == 0:
        raise UsageError(f"SAR2Optical filter window must be an odd integer >= 3, got {window!r}")
    img = np.asarray(img_u8)
    chans = _channels(img, "sar2optical_filter")
    gvs = _per_channel(global_variance, chans.shape[0], "global_variance")
    out = np.empty_like(chans)
    for c in range(chans.shape[0]):
        ch = chans[c]
        if name == "lee":
            out[c] = _lee(ch, window, gvs[c])
        elif name == "frost":
            out[c] = _frost(ch, window)
        elif name == "median":
            out[c] = ndi.median_filter(ch, size=window)
        elif name == "gaussian":
            out[c] = _gaussian(ch, window)
        elif name == "bilateral":
            out[c] = _bilateral(ch, window)
        else:
            out[c] = ch
    return out.reshape(img.shape)


# ------------------------------------------------------------------------------ stretch and gamma


def _stretch(ch: np.ndarray, lo: float, hi: float) -> np.ndarray:
    clipped = np.clip(ch.astype(np.float64), lo, hi)
    if hi > lo:
        return ((clipped - lo) / (hi - lo) * 255.0).astype(np.uint8)
    return clipped.astype(np.uint8)


def _gamma(ch: np.ndarray, gamma: float) -> np.ndarray:
    if gamma == 1.0:
        return ch
    return (np.power(ch.astype(np.float64) / 255.0, gamma) * 255.0).astype(np.uint8)


def _to_uint8_input(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    if img.dtype.kind not in "uifb":
        raise InputError(f"SAR2Optical preprocessing expects a numeric image, got {img.dtype}")
    if img.dtype.kind == "f":
        img = np.nan_to_num(img, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(img, 0, 255).astype(np.uint8)  # the project's conversion of non-uint8 input


def sar2optical_preprocess(
    img_u8: np.ndarray,
    profile: Sar2OpticalProfile,
    *,
    global_variance=None,
    stretch_bounds=None,
) -> np.ndarray:
    """The project's full chain on uint8 ``(h, w)`` or ``(c, h, w)``: filter → percentile stretch → gamma.

    Non-uint8 input is clipped to 0..255 and truncated first (NaN → 0), as the project does.
    ``global_variance`` (lee's Var_global) and ``stretch_bounds`` ((p_lo, p_hi) in DN of the *filtered*
    image, once or per channel) default to the project's per-image statistics; the pipeline passes the
    scene-level values of :func:`sar2optical_scene_stats` so that tiles never use per-tile statistics.
    """
    img = _to_uint8_input(img_u8)
    chans = _channels(img, "sar2optical_preprocess")
    n = chans.shape[0]
    filtered = sar2optical_filter(chans, profile.filter, profile.window, global_variance)
    bounds = _per_channel(stretch_bounds, n, "stretch_bounds")
    out = np.empty_like(filtered)
    for c in range(n):
        ch = filtered[c]
        if profile.stretch is not None:
            lo, hi = bounds[c] if bounds[c] is not None else _percentiles(ch.ravel(), profile.stretch)
            ch = _stretch(ch, lo, hi)
        out[c] = _gamma(ch, profile.gamma)
    return out.reshape(img.shape)


def _percentiles(values: np.ndarray, stretch: tuple[float, float]) -> tuple[float, float]:
    lo = np.percentile(values, stretch[0])
    hi = np.percentile(values, stretch[1])
    return float(lo), float(hi)


def sar2optical_scene_stats(
    samples_u8_after_filter: np.ndarray | None,
    samples_u8_before_filter: np.ndarray | None,
    stretch: tuple[float, float] | None = (2.0, 98.0),
) -> dict:
    """Scene-level statistics replacing the project's per-image ones; samples ``(n,)`` or ``(c, n)``.

    * ``global_variance`` (needed by ``lee`` only) = ``np.var`` of the **unfiltered** 8-bit samples
      (``samples_u8_before_filter``): the project takes the variance of the image *before* filtering.
    * ``stretch_bounds`` = ``np.percentile`` (linear interpolation) at ``stretch`` of the **filtered** 8-bit
      samples (``samples_u8_after_filter``): the project stretches the filter output. These samples must be
      produced by :func:`sar2optical_filter` with the profile's filter and window, computed on sample windows
      read with a :func:`sar2optical_halo` halo (and cropped), and, for ``lee``, with the *scene*
      ``global_variance``; so the pipeline computes the variance first, then filters the sample windows,
      then the bounds. Only valid (data) pixels should be sampled.

    Either argument may be ``None`` (its statistic is then omitted). Returns
    ``{"global_variance": [per channel], "stretch_bounds": [[lo, hi] per channel], "n_samples": n}``, ready
    for ``sar2optical_preprocess(..., global_variance=..., stretch_bounds=...)``.
    """
    out: dict = {}
    n_samples = 0
    if samples_u8_before_filter is not None:
        before = np.atleast_2d(np.asarray(samples_u8_before_filter))
        if before.shape[-1] == 0:
            raise InputError("no valid samples to compute the SAR2Optical global variance from")
        out["global_variance"] = [float(np.var(b.astype(np.float64))) for b in before]
        n_samples = before.shape[-1]
    if samples_u8_after_filter is not None and stretch is not None:
        after = np.atleast_2d(np.asarray(samples_u8_after_filter))
        if after.shape[-1] == 0:
            raise InputError("no valid samples to compute the SAR2Optical stretch bounds from")
        out["stretch_bounds"] = [list(_percentiles(a, stretch)) for a in after]
        n_samples = max(n_samples, after.shape[-1])
    out["n_samples"] = int(n_samples)
    return out
