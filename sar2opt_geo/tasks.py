"""Translate, step 3 of 4 — the picklable Dask task bodies and the graph that wires them.

Every function here is module-level and picklable and receives only small plans (a
:class:`~sar2opt_geo.plan.Conditioning` or :class:`~sar2opt_geo.plan.TranslateJob`, indexes, paths); each
reads its own pixels through :mod:`sar2opt_geo.io`. Per scene:

1. sample tasks (:func:`sample_windows`, :func:`ci2_window`, :func:`preprocess_samples`) read a fixed lattice
   of small windows; :mod:`sar2opt_geo.sampling` reduces them on the client to scene-level statistics.
2. ``acc`` tasks (:func:`resumable_partial` → :func:`accumulate_block`), one per block that owns tiles: read
   the block's tile extent (plus the filter halo, reflect-padded at the scene edges), convert radiometry with
   the scene statistics, run the generator on every owned tile that has valid pixels (and touches the AOI),
   and blend them into Σw·y and Σw over that extent. Each tile is evaluated exactly once. The pixels of the
   block that no other block's tiles reach are finished there (normalised and converted to uint8 where the
   sums are: on the GPU for torch on CUDA); only the strips that neighbours' tiles also reach leave the task
   as float sums (:class:`BlockPartial`).
3. ``out`` tasks (:func:`finish_block`), one per block: add the partial sums of the (at most four) ``acc``
   blocks that reach its border strips, normalise them, apply the nodata/AOI mask, compute the block's part
   of the COG's overview levels (:mod:`sar2opt_geo.pyramid`), and store the uint8 block and its levels in the
   work state (:meth:`~sar2opt_geo.workstate.WorkState.save_block`).

Only small results (counts) go back to the client; peak memory is a few blocks per worker thread whatever
the scene size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from sar2opt_geo import io, source
from sar2opt_geo.blend import Accumulator, normalise
from sar2opt_geo.defaults import PREPARE_AHEAD
from sar2opt_geo.filters import apply_filter, local_ci2_samples
from sar2opt_geo.plan import Conditioning, TranslateJob
from sar2opt_geo.pyramid import block_pyramid
from sar2opt_geo.radiometry import normalize, output_to_uint8
from sar2opt_geo.sar2optical import sar2optical_filter, sar2optical_halo, sar2optical_preprocess
from sar2opt_geo.tiling import Block
from sar2opt_geo.translate import ModelRef, calibrated, predict_async
from sar2opt_geo.workstate import WorkState

log = logging.getLogger(__name__)


@dataclass
class Partial:
    """Weighted partial sums of one block's tiles over a rectangle of the scene (``row0``, ``col0``: its
    top-left pixel)."""

    key: str
    row0: int
    col0: int
    sum_wy: np.ndarray
    sum_w: np.ndarray
    valid: np.ndarray
    n_eval: int
    n_tiles: int


@dataclass
class Finished:
    """Output pixels of a block that only its own tiles reach, finished by its ``acc`` task: uint8 RGB and
    the mask (valid and covered by an evaluated tile), at ``(row0, col0)`` of the scene."""

    row0: int
    col0: int
    rgb: np.ndarray
    mask: np.ndarray


@dataclass
class BlockPartial:
    """What an ``acc`` task returns for its block: the pixels only its tiles reach, finished (``finished``);
    the weighted sums of the block's pixels that neighbours' tiles reach too (``own``: the strips along its
    top and left edges); and the sums its tiles spill into the neighbours right of and below it (``spill``:
    the strip right of the block, its rows only, and the strip below it, full width, so no pixel is in
    both). Most of a block thus travels as 3 bytes and a flag a pixel instead of 16 bytes of float sums."""

    key: str
    own: tuple[Partial, ...]
    finished: Finished | None
    spill: tuple[Partial, ...]
    n_eval: int
    n_tiles: int


@dataclass
class BlockInput:
    """A block's model input, prepared by a ``prep`` task on any worker (:func:`prepare_block`) when the
    model runs on a GPU: the owned tiles to run (``todo``, as :func:`tiles_to_run` gives them), their inputs
    ``(n, bands, T, T)`` float32 with nodata filled (the input's own bands: a single band is broadcast to
    the model's channels at inference), and the validity of the block's extent."""

    key: str
    todo: list
    tiles: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True)
class BlockDone:
    key: str
    n_tiles: int
    n_eval: int


# ------------------------------------------------------------------------------------- reading pixels


def close_readers(executor=None) -> None:
    """Close the input datasets the tasks kept open (one per worker thread and file, see
    :func:`sar2opt_geo.io.read_window`): in this process, and on every worker of ``executor``'s Dask cluster
    if it has one. Every command that runs tasks calls it at its end."""
    io.close_readers()
    client = getattr(executor, "client", None)
    if client is not None:
        try:
            client.run(io.close_readers)
        except Exception as exc:  # a lost worker keeps its handles until it exits; nothing to undo
            log.debug("closing the workers' input datasets: %s", exc)


def read_linear(
    cond: Conditioning, row0: int, row1: int, col0: int, col1: int, keep_open: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Linear intensity and validity for a window, speckle-filtered when asked (exact: reads the halo).
    ``keep_open``: through this thread's open dataset (see :func:`sar2opt_geo.io.read_window`)."""
    h = cond.halo
    linear, valid = source.read_linear(
        cond.scene, row0 - h, row1 + h, col0 - h, col1 + h, cond.bands, cond.to_linear, keep_open=keep_open
    )
    linear = np.where(valid[None] & (linear > 0), linear, np.float32(0.0))
    if cond.filter is not None:
        linear = apply_filter(linear, valid, cond.filter)
    if h:
        linear = linear[:, h:-h, h:-h]
        valid = valid[h:-h, h:-h]
    return np.ascontiguousarray(linear), np.ascontiguousarray(valid)


def to_u8_levels(x: np.ndarray, out_range: tuple[float, float]) -> np.ndarray:
    a, b = out_range
    return np.floor(np.clip((x - np.float32(a)) / np.float32(b - a), 0, 1) * np.float32(255.0)).astype(
        np.uint8
    )


def fill_nodata(x: np.ndarray, valid: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``x`` ``(channels, h, w)`` with every invalid pixel filled from nearby valid pixels instead of a
    constant: the valid pixel mirrored across its nearest valid pixel (a reflection about the footprint
    edge, so texture continues), else that nearest valid pixel. Nearest pixels come from scipy's Euclidean
    distance transform (``return_indices``); the mirroring is a few lines of index arithmetic on top.

    Applied per model tile (its own pixels only, so the result does not depend on the chunking): a nodata
    collar filled with the low end of the model's range reads as a hard "water" step the model never saw in
    training, and its answer bleeds into the valid pixels along every footprint edge (measured in
    tests/test_hardening.py; mirroring beat plain nearest fill there, which draws streaks). Tiles with no
    valid pixel are never run; all-valid tiles are returned unchanged (copied into ``out`` when given).

    ``out``: an array of ``x``'s shape to write the result into (a slot of the model's batch; a single band
    ``x`` is broadcast to all its channels), else a new array (``x`` itself when nothing is filled).

    The distance transform runs on the bounding box of the invalid pixels grown by one pixel, not the
    whole tile: an invalid pixel's nearest valid pixels all lie in that box (one outside it has a valid
    neighbour one step closer), so scipy sees the same candidates in the same order and gives the same
    indices (tests/test_speed_pipeline.py checks it against the whole-tile transform). The source of every
    pixel of that box is then formed densely, in int32 (a valid pixel is its own nearest valid pixel and
    its own mirror, so it maps to itself): cheaper than listing the invalid pixels and working on their
    flat indices (same pixels; ``bench_speed.py --tasks``: 3.6–4.4 → 3.1–3.2 ms a partial tile of the 3072²
    bench scene, in alternated runs)."""
    if valid.all() or not valid.any():
        if out is None:
            return x
        out[...] = x
        return out
    from scipy.ndimage import distance_transform_edt

    invalid = ~valid
    h, w = valid.shape
    rows, cols = np.flatnonzero(invalid.any(axis=1)), np.flatnonzero(invalid.any(axis=0))
    y0, y1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, h)
    x0, x1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, w)
    sy, sx = distance_transform_edt(invalid[y0:y1, x0:x1], return_distances=False, return_indices=True)
    sy += np.int32(y0)  # the nearest valid pixel of every pixel of the box, in tile coordinates (int32)
    sx += np.int32(x0)
    ry = sy * np.int32(2)  # mirrored across it, clipped to the tile
    ry -= np.arange(y0, y1, dtype=np.int32)[:, None]
    np.maximum(ry, 0, out=ry)
    np.minimum(ry, h - 1, out=ry)
    rx = sx * np.int32(2)
    rx -= np.arange(x0, x1, dtype=np.int32)[None, :]
    np.maximum(rx, 0, out=rx)
    np.minimum(rx, w - 1, out=rx)
    ry *= np.int32(w)  # flat indices: the mirror, and the nearest valid pixel
    ry += rx
    sy *= np.int32(w)
    sy += sx
    src = np.where(valid.ravel()[ry], ry, sy)  # always a valid pixel
    box = (slice(y0, y1), slice(x0, x1))
    if x.shape[0] == 1 and out is not None and out.shape[0] > 1:
        band = x[0].copy()  # fill the one band, then broadcast it: a third of the gathers
        band[box] = band.ravel()[src]  # (the gather is complete before the assignment)
        out[...] = band
        return out
    if out is None:
        out = x.copy()
    else:
        out[...] = x
    for c in range(out.shape[0]):
        out[c][box] = out[c].ravel()[src]
    return out


def model_tile(
    x: np.ndarray,
    valid: np.ndarray,
    lr: int,
    lc: int,
    size: int,
    fill: str = "reflect",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The model's input for the tile at ``(lr, lc)`` of a block's input, nodata filled from the tile's
    valid pixels (:func:`fill_nodata`) unless ``fill`` is ``constant`` (the low end of the range); written
    into ``out`` (a slot of the batch, a single band broadcast to its channels) when given."""
    tile = x[:, lr : lr + size, lc : lc + size]
    if fill == "constant":
        if out is None:
            return tile
        out[...] = tile
        return out
    return fill_nodata(tile, valid[lr : lr + size, lc : lc + size], out)


def model_channels(job: TranslateJob, channels: int) -> int:
    """How many channels the model sees for ``channels`` input channels (a single band replicated to the
    radiometry's ``replicate_to``)."""
    rad = job.radiometry
    return rad.replicate_to if rad.replicate_to and channels == 1 and rad.replicate_to > 1 else channels


def model_input(
    job: TranslateJob, r0: int, r1: int, c0: int, c1: int, replicate: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Model input ``(channels, h, w)`` and validity for a window: radiometry with scene statistics, then,
    with ``--preprocess sar2optical``, that project's 8-bit chain with scene-level statistics.
    ``replicate=False``: a single band is not yet replicated to :func:`model_channels` (the caller
    broadcasts it into the model's batch, after the nodata fill: the same values, a third of the work)."""
    rad = job.radiometry
    if job.preprocess is None:
        linear, valid = read_linear(job.cond, r0, r1, c0, c1, keep_open=True)
        rad = rad if replicate else replace(rad, replicate_to=None)
        return normalize(linear, valid, rad, job.stats), valid
    ph = sar2optical_halo(job.preprocess)
    linear, valid = read_linear(job.cond, r0 - ph, r1 + ph, c0 - ph, c1 + ph, keep_open=True)
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
    np.copyto(x, np.float32(a), where=~valid)
    if ph:
        x, valid = x[:, ph:-ph, ph:-ph], valid[ph:-ph, ph:-ph]
    if replicate and model_channels(job, x.shape[0]) != x.shape[0]:
        x = np.repeat(x, model_channels(job, x.shape[0]), axis=0)
    return np.ascontiguousarray(x), np.ascontiguousarray(valid)


# --------------------------------------------------------------------------------------- sample tasks


def sample_window(cond: Conditioning, row0: int, col0: int, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(raw values of valid pixels (bands, n), linear values after filtering (bands, n), number of NaN/inf
    pixels)`` of a window of the scene."""
    r1, c1 = min(row0 + size, cond.scene.height), min(col0 + size, cond.scene.width)
    # through the thread's kept-open datasets, as the blocks' reads: a product's measurement TIFF inside a
    # zip is otherwise decompressed from its start at every window (scripts/bench_reads.py)
    raw, valid = source.read_window(cond.scene, row0, r1, col0, c1, cond.bands, keep_open=True)
    n_nonfinite = int((~np.isfinite(raw)).any(axis=0).sum())
    if cond.filter is not None or getattr(cond.scene, "warp", None) is not None:
        linear, _ = read_linear(cond, row0, r1, col0, c1, keep_open=True)  # warped: resample linear values
    else:
        linear = cond.to_linear(raw)
    return raw[:, valid], np.maximum(linear[:, valid], 0), n_nonfinite


def sample_windows(cond: Conditioning, corners: list, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`sample_window` over several windows, concatenated."""
    parts = [sample_window(cond, r, c, size) for r, c in corners]
    return (
        np.concatenate([p[0] for p in parts], axis=1),
        np.concatenate([p[1] for p in parts], axis=1),
        sum(p[2] for p in parts),
    )


def ci2_window(cond: Conditioning, row0: int, col0: int, window: int, size: int = 256) -> np.ndarray:
    """Local Ci² samples of the homogeneous windows of a scene window (for ``--enl auto``)."""
    r1, c1 = min(row0 + size, cond.scene.height), min(col0 + size, cond.scene.width)
    linear, valid = read_linear(cond, row0, r1, col0, c1, keep_open=True)
    return local_ci2_samples(linear, valid, window)


def preprocess_samples(job: TranslateJob, row0: int, col0: int, size: int, filtered: bool) -> np.ndarray:
    """8-bit samples of the valid pixels of a window for the SAR2Optical scene statistics: before its
    filter (``filtered=False``) or after it (with the scene's global variance already in ``job``)."""
    ph = sar2optical_halo(job.preprocess) if filtered else 0
    r1, c1 = min(row0 + size, job.cond.scene.height), min(col0 + size, job.cond.scene.width)
    linear, valid = read_linear(job.cond, row0 - ph, r1 + ph, col0 - ph, c1 + ph, keep_open=True)
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


# ------------------------------------------------------------------------------- model and blending


def tiles_to_run(job: TranslateJob, block: Block, valid: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(i, j, local row, local col)`` of the tiles ``block`` owns that hold a valid pixel inside the
    scene and touch the AOI; ``valid`` covers the block's tile extent."""
    import shapely

    grid = job.grid
    r0, _, c0, _ = block.acc_bounds
    in_scene = np.zeros(valid.shape, dtype=bool)
    in_scene[: max(0, grid.height - r0), : max(0, grid.width - c0)] = True
    valid_in = valid & in_scene
    aoi = shapely.from_wkb(job.aoi_wkb) if job.aoi_wkb else None
    if aoi is not None:
        shapely.prepare(aoi)
    T, S = grid.tile, grid.stride
    todo = []
    for i in range(block.ti0, block.ti1):
        for j in range(block.tj0, block.tj1):
            lr, lc = i * S - r0, j * S - c0
            if not valid_in[lr : lr + T, lc : lc + T].any():
                continue
            if aoi is not None and not aoi.intersects(shapely.box(j * S, i * S, j * S + T, i * S + T)):
                continue
            todo.append((i, j, lr, lc))
    return todo


def calibration_tiles(job: TranslateJob, n: int = 8, lattice: int = 4) -> np.ndarray:
    """Model inputs ``(≤ n, C, T, T)`` of tiles spread over the scene (a ``lattice²`` grid of tile positions,
    those at least half valid first) for the int8 calibration; deterministic, so every worker process draws
    the same tiles and finds the same cached graph."""
    grid = job.grid
    T, S = grid.tile, grid.stride
    rows = sorted({int(v) for v in np.linspace(0, grid.n_rows - 1, lattice).round()})
    cols = sorted({int(v) for v in np.linspace(0, grid.n_cols - 1, lattice).round()})
    full, part = [], []
    for i in rows:
        for j in cols:
            x, valid = model_input(job, i * S, i * S + T, j * S, j * S + T)
            share = float(valid.mean()) if valid.size else 0.0
            if share >= 0.5:
                full.append(x)
            elif share > 0:
                part.append(x)
    tiles = (full + part)[:n]
    return np.stack(tiles) if tiles else np.zeros((0, 1, T, T), np.float32)


def blend_device(ref: ModelRef) -> str | None:
    """Where a block's predictions are blended: on the GPU for torch on CUDA (predictions stay there), else
    on the host (``None``)."""
    return ref.device if ref.backend == "torch" and ref.device.startswith("cuda") else None


def finished_offsets(plan, block: Block) -> tuple[int, int]:
    """``(a, c)``: the pixels of ``block`` at rows ≥ ``a`` and columns ≥ ``c`` (block coordinates) are reached
    by no other block's tiles (the others that reach it lie above or left of it: their extents end there)."""
    a = c = 0
    for o in plan.contributors(block):
        if o.key == block.key:
            continue
        _, r1, _, c1 = o.acc_bounds
        if o.bi < block.bi:
            a = max(a, r1 - block.row0)
        if o.bj < block.bj:
            c = max(c, c1 - block.col0)
    h, w = block.shape
    return min(a, h), min(c, w)


def border_rects(h: int, w: int, a: int, c: int) -> list[tuple[str, tuple[int, int, int, int]]]:
    """The rectangles ``(r0, r1, c0, c1)`` of an ``h × w`` block outside its finished corner ``[a:, c:]``, by
    name: the strip above it (``top``, full width) and the strip left of it (``left``)."""
    rects = []
    if a > 0:
        rects.append(("top", (0, a, 0, w)))
    if c > 0 and a < h:
        rects.append(("left", (a, h, 0, c)))
    return rects


def prepare_block(job: TranslateJob, bi: int, bj: int, *after) -> BlockInput:
    """The model input of the tiles block ``(bi, bj)`` owns (read, radiometry, filter, nodata fill): the
    CPU half of an ``acc`` task, run as a task of its own when the model runs on a GPU, so that any worker's
    cores prepare blocks while the GPU worker only runs the model (:func:`translate_graph`). ``after``: the
    tokens of tasks it must wait for (ignored here)."""
    block: Block = job.plan.block(bi, bj)
    r0, r1, c0, c1 = block.acc_bounds
    x, valid = model_input(job, r0, r1, c0, c1, replicate=False)
    todo = tiles_to_run(job, block, valid)
    T = job.grid.tile
    tiles = np.empty((len(todo), x.shape[0], T, T), dtype=x.dtype)
    for n, (_, _, lr, lc) in enumerate(todo):
        model_tile(x, valid, lr, lc, T, job.nodata_fill, out=tiles[n])
    return BlockInput(block.key, todo, tiles, valid)


def accumulate_block(job: TranslateJob, bi: int, bj: int, prepared: BlockInput | None = None) -> BlockPartial:
    """Run the generator on the tiles block ``(bi, bj)`` owns; return the block's finished pixels and the
    weighted partial sums of the rest of its extent (:class:`BlockPartial`). ``prepared``: the block's model
    input from :func:`prepare_block` (else it is read and filled here, a batch at a time, while the
    previous batch runs)."""
    block: Block = job.plan.block(bi, bj)
    grid = job.grid
    r0, r1, c0, c1 = block.acc_bounds
    T = grid.tile
    if prepared is None:
        x, valid = model_input(job, r0, r1, c0, c1, replicate=False)
        todo, bands = tiles_to_run(job, block, valid), x.shape[0]

        def fill_batch(k: int, xb: np.ndarray) -> None:
            for n, (_, _, lr, lc) in enumerate(todo[k : k + len(xb)]):
                model_tile(x, valid, lr, lc, T, job.nodata_fill, out=xb[n])

    else:
        todo, valid, bands = prepared.todo, prepared.valid, prepared.tiles.shape[1]

        def fill_batch(k: int, xb: np.ndarray) -> None:
            xb[...] = prepared.tiles[k : k + len(xb)]  # a single band broadcast to the model's channels

    channels = model_channels(job, bands)
    ref = calibrated(job.model, lambda: calibration_tiles(job)) if todo else job.model
    device = blend_device(ref)
    acc = Accumulator(grid, (r1 - r0, c1 - c0), device)
    # batch 0 (CUDA, from free memory): the whole block in one call, split by predict
    bs = job.batch_size if job.batch_size > 0 else max(1, len(todo))

    pending = None  # software pipeline: the next batch runs while the previous one is blended
    for k in range(0, len(todo), bs):
        batch = todo[k : k + bs]
        xb = np.empty((len(batch), channels, T, T), dtype=np.float32)  # a fresh buffer: the engine may
        fill_batch(k, xb)  # still read the previous one
        if device is None:
            fut = predict_async(ref, xb, job.batch_size)
        else:
            fut = predict_async(ref, xb, job.batch_size, on_device=True)
        if pending is not None:
            acc.add(pending[0], pending[1].result())
        pending = (batch, fut)
    if pending is not None:
        acc.add(pending[0], pending[1].result())

    # the extent (clipped to the scene) in block coordinates (a block's extent starts at its own corner,
    # r0, c0): the block [0:h, 0:w], its spill beyond
    hh, ww = min(r1, grid.height) - r0, min(c1, grid.width) - c0
    h, w = block.shape
    a, c = finished_offsets(job.plan, block)
    own_rects = [(f"{block.key}:{n}", rect) for n, rect in border_rects(h, w, a, c)]
    spill_rects = []
    if ww > w:
        spill_rects.append((f"{block.key}:right", (0, h, w, ww)))
    if hh > h:
        spill_rects.append((f"{block.key}:bottom", (h, hh, 0, ww)))
    fin = (a, h, c, w) if a < h and c < w else None
    rects = [rect for _, rect in own_rects + spill_rects]
    sums, done = acc.take(rects, fin, job.radiometry.out_range)
    pieces = [
        Partial(name, r0 + p0, c0 + q0, wy, sw, valid[p0:p1, q0:q1].copy(), 0, 0)
        for (name, (p0, p1, q0, q1)), (wy, sw) in zip(own_rects + spill_rects, sums, strict=True)
    ]
    finished = None
    if fin is not None:
        rgb, covered = done
        p0, p1, q0, q1 = fin
        finished = Finished(r0 + p0, c0 + q0, rgb, valid[p0:p1, q0:q1] & covered)
    return BlockPartial(
        key=block.key,
        own=tuple(pieces[: len(own_rects)]),
        finished=finished,
        spill=tuple(pieces[len(own_rects) :]),
        n_eval=len(todo),
        n_tiles=block.n_tiles,
    )


_SPILL_PARTS = ("right", "bottom")


def _spill_strips(p: BlockPartial) -> dict[str, np.ndarray]:
    """The spill strips of a block's partial (what neighbours need), as named arrays for the work state."""
    z = {"n_eval": np.array(p.n_eval)}
    for q in p.spill:
        part = q.key.rsplit(":", 1)[1]
        z[f"{part}_at"] = np.array([q.row0, q.col0])
        z[f"{part}_wy"], z[f"{part}_w"], z[f"{part}_valid"] = q.sum_wy, q.sum_w, q.valid
    return z


def _partial_from_spill(block: Block, z: dict[str, np.ndarray]) -> BlockPartial:
    """A finished block's spill strips, read back (``--resume``): the block itself is already stored."""
    h, w = block.shape
    spill = []
    for part in _SPILL_PARTS:
        if f"{part}_wy" not in z or z[f"{part}_w"].size == 0:
            continue
        wy, sw, v = z[f"{part}_wy"], z[f"{part}_w"], z[f"{part}_valid"]
        if f"{part}_at" in z:
            r0, c0 = (int(t) for t in z[f"{part}_at"])
        else:  # written before the blocks were finished in their acc tasks: the right strip held every row
            r0, c0 = (block.row0, block.col0 + w) if part == "right" else (block.row0 + h, block.col0)
            if part == "right":
                wy, sw, v = wy[:, :h], sw[:h], v[:h]
        spill.append(Partial(f"{block.key}:{part}", r0, c0, wy, sw, v, 0, 0))
    return BlockPartial(block.key, (), None, tuple(spill), n_eval=0, n_tiles=block.n_tiles)


def resumable_partial(
    job: TranslateJob, workdir: str, bi: int, bj: int, prepared: BlockInput | None = None
) -> BlockPartial:
    """The partial of block ``(bi, bj)``: from the saved spill when the block is already finished (its
    tiles are not evaluated again), else computed (from ``prepared`` when a ``prep`` task made its input)
    — and its spill saved for later resumes."""
    ws = WorkState.at(workdir)
    block = job.plan.block(bi, bj)
    if ws.is_done(block.key):
        z = ws.load_spill(block.key)
        if z is not None:
            return _partial_from_spill(block, z)
    p = accumulate_block(job, bi, bj, prepared)
    ws.save_spill(block.key, _spill_strips(p))
    return p


def partial_strips(p: BlockPartial) -> tuple[Partial, ...]:
    """The parts of a block's partial sums that reach its neighbours (:attr:`BlockPartial.spill`).
    Neighbours depend on these instead of the whole partial, which is then released as soon as its own block
    is finished: peak memory holds one row of strips, not one row of partials."""
    return p.spill


def _flat(partials) -> list[Partial]:
    """The float partial sums among an ``out`` task's inputs, in their order (a block's own strips where its
    :class:`BlockPartial` stands): the order the sums are added in."""
    out = []
    for p in partials:
        if isinstance(p, BlockPartial):
            out.extend(p.own)
        elif isinstance(p, tuple):
            out.extend(p)
        else:
            out.append(p)
    return out


def overlap_add(
    bounds: tuple[int, int, int, int], partials: list[Partial]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(Σw·y, Σw, valid)`` over the scene rectangle ``bounds`` ``(r0, r1, c0, c1)``: the parts of the
    partial sums that fall inside it, added in their order."""
    row0, row1, col0, col1 = bounds
    h, w = row1 - row0, col1 - col0
    sum_wy = np.zeros((3, h, w), dtype=np.float32)
    sum_w = np.zeros((h, w), dtype=np.float32)
    valid = np.zeros((h, w), dtype=bool)
    for p in partials:
        pr0, pc0 = p.row0, p.col0
        ph, pw = p.sum_w.shape
        a0, a1 = max(row0, pr0), min(row1, pr0 + ph)
        b0, b1 = max(col0, pc0), min(col1, pc0 + pw)
        if a0 >= a1 or b0 >= b1:
            continue
        src = (slice(a0 - pr0, a1 - pr0), slice(b0 - pc0, b1 - pc0))
        dst = (slice(a0 - row0, a1 - row0), slice(b0 - col0, b1 - col0))
        sum_wy[(slice(None),) + dst] += p.sum_wy[(slice(None),) + src]
        sum_w[dst] += p.sum_w[src]
        valid[dst] = p.valid[src]
    return sum_wy, sum_w, valid


def finish_block(job: TranslateJob, workdir: str, bi: int, bj: int, *partials) -> BlockDone:
    """Block ``(bi, bj)`` from its own :class:`BlockPartial` and its neighbours' spill strips: its finished
    corner as it is; the rest overlap-added, normalised and converted; then masked and stored."""
    block = job.plan.block(bi, bj)
    ws = WorkState.at(workdir)
    if ws.is_done(block.key):
        # A re-execution (the first result was lost with its worker): the block is already on disk, and its
        # own partial may now be spill-only (see resumable_partial), so it must not be written again.
        rec = ws.done_record(block.key)
        return BlockDone(key=block.key, n_tiles=int(rec["n_tiles"]), n_eval=int(rec["n_eval"]))
    own = next((p for p in partials if isinstance(p, BlockPartial) and p.key == block.key), None)
    sums = _flat(partials)
    h, w = block.shape
    rgb = np.zeros((3, h, w), dtype=np.uint8)
    mask = np.zeros((h, w), dtype=bool)
    a, c = h, w  # the finished corner [a:, c:] (none: the whole block is added up here)
    if own is not None and own.finished is not None:
        f = own.finished
        a, c = f.row0 - block.row0, f.col0 - block.col0
        rgb[:, a:, c:], mask[a:, c:] = f.rgb, f.mask
    for _, (p0, p1, q0, q1) in border_rects(h, w, a, c):
        bounds = (block.row0 + p0, block.row0 + p1, block.col0 + q0, block.col0 + q1)
        sum_wy, sum_w, valid = overlap_add(bounds, sums)
        y, covered = normalise(sum_wy, sum_w, in_place=True)
        rgb[:, p0:p1, q0:q1] = output_to_uint8(y, job.radiometry.out_range, in_place=True)
        mask[p0:p1, q0:q1] = valid & covered
    if job.aoi_wkb:
        import shapely

        from sar2opt_geo.aoi import rasterize_pixels

        mask &= rasterize_pixels(
            shapely.from_wkb(job.aoi_wkb), block.row0, block.row1, block.col0, block.col1
        )
    if not mask.all():
        np.multiply(rgb, mask, out=rgb)  # 0 at nodata
    ws.save_block(block.key, rgb, mask, block_pyramid(rgb, mask, job.overview_levels))
    done = BlockDone(key=block.key, n_tiles=own.n_tiles if own else 0, n_eval=own.n_eval if own else 0)
    ws.mark_done(block.key, {"n_tiles": done.n_tiles, "n_eval": done.n_eval})
    return done


# ----------------------------------------------------------------------------------------- the graph


def prepares_apart(job: TranslateJob) -> bool:
    """Whether blocks' model inputs are prepared by ``prep`` tasks of their own (:func:`prepare_block`): when
    the model runs on a GPU, whose worker should only run the model. On CPU the ``acc`` task prepares each
    batch while the previous one runs, on the same cores, without handing tiles between tasks."""
    return job.model.device.startswith("cuda")


def ready(_partial) -> None:
    """A token that a block's ``acc`` task has finished (what a later ``prep`` task waits for)."""
    return None


def translate_graph(
    job: TranslateJob, workdir: str, done: set[str] = frozenset(), prepare_ahead: int = PREPARE_AHEAD
) -> tuple[dict, list, dict]:
    """``(graph, final keys, resources per key)``: an ``out`` task per unfinished block and the ``acc``
    tasks they need. On a GPU device the ``acc`` tasks (the only ones running the generator) require the
    worker resource ``GPU=1``, and each unfinished block's input is prepared by a ``prep`` task that any
    worker runs (:func:`prepares_apart`); ``prep`` task *n* waits until ``acc`` task *n − prepare_ahead* has
    finished, so prepared inputs (6.5 MB a default 960² block) never pile up beyond that many blocks ahead
    of the GPU."""
    token = job.model.digest[:8]
    dsk, finals, resources = {}, [], {}
    gpu = job.model.device.startswith("cuda")
    apart = prepares_apart(job)
    fed: list[tuple] = []  # acc tasks with a prep task, in the order they were made
    for b in job.plan.blocks:
        if b.key in done:
            continue
        deps = []
        for c in job.plan.contributors(b):
            k = (f"acc-{token}", c.bi, c.bj)
            if k not in dsk:
                task = (resumable_partial, job, workdir, c.bi, c.bj)
                if apart and c.key not in done:  # a finished block's acc only reads its spill back
                    after = ()
                    if len(fed) >= prepare_ahead:
                        earlier = fed[len(fed) - prepare_ahead]
                        r = (f"ready-{token}", earlier[1], earlier[2])
                        dsk[r] = (ready, earlier)
                        after = (r,)
                    p = (f"prep-{token}", c.bi, c.bj)
                    dsk[p] = (prepare_block, job, c.bi, c.bj, *after)
                    task = (*task, p)
                    fed.append(k)
                dsk[k] = task
                if gpu:
                    resources[k] = {"GPU": 1}
            if c.key == b.key:
                deps.append(k)  # its own partial, whole
                continue
            s = (f"strips-{token}", c.bi, c.bj)  # a neighbour's: only the strips that reach this block
            if s not in dsk:
                dsk[s] = (partial_strips, k)
            deps.append(s)
        key = (f"out-{token}", b.bi, b.bj)
        dsk[key] = (finish_block, job, workdir, b.bi, b.bj, *deps)
        finals.append(key)
    return dsk, finals, resources
