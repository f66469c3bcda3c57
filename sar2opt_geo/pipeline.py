"""The translate pipeline as a Dask graph: read → radiometry → filter → tiles → generator → blend → write.

Graph per scene (every function here is module-level and picklable; tasks carry only small plans):

1. ``sample`` tasks read a fixed lattice of small windows (independent of the chunking) for the input-scale
   check and the scene-level statistics; the client reduces them to per-band clip bounds.
2. ``acc`` tasks, one per block that owns tiles: read the block's tile extent (plus the filter halo,
   reflect-padded at the scene edges), convert radiometry with the scene statistics, run the generator on
   every owned tile that has valid pixels (and touches the AOI), and return the weighted partial sums
   Σw·y and Σw over that extent. Each tile is evaluated exactly once.
3. ``out`` tasks, one per block: add the partial sums of the (at most four) ``acc`` blocks that reach it,
   normalise, apply the nodata/AOI mask, and write the uint8 block into the Zarr block store.
4. The client streams the block store into a COG (or Zarr) under a temporary name and renames it into place.

Only small results (counts) come back to the client; peak memory is a few blocks per worker thread whatever
the scene size.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace

import numpy as np

from sar2opt_geo import __version__, io
from sar2opt_geo.blend import normalise, tile_window
from sar2opt_geo.errors import InputError, Sar2OptError, UsageError
from sar2opt_geo.radiometry import (
    INPUT_SCALES,
    Radiometry,
    SceneStats,
    check_input_scale,
    detect_input_scale,
    normalize,
    output_to_uint8,
    resolve_stats,
    to_linear,
)
from sar2opt_geo.tiling import Block, BlockPlan, TileGrid
from sar2opt_geo.translate import ModelRef, predict_async

log = logging.getLogger(__name__)

SAMPLE_WINDOW = 128
SAMPLE_LATTICE = 10  # up to 10 × 10 windows of 128² px: ≤ 1.6 Mpx read for statistics


# ----------------------------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Conditioning:
    """Everything that turns raw scene values into model input (shared by translate and filter)."""

    scene: io.SceneInfo
    bands: tuple[int, ...]
    input_scale: str
    filter: object | None = None  # sar2opt_geo.filters.FilterSpec

    @property
    def halo(self) -> int:
        if self.filter is None:
            return 0
        from sar2opt_geo.filters import filter_halo

        return filter_halo(self.filter)


@dataclass(frozen=True)
class TranslateJob:
    cond: Conditioning
    radiometry: Radiometry
    stats: SceneStats
    model: ModelRef
    plan: BlockPlan
    batch_size: int = 8
    aoi_wkb: bytes | None = None
    tags: dict = field(default_factory=dict)
    preprocess: object | None = None  # sar2opt_geo.sar2optical.Sar2OpticalProfile
    preprocess_stats: dict | None = None  # its scene-level statistics (global variance, stretch bounds)

    @property
    def grid(self) -> TileGrid:
        return self.plan.grid


@dataclass
class Partial:
    """Weighted partial sums of one block's tiles over its extent clipped to the scene."""

    key: str
    row0: int
    col0: int
    sum_wy: np.ndarray
    sum_w: np.ndarray
    valid: np.ndarray
    n_eval: int
    n_tiles: int


@dataclass(frozen=True)
class BlockDone:
    key: str
    n_tiles: int
    n_eval: int


# ------------------------------------------------------------------------------------------ task bodies


def read_linear(
    cond: Conditioning, row0: int, row1: int, col0: int, col1: int
) -> tuple[np.ndarray, np.ndarray]:
    """Linear intensity and validity for a window, speckle-filtered when asked (exact: reads the halo)."""
    h = cond.halo
    data, valid = io.read_window(cond.scene, row0 - h, row1 + h, col0 - h, col1 + h, cond.bands)
    linear = to_linear(data, cond.input_scale)
    linear = np.where(valid[None] & (linear > 0), linear, np.float32(0.0))
    if cond.filter is not None:
        from sar2opt_geo.filters import apply_filter

        linear = apply_filter(linear, valid, cond.filter)
    if h:
        linear = linear[:, h:-h, h:-h]
        valid = valid[h:-h, h:-h]
    return np.ascontiguousarray(linear), np.ascontiguousarray(valid)


def sample_window(cond: Conditioning, row0: int, col0: int, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(raw values of valid pixels (bands, n), linear values after filtering (bands, n), number of NaN/inf
    pixels)`` of a window of the scene."""
    r1, c1 = min(row0 + size, cond.scene.height), min(col0 + size, cond.scene.width)
    raw, valid = io.read_window(cond.scene, row0, r1, col0, c1, cond.bands)
    n_nonfinite = int((~np.isfinite(raw)).any(axis=0).sum())
    if cond.filter is not None:
        linear, _ = read_linear(cond, row0, r1, col0, c1)
    else:
        linear = to_linear(raw, cond.input_scale)
    return raw[:, valid], np.maximum(linear[:, valid], 0), n_nonfinite


def to_u8_levels(x: np.ndarray, out_range: tuple[float, float]) -> np.ndarray:
    a, b = out_range
    return np.floor(np.clip((x - np.float32(a)) / np.float32(b - a), 0, 1) * np.float32(255.0)).astype(
        np.uint8
    )


def model_input(job: TranslateJob, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
    """Model input ``(channels, h, w)`` and validity for a window: radiometry with scene statistics, then,
    with ``--preprocess sar2optical``, that project's 8-bit chain with scene-level statistics."""
    rad = job.radiometry
    if job.preprocess is None:
        linear, valid = read_linear(job.cond, r0, r1, c0, c1)
        return normalize(linear, valid, rad, job.stats), valid
    from sar2opt_geo.sar2optical import sar2optical_halo, sar2optical_preprocess

    ph = sar2optical_halo(job.preprocess)
    linear, valid = read_linear(job.cond, r0 - ph, r1 + ph, c0 - ph, c1 + ph)
    x = normalize(linear, valid, replace(rad, replicate_to=None), job.stats)
    st = job.preprocess_stats or {}
    u8 = sar2optical_preprocess(
        to_u8_levels(x, rad.out_range),
        job.preprocess,
        global_variance=st.get("global_variance"),
        stretch_bounds=st.get("stretch_bounds"),
    )
    a, b = rad.out_range
    x = (np.float32(a) + u8.astype(np.float32) * np.float32((b - a) / 255.0)).astype(np.float32)
    x[:, ~valid] = np.float32(a)
    if ph:
        x, valid = x[:, ph:-ph, ph:-ph], valid[ph:-ph, ph:-ph]
    if rad.replicate_to and x.shape[0] == 1 and rad.replicate_to > 1:
        x = np.repeat(x, rad.replicate_to, axis=0)
    return np.ascontiguousarray(x), np.ascontiguousarray(valid)


def preprocess_samples(job: TranslateJob, row0: int, col0: int, size: int, filtered: bool):
    """8-bit samples of the valid pixels of a window for the SAR2Optical scene statistics: before its
    filter (``filtered=False``) or after it (with the scene's global variance already in ``job``)."""
    from sar2opt_geo.sar2optical import sar2optical_filter, sar2optical_halo

    ph = sar2optical_halo(job.preprocess) if filtered else 0
    r1, c1 = min(row0 + size, job.cond.scene.height), min(col0 + size, job.cond.scene.width)
    linear, valid = read_linear(job.cond, row0 - ph, r1 + ph, col0 - ph, c1 + ph)
    u8 = to_u8_levels(
        normalize(linear, valid, replace(job.radiometry, replicate_to=None), job.stats),
        job.radiometry.out_range,
    )
    if filtered:
        gv = (job.preprocess_stats or {}).get("global_variance")
        u8 = sar2optical_filter(u8, job.preprocess.filter, job.preprocess.window, gv)
        if ph:
            u8, valid = u8[:, ph:-ph, ph:-ph], valid[ph:-ph, ph:-ph]
    return u8[:, valid]


def resolve_preprocess_stats(executor, job: TranslateJob) -> dict:
    """Scene-level statistics of the SAR2Optical profile (its global variance, then its stretch bounds)."""
    from sar2opt_geo.sar2optical import sar2optical_scene_stats

    corners = sample_lattice(job.cond.scene.height, job.cond.scene.width)

    def gather(j: TranslateJob, filtered: bool) -> np.ndarray:
        dsk = {
            ("pre", filtered, k): (preprocess_samples, j, r, c, SAMPLE_WINDOW, filtered)
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


def accumulate_block(job: TranslateJob, bi: int, bj: int) -> Partial:
    """Run the generator on the tiles block ``(bi, bj)`` owns; return their weighted partial sums."""
    import shapely

    block: Block = job.plan.block(bi, bj)
    grid = job.grid
    r0, r1, c0, c1 = block.acc_bounds
    x, valid = model_input(job, r0, r1, c0, c1)
    H, W = grid.height, grid.width
    in_scene = np.zeros(valid.shape, dtype=bool)
    in_scene[: max(0, H - r0), : max(0, W - c0)] = True
    valid_in = valid & in_scene
    aoi = shapely.from_wkb(job.aoi_wkb) if job.aoi_wkb else None
    if aoi is not None:
        shapely.prepare(aoi)

    todo = []
    T, S = grid.tile, grid.stride
    for i in range(block.ti0, block.ti1):
        for j in range(block.tj0, block.tj1):
            lr, lc = i * S - r0, j * S - c0
            if not valid_in[lr : lr + T, lc : lc + T].any():
                continue
            if aoi is not None and not aoi.intersects(shapely.box(j * S, i * S, j * S + T, i * S + T)):
                continue
            todo.append((i, j, lr, lc))

    hh, ww = min(r1, H) - r0, min(c1, W) - c0
    sum_wy = np.zeros((3, r1 - r0, c1 - c0), dtype=np.float32)
    sum_w = np.zeros((r1 - r0, c1 - c0), dtype=np.float32)
    bs = max(1, job.batch_size)

    def blend(batch, yb):
        for (i, j, lr, lc), y in zip(batch, yb, strict=True):
            w = tile_window(grid, i, j)
            sum_wy[:, lr : lr + T, lc : lc + T] += y * w
            sum_w[lr : lr + T, lc : lc + T] += w

    pending = None  # software pipeline: the next batch runs while the previous one is blended
    for k in range(0, len(todo), bs):
        batch = todo[k : k + bs]
        xb = np.stack([x[:, lr : lr + T, lc : lc + T] for _, _, lr, lc in batch])
        fut = predict_async(job.model, xb, bs)
        if pending is not None:
            blend(pending[0], pending[1].result())
        pending = (batch, fut)
    if pending is not None:
        blend(pending[0], pending[1].result())
    return Partial(
        key=block.key,
        row0=r0,
        col0=c0,
        sum_wy=np.ascontiguousarray(sum_wy[:, :hh, :ww]),
        sum_w=np.ascontiguousarray(sum_w[:hh, :ww]),
        valid=np.ascontiguousarray(valid[:hh, :ww]),
        n_eval=len(todo),
        n_tiles=block.n_tiles,
    )


def _spill_strips(p: Partial, block: Block) -> dict[str, np.ndarray]:
    """The parts of a partial that lie outside its own block (what neighbours need)."""
    h, w = block.shape
    return {
        "right_wy": p.sum_wy[:, :, w:],
        "right_w": p.sum_w[:, w:],
        "right_valid": p.valid[:, w:],
        "bottom_wy": p.sum_wy[:, h:, :],
        "bottom_w": p.sum_w[h:, :],
        "bottom_valid": p.valid[h:, :],
        "shape": np.array(p.sum_w.shape),
        "n_eval": np.array(p.n_eval),
    }


def _partial_from_spill(block: Block, z: dict[str, np.ndarray]) -> Partial:
    hh, ww = (int(v) for v in z["shape"])
    h, w = block.shape
    sum_wy = np.zeros((3, hh, ww), np.float32)
    sum_w = np.zeros((hh, ww), np.float32)
    valid = np.zeros((hh, ww), bool)
    sum_wy[:, :, w:], sum_w[:, w:], valid[:, w:] = z["right_wy"], z["right_w"], z["right_valid"]
    sum_wy[:, h:, :], sum_w[h:, :], valid[h:, :] = z["bottom_wy"], z["bottom_w"], z["bottom_valid"]
    return Partial(block.key, block.row0, block.col0, sum_wy, sum_w, valid, n_eval=0, n_tiles=block.n_tiles)


def resumable_partial(job: TranslateJob, workdir: str, bi: int, bj: int) -> Partial:
    """The partial sums of block ``(bi, bj)``: from the saved spill when the block is already finished
    (its tiles are not evaluated again), else computed — and its spill saved for later resumes."""
    from sar2opt_geo.workstate import WorkState

    ws = WorkState.at(workdir)
    block = job.plan.block(bi, bj)
    if ws.is_done(block.key):
        z = ws.load_spill(block.key)
        if z is not None:
            return _partial_from_spill(block, z)
    p = accumulate_block(job, bi, bj)
    ws.save_spill(block.key, _spill_strips(p, block))
    return p


def finish_block(job: TranslateJob, workdir: str, bi: int, bj: int, *partials: Partial) -> BlockDone:
    """Overlap-add the partial sums reaching block ``(bi, bj)``, normalise, mask and store it."""
    from sar2opt_geo.workstate import WorkState

    block = job.plan.block(bi, bj)
    ws = WorkState.at(workdir)
    if ws.is_done(block.key):
        # A re-execution (the first result was lost with its worker): the block is already on disk, and its
        # own partial may now be spill-only (see resumable_partial), so it must not be written again.
        import json

        rec = json.loads((ws.root / "done" / f"{block.key}.json").read_text())
        return BlockDone(key=block.key, n_tiles=int(rec["n_tiles"]), n_eval=int(rec["n_eval"]))
    h, w = block.shape
    sum_wy = np.zeros((3, h, w), dtype=np.float32)
    sum_w = np.zeros((h, w), dtype=np.float32)
    valid = np.zeros((h, w), dtype=bool)
    own = None
    for p in partials:
        if p.key == block.key:
            own = p
        pr0, pc0 = p.row0, p.col0
        ph, pw = p.sum_w.shape
        a0, a1 = max(block.row0, pr0), min(block.row1, pr0 + ph)
        b0, b1 = max(block.col0, pc0), min(block.col1, pc0 + pw)
        if a0 >= a1 or b0 >= b1:
            continue
        src = (slice(a0 - pr0, a1 - pr0), slice(b0 - pc0, b1 - pc0))
        dst = (slice(a0 - block.row0, a1 - block.row0), slice(b0 - block.col0, b1 - block.col0))
        sum_wy[(slice(None),) + dst] += p.sum_wy[(slice(None),) + src]
        sum_w[dst] += p.sum_w[src]
        valid[dst] = p.valid[src]
    y, covered = normalise(sum_wy, sum_w)
    rgb = output_to_uint8(y, job.radiometry.out_range)
    mask = valid & covered
    if job.aoi_wkb:
        import shapely

        from sar2opt_geo.aoi import rasterize_pixels

        mask &= rasterize_pixels(
            shapely.from_wkb(job.aoi_wkb), block.row0, block.row1, block.col0, block.col1
        )
    rgb[:, ~mask] = 0
    io.write_store_block(ws.store, block.row0, block.col0, rgb, mask)
    done = BlockDone(key=block.key, n_tiles=own.n_tiles if own else 0, n_eval=own.n_eval if own else 0)
    ws.mark_done(block.key, {"n_tiles": done.n_tiles, "n_eval": done.n_eval})
    return done


# ------------------------------------------------------------------------------------- graph assembly


def sample_lattice(height: int, width: int, size: int = SAMPLE_WINDOW, n: int = SAMPLE_LATTICE):
    """Top-left corners of the statistics windows: a regular lattice, independent of the chunking."""

    def axis(extent: int) -> list[int]:
        if extent <= size:
            return [0]
        k = min(n, math.ceil(extent / size))
        return sorted({int(round(v)) for v in np.linspace(0, extent - size, k)})

    return [(r, c) for r in axis(height) for c in axis(width)]


def sample_windows(cond: Conditioning, corners: list, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`sample_window` over several windows, concatenated."""
    parts = [sample_window(cond, r, c, size) for r, c in corners]
    return (
        np.concatenate([p[0] for p in parts], axis=1),
        np.concatenate([p[1] for p in parts], axis=1),
        sum(p[2] for p in parts),
    )


def scene_samples(
    executor, cond: Conditioning, dense: bool = False, lattice: int = SAMPLE_LATTICE, warn: bool = True
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
        corners, size = sample_lattice(cond.scene.height, cond.scene.width, n=lattice), SAMPLE_WINDOW
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


def translate_graph(job: TranslateJob, workdir: str, done: set[str] = frozenset()) -> tuple[dict, list, dict]:
    """``(graph, final keys, resources per key)``: an ``out`` task per unfinished block and the ``acc``
    tasks they need. On a GPU device the ``acc`` tasks (the only ones running the generator) require the
    worker resource ``GPU=1``."""
    token = job.model.digest[:8]
    dsk, finals, resources = {}, [], {}
    gpu = job.model.device.startswith("cuda")
    for b in job.plan.blocks:
        if b.key in done:
            continue
        deps = []
        for c in job.plan.contributors(b):
            k = (f"acc-{token}", c.bi, c.bj)
            if k not in dsk:
                dsk[k] = (resumable_partial, job, workdir, c.bi, c.bj)
                if gpu:
                    resources[k] = {"GPU": 1}
            deps.append(k)
        key = (f"out-{token}", b.bi, b.bj)
        dsk[key] = (finish_block, job, workdir, b.bi, b.bj, *deps)
        finals.append(key)
    return dsk, finals, resources


# ------------------------------------------------------------------------------------------- front end


@dataclass
class TranslateOptions:
    model: str
    tile_size: int = 256
    overlap: int = 64
    batch_size: int = 8
    device: str = "auto"
    backend: str | None = None  # None: onnx for an .onnx model, else torch
    chunk_size: int = 1024
    bands: str | None = None
    input_scale: str = "auto"
    filter: object | None = None  # FilterSpec
    preprocess: object | None = (
        None  # Sar2OpticalProfile; "none" disables the checkpoint's; None: as declared
    )
    aoi: str | None = None
    lora: str | None = None
    fmt: str = "cog"
    allow_ungeoreferenced: bool = False


@dataclass
class TranslateSummary:
    output: str
    tiles: int
    evaluations: int  # model evaluations in this run (a resumed run counts only what it recomputed)
    blocks: int
    seconds: float
    stats: SceneStats
    input_scale: str
    chunk: int


def select_bands(
    scene: io.SceneInfo, spec: str | None, n_needed: int, model_bands: list[str]
) -> tuple[int, ...]:
    """Scene band indexes (1-based) for ``--bands`` (names such as VV,VH or indexes 1,2), else the model's
    band names matched against the scene's band descriptions, else the first bands."""
    names = [n.upper() for n in scene.band_names()]
    if spec:
        out = []
        for tok in [t.strip() for t in spec.split(",") if t.strip()]:
            if tok.isdigit():
                idx = int(tok)
                if not 1 <= idx <= scene.count:
                    raise UsageError(f"--bands: band {idx} does not exist (the input has {scene.count})")
                out.append(idx)
            elif tok.upper() in names:
                out.append(names.index(tok.upper()) + 1)
            else:
                raise UsageError(
                    f"--bands: no band named {tok!r} (the input has {', '.join(scene.band_names())})"
                )
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


def is_onnx_model(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".onnx")


def resolve_backend(opts: TranslateOptions) -> TranslateOptions:
    """Fill in the backend: an ``.onnx`` model runs on onnxruntime, anything else on torch by default."""
    onnx_model = is_onnx_model(opts.model)
    backend = opts.backend or ("onnx" if onnx_model else "torch")
    if onnx_model and backend != "onnx":
        raise UsageError(
            f"{os.path.basename(opts.model)} is an ONNX model: it runs with --backend onnx "
            "(give the .safetensors checkpoint to run it with torch)"
        )
    return replace(opts, backend=backend)


def read_model_metadata(path: str | os.PathLike):
    """The :class:`~sar2opt_geo.models.checkpoint.CheckpointMeta` of a native checkpoint or of an ``.onnx``
    file exported by ``model export-onnx`` (which embeds it)."""
    if is_onnx_model(path):
        from sar2opt_geo.models.onnx_export import read_onnx_checkpoint_meta

        return read_onnx_checkpoint_meta(path)
    from sar2opt_geo.models.checkpoint import read_metadata

    return read_metadata(path)


def _check_onnx_tile_size(runner, path: str, tile: int) -> None:
    """An export with a fixed spatial size only runs on tiles of that size."""
    h, w = runner.input_shape[2:4]
    if isinstance(h, int) and isinstance(w, int) and (h, w) != (tile, tile):
        raise UsageError(
            f"{os.path.basename(path)} was exported for {w}x{h} tiles: translate with --tile-size {h}, or "
            "re-export it with `model export-onnx --dynamic-spatial`"
        )


def prepare_translate(input_path: str, opts: TranslateOptions, executor=None):
    """Validate everything that can be validated before work starts; return the parts of the job."""
    from sar2opt_geo.translate import make_model_ref, resolve_device

    opts = resolve_backend(opts)

    if opts.fmt not in ("cog", "zarr"):
        raise UsageError(f"--format must be cog or zarr (got {opts.fmt!r})")
    if opts.input_scale != "auto" and opts.input_scale not in INPUT_SCALES:
        raise UsageError(f"--input-scale must be auto or one of {', '.join(INPUT_SCALES)}")
    if opts.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1 (got {opts.batch_size})")
    scene = io.open_scene(input_path, allow_ungeoreferenced=opts.allow_ungeoreferenced)
    grid = TileGrid(scene.height, scene.width, opts.tile_size, opts.overlap)
    device = resolve_device(opts.device, executor)
    meta = read_model_metadata(opts.model)
    # Validate the weights against the architecture here, once, so a bad checkpoint fails before any work
    # (and with the threaded scheduler this also fills the per-process cache the tasks use). For a remote
    # cluster the client checks on CPU: the GPUs are the workers'.
    if opts.backend == "torch":
        from sar2opt_geo.models.checkpoint import get_cached_generator

        local = "cpu" if getattr(executor, "remote", False) else device
        get_cached_generator(opts.model, local, lora=opts.lora)
    else:  # exports once (adapter merged) and checks weights and adapter before any work
        from sar2opt_geo.models.onnx_export import get_cached_onnx_generator

        runner = get_cached_onnx_generator(
            opts.model, "cpu" if getattr(executor, "remote", False) else device, lora=opts.lora
        )
        _check_onnx_tile_size(runner, opts.model, opts.tile_size)
    radiometry = Radiometry.from_dict(meta.radiometry)
    in_ch = int(meta.arch_args.get("in_channels", 3))
    n_needed = 1 if radiometry.replicate_to and radiometry.replicate_to == in_ch else in_ch
    bands = select_bands(scene, opts.bands, n_needed, list(meta.input_bands or []))
    ref = make_model_ref(opts.model, device, opts.backend, opts.lora)
    plan = BlockPlan.create(grid, opts.chunk_size, scene.block_shape if scene.tiled else None)
    aoi_wkb = None
    if opts.aoi:
        import shapely

        from sar2opt_geo.aoi import aoi_to_pixels, load_aoi

        geom, crs = load_aoi(opts.aoi)
        aoi_wkb = shapely.to_wkb(aoi_to_pixels(geom, crs, scene))
    return scene, grid, plan, radiometry, bands, ref, meta, aoi_wkb


def run_translate(
    input_path: str,
    output_path: str,
    opts: TranslateOptions,
    executor,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress=None,
) -> TranslateSummary:
    """Translate one scene. ``progress(n_tiles_done, n_tiles_total)`` is called as blocks finish."""
    t0 = time.perf_counter()
    out = io.check_output_path(output_path, overwrite)
    scene, grid, plan, radiometry, bands, ref, meta, aoi_wkb = prepare_translate(input_path, opts, executor)

    opts = replace(opts, preprocess=_preprocess_for(opts.preprocess, meta))
    cond = Conditioning(scene=scene, bands=bands, input_scale="linear", filter=opts.filter)
    # a light lattice (≤ 6 × 6 windows) is enough to check the input scale and find NaN/inf
    raw, _ = scene_samples(executor, replace(cond, filter=None), lattice=6)
    if opts.input_scale == "auto":
        scale = detect_input_scale(scene.dtype, raw)
        log.info("input scale detected: %s", scale)
    else:
        scale = opts.input_scale
        check_input_scale(scale, raw, scene.path)
    cond = replace(cond, input_scale=scale)
    if cond.filter is not None and getattr(cond.filter, "enl", None) == "auto":
        cond = replace(cond, filter=_resolve_auto_enl(executor, cond))
    stats = resolve_stats(radiometry, None, len(bands)) if not radiometry.needs_scene_stats else None
    if stats is None:
        # the first sample pass already said whether there are NaN/inf values: say it once per scene
        _, lin = scene_samples(executor, cond, warn=False)
        if lin.shape[1] == 0:
            _, lin = scene_samples(executor, cond, dense=True, warn=False)
        stats = resolve_stats(radiometry, lin, len(bands))

    tags = {
        "SAR2OPT_TOOL": f"sar2opt-geo {__version__}",
        "SAR2OPT_MODEL": meta.name or os.path.basename(opts.model),
        "SAR2OPT_MODEL_HASH": ref.digest,
        "SAR2OPT_ADAPTER": os.path.basename(opts.lora) if opts.lora else "none",
        "SAR2OPT_RADIOMETRY": radiometry.describe(),
        "SAR2OPT_INPUT_SCALE": scale,
        "SAR2OPT_FILTER": cond.filter.to_dict() if cond.filter is not None else "none",
        "SAR2OPT_TILING": {"tile": grid.tile, "overlap": grid.overlap, "blend": "raised-cosine"},
        "SAR2OPT_BACKEND": ref.backend,
    }
    job = TranslateJob(
        cond=cond,
        radiometry=radiometry,
        stats=stats,
        model=ref,
        plan=plan,
        batch_size=opts.batch_size,
        aoi_wkb=aoi_wkb,
        tags=tags,
        preprocess=opts.preprocess,
    )
    if opts.preprocess is not None:
        job = replace(job, preprocess_stats=resolve_preprocess_stats(executor, job))
        tags["SAR2OPT_PREPROCESS"] = {
            "profile": "sar2optical",
            **opts.preprocess.to_dict(),
            "scene_stats": job.preprocess_stats,
        }
    from sar2opt_geo.workstate import WorkState, digest, fingerprint_file

    ws = WorkState(out)
    fingerprint = {
        "input": fingerprint_file(scene.path),
        "model": ref.digest,
        "job": digest(
            [
                bands,
                scale,
                radiometry.to_dict(),
                stats.to_dict(),
                grid,
                plan.chunk,
                cond.filter.to_dict() if cond.filter is not None else None,
                aoi_wkb,
                opts.fmt,
                job.preprocess_stats,
                opts.preprocess.to_dict() if opts.preprocess is not None else None,
            ]
        ),
    }
    resumed = ws.begin(fingerprint, resume)
    if not resumed:
        io.create_block_store(
            ws.store, grid.height, grid.width, plan.chunk, {"tags": {k: str(v) for k, v in tags.items()}}
        )
    records = ws.done_records()
    tmp_out = io.temporary_sibling(out, "partial")
    geo = io.GeoProfile.from_scene(scene, tags)
    finished = False
    with contextlib.ExitStack() as stack:
        cog = None
        if opts.fmt == "cog":  # finished blocks go into the staging file while others compute
            cog = stack.enter_context(io.CogAssembler(ws.store, tmp_out, geo))
        try:
            dsk, finals, resources = translate_graph(job, str(ws.root), set(records))
            done = {"tiles": sum(r["n_tiles"] for r in records.values())}
            prior_eval = sum(r["n_eval"] for r in records.values())
            if cog is not None:
                for key in records:
                    b = plan.block(*(int(v) for v in key.split("-")))
                    cog.add(b.row0, b.row1, b.col0, b.col1)
            if progress is not None:
                progress(done["tiles"], grid.count)

            def on_result(key, res: BlockDone):
                done["tiles"] += res.n_tiles
                if cog is not None:
                    b = plan.block(*(int(v) for v in res.key.split("-")))
                    cog.add(b.row0, b.row1, b.col0, b.col1)
                if progress is not None:
                    progress(done["tiles"], grid.count)

            results = executor.run(dsk, finals, on_result, resources=resources)
            n_eval = sum(r.n_eval for r in results.values())
            if n_eval + prior_eval == 0:
                ws.discard()
                if aoi_wkb:
                    raise InputError(f"{scene.path}: no valid pixel inside the AOI (all nodata)")
                raise InputError(f"{scene.path}: all pixels are nodata; nothing to translate")
            if cog is not None:
                cog.finish()
            else:
                io.store_to_zarr(ws.store, tmp_out, geo, chunk=plan.chunk)
            io.replace_path(tmp_out, out)
            finished = True
        except Sar2OptError:
            # a deterministic failure (bad data, bad adapter...): resuming would fail the same way
            ws.discard()
            raise
        finally:
            io.remove_path(tmp_out)
            if finished:
                ws.discard()
    return TranslateSummary(
        output=str(out),
        tiles=grid.count,
        evaluations=n_eval,
        blocks=plan.n_blocks,
        seconds=time.perf_counter() - t0,
        stats=stats,
        input_scale=scale,
        chunk=plan.chunk,
    )


def _preprocess_for(requested, meta):
    """The SAR2Optical profile to apply: the requested one, or the one the checkpoint declares."""
    if requested == "none":
        return None
    if requested is not None:
        return requested
    declared = meta.preprocess or {}
    if declared.get("profile") == "sar2optical":
        from sar2opt_geo.sar2optical import Sar2OpticalProfile

        return Sar2OpticalProfile.from_dict({k: v for k, v in declared.items() if k != "profile"})
    return None


def _resolve_auto_enl(executor, cond: Conditioning):
    """``--enl auto``: pool the local Ci² of homogeneous windows over a lattice of scene windows (unfiltered
    linear intensity) and take the ENL of their lowest mode (see :func:`sar2opt_geo.filters.estimate_enl`)."""
    from sar2opt_geo.filters import enl_from_ci2_samples

    unfiltered = replace(cond, filter=None)
    corners = sample_lattice(cond.scene.height, cond.scene.width, size=256, n=6)
    dsk = {
        ("enl", k): (_ci2_window, unfiltered, r, c, cond.filter.window) for k, (r, c) in enumerate(corners)
    }
    samples = np.concatenate(list(executor.run(dsk, list(dsk)).values()))
    enl = enl_from_ci2_samples(samples)
    log.info("estimated ENL: %.2f (from %d windows)", enl, samples.size)
    return replace(cond.filter, enl=enl)


def _ci2_window(cond: Conditioning, row0: int, col0: int, window: int) -> np.ndarray:
    from sar2opt_geo.filters import local_ci2_samples

    r1, c1 = min(row0 + 256, cond.scene.height), min(col0 + 256, cond.scene.width)
    linear, valid = read_linear(cond, row0, r1, col0, c1)
    return local_ci2_samples(linear, valid, window)


def describe_scene(input_path: str, tile: int, overlap: int, chunk: int, allow_ungeoreferenced: bool) -> dict:
    """What ``sar2opt-geo info`` prints: metadata, nodata share and the tile grid for the given options."""
    scene = io.open_scene(input_path, allow_ungeoreferenced=allow_ungeoreferenced)
    grid = TileGrid(scene.height, scene.width, tile, overlap)
    plan = BlockPlan.create(grid, chunk, scene.block_shape if scene.tiled else None)
    _, mask = io.read_overview(scene.path, max_size=1024)
    valid = mask > 0
    fy, fx = valid.shape[0] / scene.height, valid.shape[1] / scene.width
    n_eval = 0
    for i in range(grid.n_rows):
        for j in range(grid.n_cols):
            r0, c0 = grid.origin(i, j)
            a0, a1 = int(r0 * fy), max(int(r0 * fy) + 1, int(math.ceil(min(r0 + tile, scene.height) * fy)))
            b0, b1 = int(c0 * fx), max(int(c0 * fx) + 1, int(math.ceil(min(c0 + tile, scene.width) * fx)))
            n_eval += bool(valid[a0:a1, b0:b1].any())
    return {
        "path": scene.path,
        "size": f"{scene.width} x {scene.height}",
        "bands": ", ".join(scene.band_names()),
        "dtype": scene.dtype,
        "nodata": scene.nodata,
        "crs": (scene.crs.to_string() if scene.crs else None) if not scene.gcps else None,
        "transform": list(scene.transform) if scene.transform else None,
        "gcps": f"{len(scene.gcps)} GCPs in {io.CRS.from_wkt(scene.gcp_crs_wkt).to_string()}"
        if scene.gcps
        else None,
        "block_shape": list(scene.block_shape),
        "nodata_share": round(1.0 - float(valid.mean()), 4),
        "tile_grid": f"{grid.n_rows} x {grid.n_cols} tiles of {tile} px, overlap {overlap}, "
        f"stride {grid.stride}",
        "tiles": grid.count,
        "dask_blocks": f"{plan.n_brows} x {plan.n_bcols} blocks of {plan.chunk} px",
        "estimated_model_evaluations": n_eval,
    }


# ------------------------------------------------------------------------------------------ filter


def filter_block(cond: Conditioning, store: str, row0: int, row1: int, col0: int, col1: int) -> int:
    """Filter one block (reading its halo, so the result equals filtering the whole scene) and store it
    in the input's own scale (dB in, dB out); returns the number of valid pixels."""
    from sar2opt_geo.radiometry import from_linear

    linear, valid = read_linear(cond, row0, row1, col0, col1)
    scale = "amplitude" if cond.input_scale == "dn" else cond.input_scale
    out = from_linear(linear, scale)
    out[:, ~valid] = 0
    io.write_store_block(store, row0, col0, out.astype(np.float32), valid)
    return int(valid.sum())


def run_filter(
    input_path: str,
    output_path: str,
    spec,
    executor,
    *,
    input_scale: str = "auto",
    bands: str | None = None,
    chunk_size: int = 2048,
    allow_ungeoreferenced: bool = False,
    overwrite: bool = False,
    progress=None,
) -> dict:
    """``sar2opt-geo filter``: a speckle-filtered float32 COG on the input's grid, block by block."""
    out = io.check_output_path(output_path, overwrite)
    scene = io.open_scene(input_path, allow_ungeoreferenced=allow_ungeoreferenced)
    band_idx = select_bands(scene, bands, scene.count if not bands else len(bands.split(",")), [])
    cond = Conditioning(scene=scene, bands=band_idx, input_scale="linear", filter=None)
    raw, _ = scene_samples(executor, cond)
    scale = detect_input_scale(scene.dtype, raw) if input_scale == "auto" else input_scale
    if input_scale != "auto":
        check_input_scale(scale, raw, scene.path)
    cond = replace(cond, input_scale=scale, filter=spec)
    if getattr(spec, "enl", None) == "auto":
        cond = replace(cond, filter=_resolve_auto_enl(executor, cond))
    chunk = max(64, chunk_size)
    store = io.temporary_sibling(out, "blocks.zarr")
    tmp_out = io.temporary_sibling(out, "partial")
    blocks = [
        (r, min(r + chunk, scene.height), c, min(c + chunk, scene.width))
        for r in range(0, scene.height, chunk)
        for c in range(0, scene.width, chunk)
    ]
    try:
        io.create_block_store(
            store, scene.height, scene.width, chunk, {}, bands=len(band_idx), dtype="float32"
        )
        dsk = {("filter", k): (filter_block, cond, str(store), *b) for k, b in enumerate(blocks)}
        sizes = {("filter", k): (b[1] - b[0]) * (b[3] - b[2]) for k, b in enumerate(blocks)}
        done = {"px": 0}

        def on_result(key, n_valid):
            done["px"] += sizes[key]
            if progress is not None:
                progress(done["px"], scene.height * scene.width)

        res = executor.run(dsk, list(dsk), on_result)
        if sum(res.values()) == 0:
            raise InputError(f"{scene.path}: all pixels are nodata; nothing to filter")
        tags = {
            "SAR2OPT_TOOL": f"sar2opt-geo {__version__}",
            "SAR2OPT_FILTER": cond.filter.to_dict(),
            "SAR2OPT_SCALE": "amplitude" if scale == "dn" else scale,
        }
        names = [scene.band_names()[i - 1] for i in band_idx]
        nodata = scene.nodata if scene.nodata is not None else 0.0
        io.store_to_cog(
            store,
            tmp_out,
            io.GeoProfile.from_scene(scene, tags),
            chunk=chunk,
            band_descriptions=names,
            nodata=nodata,
        )
        io.replace_path(tmp_out, out)
    finally:
        io.remove_path(store)
        io.remove_path(tmp_out)
    return {"output": str(out), "filter": cond.filter.to_dict(), "scale": scale, "blocks": len(blocks)}
