"""Radiometry: input scales, conversions to and from linear intensity, scene-level statistics and the
mapping into a model's input range as declared by its checkpoint metadata.

A checkpoint declares its radiometry as a small dict (see :class:`Radiometry`), e.g. SAR2Optical/SEN1-2
models take "linear σ⁰ → dB, clip [−25, 0] → [−1, 1], one band replicated to 3 channels". The scene's own
scale (``--input-scale``) is converted to linear intensity first (speckle filters work there), then to the
model's domain. Percentile stretches use scene-level statistics computed once per scene from a fixed
lattice of sample windows, never per tile, so the result does not depend on tiling or chunking.

Hand-written: only the small arithmetic below; statistics are numpy percentiles.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from sar2opt_geo import defaults
from sar2opt_geo.errors import InputError, UsageError

log = logging.getLogger(__name__)

#: The concrete input scales (``defaults.INPUT_SCALES`` less "auto", which is decided from the data).
INPUT_SCALES = tuple(s for s in defaults.INPUT_SCALES if s != "auto")
MODEL_SCALES = ("linear", "db", "amplitude")
_TINY = 1e-10  # linear floor before log10 (−100 dB)


#: The Sentinel-1 dual-pol composite (R = VV, G = VH, B = VV/VH, each as 8-bit dB levels): the radiometry of
#: ``synth.write_pairs(dual_pol=True)`` tiles and of models trained on them. VV keeps SEN1-2's [−25, 0] dB;
#: VH [−32, −7] dB and the ratio [−2, 18] dB hold the 1st–99.5th percentiles of synthetic s1 training scenes
#: (VH −31.7/−9.3 dB, ratio −1.4/16.3 dB; seed 0, 64 tiles) and the usual IW ranges (VH noise floor near
#: −30 dB); 25, 25 and 20 dB spans keep the 8-bit step near 0.1 dB.
DUAL_POL_COMPOSITE = {
    "scale": "db",
    "clip": [[-25.0, 0.0], [-32.0, -7.0]],
    "ratio_clip": [-2.0, 18.0],
    "out_range": [-1.0, 1.0],
    "quantize": True,
}

#: ``levels`` input: the 8-bit levels of this range (the default radiometry's dB clip).
DEFAULT_LEVELS = ("db", -25.0, 0.0)


def to_linear(
    x: np.ndarray,
    scale: str,
    *,
    levels: tuple[str, float, float] = DEFAULT_LEVELS,
    constant: float | None = None,
) -> np.ndarray:
    """Convert values in ``scale`` to linear intensity.

    ``dn``: DN²/A² with ``constant`` A (DN² without one); ``levels``: 8-bit levels of a model's radiometry
    ``levels = (domain, lo, hi)`` — level L stands for the centre of its interval,
    lo + (L + ½)·(hi − lo)/255 in that domain (dB for SEN1-2-style models), so converting it back with the
    same radiometry gives level L again exactly."""
    x = np.asarray(x, dtype=np.float32)
    if scale == "linear":
        return x
    if scale == "db":
        return np.power(np.float32(10.0), x / np.float32(10.0), dtype=np.float32)
    if scale == "amplitude":
        return np.square(x, dtype=np.float32)
    if scale == "dn":
        sq = np.square(x, dtype=np.float32)
        return sq if not constant else (sq / np.float32(float(constant) ** 2)).astype(np.float32)
    if scale == "levels":
        domain, lo, hi = levels
        v = np.float64(lo) + (x.astype(np.float64) + 0.5) * ((float(hi) - float(lo)) / 255.0)
        if domain == "db":
            return np.power(10.0, v / 10.0).astype(np.float32)
        if domain == "amplitude":
            return np.square(v).astype(np.float32)
        return np.maximum(v, 0.0).astype(np.float32)
    raise UsageError(f"unknown input scale {scale!r} (valid: {', '.join(INPUT_SCALES)})")


def from_linear(x: np.ndarray, scale: str) -> np.ndarray:
    """Convert linear intensity to ``scale`` (dB floors at −100 dB so zeros stay finite)."""
    x = np.asarray(x, dtype=np.float32)
    if scale == "linear":
        return x
    if scale == "db":  # in place on one temporary (same float32 operations as 10·log10(max(x, tiny)))
        v = np.maximum(x, np.float32(_TINY))
        np.log10(v, out=v)
        v *= np.float32(10.0)
        return v
    if scale == "amplitude":
        return np.sqrt(np.maximum(x, np.float32(0.0)), dtype=np.float32)
    raise UsageError(f"unknown model scale {scale!r} (valid: {', '.join(MODEL_SCALES)})")


def check_input_scale(scale: str, sample: np.ndarray, path: str = "") -> None:
    """Warn (once, in the log) when values contradict the declared scale."""
    sample = np.asarray(sample)
    sample = sample[np.isfinite(sample)]
    if not sample.size:
        return
    where = f"{path}: " if path else ""
    if scale in ("linear", "amplitude", "dn") and float(sample.min()) < 0:
        share = float(np.mean(sample < 0))
        log.warning(
            "%sinput declared %s holds negative values (%.1f %% of samples); is it in dB? "
            "Negative values are treated as 0.",
            where,
            scale,
            100 * share,
        )
    if scale == "db" and float(sample.max()) > 30:
        log.warning("%sinput declared dB holds values above +30 dB; is it linear?", where)


@dataclass(frozen=True)
class Radiometry:
    """How scene intensities become model inputs (stored in checkpoint metadata as a dict).

    - ``scale``: domain of the clip (``db``, ``amplitude`` or ``linear``);
    - ``clip``: fixed bounds in that domain, one ``(lo, hi)`` for every band or one per band (dual-pol
      models: VV and VH have different ranges), or ``percentiles`` (lo, hi) resolved per scene;
    - ``out_range``: the model's input range (pix2pix: [−1, 1]);
    - ``quantize``: map to 0..255 and truncate to integers before ``out_range`` (models trained on 8-bit
      PNG tiles such as SEN1-2/QXSLAB see exactly these levels);
    - ``replicate_to``: replicate a single band to N channels (SAR2Optical takes grayscale as RGB);
    - ``ratio_clip``: append the dB difference of the first two bands (VV − VH, the cross-polarisation
      ratio) clipped to these bounds as a further channel: the classic Sentinel-1 dual-pol composite
      (R = VV, G = VH, B = VV/VH), three channels as a SAR2Optical U-Net takes. Needs ``scale: db``, fixed
      ``clip`` bounds and two bands; the ratio is computed from the unquantised dB values.
    """

    scale: str = "db"
    clip: tuple[float, float] | None = (-25.0, 0.0)
    percentiles: tuple[float, float] | None = None
    out_range: tuple[float, float] = (-1.0, 1.0)
    quantize: bool = False
    replicate_to: int | None = None
    ratio_clip: tuple[float, float] | None = None
    description: str = ""

    def __post_init__(self):
        if self.scale not in MODEL_SCALES:
            raise UsageError(f"radiometry scale {self.scale!r} is not one of {', '.join(MODEL_SCALES)}")
        if (self.clip is None) == (self.percentiles is None):
            raise UsageError("radiometry needs exactly one of 'clip' and 'percentiles'")
        for lo, hi in self.band_clips or ():
            if not lo < hi:
                raise UsageError(f"radiometry clip {list(self.clip)} is empty")
        if self.ratio_clip is not None:
            if not self.ratio_clip[0] < self.ratio_clip[1]:
                raise UsageError(f"radiometry ratio_clip {list(self.ratio_clip)} is empty")
            if self.scale != "db" or self.clip is None or self.replicate_to:
                raise UsageError(
                    "radiometry ratio_clip (the VV/VH channel) needs scale 'db', fixed clip bounds and no "
                    "replicate_to"
                )
        if self.percentiles is not None and not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise UsageError(f"radiometry percentiles {self.percentiles} are not 0 <= lo < hi <= 100")

    @classmethod
    def from_dict(cls, d: dict | None) -> Radiometry:
        if not d:
            return cls()
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        for key in ("clip", "percentiles", "out_range", "ratio_clip"):
            if kw.get(key) is not None:
                kw[key] = _bounds(kw[key], key, per_band=key == "clip")
        return cls(**kw)

    @property
    def band_clips(self) -> tuple[tuple[float, float], ...] | None:
        """The fixed clip as one ``(lo, hi)`` per band it lists (a single pair: one entry), or None."""
        if self.clip is None:
            return None
        if isinstance(self.clip[0], (tuple, list)):
            return tuple((float(lo), float(hi)) for lo, hi in self.clip)
        return ((float(self.clip[0]), float(self.clip[1])),)

    @property
    def extra_channels(self) -> int:
        """Channels the radiometry derives from the bands (the VV/VH ratio)."""
        return 1 if self.ratio_clip is not None else 0

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("clip", "percentiles", "out_range", "ratio_clip"):
            if d[key] is not None:
                d[key] = [list(v) if isinstance(v, (tuple, list)) else v for v in d[key]]
        if d["ratio_clip"] is None:
            d.pop("ratio_clip")
        if not d["description"]:
            d["description"] = self.describe()
        return d

    @property
    def needs_scene_stats(self) -> bool:
        return self.percentiles is not None

    def describe(self) -> str:
        if self.clip is not None:
            rng = "clip " + " / ".join(f"[{lo:g}, {hi:g}]" for lo, hi in self.band_clips)
        else:
            rng = f"scene percentiles p{self.percentiles[0]:g}–p{self.percentiles[1]:g}"
        q = " → 0..255" if self.quantize else ""
        rep = f", replicated to {self.replicate_to} channels" if self.replicate_to else ""
        if self.ratio_clip is not None:
            rep += f", + VV/VH ratio clip [{self.ratio_clip[0]:g}, {self.ratio_clip[1]:g}] dB"
        return f"linear σ⁰ → {self.scale}, {rng}{q} → [{self.out_range[0]:g}, {self.out_range[1]:g}]{rep}"


@dataclass(frozen=True)
class SceneStats:
    """Per-band clip bounds in the radiometry's domain, resolved once per scene."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    n_samples: int = 0

    def to_dict(self) -> dict:
        return {"lo": list(self.lo), "hi": list(self.hi), "n_samples": self.n_samples}


def _bounds(value, key: str, per_band: bool = False):
    """A ``(lo, hi)`` pair of floats (or, ``per_band``, a tuple of such pairs) from a checkpoint or config
    value."""
    try:
        if per_band and len(value) and isinstance(value[0], (tuple, list)):
            return tuple(_bounds(v, key) for v in value)
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UsageError(
            f"radiometry {key} must be a [lo, hi] pair{' or one per band' * per_band}, got {value!r}"
        ) from None
    return lo, hi


def resolve_stats(radiometry: Radiometry, samples_linear: np.ndarray | None, n_bands: int) -> SceneStats:
    """Clip bounds per band: the fixed clip, or percentiles of valid scene samples ``(bands, n)``."""
    clips = radiometry.band_clips
    if clips is not None:
        if len(clips) == 1:
            clips = clips * n_bands
        elif len(clips) != n_bands:
            raise InputError(f"the radiometry clips {len(clips)} band(s) but the model reads {n_bands}")
        return SceneStats(lo=tuple(c[0] for c in clips), hi=tuple(c[1] for c in clips))
    if samples_linear is None or samples_linear.shape[-1] == 0:
        raise InputError("no valid pixels to compute scene statistics from (all nodata?)")
    vals = from_linear(samples_linear, radiometry.scale)
    lo, hi = np.percentile(vals, radiometry.percentiles, axis=-1)
    hi = np.where(hi > lo, hi, lo + 1e-6)
    return SceneStats(
        lo=tuple(float(v) for v in lo), hi=tuple(float(v) for v in hi), n_samples=int(vals.shape[-1])
    )


def normalize(linear: np.ndarray, valid: np.ndarray, radiometry: Radiometry, stats: SceneStats) -> np.ndarray:
    """Map linear intensity ``(bands, h, w)`` into the model input ``(channels, h, w)`` float32.

    Nodata pixels are filled with the low end of the model's range (what a dB-clipped nodata collar
    looks like in 8-bit training data).
    """
    vals = from_linear(np.maximum(linear, 0), radiometry.scale)
    lo = np.asarray(stats.lo, dtype=np.float32)[:, None, None]
    hi = np.asarray(stats.hi, dtype=np.float32)[:, None, None]
    # block-level arithmetic in place on one float32 buffer (the same operations, in the same order, as
    # a + clip((v − lo) / (hi − lo), 0, 1)·(b − a): bit-identical, with one temporary instead of six)
    ratio = None
    if radiometry.ratio_clip is not None:
        if vals.shape[0] != 2:
            raise InputError(f"the VV/VH ratio channel needs two bands, got {vals.shape[0]}")
        rlo, rhi = radiometry.ratio_clip
        ratio = np.subtract(vals[0], vals[1], dtype=np.float32)
        ratio -= np.float32(rlo)
        ratio /= np.float32(rhi - rlo)
        ratio = ratio[None]
    out = np.subtract(vals, lo, dtype=np.float32)
    out /= hi - lo
    if ratio is not None:
        out = np.concatenate([out, ratio])
    np.clip(out, np.float32(0.0), np.float32(1.0), out=out)
    if radiometry.quantize:
        out *= np.float32(255.0)
        np.floor(out, out=out)
        out /= np.float32(255.0)
    a, b = radiometry.out_range
    out *= np.float32(b - a)
    out += np.float32(a)
    if not valid.all():  # np.copyto(where=), not boolean-index assignment: radiometry of the 3072² bench
        np.copyto(out, np.float32(a), where=~valid)  # scene 108-134 -> 45-54 ms (bench_speed.py --tasks)
    if radiometry.replicate_to and out.shape[0] == 1 and radiometry.replicate_to > 1:
        out = np.repeat(out, radiometry.replicate_to, axis=0)
    return out


def output_to_uint8(
    y: np.ndarray, out_range: tuple[float, float] = (-1.0, 1.0), *, in_place: bool = False
) -> np.ndarray:
    """Generator output (tanh range) to 0..255 uint8, rounding to nearest. ``in_place``: ``y`` (float32, which
    the caller no longer needs) is the scratch buffer, instead of a fresh 11 MB array a 960² block (the same
    operations; 16 blocks 46-48 -> 38-42 ms, ``bench_speed.py --tasks``, issue #15)."""
    a, b = out_range
    if in_place and y.dtype == np.float32:
        unit = np.subtract(y, np.float32(a), out=y)
    else:
        unit = np.subtract(y, np.float32(a), dtype=np.float32)  # in place from here: same operations
    unit /= np.float32(b - a)
    unit *= np.float32(255.0)
    np.rint(unit, out=unit)
    np.clip(unit, 0, 255, out=unit)
    return unit.astype(np.uint8)


def composite_levels(
    linear: np.ndarray, radiometry: Radiometry, valid: np.ndarray | None = None
) -> np.ndarray:
    """uint8 ``(channels, h, w)``: the 8-bit levels that a fixed-clip quantising radiometry gives linear
    intensity ``(bands, h, w)`` — exactly the levels :func:`normalize` maps into the model's range, so tiles
    stored as these levels (training pairs) and scenes read at inference feed the model the same values."""
    if radiometry.clip is None or not radiometry.quantize:
        raise UsageError("8-bit levels need a fixed clip and quantize: true")
    if valid is None:
        valid = np.ones(linear.shape[-2:], dtype=bool)
    x = normalize(linear, valid, radiometry, resolve_stats(radiometry, None, linear.shape[0]))
    a, b = radiometry.out_range
    return np.rint((x - np.float32(a)) * np.float32(255.0 / (b - a))).astype(np.uint8)
