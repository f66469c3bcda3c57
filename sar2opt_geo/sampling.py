"""Translate, step 2 of 4 — scene-level statistics, gathered on the executor from sample windows.

The sample tasks (:mod:`sar2opt_geo.tasks`) read a regular lattice of small windows, independent of the
chunking, so the same scene gives the same statistics whatever the block size or worker count. This module
builds those small graphs and reduces their results on the client:

- the input scale (``--input-scale auto`` detection, or a check of the one given) and NaN/inf warning;
- the ENL for ``--enl auto``;
- the per-band clip bounds of the radiometry (when it needs scene statistics);
- the SAR2Optical profile's global variance and stretch bounds.

:func:`measure_scene` turns a :class:`~sar2opt_geo.plan.PreparedTranslate` into the frozen
:class:`~sar2opt_geo.plan.TranslateJob` the ``acc``/``out`` tasks carry.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import numpy as np

from sar2opt_geo import defaults
from sar2opt_geo.filters import FilterSpec, enl_from_ci2_samples
from sar2opt_geo.plan import Conditioning, PreparedTranslate, TranslateJob, levels_range
from sar2opt_geo.radiometry import SceneStats, check_input_scale, resolve_stats
from sar2opt_geo.sar2optical import sar2optical_scene_stats
from sar2opt_geo.source import check_explicit_scale, decide_input_scale, with_nodata
from sar2opt_geo.tasks import ci2_window, preprocess_samples, sample_windows

log = logging.getLogger(__name__)


def sample_lattice(
    height: int, width: int, size: int = defaults.SAMPLE_WINDOW, n: int = defaults.SAMPLE_LATTICE
) -> list[tuple[int, int]]:
    """Top-left corners of the statistics windows: a regular lattice, independent of the chunking."""

    def axis(extent: int) -> list[int]:
        if extent <= size:
            return [0]
        k = min(n, math.ceil(extent / size))
        return sorted({int(round(v)) for v in np.linspace(0, extent - size, k)})

    return [(r, c) for r in axis(height) for c in axis(width)]


def scene_samples(
    executor,
    cond: Conditioning,
    dense: bool = False,
    lattice: int = defaults.SAMPLE_LATTICE,
    warn: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Gather scene samples on the executor: ``(raw (bands, n), linear (bands, n))``.

    ``dense`` samples every block (used when the lattice found no valid pixel in a sparse scene)."""
    if dense:
        step = 512
        corners = [
            (r, c) for r in range(0, cond.scene.height, step) for c in range(0, cond.scene.width, step)
        ]
        size = step
    else:
        corners = sample_lattice(cond.scene.height, cond.scene.width, n=lattice)
        size = defaults.SAMPLE_WINDOW
    rows: dict[int, list] = {}
    for r, c in corners:  # one task per lattice row: few tasks, so little scheduler overhead on a cluster
        rows.setdefault(r, []).append((r, c))
    dsk = {("sample", k): (sample_windows, cond, row, size) for k, row in enumerate(rows.values())}
    res = executor.run(dsk, list(dsk))
    raws = [res[k][0] for k in dsk]
    lins = [res[k][1] for k in dsk]
    n_nonfinite = sum(res[k][2] for k in dsk)
    if n_nonfinite and warn:
        log.warning(
            "%s: NaN/inf values found (%d in the samples); they are treated as nodata",
            cond.scene.path,
            n_nonfinite,
        )
    if dense:  # keep the client's share bounded: a regular subsample
        raws = [r[:, ::16] for r in raws]
        lins = [v[:, ::16] for v in lins]
    return np.concatenate(raws, axis=1), np.concatenate(lins, axis=1)


def resolve_scale(executor, cond: Conditioning, requested: str, lattice: int | None = 6) -> Conditioning:
    """``cond`` with its input scale: decided from the source, metadata, dtype and sample values (``auto``,
    see :func:`sar2opt_geo.source.decide_input_scale`; the decision and its reason are logged once), else the
    requested one checked against them. A light lattice (≤ 6 × 6 windows) is enough, and finds NaN/inf
    values. A nodata value found in the samples that the file does not declare (−32768, float32 minimum)
    becomes the scene's nodata."""
    kw = {} if lattice is None else {"lattice": lattice}
    raw, _ = scene_samples(executor, replace(cond, filter=None), **kw)
    if requested != "auto":
        check_explicit_scale(cond.scene, requested)
        check_input_scale(requested, raw, cond.scene.path)
        if requested == "dn" and cond.calibration_constant is None:
            log.warning(
                "%s: --input-scale dn without --calibration-constant takes DN² as σ⁰ (uncalibrated)",
                cond.scene.path,
            )
        return replace(cond, input_scale=requested, scale_reason="given by --input-scale")
    d = decide_input_scale(cond.scene, cond.bands, raw)
    if d.nodata is not None:
        log.warning("%s: value %g taken as nodata (not declared by the file)", cond.scene.path, d.nodata)
        cond = replace(cond, scene=with_nodata(cond.scene, d.nodata))
    log.info("input scale: %s (%s)", d.scale, d.reason)
    return replace(cond, input_scale=d.scale, scale_reason=d.reason)


def resolve_input_scale(executor, cond: Conditioning, requested: str, lattice: int | None = 6) -> str:
    """Just the scale of :func:`resolve_scale`."""
    return resolve_scale(executor, cond, requested, lattice).input_scale


def resolve_auto_enl(executor, cond: Conditioning) -> FilterSpec:
    """``--enl auto``: pool the local Ci² of homogeneous windows over a lattice of scene windows (unfiltered
    linear intensity) and take the ENL of their lowest mode (see :func:`sar2opt_geo.filters.estimate_enl`)."""
    unfiltered = replace(cond, filter=None)
    corners = sample_lattice(cond.scene.height, cond.scene.width, size=256, n=6)
    dsk = {("enl", k): (ci2_window, unfiltered, r, c, cond.filter.window) for k, (r, c) in enumerate(corners)}
    samples = np.concatenate(list(executor.run(dsk, list(dsk)).values()))
    enl = enl_from_ci2_samples(samples)
    log.info("estimated ENL: %.2f (from %d windows)", enl, samples.size)
    return replace(cond.filter, enl=enl)


def with_auto_enl(executor, cond: Conditioning) -> Conditioning:
    """``cond`` with ``--enl auto`` replaced by the scene's estimate (unchanged otherwise)."""
    if cond.filter is not None and cond.filter.enl == "auto":
        return replace(cond, filter=resolve_auto_enl(executor, cond))
    return cond


def resolve_scene_stats(executor, prep: PreparedTranslate, cond: Conditioning) -> SceneStats:
    """The radiometry's clip bounds: fixed ones, or percentiles of the (filtered) linear samples."""
    radiometry = prep.radiometry
    if not radiometry.needs_scene_stats:
        return resolve_stats(radiometry, None, len(prep.bands))
    # the first sample pass already said whether there are NaN/inf values: say it once per scene
    _, lin = scene_samples(executor, cond, warn=False)
    if lin.shape[1] == 0:
        _, lin = scene_samples(executor, cond, dense=True, warn=False)
    return resolve_stats(radiometry, lin, len(prep.bands))


def resolve_preprocess_stats(executor, job: TranslateJob) -> dict:
    """Scene-level statistics of the SAR2Optical profile (its global variance, then its stretch bounds)."""
    corners = sample_lattice(job.cond.scene.height, job.cond.scene.width)

    def gather(j: TranslateJob, filtered: bool) -> np.ndarray:
        dsk = {
            ("pre", filtered, k): (preprocess_samples, j, r, c, defaults.SAMPLE_WINDOW, filtered)
            for k, (r, c) in enumerate(corners)
        }
        res = executor.run(dsk, list(dsk))
        return np.concatenate([res[k] for k in dsk], axis=1)

    stats = {}
    if job.preprocess.filter == "lee":
        stats = sar2optical_scene_stats(None, gather(job, False), job.preprocess.stretch)
    if job.preprocess.stretch is not None:
        after = gather(replace(job, preprocess_stats=stats), True)
        stats = {**stats, **sar2optical_scene_stats(after, None, job.preprocess.stretch)}
    return stats


def measure_scene(executor, prep: PreparedTranslate) -> TranslateJob:
    """The frozen job: the prepared parts plus the scene-level statistics measured on the executor."""
    cond = Conditioning(
        scene=prep.scene,
        bands=prep.bands,
        input_scale="linear",
        filter=prep.options.filter,
        levels=levels_range(prep.radiometry),
        calibration_constant=prep.options.calibration_constant,
    )
    cond = resolve_scale(executor, cond, prep.options.input_scale)
    cond = with_auto_enl(executor, cond)
    job = TranslateJob(
        cond=cond,
        radiometry=prep.radiometry,
        stats=resolve_scene_stats(executor, prep, cond),
        model=prep.model,
        plan=prep.plan,
        batch_size=prep.options.batch_size,
        aoi_wkb=prep.aoi_wkb,
        preprocess=prep.preprocess,
    )
    if job.preprocess is not None:
        job = replace(job, preprocess_stats=resolve_preprocess_stats(executor, job))
    return job
