"""Translate, step 4 of 4 — running a job: executor, progress, work state and the output sink.

:func:`run_translate` is the whole command as named steps:

1. :func:`~sar2opt_geo.plan.prepare_translate` — validate options, input, model, bands, AOI;
2. :func:`~sar2opt_geo.sampling.measure_scene` — scene statistics → the frozen job;
3. :func:`open_work_state` — the resumable state beside the output (``.OUTPUT.work/``);
4. :func:`execute` — run the graph of :mod:`sar2opt_geo.tasks`, feeding finished blocks to the
   :class:`OutputSink` (a COG assembled while blocks finish, or a Zarr store) and the progress callback;
5. the sink's file is renamed into place; the work state is removed on success, kept after an interruption
   (for ``--resume``) and discarded after a deterministic failure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from sar2opt_geo import __version__, io, pyramid
from sar2opt_geo.errors import InputError, Interrupted, OutputError, Sar2OptError
from sar2opt_geo.plan import PreparedTranslate, TranslateJob, TranslateOptions, prepare_translate
from sar2opt_geo.radiometry import SceneStats
from sar2opt_geo.safety import absolute, collision, refuse_collisions
from sar2opt_geo.sampling import measure_scene
from sar2opt_geo.tasks import BlockDone, close_readers, translate_graph
from sar2opt_geo.tiling import BlockPlan
from sar2opt_geo.workstate import InputCopies, RunLock, WorkState, digest, fingerprint_file, kept_summary

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TranslateSummary:
    output: str
    tiles: int
    evaluations: int  # model evaluations in this run (a resumed run counts only what it recomputed)
    blocks: int
    seconds: float
    stats: SceneStats
    input_scale: str
    chunk: int


def output_tags(prep: PreparedTranslate, job: TranslateJob) -> dict:
    """The provenance tags written into the output (model and hash, adapter, radiometry, tiling...)."""
    opts, grid, f = prep.options, job.grid, job.cond.filter
    tags = {
        "SAR2OPT_TOOL": f"sar2opt-geo {__version__}",
        "SAR2OPT_MODEL": prep.meta.name or os.path.basename(opts.model),
        "SAR2OPT_MODEL_HASH": job.model.digest,
        "SAR2OPT_ADAPTER": os.path.basename(opts.lora) if opts.lora else "none",
        "SAR2OPT_RADIOMETRY": job.radiometry.describe(),
        "SAR2OPT_INPUT_SCALE": job.cond.input_scale,
        "SAR2OPT_FILTER": f.to_dict() if f is not None else "none",
        "SAR2OPT_TILING": {"tile": grid.tile, "overlap": grid.overlap, "blend": "raised-cosine"},
        "SAR2OPT_BACKEND": job.model.engine,  # the engine actually used, with its precision unless fp32
    }
    if job.preprocess is not None:
        tags["SAR2OPT_PREPROCESS"] = {
            "profile": "sar2optical",
            **job.preprocess.to_dict(),
            "scene_stats": job.preprocess_stats,
        }
    return tags


def job_fingerprint(job: TranslateJob, fmt: str) -> dict:
    """What a saved work state must match for ``--resume``: input file, model and every option."""
    f = job.cond.filter
    return {
        "input": fingerprint_file(job.cond.scene.path),
        "model": job.model.digest,
        "job": digest(
            [
                job.cond.bands,
                job.cond.input_scale,
                job.radiometry.to_dict(),
                job.stats.to_dict(),
                job.grid,
                job.plan.chunk,
                f.to_dict() if f is not None else None,
                job.aoi_wkb,
                fmt,
                job.preprocess_stats,
                job.preprocess.to_dict() if job.preprocess is not None else None,
                # products / warped inputs: calibration, noise removal, warp grid (issue #11)
                job.cond.scene.fingerprint() if hasattr(job.cond.scene, "fingerprint") else None,
                # the engine and precision (an int8 block beside an fp32 one would show) (issue #15)
                job.model.engine,
                job.nodata_fill,  # what the model saw at nodata pixels (issue #12)
            ]
        ),
    }


def open_work_state(job: TranslateJob, out: Path, fmt: str, resume: bool) -> WorkState:
    """Create the work state beside ``out`` (or reopen it with ``resume`` when it matches the job)."""
    ws = WorkState(out)
    ws.begin(job_fingerprint(job, fmt), resume)
    return ws


class OutputSink:
    """Where finished blocks go: a COG assembled from the work state's block files while other blocks
    compute (each block is written into the staging GeoTIFF as its task finishes), or (for Zarr) the block
    files copied at the end. Writes under a temporary name; :meth:`commit` renames it."""

    def __init__(
        self,
        ws: WorkState,
        out: Path,
        fmt: str,
        geo: io.GeoProfile,
        plan: BlockPlan,
        overview_levels: int = 0,
    ):
        self.ws, self.out, self.fmt, self.geo, self.plan = ws, out, fmt, geo, plan
        self.overview_levels = overview_levels  # the blocks bring their part of the COG's overviews
        self.tmp = io.temporary_sibling(out, "partial")
        self.cog: io.CogAssembler | None = None

    def __enter__(self) -> OutputSink:
        if self.fmt == "cog":
            self.cog = io.CogAssembler(self.tmp, self.geo, 3, "uint8", overview_levels=self.overview_levels)
            self.cog.__enter__()
        return self

    def add(self, key: str) -> None:
        """Block ``key`` ("BI-BJ") is in the work state."""
        if self.cog is not None:
            b = self.plan.block(*(int(v) for v in key.split("-")))
            try:
                (rgb, valid), *overviews = self.ws.load_block_levels(key)
            except (OSError, ValueError) as exc:  # a record without its block: a work state tampered with
                raise OutputError(
                    f"{self.ws.root}: finished block {key} is missing or unreadable "
                    f"({type(exc).__name__}: {exc}); run again without --resume"
                ) from None
            self.cog.write(b.row0, b.col0, rgb, valid, overviews or None)

    def commit(self) -> None:
        if self.cog is not None:
            self.cog.finish()
        else:
            io.write_zarr(self.tmp, self.geo, *block_arrays(self.ws, self.plan))
        io.replace_path(self.tmp, self.out)

    def __exit__(self, *exc) -> None:
        try:
            if self.cog is not None:
                self.cog.__exit__(*exc)
        finally:
            io.remove_path(self.tmp)


def block_arrays(ws: WorkState, plan: BlockPlan):
    """``(rgb, valid)``: Dask arrays over the work state's block files, one chunk per block."""
    import dask
    import dask.array as da
    import numpy as np

    rgb_rows, valid_rows = [], []
    for bi in range(plan.n_brows):
        rgb_row, valid_row = [], []
        for bj in range(plan.n_bcols):
            b = plan.block(bi, bj)
            h, w = b.shape
            pair = dask.delayed(ws.load_block, pure=True)(b.key, dask_key_name=f"load-block-{b.key}")
            rgb_row.append(da.from_delayed(pair[0], (3, h, w), dtype=np.uint8))
            valid_row.append(da.from_delayed(pair[1], (h, w), dtype=bool))
        rgb_rows.append(rgb_row)
        valid_rows.append(valid_row)
    return da.block(rgb_rows), da.block(valid_rows)  # lists of depth 2: joined along the last two axes


def execute(
    job: TranslateJob, ws: WorkState, sink: OutputSink, executor, progress: Progress | None
) -> tuple[int, int]:
    """Run the blocks the work state does not hold yet; ``(evaluations now, evaluations before)``."""
    records = ws.done_records()
    dsk, finals, resources = translate_graph(job, str(ws.root), set(records))
    tiles = {"done": sum(r["n_tiles"] for r in records.values()), "total": job.grid.count}
    for key in records:
        sink.add(key)
    if progress is not None:
        progress(tiles["done"], tiles["total"])

    def on_result(key, res: BlockDone):
        tiles["done"] += res.n_tiles
        sink.add(res.key)
        if progress is not None:
            progress(tiles["done"], tiles["total"])

    results = executor.run(dsk, finals, on_result, resources=resources)
    return sum(r.n_eval for r in results.values()), sum(r["n_eval"] for r in records.values())


def _run_job(prep: PreparedTranslate, job: TranslateJob, out: Path, executor, resume: bool, progress) -> int:
    """Work state → blocks → output; what happens to the work state on each way out. Returns the number
    of model evaluations of this run."""
    tags = output_tags(prep, job)
    fmt = prep.options.fmt
    ws = open_work_state(job, out, fmt, resume)
    geo = io.GeoProfile.from_scene(prep.scene, tags)
    try:
        with OutputSink(ws, out, fmt, geo, job.plan, job.overview_levels) as sink:
            n_eval, prior_eval = execute(job, ws, sink, executor, progress)
            if n_eval + prior_eval == 0:
                what = (
                    "no valid pixel inside the AOI (all nodata)"
                    if job.aoi_wkb
                    else "all pixels are nodata; nothing to translate"
                )
                raise InputError(f"{prep.scene.path}: {what}")
            sink.commit()
    except KeyboardInterrupt:
        n, size = kept_summary(ws)
        raise Interrupted(
            f"interrupted; {n} of {job.plan.n_blocks} blocks finished, kept in {ws.root} "
            f"({size / 2**20:.1f} MiB)",
            work_state=str(ws.root),
        ) from None
    except Sar2OptError as exc:
        if getattr(exc, "keeps_work_state", False):  # e.g. a read error: the file may read again later
            n, size = kept_summary(ws)
            raise type(exc)(
                f"{exc}; {n} finished blocks kept in {ws.root} ({size / 2**20:.1f} MiB) for --resume"
            ) from None
        # a deterministic failure (bad data, bad adapter...): resuming would fail the same way
        ws.discard()
        raise
    # anything else (a bug, a lost cluster) propagates with the work state kept for --resume
    ws.discard()  # finished: the output is in place
    return n_eval


def run_translate(
    input_path: str,
    output_path: str,
    opts: TranslateOptions,
    executor,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
) -> TranslateSummary:
    """Translate one scene. ``progress(n_tiles_done, n_tiles_total)`` is called as blocks finish."""
    t0 = time.perf_counter()
    # absolute paths before anything reaches a worker (remote workers have another working directory)
    input_path, output_path = absolute(input_path), absolute(output_path)
    opts = replace(opts, model=absolute(opts.model), lora=absolute(opts.lora), aoi=absolute(opts.aoi))
    protected = [("input", input_path), ("model", opts.model), ("LoRA adapter", opts.lora), ("AOI", opts.aoi)]
    refuse_collisions(output_path, protected)
    if collision(WorkState(output_path).root, input_path):  # a fresh run deletes its work-state folder
        raise OutputError(f"{output_path}: the input {input_path} lies in this output's work-state folder")
    out = io.check_output_path(output_path, overwrite)
    with InputCopies(out) as copies:  # of inputs unreadable window by window, if any; removed at the end
        try:
            prep = prepare_translate(input_path, opts, executor, copies)  # its samples keep datasets open
            with RunLock(out):  # a second run on this output is refused, naming this one
                grid = prep.plan.grid
                levels = (
                    pyramid.block_levels(prep.plan.chunk, grid.width, grid.height)
                    if prep.options.fmt == "cog"
                    else 0
                )
                job = replace(
                    measure_scene(executor, prep),
                    nodata_fill=prep.options.nodata_fill,
                    overview_levels=levels,
                )
                n_eval = _run_job(prep, job, out, executor, resume, progress)
        finally:
            close_readers(executor)
    return TranslateSummary(
        output=str(out),
        tiles=job.grid.count,
        evaluations=n_eval,
        blocks=job.plan.n_blocks,
        seconds=time.perf_counter() - t0,
        stats=job.stats,
        input_scale=job.cond.input_scale,
        chunk=job.plan.chunk,
    )
