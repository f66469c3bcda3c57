"""``sar2opt-geo filter``: a speckle-filtered float32 COG on the input's grid, block by block on Dask.

Reuses the translate path's reading (:func:`sar2opt_geo.tasks.read_linear`: each block reads its filter
halo, so the result equals filtering the whole scene) and its input-scale / ``--enl auto`` sampling
(:mod:`sar2opt_geo.sampling`); blocks go to a temporary Zarr block store, then into the COG.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sar2opt_geo import __version__, defaults, io
from sar2opt_geo.errors import InputError
from sar2opt_geo.filters import FilterSpec
from sar2opt_geo.plan import Conditioning, open_input, select_bands
from sar2opt_geo.radiometry import from_linear
from sar2opt_geo.safety import absolute, refuse_collisions
from sar2opt_geo.sampling import resolve_scale, with_auto_enl
from sar2opt_geo.tasks import close_readers, read_linear
from sar2opt_geo.workstate import InputCopies


def output_scale_for(input_scale: str) -> str:
    """The scale a filtered output is stored in: the input's own (dB in, dB out); DN as amplitude, 8-bit
    levels as dB."""
    return {"dn": "amplitude", "levels": "db"}.get(input_scale, input_scale)


def filter_block(
    cond: Conditioning,
    store: str,
    row0: int,
    row1: int,
    col0: int,
    col1: int,
    out_scale: str | None = None,
    fill: float = 0.0,
) -> int:
    """Filter one block (reading its halo, so the result equals filtering the whole scene) and store it
    in ``out_scale`` (default: the input's own scale, dB in, dB out), ``fill`` at nodata; returns the number
    of valid pixels."""
    linear, valid = read_linear(cond, row0, row1, col0, col1, keep_open=True)  # closed by run_filter
    out = from_linear(linear, out_scale or output_scale_for(cond.input_scale))
    np.copyto(out, fill, where=~valid)
    io.write_store_block(store, row0, col0, out.astype(np.float32), valid)
    return int(valid.sum())


def _filter_blocks(
    executor, cond: Conditioning, store, chunk: int, progress, out_scale: str, fill: float
) -> int:
    """Run :func:`filter_block` over the scene into ``store``; refuse an all-nodata scene."""
    scene = cond.scene
    blocks = [
        (r, min(r + chunk, scene.height), c, min(c + chunk, scene.width))
        for r in range(0, scene.height, chunk)
        for c in range(0, scene.width, chunk)
    ]
    io.create_block_store(store, scene.height, scene.width, chunk, {}, bands=len(cond.bands), dtype="float32")
    dsk = {("filter", k): (filter_block, cond, str(store), *b, out_scale, fill) for k, b in enumerate(blocks)}
    sizes = {("filter", k): (b[1] - b[0]) * (b[3] - b[2]) for k, b in enumerate(blocks)}
    done = {"px": 0}

    def on_result(key, n_valid):
        done["px"] += sizes[key]
        if progress is not None:
            progress(done["px"], scene.height * scene.width)

    res = executor.run(dsk, list(dsk), on_result)
    if sum(res.values()) == 0:
        raise InputError(f"{scene.path}: all pixels are nodata; nothing to write")
    return len(blocks)


def run_filter(
    input_path: str,
    output_path: str,
    spec: FilterSpec | None,
    executor,
    *,
    input_scale: str = "auto",
    bands: str | None = None,
    chunk_size: int = defaults.CHUNK_SIZE,
    allow_ungeoreferenced: bool = False,
    overwrite: bool = False,
    progress=None,
    calibration: str = defaults.CALIBRATION,
    denoise: bool = True,
    warp: str = defaults.WARP,
    resolution: float | None = None,
    calibration_constant: float | None = None,
    output_scale: str | None = None,
    require_product: bool = False,
    resampling: str = defaults.RESAMPLING,
) -> dict:
    """``sar2opt-geo filter`` (and ``calibrate``): a (speckle-filtered) float32 COG on the input's grid
    — for a Sentinel-1 product or a GCP input, on the warped map grid (``warp``) — block by block.
    ``output_scale``: ``linear``/``db``/``amplitude`` (default: the input's own scale); dB outputs use NaN
    as nodata, the others 0."""
    input_path, output_path = absolute(input_path), absolute(output_path)
    refuse_collisions(output_path, [("input", input_path)])
    out = io.check_output_path(output_path, overwrite)
    with InputCopies(out) as copies:  # of inputs unreadable window by window, if any; removed at the end
        try:
            scene = open_input(
                input_path,
                calibration=calibration,
                denoise=denoise,
                warp=warp,
                resolution=resolution,
                allow_ungeoreferenced=allow_ungeoreferenced,
                resampling=resampling,
                copy_dir=copies,
            )
            if require_product and getattr(scene, "product", None) is None:
                raise InputError(
                    f"{input_path}: not a Sentinel-1 product (expected a SAFE folder, its manifest.safe, the "
                    "product .zip or a measurement tiff inside a SAFE)"
                )
            band_idx = select_bands(scene, bands, scene.count if not bands else len(bands.split(",")), [])
            cond = Conditioning(
                scene=scene,
                bands=band_idx,
                input_scale="linear",
                filter=None,
                calibration_constant=calibration_constant,
            )
            cond = resolve_scale(executor, cond, input_scale, lattice=None)
            scale = cond.input_scale
            cond = with_auto_enl(executor, replace(cond, filter=spec))
            out_scale = output_scale or output_scale_for(scale)
            fill = float("nan") if out_scale == "db" else 0.0
            chunk = max(64, chunk_size)
            store = io.temporary_sibling(out, "blocks.zarr")
            tmp_out = io.temporary_sibling(out, "partial")
            filt = cond.filter.to_dict() if cond.filter is not None else "none"
            try:
                n_blocks = _filter_blocks(executor, cond, store, chunk, progress, out_scale, fill)
                tags = {
                    "SAR2OPT_TOOL": f"sar2opt-geo {__version__}",
                    "SAR2OPT_FILTER": filt,
                    "SAR2OPT_SCALE": out_scale,
                    "SAR2OPT_INPUT_SCALE": f"{scale} ({cond.scale_reason})",
                }
                if getattr(scene, "product", None) is not None:
                    tags["SAR2OPT_CALIBRATION"] = {"calibration": calibration, "denoise": denoise}
                if getattr(scene, "warp", None) is not None:
                    tags["SAR2OPT_WARP"] = scene.warp.describe()
                nodata = fill if out_scale == "db" else (scene.nodata if scene.nodata is not None else 0.0)
                io.store_to_cog(
                    store,
                    tmp_out,
                    io.GeoProfile.from_scene(scene, tags),
                    chunk=chunk,
                    band_descriptions=[scene.band_names()[i - 1] for i in band_idx],
                    nodata=nodata,
                )
                io.replace_path(tmp_out, out)
            finally:
                io.remove_path(store)
                io.remove_path(tmp_out)
            return {
                "output": str(out),
                "filter": filt,
                "scale": out_scale,
                "input_scale": scale,
                "blocks": n_blocks,
            }
        finally:
            close_readers(executor)  # the input datasets the sample and block tasks kept open
