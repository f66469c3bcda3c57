"""Translate, step 1 of 4 — the plan: user options → one typed, frozen job description, validated up front.

Data flow of ``translate`` (one module per step)::

    plan (this module)  options → PreparedTranslate (scene, grid/blocks, model, bands, AOI, preprocessing)
      → sampling        scene-level statistics from sample windows (input scale, ENL, clip bounds)
                        → the frozen TranslateJob every task carries
      → tasks           picklable Dask task bodies: read → radiometry → filter → model → partial sums → block
      → run             executor, progress, work state, output sink (COG / Zarr)

Everything that can be refused before a pixel is read is refused here, with the option's name: options
(format, input scale, batch size, tile size / overlap via :class:`~sar2opt_geo.tiling.TileGrid`), the input
(via :func:`sar2opt_geo.io.open_scene`), the device, the checkpoint (its weights are loaded once here so a
bad file fails before any work), the bands, the AOI.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from sar2opt_geo import defaults, io
from sar2opt_geo.errors import InputError, ModelError, UsageError
from sar2opt_geo.filters import FilterSpec, filter_halo
from sar2opt_geo.radiometry import DEFAULT_LEVELS, INPUT_SCALES, Radiometry, SceneStats, to_linear
from sar2opt_geo.sar2optical import Sar2OpticalProfile
from sar2opt_geo.source import open_source
from sar2opt_geo.tiling import BlockPlan, TileGrid
from sar2opt_geo.translate import ModelRef
from sar2opt_geo.warp import parse_warp

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from sar2opt_geo.models.checkpoint import CheckpointMeta


NODATA_FILLS = defaults.NODATA_FILLS


@dataclass(frozen=True)
class TranslateOptions:
    """What the user asked for (CLI options or a job spec); validated by :func:`prepare_translate`.

    ``preprocess``: an explicit SAR2Optical profile, or ``None``; with ``None``, ``checkpoint_preprocess``
    says whether the profile the checkpoint declares (if any) applies (``--preprocess none`` turns it off).
    """

    model: str
    tile_size: int = defaults.TILE_SIZE
    overlap: int = defaults.OVERLAP
    batch_size: int | None = None  # None: per engine (defaults.ENGINE_BATCH_SIZE; CUDA: from free memory)
    device: str = "auto"
    backend: str | None = None  # None or "auto": the fastest correct engine (see translate.select_engine)
    precision: str = defaults.PRECISION
    chunk_size: int = defaults.CHUNK_SIZE
    bands: str | None = None
    input_scale: str = "auto"
    filter: FilterSpec | None = None
    preprocess: Sar2OpticalProfile | None = None
    checkpoint_preprocess: bool = True
    aoi: str | None = None
    lora: str | None = None
    fmt: str = "cog"
    allow_ungeoreferenced: bool = False
    # Sentinel-1 products and map projection (see sar2opt_geo.source / sar2opt_geo.warp)
    calibration: str = defaults.CALIBRATION
    denoise: bool = True
    warp: str = defaults.WARP
    resolution: float | None = None
    calibration_constant: float | None = None  # --input-scale dn: σ⁰ = DN²/A²
    # what the model sees at nodata pixels: filled from nearby valid pixels (reflect), or the low end of its
    # range (constant, before issue #12)
    nodata_fill: str = "reflect"
    resampling: str = defaults.RESAMPLING


@dataclass(frozen=True)
class Conditioning:
    """Everything that turns raw scene values into linear intensity (shared by translate and filter).

    ``scene`` is an :class:`io.SceneInfo` or a :class:`~sar2opt_geo.source.SourceScene` (product and/or
    warped); ``levels`` is the range whose 8-bit levels ``--input-scale levels`` means (the model's),
    ``calibration_constant`` the A of ``--input-scale dn``."""

    scene: io.SceneInfo
    bands: tuple[int, ...]
    input_scale: str
    filter: FilterSpec | None = None
    levels: tuple[str, float, float] = DEFAULT_LEVELS
    calibration_constant: float | None = None
    scale_reason: str = ""

    @property
    def halo(self) -> int:
        return 0 if self.filter is None else filter_halo(self.filter)

    def to_linear(self, x):
        """Stored values → linear intensity in this conditioning's input scale."""
        return to_linear(x, self.input_scale, levels=self.levels, constant=self.calibration_constant)


@dataclass(frozen=True)
class PreparedTranslate:
    """The validated parts of a translate job known before any pixel is read."""

    options: TranslateOptions  # with the backend resolved
    scene: io.SceneInfo
    plan: BlockPlan
    radiometry: Radiometry
    bands: tuple[int, ...]
    model: ModelRef
    meta: CheckpointMeta
    aoi_wkb: bytes | None
    preprocess: Sar2OpticalProfile | None  # requested or declared by the checkpoint

    @property
    def grid(self) -> TileGrid:
        return self.plan.grid


@dataclass(frozen=True)
class TranslateJob:
    """The complete, frozen description of a translate run that every task carries (small: no pixels)."""

    cond: Conditioning
    radiometry: Radiometry
    stats: SceneStats
    model: ModelRef
    plan: BlockPlan
    batch_size: int = defaults.BATCH_SIZE
    aoi_wkb: bytes | None = None
    preprocess: Sar2OpticalProfile | None = None
    # the profile's scene-level statistics (global variance, stretch bounds), see sar2optical_scene_stats
    preprocess_stats: dict[str, Any] | None = None
    nodata_fill: str = "reflect"  # see TranslateOptions.nodata_fill
    # overview levels of the COG each ``out`` task computes for its block (0: GDAL builds them), see pyramid
    overview_levels: int = 0

    @property
    def grid(self) -> TileGrid:
        return self.plan.grid


# ----------------------------------------------------------------------------------------- validation


def validate_options(opts: TranslateOptions) -> TranslateOptions:
    """Option values that need no file; returns the options with the backend resolved."""
    opts = resolve_backend(opts)
    if opts.fmt not in defaults.OUTPUT_FORMATS:
        raise UsageError(f"--format must be cog or zarr (got {opts.fmt!r})")
    if opts.input_scale != "auto" and opts.input_scale not in INPUT_SCALES:
        raise UsageError(f"--input-scale must be auto or one of {', '.join(INPUT_SCALES)}")
    if opts.nodata_fill not in NODATA_FILLS:
        raise UsageError(f"--nodata-fill must be one of {', '.join(NODATA_FILLS)} (got {opts.nodata_fill!r})")
    if opts.batch_size is not None and opts.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1 (got {opts.batch_size})")
    if opts.calibration_constant is not None:
        if opts.input_scale != "dn":
            raise UsageError("--calibration-constant only applies with --input-scale dn")
        if not opts.calibration_constant > 0:
            raise UsageError(f"--calibration-constant must be > 0 (got {opts.calibration_constant})")
    parse_warp(opts.warp)
    return opts


#: Image formats that never carry georeferencing (8-bit SAR chips): processed in pixel space without
#: ``--allow-ungeoreferenced``.
CHIP_SUFFIXES = (".png", ".jpg", ".jpeg")


def open_input(
    path: str,
    *,
    calibration: str = defaults.CALIBRATION,
    denoise: bool = True,
    warp: str = defaults.WARP,
    resolution: float | None = None,
    allow_ungeoreferenced: bool = False,
    resampling: str = defaults.RESAMPLING,
    copy_dir: str | os.PathLike | None = None,
) -> io.SceneInfo:
    """The scene source for ``path``: a raster, or a Sentinel-1 product, warped to a map grid when asked
    (see :func:`sar2opt_geo.source.open_source`, also for ``copy_dir``).
    PNG/JPEG chips are read in pixel space."""
    chip = str(path).lower().endswith(CHIP_SUFFIXES)
    return open_source(
        path,
        calibration=calibration,
        denoise=denoise,
        warp=warp,
        resolution=resolution,
        allow_ungeoreferenced=allow_ungeoreferenced or chip,
        resampling=resampling,
        copy_dir=copy_dir,
    )


def levels_range(radiometry: Radiometry) -> tuple[str, float, float]:
    """What the 8-bit levels of an input mean for a model: its fixed clip range (else the default one)."""
    if radiometry.clip is not None:
        lo, hi = radiometry.band_clips[0]
        return (radiometry.scale, lo, hi)
    return DEFAULT_LEVELS


def is_onnx_model(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".onnx")


def resolve_backend(opts: TranslateOptions) -> TranslateOptions:
    """Fill in the backend of an ``.onnx`` model (onnxruntime); ``auto`` for anything else is resolved with
    the device by :func:`check_model_loads`."""
    onnx_model = is_onnx_model(opts.model)
    backend = "onnx" if onnx_model and opts.backend in (None, "auto") else (opts.backend or "auto")
    if onnx_model and backend != "onnx":
        raise UsageError(
            f"{os.path.basename(opts.model)} is an ONNX model: it runs with --backend onnx "
            "(give the .safetensors checkpoint to run it with torch)"
        )
    return replace(opts, backend=backend)


def read_model_metadata(path: str | os.PathLike) -> CheckpointMeta:
    """The :class:`~sar2opt_geo.models.checkpoint.CheckpointMeta` of a native checkpoint or of an ``.onnx``
    file exported by ``model export-onnx`` (which embeds it)."""
    if is_onnx_model(path):
        from sar2opt_geo.models.onnx_export import read_onnx_checkpoint_meta

        return read_onnx_checkpoint_meta(path)
    from sar2opt_geo.models.checkpoint import read_metadata

    return read_metadata(path)


def check_model_loads(opts: TranslateOptions, device: str, remote: bool, out_range=(-1.0, 1.0)):
    """Resolve the engine (``--backend auto``), precision and batch size for ``device`` and load the weights
    (and adapter) once, so a bad checkpoint fails before any work; returns the options with the engine and
    batch size filled in. With the threaded scheduler this also fills the per-process cache the tasks use.
    For a remote cluster the client checks on CPU: the GPUs are the workers'."""
    from sar2opt_geo.translate import select_engine

    choice = select_engine(
        opts.model,
        device,
        backend=opts.backend,
        precision=opts.precision,
        tile_size=opts.tile_size,
        lora=opts.lora,
        batch_size=opts.batch_size,
        out_range=out_range,
        remote=remote,
    )
    return replace(opts, backend=choice.backend, batch_size=choice.batch_size)


def select_bands(
    scene: io.SceneInfo, spec: str | None, n_needed: int, model_bands: list[str]
) -> tuple[int, ...]:
    """Scene band indexes (1-based) for ``--bands`` (names such as VV,VH or indexes 1,2), else the model's
    band names matched against the scene's band descriptions, else the first bands."""
    names = [n.upper() for n in scene.band_names()]
    if spec:
        out = [_band_index(scene, names, tok) for tok in (t.strip() for t in spec.split(",")) if tok]
    elif model_bands and all(b.upper() in names for b in model_bands):
        out = [names.index(b.upper()) + 1 for b in model_bands]
    else:
        out = list(range(1, min(n_needed, scene.count) + 1))
    if len(out) != n_needed:
        raise InputError(
            f"{scene.path}: the model takes {n_needed} band(s) "
            f"({', '.join(model_bands) or 'unnamed'}) but {len(out)} were selected from {scene.count}"
        )
    return tuple(out)


def _band_index(scene: io.SceneInfo, names: list[str], tok: str) -> int:
    if tok.isdigit():
        idx = int(tok)
        if not 1 <= idx <= scene.count:
            raise UsageError(f"--bands: band {idx} does not exist (the input has {scene.count})")
        return idx
    if tok.upper() in names:
        return names.index(tok.upper()) + 1
    raise UsageError(f"--bands: no band named {tok!r} (the input has {', '.join(scene.band_names())})")


def model_channels(radiometry: Radiometry, meta: CheckpointMeta, what: str = "the model") -> int:
    """How many scene bands the model reads — one when its radiometry replicates a band to its input
    channels, its input channels less the channels the radiometry derives (the VV/VH ratio of a dual-pol
    composite), else one per input channel — after checking that bands × radiometry give exactly the model's
    input channels (ModelError saying what disagrees otherwise)."""
    in_ch = int(meta.arch_args.get("in_channels", 3))
    rep = radiometry.replicate_to
    if rep and rep != in_ch:
        raise ModelError(
            f"{what}: its radiometry replicates one band to {rep} channels but the model takes {in_ch} input "
            f"channel(s); convert it again with `sar2opt-geo model convert` (which derives the channel "
            "handling from the weights) or fix replicate_to in its radiometry"
        )
    n = 1 if rep else in_ch - radiometry.extra_channels
    declared = list(meta.input_bands or [])
    if radiometry.ratio_clip is not None and n != 2:
        raise ModelError(
            f"{what}: its radiometry adds the VV/VH ratio of two bands, but its {in_ch} input channel(s) "
            f"leave {n} band(s)"
        )
    if declared and len(declared) != n:
        how = f"radiometry (replicate_to {rep})" if not radiometry.ratio_clip else "VV/VH ratio channel"
        raise ModelError(
            f"{what}: it declares {len(declared)} input band(s) ({', '.join(declared)}) but its "
            f"{in_ch} input channel(s) and {how} take {n}"
        )
    clips = radiometry.band_clips
    if clips is not None and len(clips) > 1 and len(clips) != n:
        raise ModelError(f"{what}: its radiometry clips {len(clips)} band(s) but it reads {n}")
    return n


def model_bands(scene: io.SceneInfo, spec: str | None, radiometry: Radiometry, meta: CheckpointMeta):
    """The scene bands the model reads (see :func:`model_channels`). Without ``--bands``, the model's band
    names are matched against the scene's band descriptions (exactly, else as a word of them such as the VV
    of ``Sigma0_VV_db``); an input that is probably not SAR is refused unless its bands are named."""
    n_needed = model_channels(radiometry, meta, os.path.basename(str(meta.name or "the model")))
    declared = list(meta.input_bands or [])
    if not spec:
        spec = _bands_by_word(scene, declared)
    named = bool(declared) and all(b.upper() in [n.upper() for n in scene.band_names()] for b in declared)
    if not spec and not named:  # bands named like the model's inputs (e.g. a product's VV, VH) are chosen
        check_probably_sar(scene, n_needed, declared)
    return select_bands(scene, spec, n_needed, declared)


def _bands_by_word(scene: io.SceneInfo, declared: list[str]) -> str | None:
    """``--bands`` equivalent when every declared band is exactly one scene band's name or a word of it."""
    names = [n.upper() for n in scene.band_names()]
    if not declared or all(b.upper() in names for b in declared):
        return None
    picked = []
    for b in declared:
        hits = scene.bands_named(b)
        if len(hits) != 1:
            return None
        picked.append(str(hits[0] + 1))
    return ",".join(picked)


def check_probably_sar(scene: io.SceneInfo, n_needed: int, declared: list[str]) -> None:
    """Refuse inputs that are probably not SAR when the user did not name the bands: palette images, 8-bit
    3/4-band images whose bands differ (an RGB picture; SAR chips saved as grey RGB have equal bands), and
    more bands than the model takes with no band name matching its inputs."""
    names = scene.band_names()
    found = f"{scene.count} band(s) of {scene.dtype} ({', '.join(names)})"
    example = ",".join(str(i + 1) for i in range(n_needed))
    how = f"choose the SAR band(s) with --bands (e.g. --bands {example})"
    interp = tuple(getattr(scene, "colorinterp", ()) or ())
    if interp and interp[0] == "palette":
        raise InputError(f"{scene.path}: a palette (colour-mapped) image, probably not SAR: {found}; {how}")
    if scene.dtype == "uint8" and scene.count in (3, 4) and n_needed < scene.count:
        if not _bands_differ(scene):
            return  # a grey image saved as RGB (SAR chips often are): its first band is the SAR
        raise InputError(
            f"{scene.path}: an 8-bit {scene.count}-band image with different bands (an RGB picture?), "
            f"probably not SAR: {found}; {how}"
        )
    if scene.count > n_needed:
        wanted = ", ".join(declared) or f"{n_needed} unnamed band(s)"
        raise InputError(
            f"{scene.path}: {found} but the model takes {wanted} and no band name matches; {how}"
        )


def _bands_differ(scene: io.SceneInfo, size: int = 256) -> bool:
    """Whether the first three bands differ in a central window (a colour image rather than grey)."""
    from sar2opt_geo.source import read_window

    r0, c0 = max(0, scene.height // 2 - size // 2), max(0, scene.width // 2 - size // 2)
    r1, c1 = min(scene.height, r0 + size), min(scene.width, c0 + size)
    data, _ = read_window(scene, r0, r1, c0, c1, (1, 2, 3))
    return not (np.array_equal(data[0], data[1]) and np.array_equal(data[0], data[2]))


def aoi_pixels_wkb(path: str | None, scene: io.SceneInfo) -> bytes | None:
    """The AOI file as a polygon in the scene's pixel space (WKB, small and picklable), or ``None``."""
    if not path:
        return None
    import shapely

    from sar2opt_geo.aoi import aoi_to_pixels, load_aoi

    geom, crs = load_aoi(path)
    return shapely.to_wkb(aoi_to_pixels(geom, crs, scene))


def resolve_preprocess(opts: TranslateOptions, meta: CheckpointMeta) -> Sar2OpticalProfile | None:
    """The SAR2Optical profile to apply: the requested one, else (unless turned off) the checkpoint's."""
    if opts.preprocess is not None:
        return opts.preprocess
    declared = meta.preprocess or {}
    if opts.checkpoint_preprocess and declared.get("profile") == "sar2optical":
        return Sar2OpticalProfile.from_dict({k: v for k, v in declared.items() if k != "profile"})
    return None


def choose_bundled_model(opts: TranslateOptions, scene: io.SceneInfo) -> TranslateOptions:
    """The bundled model is a pair: single-pol (VV) and dual-pol (the VV, VH, VV/VH composite). A scene with
    bands named VV and VH (a Sentinel-1 IW product, a dual-pol σ⁰ GeoTIFF) gets the dual-pol one unless
    ``--bands`` chose bands (``--bands VV`` keeps the single-pol model) or SAR2Optical's one-band 8-bit chain
    was asked for (``--preprocess sar2optical``)."""
    if (
        opts.bands
        or opts.preprocess is not None
        or os.path.abspath(str(opts.model)) != str(defaults.BUNDLED_MODEL)
        or not defaults.BUNDLED_DUAL_POL_MODEL.exists()
    ):
        return opts
    dual = ["VV", "VH"]
    names = [n.upper() for n in scene.band_names()]
    if not (all(b in names for b in dual) or _bands_by_word(scene, dual)):
        return opts
    log.info("the scene has VV and VH: using the bundled dual-pol model (--bands VV for the single-pol one)")
    return replace(opts, model=str(defaults.BUNDLED_DUAL_POL_MODEL))


def check_preprocess(profile: Sar2OpticalProfile | None, radiometry: Radiometry) -> None:
    """SAR2Optical's 8-bit chain works on one grey band: refuse it for a dual-pol composite model."""
    if profile is not None and radiometry.ratio_clip is not None:
        raise UsageError(
            "--preprocess sar2optical takes one grey band; this model reads the VV, VH, VV/VH composite "
            "(use --preprocess none)"
        )


def prepare_translate(
    input_path: str, opts: TranslateOptions, executor=None, copy_dir: str | os.PathLike | None = None
) -> PreparedTranslate:
    """Validate everything that can be validated before work starts; return the parts of the job.
    ``copy_dir``: where inputs unreadable window by window are copied once (the caller removes it; see
    :func:`sar2opt_geo.source.open_source`)."""
    from sar2opt_geo.translate import make_model_ref, resolve_device

    opts = validate_options(opts)
    scene = open_input(
        input_path,
        calibration=opts.calibration,
        denoise=opts.denoise,
        warp=opts.warp,
        resolution=opts.resolution,
        allow_ungeoreferenced=opts.allow_ungeoreferenced,
        resampling=opts.resampling,
        copy_dir=copy_dir,
    )
    opts = choose_bundled_model(opts, scene)
    grid = TileGrid(scene.height, scene.width, opts.tile_size, opts.overlap)
    device = resolve_device(opts.device, executor)
    meta = read_model_metadata(opts.model)
    radiometry = Radiometry.from_dict(meta.radiometry)
    remote = bool(getattr(executor, "remote", False))
    opts = check_model_loads(opts, device, remote, out_range=tuple(radiometry.out_range))
    bands = model_bands(scene, opts.bands, radiometry, meta)
    ref = make_model_ref(opts.model, device, opts.backend, opts.lora, opts.precision, opts.tile_size)
    plan = BlockPlan.create(grid, opts.chunk_size, scene.block_shape if scene.tiled else None)
    preprocess = resolve_preprocess(opts, meta)
    check_preprocess(preprocess, radiometry)
    return PreparedTranslate(
        options=opts,
        scene=scene,
        plan=plan,
        radiometry=radiometry,
        bands=bands,
        model=ref,
        meta=meta,
        aoi_wkb=aoi_pixels_wkb(opts.aoi, scene),
        preprocess=preprocess,
    )
