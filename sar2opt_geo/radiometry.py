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
    - ``clip``: fixed bounds in that domain, or ``percentiles`` (lo, hi) resolved per scene;
    - ``out_range``: the model's input range (pix2pix: [−1, 1]);
    - ``quantize``: map to 0..255 and truncate to integers before ``out_range`` (models trained on 8-bit
      PNG tiles such as SEN1-2/QXSLAB see exactly these levels);
    - ``replicate_to``: replicate a single band to N channels (SAR2Optical takes grayscale as RGB).
    """

    scale: str = "db"
    clip: tuple[float, float] | None = (-25.0, 0.0)
    percentiles: tuple[float, float] | None = None
    out_range: tuple[float, float] = (-1.0, 1.0)
    quantize: bool = False
    replicate_to: int | None = None
    description: str = ""

    def __post_init__(self):
        if self.scale not in MODEL_SCALES:
            raise UsageError(f"radiometry scale {self.scale!r} is not one of {', '.join(MODEL_SCALES)}")
        if (self.clip is None) == (self.percentiles is None):
            raise UsageError("radiometry needs exactly one of 'clip' and 'percentiles'")
        if self.clip is not None and not self.clip[0] < self.clip[1]:
            raise UsageError(f"radiometry clip {self.clip} is empty")
        if self.percentiles is not None and not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise UsageError(f"radiometry percentiles {self.percentiles} are not 0 <= lo < hi <= 100")

    @classmethod
    def from_dict(cls, d: dict | None) -> Radiometry:
        if not d:
            return cls()
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        for key in ("clip", "percentiles", "out_range"):
            if kw.get(key) is not None:
                kw[key] = tuple(float(v) for v in kw[key])
        return cls(**kw)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("clip", "percentiles", "out_range"):
            if d[key] is not None:
                d[key] = list(d[key])
        if not d["description"]:
            d["description"] = self.describe()
        return d

    @property
    def needs_scene_stats(self) -> bool:
        return self.percentiles is not None

    def describe(self) -> str:
        if self.clip is not None:
            rng = f"clip [{self.clip[0]:g}, {self.clip[1]:g}]"
        else:
            rng = f"scene percentiles p{self.percentiles[0]:g}–p{self.percentiles[1]:g}"
        q = " → 0..255" if self.quantize else ""
        rep = f", replicated to {self.replicate_to} channels" if self.replicate_to else ""
        return f"linear σ⁰ → {self.scale}, {rng}{q} → [{self.out_range[0]:g}, {self.out_range[1]:g}]{rep}"


@dataclass(frozen=True)
class SceneStats:
    """Per-band clip bounds in the radiometry's domain, resolved once per scene."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    n_samples: int = 0

    def to_dict(self) -> dict:
        return {"lo": list(self.lo), "hi": list(self.hi), "n_samples": self.n_samples}


def resolve_stats(radiometry: Radiometry, samples_linear: np.ndarray | None, n_bands: int) -> SceneStats:
    """Clip bounds per band: the fixed clip, or percentiles of valid scene samples ``(bands, n)``."""
    if radiometry.clip is not None:
        return SceneStats(lo=(radiometry.clip[0],) * n_bands, hi=(radiometry.clip[1],) * n_bands)
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
    out = np.subtract(vals, lo, dtype=np.float32)
    out /= hi - lo
    np.clip(out, np.float32(0.0), np.float32(1.0), out=out)
    if radiometry.quantize:
        out *= np.float32(255.0)
        np.floor(out, out=out)
        out /= np.float32(255.0)
    a, b = radiometry.out_range
    out *= np.float32(b - a)
    out += np.float32(a)
    out[:, ~valid] = np.float32(a)
    if radiometry.replicate_to and out.shape[0] == 1 and radiometry.replicate_to > 1:
        out = np.repeat(out, radiometry.replicate_to, axis=0)
    return out


def output_to_uint8(y: np.ndarray, out_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Generator output (tanh range) to 0..255 uint8, rounding to nearest."""
    a, b = out_range
    unit = np.subtract(y, np.float32(a), dtype=np.float32)  # in place from here: same operations, one buffer
    unit /= np.float32(b - a)
    unit *= np.float32(255.0)
    np.rint(unit, out=unit)
    np.clip(unit, 0, 255, out=unit)
    return unit.astype(np.uint8)
